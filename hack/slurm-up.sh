#!/usr/bin/env bash
# Brings up one real single-node Slurm cluster (slurmctld + slurmd + slurmrestd with JWT
# auth, munge) on 127.0.0.1 from a Debian suite's own packages, in a debootstrap chroot,
# without touching the host's packages. Batch jobs run inside the chroot, so the chroot
# also holds a Jupyter venv (jupyter_server, ipykernel, matplotlib, numpy) built with
# the chroot's own python: jobs start real Jupyter servers and kernels.
#
#   hack/slurm-up.sh trixie   Slurm 24.11, REST v0.0.40-v0.0.42, ports 6817/6818/6820
#   hack/slurm-up.sh sid      Slurm 26.05, REST v0.0.42-v0.0.45, ports 7817/7818/7820
#
# Cached: the chroot ($SLURMLAB_CACHE/chroot-SUITE, ~500 MiB, ~1 min to build once).
# Per run: $SLURMLAB_STATE/slurm-SUITE (config, keys, spool, logs, PIDs, env), which is
# bind-mounted into the chroot at the same path so every path is valid on both sides.
# Idempotent: daemons already running are left alone. Stop with hack/slurm-down.sh SUITE.
SUITE=${1:?usage: slurm-up.sh trixie|sid}
LOG_TAG=slurm-$SUITE
# shellcheck source=hack/lib.sh
. "$(dirname "$0")/lib.sh"

case $SUITE in
  trixie) PORT_BASE=6800 ;;
  sid) PORT_BASE=7800 ;;
  *) die "unknown suite $SUITE (trixie or sid)" ;;
esac
CTLD_PORT=$((PORT_BASE + 17)) SLURMD_PORT=$((PORT_BASE + 18)) REST_PORT=$((PORT_BASE + 20))
ROOT=$SLURMLAB_CACHE/chroot-$SUITE
STATE_DIR=$SLURMLAB_STATE/slurm-$SUITE
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
JOB_USERS=(slurmjob alice bob)   # slurmjob is the default SLURM user of the test clusters
REST_USER=slurmrestd
CLUSTER=$SUITE
JUPYTER_VENV=/opt/jupyter
# More CPUs than the VM has (config_overrides) so several Jupyter servers fit at once.
NODE_CPUS=${SLURM_NODE_CPUS:-8}
NODE_MEMORY_MB=${SLURM_NODE_MEMORY_MB:-16000}

ETC=$STATE_DIR/etc RUN=$STATE_DIR/run LOGS=$STATE_DIR/log PIDS=$STATE_DIR/pids MUNGE=$STATE_DIR/munge
mkdir -p "$STATE_DIR" "$PIDS"
echo "$ROOT" >"$STATE_DIR/chroot"

# Every mount is recorded in STATE/mounts so slurm-down.sh undoes exactly what we did.
mount_once() {
  local dst=$1; shift
  mkdir -p "$dst"
  mountpoint -q "$dst" && return 0
  mount "$@" "$dst"
  echo "$dst" >>"$STATE_DIR/mounts"
}
mount_runtime() {
  mount_once "$ROOT/proc" -t proc proc
  mount_once "$ROOT/sys" -t sysfs sysfs
  mount_once "$ROOT/dev" --bind /dev
  mount_once "$ROOT/dev/pts" --bind /dev/pts
}
inroot() { chroot "$ROOT" "$@"; }

