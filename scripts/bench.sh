#!/usr/bin/env bash
# scripts/bench.sh — every benchmark in one go (`make bench`): runs each bench/<name>/ program and
# writes bench/RESULTS.md, a machine header and the Markdown section each program printed.
#
#   scripts/bench.sh [NAME...]      only bench/NAME (e.g. scripts/bench.sh http load)
#
# The contract with the programs (DEVELOPERS.md, "Benchmarks"):
# - bench.sh runs `go run ./bench/<name> FLAGS` from the repository root for every directory
#   bench/<name>/ with a main.go (bench/internal/ is shared code). FLAGS are the value of
#   AZAION_BENCH_FLAGS_<NAME> (upper case, '-' as '_') when that is set, e.g. for a quick try
#   AZAION_BENCH_FLAGS_UNLOCK='-size 64MiB', else the words of bench/<name>/bench.flags ('#'
#   starts a comment) when that file exists.
# - a program prints exactly one Markdown section on stdout: "### <title>", a table of figures,
#   each next to its baseline measured in the same run and their ratio, and a line saying the
#   machine; progress and diagnostics go to stderr (kept in the state dir, tail shown on failure).
# - the parts a program may use are started here and named in the environment:
#   AZAION_BENCH_DOCKER_HOST (a private dockerd), AZAION_BENCH_MINIO_ENDPOINT,
#   AZAION_BENCH_MINIO_ACCESS_KEY, AZAION_BENCH_MINIO_SECRET_KEY (a private MinIO), and
#   AZAION_BENCH_BIN (the azaion-loader binary, built once) and AZAION_BENCH_DIR (a work dir
#   with room for the archives). A program run by hand finds or builds what it needs itself.
# A program that fails gets a section saying so (with the tail of its stderr); bench.sh then
# exits 1 after writing RESULTS.md. The parts are stopped at the end, also on failure.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
TOOLS=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/azaion-tools
STATE_PREFIX=${TMPDIR:-/tmp}/azaion-bench.
export PATH=$TOOLS:$PATH

fatal() {
	echo "bench.sh: $*" >&2
	exit 1
}
note() { printf '  %s\n' "$*" >&2; }

command -v go >/dev/null || fatal "no go (scripts/test.sh installs one)"
command -v dockerd >/dev/null || fatal "no dockerd (apt-get install docker.io; scripts/test.sh does)"
command -v openssl >/dev/null || fatal "no openssl (apt-get install openssl; scripts/test.sh does)"
if [[ ! -x $TOOLS/minio ]]; then
	version=$(sed -n 's/^MINIO_VERSION=//p' scripts/test.sh)
	note "building MinIO $version into $TOOLS (about 3 minutes, once)"
	GOBIN=$TOOLS go install "github.com/minio/minio@$version" || fatal "go install minio failed"
fi

