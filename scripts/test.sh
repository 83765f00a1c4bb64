#!/usr/bin/env bash
# shellcheck disable=SC2317,SC2012 # functions run through step and the traps
# scripts/test.sh — THE test command (`make test` runs it, and so does .ci/run).
#
# 1. installs what is missing: Go (from the Go module proxy, only when no go is found), dockerd,
#    openssl, swtpm, qemu-user-static and chromium (apt, only when absent), MinIO and staticcheck (go
#    install, cached in ${XDG_CACHE_HOME:-$HOME/.cache}/azaion-tools);
# 2. starts a private dockerd, MinIO and swtpm (a TPM 2.0 simulator) under a fresh temp dir (never
#    a system daemon) and exports the AZAION_TEST_* variables of internal/testenv;
# 3. runs gofmt, go vet, staticcheck, go test -race, the security package for arm64 under qemu and
#    with -tags purego, every fuzz target briefly and the cross-compiles;
# 4. stops everything it started, also on failure or Ctrl-C, and exits non-zero if any step failed.
#
# With arguments, only `go test -race -count=1 ARGS...` runs (against the real parts), e.g.
#   scripts/test.sh -v -run TestFault ./internal/testenv/
#
# Environment: AZAION_TEST_TIMEOUT (go test -timeout, default 20m), AZAION_FUZZTIME (per fuzz
# target, default 5s),
# AZAION_KEEP_STATE=1 keeps the temp dir (logs, data) after the run.
set -uo pipefail

# ---- pinned tool versions --------------------------------------------------------------------
GO_TOOLCHAIN_VERSION=1.26.8 # only used when no go is installed at all
MINIO_MODULE=github.com/minio/minio
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
STATICCHECK_MODULE=honnef.co/go/tools
STATICCHECK_VERSION=v0.7.0 # staticcheck 2026.1, supports Go 1.26

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
TOOLS=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/azaion-tools
STATE_PREFIX=${TMPDIR:-/tmp}/azaion-test.
export DEBIAN_FRONTEND=noninteractive
T0=$(date +%s)

# ---- output helpers --------------------------------------------------------------------------
banner() { printf '\n\033[1m======== %s\033[0m  (%s, +%ss)\n' "$*" "$(date +%T)" $(($(date +%s) - T0)); }
note() { printf '  %s\n' "$*"; }
fatal() {
	printf '\n\033[31mFATAL: %s\033[0m\n' "$*" >&2
	exit 1
}

RESULTS=()
FAILED=0
# step NAME CMD...: runs one check with a banner; a failure is recorded, later steps still run.
step() {
	local name=$1 s rc
	shift
	banner "$name"
	s=$(date +%s)
	"$@"
	rc=$?
	if ((rc == 0)); then
		RESULTS+=("$(printf 'ok    %-22s %4ss' "$name" $(($(date +%s) - s)))")
	else
		RESULTS+=("$(printf 'FAIL  %-22s %4ss  (exit %s)' "$name" $(($(date +%s) - s)) "$rc")")
		FAILED=1
		printf '\033[31m-------- %s FAILED (exit %s)\033[0m\n' "$name" "$rc"
	fi
	return 0
}

