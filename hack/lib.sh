# shellcheck shell=bash
# Common settings for the local environment scripts (sourced, not run).
#
# Two directories:
#   SLURMLAB_CACHE  slow things built once and kept between runs (kube-apiserver
#                   binary, debootstrap chroots with Slurm + Jupyter, host venv).
#                   Default ${XDG_CACHE_HOME:-$HOME/.cache}/slurmlab. Delete it to rebuild.
#   SLURMLAB_STATE  what one running environment owns: etcd data, certs, tokens,
#                   Slurm state, logs, PID files, the env file. Default /tmp/slurmlab.
set -euo pipefail

SLURMLAB_CACHE=${SLURMLAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slurmlab}
SLURMLAB_STATE=${SLURMLAB_STATE:-/tmp/slurmlab}
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$HACK_DIR")
# cargo's build cache lives outside the clone too (a fresh clone builds incrementally).
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$SLURMLAB_CACHE/target}
export SLURMLAB_CACHE SLURMLAB_STATE CARGO_TARGET_DIR

log() { echo "[${LOG_TAG:-hack} +${SECONDS}s] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "the local environment needs root (chroots, mounts, apt-get); run as root"

# apt_install PKG...: install the Debian packages that are missing (one apt-get update per run).
apt_install() {
  local missing=() p
  for p in "$@"; do dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  if [ -z "${_SLURMLAB_APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
    _SLURMLAB_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# pid_alive NAME DIR: true when DIR/NAME.pid names a live process whose command line
# (or environment) mentions MARK (default: SLURMLAB_STATE), so a recycled PID is never taken for ours.
pid_alive() {
  local f=$2/$1.pid pid mark=${3:-$SLURMLAB_STATE}
  [ -s "$f" ] || return 1
  pid=$(cat "$f")
  [ -r "/proc/$pid/cmdline" ] || return 1
  # The command line, or else the environment (a daemon told its config by SLURM_CONF).
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$mark" ||
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qF -- "$mark"
}

# start_recorded NAME DIR CMD...: unless DIR/pids/NAME.pid is alive (marked with DIR),
# start CMD in its own session, logging to DIR/log/NAME.log, and record its PID.
start_recorded() {
  local name=$1 dir=$2; shift 2
  if pid_alive "$name" "$dir/pids" "$dir"; then return; fi
  log "starting $name"
  mkdir -p "$dir/pids" "$dir/log"
  setsid "$@" >>"$dir/log/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/pids/$name.pid"
}

# stop_pid NAME DIR: SIGTERM the recorded process, SIGKILL after 10 s, forget it.
stop_pid() {
  local name=$1 dir=$2 pid
  if pid_alive "$name" "$dir" "${3:-$SLURMLAB_STATE}"; then
    pid=$(cat "$dir/$name.pid")
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then log "$name did not exit, SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$dir/$name.pid"
}

# wait_for DESC SECONDS CMD...: poll CMD every 0.5 s.
# /etc/hosts is rewritten in place under this lock (hack/site.sh) while sites and the
# node come up in parallel; hosts_copy_to FILE copies it under the same lock (a copy taken
# mid-rewrite can be empty).
HOSTS_LOCK=/run/slurmlab-hosts.lock
hosts_copy_to() {
  (
    flock 9
    cp /etc/hosts "$1"
  ) 9>"$HOSTS_LOCK"
}

wait_for() {
  local desc=$1 t=$2; shift 2
  for _ in $(seq 1 $((t * 2))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  log "timeout waiting for $desc"
  return 1
}
