#!/usr/bin/env bash
# parts.sh — start and stop the real parts the integration tests use, each under a private state
# directory, so it never touches a system dockerd or MinIO.
#
#   parts.sh docker STATEDIR start|stop|status|pause|resume
#   parts.sh minio  STATEDIR start|stop|status|pause|resume|kill
#   parts.sh minio  STATEDIR configure MINIO_BIN PORT ROOT_USER   (once, before start)
#   parts.sh swtpm  STATEDIR start|stop|status
#   parts.sh reap-stale PREFIX        stop the parts of state dirs PREFIX* whose test run is gone
#
# start waits until the part answers, stop waits until it is down; both are idempotent, and a
# restart reuses the same data dir, socket and port. pause stops the part's main process with
# SIGSTOP (it keeps its socket: connections are accepted by the kernel and never answered, as a
# hung daemon's), resume sends SIGCONT and waits until it answers again. kill (MinIO) sends
# SIGKILL, as a crash would; start brings it back. scripts/test.sh
# prepares STATEDIR (tools in STATEDIR/bin, MinIO's port and credentials by configure) and
# exports
# AZAION_TEST_DOCKER_CTL="parts.sh docker STATEDIR" and AZAION_TEST_MINIO_CTL="parts.sh minio STATEDIR"
# (and AZAION_TEST_SWTPM_CTL="parts.sh swtpm STATEDIR"; its TPM state is kept across a restart).
set -euo pipefail

START_TIMEOUT=${AZAION_PART_START_TIMEOUT:-90} # seconds
STOP_TIMEOUT=${AZAION_PART_STOP_TIMEOUT:-30}   # seconds before SIGKILL

die() {
	echo "parts.sh: $*" >&2
	exit 1
}

# alive PID: the process exists and is not a zombie.
alive() {
	local pid=$1 state
	[[ -n $pid && -r /proc/$pid/stat ]] || return 1
	state=$(sed -E 's/^[0-9]+ \(.*\) (.).*/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
	[[ $state != Z && $state != X ]]
}

# pids_under DIR: processes whose command line mentions DIR/ (dockerd, its containerd, minio).
pids_under() {
	local dir=$1 p cmd
	for p in /proc/[0-9]*; do
		p=${p#/proc/}
		[[ $p == "$$" ]] && continue
		cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline") || continue
		case $cmd in
		*parts.sh* | *test.sh*) ;;
		*"$dir/"*) alive "$p" && echo "$p" ;;
		esac
	done
	return 0
}