# ---- cleanup ---------------------------------------------------------------------------------
STATE=
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n $STATE && -d $STATE ]]; then
		banner "stopping the test parts"
		if ((rc != 0)) || ((FAILED)); then
			for log in "$STATE/docker/dockerd.log" "$STATE/minio/minio.log" "$STATE/swtpm/swtpm.log"; do
				[[ -s $log ]] || continue
				echo "---- last lines of $log"
				tail -n 15 "$log"
			done
		fi
		[[ -r $STATE/minio/env ]] && "$ROOT/scripts/parts.sh" minio "$STATE" stop
		[[ -d $STATE/swtpm ]] && "$ROOT/scripts/parts.sh" swtpm "$STATE" stop
		"$ROOT/scripts/parts.sh" docker "$STATE" stop
		rm -f "$STATE/owner.pid"
		if [[ ${AZAION_KEEP_STATE:-} == 1 ]]; then
			note "kept $STATE"
		else
			# kills what the stops above missed, unmounts leftovers, removes the dir
			"$ROOT/scripts/parts.sh" reap-stale "$STATE" 2>/dev/null
			rm -rf "$STATE"
		fi
	fi
	if ((${#RESULTS[@]})); then
		banner "summary"
		printf '  %s\n' "${RESULTS[@]}"
	fi
	if ((rc == 0 && FAILED == 0)); then
		printf '\n\033[32mALL OK\033[0m in %ss\n' $(($(date +%s) - T0))
	else
		printf '\n\033[31mFAILED\033[0m after %ss\n' $(($(date +%s) - T0))
		((rc != 0)) || rc=1
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'echo; echo "interrupted"; exit 130' INT
trap 'echo "terminated"; exit 143' TERM

# ---- 1. tools --------------------------------------------------------------------------------
as_root() {
	if ((EUID == 0)); then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo -n env DEBIAN_FRONTEND=noninteractive "$@"
	else
		fatal "need root (or sudo) to run: $*"
	fi
}

banner "tools: system packages"
s=$(date +%s)
pkgs=()
command -v dockerd >/dev/null || pkgs+=(docker.io)
command -v openssl >/dev/null || pkgs+=(openssl)
# swtpm: the TPM 2.0 simulator of the sealed device identity's tests (SPEC §14); swtpm-tools has
# swtpm_setup, which Debian's swtpm package expects beside it.
command -v swtpm >/dev/null || pkgs+=(swtpm)
command -v swtpm_setup >/dev/null || pkgs+=(swtpm-tools)
command -v qemu-aarch64-static >/dev/null || pkgs+=(qemu-user-static) # the arm64 kernel's tests
command -v chromium >/dev/null || pkgs+=(chromium) # the GET /docs page is tested in a real browser
if ! command -v go >/dev/null && [[ ! -x /usr/local/go/bin/go && ! -x $TOOLS/go/bin/go ]]; then
	command -v curl >/dev/null || pkgs+=(curl ca-certificates)
	command -v unzip >/dev/null || pkgs+=(unzip)
fi
if ((${#pkgs[@]})); then
	note "apt-get install ${pkgs[*]}"
	as_root apt-get update -q || fatal "apt-get update failed"
	as_root apt-get install -y -q --no-install-recommends "${pkgs[@]}" || fatal "apt-get install ${pkgs[*]} failed"
else
	note "dockerd, openssl, swtpm, qemu-aarch64-static and chromium present"
fi
command -v dockerd >/dev/null || fatal "dockerd still missing after installing docker.io"
command -v swtpm >/dev/null || fatal "swtpm still missing after installing swtpm"
RESULTS+=("$(printf 'ok    %-22s %4ss' "apt packages" $(($(date +%s) - s)))")

banner "tools: go"
s=$(date +%s)
if ! command -v go >/dev/null; then
	if [[ -x /usr/local/go/bin/go ]]; then
		export PATH=/usr/local/go/bin:$PATH
	else
		if [[ ! -x $TOOLS/go/bin/go ]]; then
			arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
			case $arch in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; esac
			zip=v0.0.1-go$GO_TOOLCHAIN_VERSION.linux-$arch.zip
			note "no go found: fetching the go$GO_TOOLCHAIN_VERSION toolchain from the Go module proxy"
			mkdir -p "$TOOLS" && rm -rf "$TOOLS/go.tmp" "$TOOLS/go" && mkdir "$TOOLS/go.tmp" || exit 1
			curl -fsSL --retry 3 -o "$TOOLS/go.tmp/go.zip" "https://proxy.golang.org/golang.org/toolchain/@v/$zip" ||
				fatal "download of the Go toolchain failed"
			(cd "$TOOLS/go.tmp" && unzip -q go.zip) || fatal "unzip of the Go toolchain failed"
			mv "$TOOLS/go.tmp"/golang.org/toolchain@*/ "$TOOLS/go" && rm -rf "$TOOLS/go.tmp" || exit 1
			chmod +x "$TOOLS/go/bin/"* "$TOOLS/go/pkg/tool/"*/* 2>/dev/null
		fi
		export PATH=$TOOLS/go/bin:$PATH
	fi
fi
export PATH=$TOOLS:$PATH
note "$(go version)"

# go_tool NAME MODULE/PATH MODULE VERSION: go install into $TOOLS unless that exact version is there.
tool_version() { go version -m "$1" 2>/dev/null | awk '$1 == "mod" { print $3; exit }'; }
go_tool() {
	local name=$1 pkg=$2 want=$3
	if [[ -x $TOOLS/$name && $(tool_version "$TOOLS/$name") == "$want" ]]; then
		note "$name $want: cached in $TOOLS"
		return 0
	fi
	note "go install $pkg@$want (log: $TOOLS/$name.install.log)"
	mkdir -p "$TOOLS"
	if ! GOBIN=$TOOLS go install "$pkg@$want" >"$TOOLS/$name.install.log" 2>&1; then
		tail -n 30 "$TOOLS/$name.install.log"
		return 1
	fi
}
banner "tools: minio, staticcheck"
s=$(date +%s)
go_tool staticcheck "$STATICCHECK_MODULE/cmd/staticcheck" "$STATICCHECK_VERSION" || fatal "installing staticcheck failed"
# MinIO takes about 3 minutes to build on two cores; it is built once and cached.
go_tool minio "$MINIO_MODULE" "$MINIO_VERSION" || fatal "installing minio failed"
RESULTS+=("$(printf 'ok    %-22s %4ss' "go tools" $(($(date +%s) - s)))")

# ---- 2. parts --------------------------------------------------------------------------------
banner "parts: dockerd, minio, swtpm"
s=$(date +%s)
"$ROOT/scripts/parts.sh" reap-stale "$STATE_PREFIX"
STATE=$(mktemp -d "${STATE_PREFIX}XXXXXX") || fatal "mktemp failed"
echo $$ >"$STATE/owner.pid"
mkdir -p "$STATE/bin" "$STATE/minio" "$STATE/docker" "$STATE/swtpm"
go build -o "$STATE/bin/testprobe" ./internal/testenv/testprobe || fatal "building internal/testenv/testprobe failed"
port=$("$STATE/bin/testprobe" freeport) || fatal "no free port"
"$ROOT/scripts/parts.sh" minio "$STATE" configure "$TOOLS/minio" "$port" azaion-test || fatal "configuring minio failed"
"$ROOT/scripts/parts.sh" docker "$STATE" start || fatal "dockerd did not start"
note "dockerd $(dockerd --version 2>/dev/null | sed 's/^Docker version //') at unix://$STATE/docker/docker.sock"
"$ROOT/scripts/parts.sh" minio "$STATE" start || fatal "minio did not start"
note "minio at 127.0.0.1:$port (data $STATE/minio/data)"
"$ROOT/scripts/parts.sh" swtpm "$STATE" start || fatal "swtpm did not start"
note "$(swtpm --version 2>/dev/null | head -n1) at unix://$STATE/swtpm/sock"
# shellcheck disable=SC1091
source "$STATE/minio/env"
# Every part is started: an integration test that cannot find one must fail, never skip.
export CI=true
export AZAION_TEST_DOCKER_HOST=unix://$STATE/docker/docker.sock
export AZAION_TEST_DOCKER_CTL="$ROOT/scripts/parts.sh docker $STATE"
export AZAION_TEST_MINIO_ENDPOINT=127.0.0.1:$MINIO_PORT
export AZAION_TEST_MINIO_ACCESS_KEY=$MINIO_ROOT_USER
export AZAION_TEST_MINIO_SECRET_KEY=$MINIO_ROOT_PASSWORD
export AZAION_TEST_MINIO_CTL="$ROOT/scripts/parts.sh minio $STATE"
export AZAION_TEST_SWTPM=$STATE/swtpm/sock
export AZAION_TEST_SWTPM_CTL="$ROOT/scripts/parts.sh swtpm $STATE"
export AZAION_TEST_LOCK_DIR=$STATE
env | grep '^AZAION_TEST_' | grep -v SECRET | sed 's/^/  /'
RESULTS+=("$(printf 'ok    %-22s %4ss' "start parts" $(($(date +%s) - s)))")

# ---- 3. checks -------------------------------------------------------------------------------
check_gofmt() {
	local files
	files=$(find . -name '*.go' -not -path './.git/*' -not -path '*/testdata/*' -print0 | xargs -0 -r gofmt -l)
	if [[ -n $files ]]; then
		echo "these files are not gofmt'ed (run gofmt -w on them):"
		echo "$files" | sed "s/^/  /"
		return 1
	fi
	note "all files formatted"
}

run_go_test() {
	go test -race -count=1 -timeout "${AZAION_TEST_TIMEOUT:-20m}" "$@" 2>&1 | tee "$STATE/go-test.log"
	local rc=${PIPESTATUS[0]}
	if ((rc != 0)); then
		echo "---- failures:"
		grep -E '^(--- FAIL|FAIL|panic:|# )' "$STATE/go-test.log" | sed 's/^/  /'
	fi
	return "$rc"
}

run_fuzz() {
	# Every Fuzz* target of the tree, each for AZAION_FUZZTIME. Found by their source (gofmt'ed
	# "func FuzzX(" in *_test.go), and checked with go test -list: go test -fuzz on a package
	# without the target passes with "no fuzz tests", which must not count as a run.
	# The budget is a count of runs, not a duration: with a duration, Go 1.26's fuzz coordinator
	# can report its own deadline as "context deadline exceeded", a failure with no failing input
	# (go.dev/issue/75804, fixed in Go 1.27). 20,000 runs is 2-15 s a target on a 2-core machine.
	local t=${AZAION_FUZZTIME:-20000x} rc=0 n=0 file dir pkg name list
	while IFS= read -r file; do
		dir=$(dirname "$file")
		pkg=./${dir#./}
		list=$(go test -list '^Fuzz' "$pkg") || { echo "$list"; rc=1; continue; }
		for name in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
			if ! grep -qx "$name" <<<"$list"; then
				echo "$pkg: $name is in $file but go test does not list it"
				rc=1
				continue
			fi
			note "$pkg $name ($t)"
			n=$((n + 1))
			go test -run '^$' -fuzz "^$name\$" -fuzztime "$t" "$pkg" >"$STATE/fuzz.log" 2>&1 || {
				cat "$STATE/fuzz.log"
				rc=1
			}
		done
	done < <(grep -rl --include='*_test.go' '^func Fuzz' . | sort)
	((n > 0)) || { echo "no fuzz targets found"; return 1; }
	note "$n fuzz targets run"
	return "$rc"
}

# The arm64 assembly kernel, run by qemu: AZAION_TEST_ARM64_AES=1 makes a silent fall back to
# crypto/cipher fail (qemu's default CPU has the AES instructions).
run_arm64() {
	command -v qemu-aarch64-static >/dev/null || { echo "qemu-aarch64-static is missing (apt-get install qemu-user-static)"; return 1; }
	GOARCH=arm64 AZAION_TEST_ARM64_AES=1 go test -count=1 -exec qemu-aarch64-static ./internal/security/
}

cross_build() {
	local arch rc=0 v
	v=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
	[[ -d cmd/azaion-loader ]] || { echo "cmd/azaion-loader does not exist"; return 1; }
	for arch in amd64 arm64; do
		note "linux/$arch"
		CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -ldflags="-s -w -X main.version=$v" \
			-o "$STATE/out/linux-$arch/" ./cmd/... || rc=1
	done
	[[ $rc != 0 ]] || ls -l "$STATE"/out/*/ | sed 's/^/  /'
	return "$rc"
}

if (($#)); then
	step "go test -race $*" run_go_test "$@"
	exit "$FAILED"
fi
step "gofmt" check_gofmt
step "go vet" go vet ./...
step "staticcheck" staticcheck ./...
step "go test -race" run_go_test ./...
step "go test arm64 (qemu)" run_arm64
step "go test -tags purego" go test -count=1 -tags purego ./internal/security/
step "fuzz (every target)" run_fuzz
step "cross-compile" cross_build
exit "$FAILED"