# The programs to run.
names=()
if (($#)); then
	for n in "$@"; do
		[[ -f bench/$n/main.go ]] || fatal "no bench/$n/main.go"
		names+=("$n")
	done
else
	for d in bench/*/; do
		n=$(basename "$d")
		[[ $n != internal && -f $d/main.go ]] && names+=("$n")
	done
fi
((${#names[@]})) || fatal "no bench programs found"

# ---- parts -----------------------------------------------------------------------------------
STATE=
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n $STATE && -d $STATE ]]; then
		[[ -r $STATE/minio/env ]] && scripts/parts.sh minio "$STATE" stop >/dev/null 2>&1
		scripts/parts.sh docker "$STATE" stop >/dev/null 2>&1
		rm -f "$STATE/owner.pid"
		scripts/parts.sh reap-stale "$STATE" 2>/dev/null
		rm -rf "$STATE"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

scripts/parts.sh reap-stale "$STATE_PREFIX"
STATE=$(mktemp -d "${STATE_PREFIX}XXXXXX") || fatal "mktemp failed"
echo $$ >"$STATE/owner.pid"
mkdir -p "$STATE/bin" "$STATE/minio" "$STATE/docker" "$STATE/work" "$STATE/out"
go build -o "$STATE/bin/testprobe" ./internal/testenv/testprobe || fatal "building testprobe failed"
go build -o "$STATE/bin/azaion-loader" ./cmd/azaion-loader || fatal "building azaion-loader failed"
port=$("$STATE/bin/testprobe" freeport) || fatal "no free port"
scripts/parts.sh minio "$STATE" configure "$TOOLS/minio" "$port" azaion-bench || fatal "configuring minio failed"
scripts/parts.sh docker "$STATE" start >&2 || fatal "dockerd did not start"
scripts/parts.sh minio "$STATE" start >&2 || fatal "minio did not start"
# shellcheck disable=SC1091
source "$STATE/minio/env"
export AZAION_BENCH_DOCKER_HOST=unix://$STATE/docker/docker.sock
export AZAION_BENCH_MINIO_ENDPOINT=127.0.0.1:$MINIO_PORT
export AZAION_BENCH_MINIO_ACCESS_KEY=$MINIO_ROOT_USER
export AZAION_BENCH_MINIO_SECRET_KEY=$MINIO_ROOT_PASSWORD
export AZAION_BENCH_BIN=$STATE/bin/azaion-loader
export AZAION_BENCH_DIR=$STATE/work

# ---- the machine -----------------------------------------------------------------------------
value() { sed -n "s/^$1[[:space:]]*:[[:space:]]*//p" "$2" | head -n 1; }
header() {
	local mem
	mem=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
	cat <<EOT
# Benchmark results

Written by \`make bench\` (scripts/bench.sh) on $(date -u +'%Y-%m-%d %H:%M UTC') at commit
\`$(git describe --always --dirty 2>/dev/null || echo unknown)\`. Every figure stands next to a
baseline measured in the same run on the same machine; compare ratios, not absolute figures,
across machines.

| machine | |
|---|---|
| CPU | $(value 'model name' /proc/cpuinfo), $(nproc) cores |
| memory | $mem |
| kernel | $(uname -sr) $(uname -m) |
| Go | $(go version | cut -d' ' -f3-) |
| openssl | $(openssl version) |
| dockerd | $(dockerd --version 2>/dev/null | sed 's/^Docker version //') |
| load average | $1 at the start, $2 at the end |

EOT
}

# ---- the programs ----------------------------------------------------------------------------
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
failed=0
for n in "${names[@]}"; do
	var=AZAION_BENCH_FLAGS_$(tr 'a-z-' 'A-Z_' <<<"$n")
	if [[ -n ${!var+x} ]]; then
		flags=${!var}
	elif [[ -f bench/$n/bench.flags ]]; then
		flags=$(sed 's/#.*//' "bench/$n/bench.flags" | tr '\n' ' ')
	else
		flags=
	fi
	echo "==== bench/$n $flags ($(date +%T))" >&2
	s=$(date +%s)
	# shellcheck disable=SC2086 # the flags are words
	go run "./bench/$n" $flags >"$STATE/out/$n.md" 2> >(tee "$STATE/out/$n.log" >&2)
	rc=$?
	if ((rc != 0)) || ! grep -q '^### ' "$STATE/out/$n.md"; then
		failed=1
		{
			echo "### bench/$n: FAILED (exit $rc)"
			echo
			echo '```'
			tail -n 20 "$STATE/out/$n.log"
			echo '```'
		} >>"$STATE/out/$n.md"
	fi
	note "bench/$n: $(($(date +%s) - s)) s, exit $rc"
done

{
	header "$load_start" "$(cut -d' ' -f1-3 /proc/loadavg)"
	for n in "${names[@]}"; do
		cat "$STATE/out/$n.md"
		echo
	done
} >bench/RESULTS.md.tmp && mv bench/RESULTS.md.tmp bench/RESULTS.md
echo "wrote bench/RESULTS.md" >&2
exit "$failed"