# ------------------------------------------------------------ cached chroot --
if [ ! -e "$ROOT/.slurm-ready" ]; then
  apt_install debootstrap
  if [ ! -x "$ROOT/usr/bin/apt-get" ]; then
    log "debootstrap $SUITE -> $ROOT (about a minute)"
    rm -rf "$ROOT"
    debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >&2
  fi
  # Maintainer scripts must never start services inside the chroot.
  printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
  chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  # sid's Release carries Valid-Until; a mirror snapshot older than the clock makes
  # `apt-get update` fail with "Release file ... is expired". Stable suites have none.
  if grep -qs '^Valid-Until:' "$ROOT"/var/lib/apt/lists/*Release; then
    echo 'Acquire::Check-Valid-Until "false";' >"$ROOT/etc/apt/apt.conf.d/99no-check-valid-until"
  fi
  mount_runtime
  log "installing Slurm into the chroot"
  inroot env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  inroot env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurmrestd slurm-client munge slurm-wlm-jwt-plugin libjwt2 \
    util-linux curl ca-certificates python3-venv procps >&2
  inroot apt-get clean
  touch "$ROOT/.slurm-ready"
fi
mount_runtime
cp /etc/hosts "$ROOT/etc/hosts"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
chmod 1777 "$ROOT/tmp"

# The host's extra CA certificates (egress proxies) so pip inside trusts the same registries.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$ROOT/usr/local/share/ca-certificates"
  if ! diff -rq /usr/local/share/ca-certificates "$ROOT/usr/local/share/ca-certificates" >/dev/null 2>&1; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
    inroot update-ca-certificates >/dev/null 2>&1 || true
  fi
fi

# The "compute node" software: a Jupyter venv built with the chroot's python.
JUPYTER_PKGS=(jupyter_server ipykernel matplotlib numpy)
if [ "$(cat "$ROOT$JUPYTER_VENV/.slurmlab-pkgs" 2>/dev/null)" != "${JUPYTER_PKGS[*]}" ]; then
  log "creating $JUPYTER_VENV in the chroot (${JUPYTER_PKGS[*]})"
  rm -rf "${ROOT:?}$JUPYTER_VENV"
  inroot python3 -m venv "$JUPYTER_VENV"
  # Host-only pip settings (a local wheel dir) make no sense inside the chroot.
  inroot env -u PIP_FIND_LINKS "$JUPYTER_VENV/bin/pip" install -q --only-binary=:all: "${JUPYTER_PKGS[@]}" >&2
  echo "${JUPYTER_PKGS[*]}" >"$ROOT$JUPYTER_VENV/.slurmlab-pkgs"
fi

# -------------------------------------------------------------------- users --
# Reuse the host UID of the same name (if free in the chroot) so host `ps` reads right.
same_uid() { local u; u=$(id -u "$1" 2>/dev/null) && ! inroot getent passwd "$u" >/dev/null && echo "--uid $u"; }
for u in "${JOB_USERS[@]}"; do
  # shellcheck disable=SC2046
  inroot id "$u" >/dev/null 2>&1 || inroot useradd $(same_uid "$u") --create-home --shell /bin/bash "$u"
done
# shellcheck disable=SC2046
inroot id "$REST_USER" >/dev/null 2>&1 || inroot useradd $(same_uid "$REST_USER") --system \
  --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin --user-group "$REST_USER"

# ------------------------------------------------- state dir in the chroot --
mount_once "$ROOT$STATE_DIR" --bind "$STATE_DIR"
mkdir -p "$ETC" "$RUN" "$LOGS" "$STATE_DIR/spool/ctld" "$STATE_DIR/spool/d" "$MUNGE"
chmod 0755 "$SLURMLAB_STATE" "$STATE_DIR" "$ETC" "$RUN" "$LOGS"
chmod 0700 "$STATE_DIR/spool/ctld"
# The job script is exec'ed from slurmd's spool as the job user: it must stay 0755.
chmod 0755 "$STATE_DIR/spool/d"
MUNGE_UID=$(inroot id -u munge) MUNGE_GID=$(inroot id -g munge)
chown "$MUNGE_UID:$MUNGE_GID" "$MUNGE"; chmod 0755 "$MUNGE"

[ -s "$MUNGE/munge.key" ] || dd if=/dev/urandom of="$MUNGE/munge.key" bs=1024 count=1 status=none
chown "$MUNGE_UID:$MUNGE_GID" "$MUNGE/munge.key"; chmod 0600 "$MUNGE/munge.key"
[ -s "$ETC/jwt_hs256.key" ] || dd if=/dev/urandom of="$ETC/jwt_hs256.key" bs=32 count=1 status=none
chmod 0600 "$ETC/jwt_hs256.key"

# --------------------------------------------------------------- slurm.conf --
NODE=$(hostname -s)
SLURM_VERSION=$(inroot dpkg-query -W -f '${Version}' slurmctld)
cat >"$ETC/slurm.conf.new" <<CONF
# generated by hack/slurm-up.sh ($SUITE, Slurm $SLURM_VERSION): one node, loopback only
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
# NoInAddrAny alone does not cover slurmctld.
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
MailProg=/bin/true
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE/munge.socket.2
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$ETC/jwt_hs256.key
StateSaveLocation=$STATE_DIR/spool/ctld
SlurmdSpoolDir=$STATE_DIR/spool/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$ETC/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
# Test-sized scheduling cycles: pending jobs get their reason (Resources, Priority) and
# start within seconds, not the production default of a minute.
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MinJobAge=300
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$NODE_CPUS RealMemory=$NODE_MEMORY_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE DefMemPerCPU=500 State=UP
PartitionName=short Nodes=ALL MaxTime=60 DefMemPerCPU=500 State=UP
CONF
mv "$ETC/slurm.conf.new" "$ETC/slurm.conf"; chmod 0644 "$ETC/slurm.conf"
: >"$ETC/plugstack.conf"
# No cgroups: VMs and containers here have no delegated cgroup v2 tree.
echo "CgroupPlugin=disabled" >"$ETC/cgroup.conf"
CONF=$ETC/slurm.conf
ctl() { inroot env SLURM_CONF="$CONF" "$@"; }

# ------------------------------------------------------------------ daemons --
# setsid and chroot both exec, so $! is the daemon's own PID.
start() {
  local name=$1; shift
  if pid_alive "$name" "$PIDS" "$STATE_DIR"; then return; fi
  log "starting $name"
  setsid chroot "$ROOT" "$@" >>"$LOGS/$name.out" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}
show_logs() { tail -n 30 "$LOGS"/*.log "$LOGS"/*.out >&2 || true; }

start munged /usr/bin/setpriv --reuid=munge --regid=munge --init-groups \
  /usr/sbin/munged --foreground --key-file="$MUNGE/munge.key" --socket="$MUNGE/munge.socket.2" \
  --pid-file="$MUNGE/munged.pid" --log-file="$MUNGE/munged.log" --seed-file="$MUNGE/munged.seed"
wait_for munged 20 test -S "$MUNGE/munge.socket.2" || { show_logs; exit 1; }

start slurmctld /usr/sbin/slurmctld -D -i -f "$CONF"
wait_for slurmctld 30 ctl scontrol ping || { show_logs; exit 1; }

start slurmd env SLURM_CONF="$CONF" /usr/sbin/slurmd -D -f "$CONF"
node_ready() { ctl sinfo -h -n "$NODE" -o %T | grep -Eq '^(idle|mixed|allocated)'; }
wait_for "node $NODE idle" 60 node_ready || { show_logs; exit 1; }

# -s openapi/slurmctld: openapi/slurmdbd needs slurmdbd. slurmrestd refuses to run as
# root or SlurmUser, hence -u/-g.
start slurmrestd env SLURM_JWT=daemon SLURM_CONF="$CONF" \
  /usr/sbin/slurmrestd -f "$CONF" -a rest_auth/jwt -s openapi/slurmctld \
  -u "$REST_USER" -g "$REST_USER" "127.0.0.1:$REST_PORT"

TOKEN=$(ctl scontrol token username=slurmjob lifespan=86400 | sed -n 's/^SLURM_JWT=//p')
[ -n "$TOKEN" ] || die "could not mint a token"
URL=http://127.0.0.1:$REST_PORT
# Served REST versions = installed data_parser plugins (data_parser_v0_0_42.so -> v0.0.42).
API_VERSIONS=$(find "$ROOT/usr/lib" -path '*slurm*' -name 'data_parser_v0_0_*.so' -printf '%f\n' |
  sed -n 's/^data_parser_v0_0_\([0-9]*\)\.so$/v0.0.\1/p' | sort -t. -k3n | paste -sd, -)
rest_ping() {
  curl -fsS -H "X-SLURM-USER-NAME: slurmjob" -H "X-SLURM-USER-TOKEN: $TOKEN" "$URL/slurm/${API_VERSIONS##*,}/ping"
}
wait_for slurmrestd 30 rest_ping || { show_logs; exit 1; }

umask 077
printf '%s\n' "$TOKEN" >"$STATE_DIR/token"
cat >"$STATE_DIR/env" <<ENV
SLURM_${SUITE^^}_URL=$URL
SLURM_${SUITE^^}_VERSIONS=$API_VERSIONS
SLURM_${SUITE^^}_SLURM_VERSION=$SLURM_VERSION
SLURM_${SUITE^^}_USER=slurmjob
SLURM_${SUITE^^}_TOKEN_FILE=$STATE_DIR/token
SLURM_${SUITE^^}_JWT_KEY=$ETC/jwt_hs256.key
SLURM_${SUITE^^}_CONF=$CONF
SLURM_${SUITE^^}_CHROOT=$ROOT
SLURM_${SUITE^^}_JUPYTER_VENV=$JUPYTER_VENV
SLURM_${SUITE^^}_NODE=$NODE
ENV
log "up: $URL (Slurm $SLURM_VERSION, REST $API_VERSIONS)"