# stop_pids TIMEOUT PID...: SIGTERM, wait up to TIMEOUT s, then SIGKILL and wait.
stop_pids() {
	local timeout=$1 pid i
	shift
	(($# > 0)) || return 0
	kill -TERM "$@" 2>/dev/null || true
	kill -CONT "$@" 2>/dev/null || true # a paused process acts on SIGTERM only once it runs
	for ((i = 0; i < timeout * 10; i++)); do
		local any=
		for pid in "$@"; do alive "$pid" && any=1; done
		[[ -z $any ]] && return 0
		sleep 0.1
	done
	echo "parts.sh: still running after ${timeout}s, sending SIGKILL to $*" >&2
	kill -KILL "$@" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		local any=
		for pid in "$@"; do alive "$pid" && any=1; done
		[[ -z $any ]] && return 0
		sleep 0.1
	done
	die "cannot stop $*"
}

logtail() {
	echo "---- last lines of $1 ----" >&2
	tail -n "${2:-40}" "$1" >&2 2>/dev/null || true
	echo "----" >&2
}

probe() { "$STATE/bin/testprobe" "$@" >/dev/null 2>&1; }

# pause_pid PIDFILE: SIGSTOP the process, and wait until the kernel shows it stopped.
pause_pid() {
	local pid i
	pid=$(cat "$1" 2>/dev/null || true)
	alive "$pid" || die "not running (no live pid in $1)"
	kill -STOP "$pid"
	for ((i = 0; i < 100; i++)); do
		[[ $(sed -E 's/^[0-9]+ \(.*\) (.).*/\1/' "/proc/$pid/stat" 2>/dev/null) == T ]] && return 0
		sleep 0.05
	done
	die "$pid did not stop"
}

# wait_answer NAME PID LOG WHERE PROBE_ARGS...: wait until "probe PROBE_ARGS..." succeeds; with
# the end of LOG, fail when PID exits first or START_TIMEOUT passes.
wait_answer() {
	local name=$1 pid=$2 log=$3 where=$4 i
	shift 4
	for ((i = 0; i < START_TIMEOUT * 4; i++)); do
		probe "$@" && return 0
		if ! alive "$pid"; then
			logtail "$log"
			die "$name exited while starting (log: $log)"
		fi
		sleep 0.25
	done
	logtail "$log"
	die "$name did not answer on $where within ${START_TIMEOUT}s (log: $log)"
}

# resume_pid PIDFILE: SIGCONT the process (harmless when it runs).
resume_pid() {
	local pid
	pid=$(cat "$1" 2>/dev/null || true)
	if alive "$pid"; then kill -CONT "$pid" 2>/dev/null || true; fi
}

# ---- dockerd ---------------------------------------------------------------------------------

docker_init() {
	D=$STATE/docker
	HOST=unix://$D/docker.sock
	mkdir -p "$D"
}

docker_running() { alive "$(cat "$D/run.pid" 2>/dev/null)"; }

docker_status() {
	docker_init
	docker_running && probe docker "$HOST"
}

docker_start() {
	docker_init
	resume_pid "$D/run.pid" # a paused daemon would never answer
	if docker_running; then
		wait_docker "$(cat "$D/run.pid")"
		return
	fi
	# Leftovers of a killed daemon (its containerd, a stale pid file or socket) block a new one.
	# shellcheck disable=SC2046
	stop_pids "$STOP_TIMEOUT" $(pids_under "$D")
	rm -f "$D/docker.sock" "$D/pid" "$D/exec/containerd/containerd.pid"
	command -v dockerd >/dev/null || die "dockerd not found (apt-get install docker.io)"
	echo "==== dockerd start $(date -u +%FT%TZ)" >>"$D/dockerd.log"
	setsid dockerd --host "$HOST" --data-root "$D/root" --exec-root "$D/exec" --pidfile "$D/pid" \
		--iptables=false --ip6tables=false --bridge=none --storage-driver=vfs \
		</dev/null >>"$D/dockerd.log" 2>&1 &
	echo $! >"$D/run.pid"
	wait_docker $!
}

wait_docker() { wait_answer dockerd "$1" "$D/dockerd.log" "$HOST" docker "$HOST"; }

docker_stop() {
	docker_init
	local pid
	pid=$(cat "$D/run.pid" 2>/dev/null || true)
	if alive "$pid"; then stop_pids "$STOP_TIMEOUT" "$pid"; fi
	# dockerd stops the containerd it started; a killed one leaves it behind.
	# shellcheck disable=SC2046
	stop_pids 10 $(pids_under "$D")
	rm -f "$D/run.pid"
	! probe docker "$HOST" || die "dockerd still answers on $HOST after stop"
}

docker_pause() {
	docker_init
	pause_pid "$D/run.pid"
}

docker_resume() {
	docker_init
	resume_pid "$D/run.pid"
	docker_running || die "dockerd is not running"
	wait_docker "$(cat "$D/run.pid")"
}

# ---- MinIO -----------------------------------------------------------------------------------

minio_init() {
	M=$STATE/minio
	[[ -r $M/env ]] || die "$M/env missing (parts.sh minio STATEDIR configure writes it)"
	# shellcheck disable=SC1091
	source "$M/env" # MINIO_BIN, MINIO_PORT, MINIO_ROOT_USER, MINIO_ROOT_PASSWORD
	URL=http://127.0.0.1:$MINIO_PORT/minio/health/ready
}

# minio_configure BIN PORT USER: writes STATEDIR/minio/env, which every other action reads, with
# a fresh random password (it reaches no process argument: MinIO takes it from its environment).
minio_configure() {
	(($# == 3)) || die "usage: parts.sh minio STATEDIR configure MINIO_BIN PORT ROOT_USER"
	mkdir -p "$STATE/minio"
	cat >"$STATE/minio/env" <<EOT
MINIO_BIN=$1
MINIO_PORT=$2
MINIO_ROOT_USER=$3
MINIO_ROOT_PASSWORD=$3-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
EOT
}

minio_running() { alive "$(cat "$M/run.pid" 2>/dev/null)"; }

minio_status() {
	minio_init
	minio_running && probe http "$URL"
}

minio_start() {
	minio_init
	resume_pid "$M/run.pid"
	if minio_running; then
		wait_minio "$(cat "$M/run.pid")"
		return
	fi
	# shellcheck disable=SC2046
	stop_pids "$STOP_TIMEOUT" $(pids_under "$M")
	mkdir -p "$M/data"
	echo "==== minio start $(date -u +%FT%TZ)" >>"$M/minio.log"
	MINIO_ROOT_USER=$MINIO_ROOT_USER MINIO_ROOT_PASSWORD=$MINIO_ROOT_PASSWORD \
		MINIO_BROWSER=off MINIO_UPDATE=off MINIO_CI_CD=1 \
		setsid "$MINIO_BIN" server "$M/data" --address "127.0.0.1:$MINIO_PORT" --quiet \
		</dev/null >>"$M/minio.log" 2>&1 &
	echo $! >"$M/run.pid"
	wait_minio $!
}

wait_minio() { wait_answer minio "$1" "$M/minio.log" "$URL" http "$URL"; }

minio_stop() {
	minio_init
	local pid
	pid=$(cat "$M/run.pid" 2>/dev/null || true)
	if alive "$pid"; then stop_pids "$STOP_TIMEOUT" "$pid"; fi
	# shellcheck disable=SC2046
	stop_pids 10 $(pids_under "$M")
	rm -f "$M/run.pid"
	! probe http "$URL" || die "minio still answers on $URL after stop"
}

minio_pause() {
	minio_init
	pause_pid "$M/run.pid"
}

minio_resume() {
	minio_init
	resume_pid "$M/run.pid"
	minio_running || die "minio is not running"
	wait_minio "$(cat "$M/run.pid")"
}

minio_kill() {
	minio_init
	local pid
	pid=$(cat "$M/run.pid" 2>/dev/null || true)
	alive "$pid" || die "minio is not running"
	kill -KILL "$pid"
	local i
	for ((i = 0; i < 100; i++)); do
		alive "$pid" || break
		sleep 0.1
	done
	! alive "$pid" || die "minio $pid survived SIGKILL"
	rm -f "$M/run.pid"
}

# ---- swtpm (a TPM 2.0 simulator, SPEC §14) -----------------------------------------------------

swtpm_init() {
	W=$STATE/swtpm
	SOCK=$W/sock
	mkdir -p "$W"
}

swtpm_running() { alive "$(cat "$W/run.pid" 2>/dev/null)"; }

swtpm_status() {
	swtpm_init
	swtpm_running && probe tpm "unix://$SOCK"
}

swtpm_start() {
	swtpm_init
	if swtpm_running; then
		wait_swtpm "$(cat "$W/run.pid")"
		return
	fi
	# shellcheck disable=SC2046
	stop_pids "$STOP_TIMEOUT" $(pids_under "$W")
	rm -f "$SOCK" "$SOCK.ctrl"
	command -v swtpm >/dev/null || die "swtpm not found (apt-get install swtpm swtpm-tools)"
	echo "==== swtpm start $(date -u +%FT%TZ)" >>"$W/swtpm.log"
	setsid swtpm socket --tpm2 --tpmstate "dir=$W" --server "type=unixio,path=$SOCK" \
		--ctrl "type=unixio,path=$SOCK.ctrl" --flags not-need-init,startup-clear \
		</dev/null >>"$W/swtpm.log" 2>&1 &
	echo $! >"$W/run.pid"
	wait_swtpm $!
}

wait_swtpm() { wait_answer swtpm "$1" "$W/swtpm.log" "$SOCK" tpm "unix://$SOCK"; }

swtpm_stop() {
	swtpm_init
	local pid
	pid=$(cat "$W/run.pid" 2>/dev/null || true)
	if alive "$pid"; then stop_pids "$STOP_TIMEOUT" "$pid"; fi
	# shellcheck disable=SC2046
	stop_pids 10 $(pids_under "$W")
	rm -f "$W/run.pid"
	! probe tpm "unix://$SOCK" || die "swtpm still answers on $SOCK after stop"
}

# ---- stale runs ------------------------------------------------------------------------------

# unmount_under DIR: a daemon killed with -9 may leave mounts below its exec/data root, and a
# killed test its small tmpfs disks (testenv.Tmpfs mounts them under the state dir). /proc/mounts
# writes a space in a path as \040: decode it before calling umount.
unmount_under() {
	local dir=$1 mnt
	awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r mnt; do
		mnt=$(printf '%b' "$mnt")
		umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
	done
}

reap_stale() {
	local prefix=$1 d owner cmd
	for d in "$prefix"*/; do
		[[ -d $d ]] || continue
		d=${d%/}
		owner=$(cat "$d/owner.pid" 2>/dev/null || true)
		if alive "$owner"; then
			cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$owner/cmdline" || true)
			[[ $cmd == *test.sh* ]] && continue # a run in progress
		fi
		echo "parts.sh: cleaning up stale test state $d" >&2
		# shellcheck disable=SC2046
		stop_pids "$STOP_TIMEOUT" $(pids_under "$d")
		unmount_under "$d"
		rm -rf "$d"
	done
}

# ---- main ------------------------------------------------------------------------------------

case "${1:-}" in
reap-stale)
	[[ $# -eq 2 ]] || die "usage: parts.sh reap-stale PREFIX"
	reap_stale "$2"
	;;
docker | minio | swtpm)
	[[ $# -ge 3 ]] || die "usage: parts.sh $1 STATEDIR start|stop|status|pause|resume"
	STATE=$(cd "$2" && pwd) || die "no state dir $2"
	case $3 in
	configure)
		declare -F "$1_$3" >/dev/null || die "$1 has no action $3"
		"$1_$3" "${@:4}"
		;;
	start | stop | status | pause | resume | kill)
		[[ $# -eq 3 ]] || die "usage: parts.sh $1 STATEDIR $3"
		# Without it every probe fails, and start would wait START_TIMEOUT for nothing.
		[[ -x $STATE/bin/testprobe ]] || die "$STATE/bin/testprobe is missing (go build -o $STATE/bin/ ./internal/testenv/testprobe)"
		declare -F "$1_$3" >/dev/null || die "$1 has no action $3"
		"$1_$3"
		;;
	*) die "unknown action $3 (start|stop|status|pause|resume)" ;;
	esac
	;;
*) die "usage: parts.sh docker|minio|swtpm STATEDIR start|stop|status (docker, minio: also pause|resume), or parts.sh reap-stale PREFIX" ;;
esac
