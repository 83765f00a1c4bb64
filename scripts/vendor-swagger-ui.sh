#!/usr/bin/env bash
# scripts/vendor-swagger-ui.sh — fetch the Swagger UI files that GET /docs serves from the binary
# (internal/httpapi/docs/swagger-ui/), from the npm registry, checked against a pinned integrity.
#
#   scripts/vendor-swagger-ui.sh [VERSION SHA512-INTEGRITY]
#
# Only what the page needs is kept: swagger-ui-bundle.js and swagger-ui.css, gzipped (-9 -n:
# no name, no time, so a re-run gives the same bytes), and the licence files that must travel
# with them (Apache-2.0 LICENSE and NOTICE, the bundle's third-party licences). To update:
# `npm view swagger-ui-dist@5 version dist.integrity`, run this with both, run the /docs
# browser test (go test -run TestDocsInBrowser ./internal/httpapi/) and update DEVELOPERS.md.
set -euo pipefail

VERSION=${1:-5.35.0}
INTEGRITY=${2:-sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ==}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=$ROOT/internal/httpapi/docs/swagger-ui
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

command -v npm >/dev/null || { echo "npm is needed (apt-get install npm)" >&2; exit 1; }
(cd "$TMP" && npm pack --silent "swagger-ui-dist@$VERSION" >/dev/null)
tgz=$TMP/swagger-ui-dist-$VERSION.tgz
got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
if [[ $got != "$INTEGRITY" ]]; then
	echo "swagger-ui-dist@$VERSION: integrity $got, want $INTEGRITY" >&2
	exit 1
fi
tar -xzf "$tgz" -C "$TMP" package/swagger-ui-bundle.js package/swagger-ui.css package/LICENSE \
	package/NOTICE package/swagger-ui-bundle.js.LICENSE.txt

rm -rf "$DEST"
mkdir -p "$DEST"
gzip -9 -n -c "$TMP/package/swagger-ui-bundle.js" >"$DEST/swagger-ui-bundle.js.gz"
gzip -9 -n -c "$TMP/package/swagger-ui.css" >"$DEST/swagger-ui.css.gz"
cp "$TMP/package/LICENSE" "$TMP/package/NOTICE" "$TMP/package/swagger-ui-bundle.js.LICENSE.txt" "$DEST/"
echo "$VERSION" >"$DEST/VERSION"
ls -l "$DEST"
