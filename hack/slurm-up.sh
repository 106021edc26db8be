#!/usr/bin/env bash
# Brings up one real multi-host, multi-user SLURM site from a Debian suite's own packages,
# shaped like a shared production cluster rather than a laptop:
#
#   host (Kubernetes side) 172.30.N.1 on bridge sl-SUITE
#    ├─ SUITE-head   172.30.N.2   slurmctld, slurmdbd + MariaDB, slurmrestd (JWT)
#    ├─ SUITE-node1  172.30.N.11  slurmd
#    └─ SUITE-node2  172.30.N.12  slurmd
#
# Each host is its own network namespace (sl-SUITE-HOST, a veth on the bridge) and its
# daemons run in their own UTS namespace with the host's name, so slurmd, batch jobs and
# the Jupyter servers they start see `hostname` = their node and bind to its address; the
# names resolve through a marked block in /etc/hosts (host and chroot), removed again by
# slurm-down.sh. Nothing is routed off the machine. Every host shares one debootstrap
# chroot (the "shared filesystem": software, /home, the state dir).
#
# Users: slurmjob (the default job user of the tests, a SLURM operator so it may read
# every job under PrivateData), alice and bob (tenants, accounts tenant-a and tenant-b),
# carol and dave (other people: hack/foreign-jobs.sh submits as them, account others),
# eve (a UNIX account with no SLURM association: refused by accounting).
# PrivateData=jobs,usage: a non-operator sees only its own jobs; accounting is enforced
# (associations, limits, QOS), so a user without an association cannot submit.
#
#   hack/slurm-up.sh trixie   Slurm 24.11, REST v0.0.40-v0.0.42, 172.30.1.0/24
#   hack/slurm-up.sh sid      Slurm 26.05, REST v0.0.42-v0.0.45, 172.30.2.0/24
#
# Cached: the chroot ($SLURMLAB_CACHE/chroot-SUITE, ~700 MiB, a few minutes once).
# Per run: $SLURMLAB_STATE/slurm-SUITE (config, keys, spool, MariaDB data, logs, PIDs,
# env), bind-mounted into the chroot at the same path so every path is valid on both sides.
# Idempotent: daemons already running are left alone. Stop with hack/slurm-down.sh SUITE.
SUITE=${1:?usage: slurm-up.sh trixie|sid}
LOG_TAG=slurm-$SUITE
# shellcheck source=hack/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=hack/site.sh
. "$HACK_DIR/site.sh"
# shellcheck source=hack/chroot.sh
. "$HACK_DIR/chroot.sh"
site_vars "$SUITE"

ROOT=$SLURMLAB_CACHE/chroot-$SUITE
JOB_USERS=(slurmjob alice bob carol dave eve)
REST_USER=slurmrestd
JUPYTER_VENV=/opt/jupyter
# More CPUs than the VM has (config_overrides) so several Jupyter servers fit at once.
NODE_CPUS=${SLURM_NODE_CPUS:-8}
NODE_MEMORY_MB=${SLURM_NODE_MEMORY_MB:-16000}
DB_PASSWORD_FILE=$STATE_DIR/etc/db-password

mkdir -p "$STATE_DIR" "$PIDS"
echo "$ROOT" >"$STATE_DIR/chroot"

# Every mount is recorded in STATE/mounts so slurm-down.sh undoes exactly what we did.
MOUNTS=$STATE_DIR/mounts
inroot() { chroot "$ROOT" "$@"; }

# ------------------------------------------------------------ cached chroot --
PACKAGES=(slurmctld slurmd slurmdbd slurmrestd slurm-client munge slurm-wlm-jwt-plugin libjwt2
  mariadb-server util-linux curl ca-certificates python3-venv procps iproute2)
chroot_ensure "$ROOT" "$SUITE" "${PACKAGES[@]}"

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
  # Each user's home (and so its notebooks) is its own.
  chmod 0700 "$ROOT/home/$u"
done
# shellcheck disable=SC2046
inroot id "$REST_USER" >/dev/null 2>&1 || inroot useradd $(same_uid "$REST_USER") --system \
  --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin --user-group "$REST_USER"

# ------------------------------------------------------------------ network --
site_network_up
# The chroot resolves the site's names like the host does.
hosts_copy_to "$ROOT/etc/hosts"

# ------------------------------------------------- state dir in the chroot --
chroot_mount "$ROOT$STATE_DIR" --bind "$STATE_DIR"
mkdir -p "$ETC" "$RUN" "$LOGS" "$STATE_DIR/spool/ctld" "$STATE_DIR/spool/dbd" "$MUNGE"
chmod 0755 "$SLURMLAB_STATE" "$STATE_DIR" "$ETC" "$RUN" "$LOGS"
chmod 0700 "$STATE_DIR/spool/ctld" "$STATE_DIR/spool/dbd"
# The job script is exec'ed from slurmd's spool as the job user: it must stay 0755.
for n in "${NODES[@]}"; do mkdir -p "$STATE_DIR/spool/d-$n"; chmod 0755 "$STATE_DIR/spool/d-$n"; done
# Some clients (sacctmgr's slurmdbd connection) ignore AuthInfo and use munge's default
# socket: point it at ours.
ln -sfn "$MUNGE" "$ROOT/run/munge"
MUNGE_UID=$(inroot id -u munge) MUNGE_GID=$(inroot id -g munge)
chown "$MUNGE_UID:$MUNGE_GID" "$MUNGE"; chmod 0755 "$MUNGE"

[ -s "$MUNGE/munge.key" ] || dd if=/dev/urandom of="$MUNGE/munge.key" bs=1024 count=1 status=none
chown "$MUNGE_UID:$MUNGE_GID" "$MUNGE/munge.key"; chmod 0600 "$MUNGE/munge.key"
[ -s "$ETC/jwt_hs256.key" ] || dd if=/dev/urandom of="$ETC/jwt_hs256.key" bs=32 count=1 status=none
chmod 0600 "$ETC/jwt_hs256.key"
[ -s "$DB_PASSWORD_FILE" ] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$DB_PASSWORD_FILE")

# --------------------------------------------------------------- slurm.conf --
SLURM_VERSION=$(inroot dpkg-query -W -f '${Version}' slurmctld)
node_lines() {
  local i
  for i in "${!NODES[@]}"; do
    echo "NodeName=${NODES[$i]} NodeAddr=${NODE_IPS[$i]} CPUs=$NODE_CPUS RealMemory=$NODE_MEMORY_MB State=UNKNOWN"
  done
}
cat >"$ETC/slurm.conf.new" <<CONF
# generated by hack/slurm-up.sh ($SUITE, Slurm $SLURM_VERSION): ${#NODES[@]} compute hosts on $SUBNET.0/24
ClusterName=$CLUSTER
SlurmctldHost=$HEAD($HEAD_IP)
SlurmctldPort=6817
SlurmdPort=6818
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
# %n: every compute host has its own spool, log and PID file on the shared filesystem.
SlurmdSpoolDir=$STATE_DIR/spool/d-%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$ETC/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$HEAD
AccountingStoragePort=6819
AccountingStorageEnforce=associations,limits,qos
# A shared site: users see only their own jobs and usage; operators see everything.
PrivateData=jobs,usage
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
# Test-sized scheduling cycles: pending jobs get their reason (Resources, Priority) and
# start within seconds, not the production default of a minute. max_rpc_cnt keeps the
# scheduler from starving RPCs while hack/foreign-jobs.sh keeps thousands of jobs queued.
SchedulerParameters=sched_interval=5,bf_interval=5,bf_max_job_test=200,default_queue_depth=100,max_rpc_cnt=64
# Room for hack/foreign-jobs.sh (20,000 queued jobs) and our own.
MaxJobCount=30000
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
# A dead compute host is DOWN (and its jobs NODE_FAIL) within about 20 s, not 5 minutes.
SlurmdTimeout=20
KillWait=5
MinJobAge=300
$(node_lines)
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE DefMemPerCPU=500 State=UP
PartitionName=short Nodes=ALL MaxTime=60 DefMemPerCPU=500 State=UP
CONF
mv "$ETC/slurm.conf.new" "$ETC/slurm.conf"; chmod 0644 "$ETC/slurm.conf"
: >"$ETC/plugstack.conf"
# No cgroups: VMs and containers here have no delegated cgroup v2 tree.
echo "CgroupPlugin=disabled" >"$ETC/cgroup.conf"

(umask 077; cat >"$ETC/slurmdbd.conf" <<CONF
# generated by hack/slurm-up.sh: accounting on $HEAD, MariaDB on the head's own loopback
DbdHost=$HEAD
DbdAddr=$HEAD_IP
DbdPort=6819
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE/munge.socket.2
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$ETC/jwt_hs256.key
PidFile=$RUN/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass=$(cat "$DB_PASSWORD_FILE")
StorageLoc=slurm_acct_db
CONF
)
CONF=$ETC/slurm.conf
ctl() { inroot env SLURM_CONF="$CONF" "$@"; }

# ------------------------------------------------------------------ daemons --
show_logs() { tail -n 30 "$LOGS"/*.log "$LOGS"/*.out >&2 || true; }

# munged serves every host through its socket on the shared filesystem.
start_daemon munged "" /usr/bin/setpriv --reuid=munge --regid=munge --init-groups \
  /usr/sbin/munged --foreground --key-file="$MUNGE/munge.key" --socket="$MUNGE/munge.socket.2" \
  --pid-file="$MUNGE/munged.pid" --log-file="$MUNGE/munged.log" --seed-file="$MUNGE/munged.seed"
wait_for munged 20 test -S "$MUNGE/munge.socket.2" || { show_logs; exit 1; }

# MariaDB on the head's loopback (its own network namespace: nothing else reaches it).
DB_DIR=$STATE_DIR/mysql
MYSQL_UID=$(inroot id -u mysql) MYSQL_GID=$(inroot id -g mysql)
if [ ! -d "$DB_DIR/mysql" ]; then
  log "initialising MariaDB in $DB_DIR"
  # A new accounting database is a new cluster: slurmctld's old state (its ClusterID)
  # would not match it.
  rm -rf "${STATE_DIR:?}/spool/ctld/"*
  mkdir -p "$DB_DIR"; chown "$MYSQL_UID:$MYSQL_GID" "$DB_DIR"; chmod 0700 "$DB_DIR"
  inroot mariadb-install-db --user=mysql --datadir="$DB_DIR" --skip-test-db \
    --auth-root-authentication-method=socket >"$LOGS/mariadb-install.out" 2>&1 || {
    tail -n 30 "$LOGS/mariadb-install.out" >&2; die "mariadb-install-db failed"; }
fi
mkdir -p "$RUN/mysqld"; chown "$MYSQL_UID:$MYSQL_GID" "$RUN/mysqld"
start_daemon mariadb "$HEAD" /usr/sbin/mariadbd --user=mysql --datadir="$DB_DIR" \
  --socket="$RUN/mysqld/mysqld.sock" --bind-address=127.0.0.1 --port=3306 \
  --pid-file="$RUN/mysqld/mysqld.pid" --log-error="$LOGS/mariadb.log" \
  --innodb-buffer-pool-size=64M --performance-schema=OFF --skip-log-bin
sql() { inroot mariadb --socket="$RUN/mysqld/mysqld.sock" -u root "$@"; }
wait_for mariadb 60 sql -e 'SELECT 1' || { show_logs; exit 1; }
PW=$(cat "$DB_PASSWORD_FILE")
sql <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$PW';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$PW';
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL

# slurmdbd reads slurmdbd.conf next to $SLURM_CONF.
start_daemon slurmdbd "$HEAD" env SLURM_CONF="$CONF" /usr/sbin/slurmdbd -D
wait_for slurmdbd 60 ctl sacctmgr -n show cluster || { show_logs; exit 1; }

# Associations: who may submit, under which account. `sacctmgr -i add` of something
# that exists says "Nothing new added" and fails; each item is added only when missing.
have() { [ -n "$(ctl sacctmgr -n -P show "$@" 2>/dev/null)" ]; }
have cluster "$CLUSTER" || ctl sacctmgr -i add cluster "$CLUSTER" >&2
for acct in lab tenant-a tenant-b others; do
  have account "$acct" || ctl sacctmgr -i add account "$acct" Cluster="$CLUSTER" >&2
done
declare -A ACCOUNT_OF=([slurmjob]=lab [alice]=tenant-a [bob]=tenant-b [carol]=others [dave]=others)
for u in "${!ACCOUNT_OF[@]}"; do
  have user "$u" || ctl sacctmgr -i add user "$u" Account="${ACCOUNT_OF[$u]}" Cluster="$CLUSTER" >&2
done
# The controller's service user reads job states for every tenant: an operator sees
# through PrivateData (a plain user would see only its own jobs).
ctl sacctmgr -i modify user slurmjob set AdminLevel=Operator >/dev/null 2>&1 || true

start_daemon slurmctld "$HEAD" /usr/sbin/slurmctld -D -i -f "$CONF"
wait_for slurmctld 60 ctl scontrol ping || { show_logs; exit 1; }

for n in "${NODES[@]}"; do
  start_daemon "slurmd-$n" "$n" env SLURM_CONF="$CONF" /usr/sbin/slurmd -D -f "$CONF"
done
for n in "${NODES[@]}"; do
  wait_for "node $n idle" 90 node_ready "$n" || { show_logs; exit 1; }
done

# -s: the slurmctld and the slurmdbd (/slurmdb/...) endpoints. slurmrestd refuses to run
# as root or SlurmUser, hence -u/-g.
start_daemon slurmrestd "$HEAD" env SLURM_JWT=daemon SLURM_CONF="$CONF" \
  /usr/sbin/slurmrestd -f "$CONF" -a rest_auth/jwt -s openapi/slurmctld,openapi/slurmdbd \
  -u "$REST_USER" -g "$REST_USER" "$HEAD_IP:6820"

TOKEN=$(ctl scontrol token username=slurmjob lifespan=86400 | sed -n 's/^SLURM_JWT=//p')
[ -n "$TOKEN" ] || die "could not mint a token"
URL=http://$HEAD_IP:6820
# Served REST versions = installed data_parser plugins (data_parser_v0_0_42.so -> v0.0.42).
API_VERSIONS=$(find "$ROOT/usr/lib" -path '*slurm*' -name 'data_parser_v0_0_*.so' -printf '%f\n' |
  sed -n 's/^data_parser_v0_0_\([0-9]*\)\.so$/v0.0.\1/p' | sort -t. -k3n | paste -sd, -)
rest_ping() {
  curl -fsS -H "X-SLURM-USER-NAME: slurmjob" -H "X-SLURM-USER-TOKEN: $TOKEN" "$URL/slurm/${API_VERSIONS##*,}/ping"
}
wait_for slurmrestd 30 rest_ping || { show_logs; exit 1; }

umask 077
printf '%s\n' "$TOKEN" >"$STATE_DIR/token"
P=SLURM_${SUITE^^}
cat >"$STATE_DIR/env" <<ENV
${P}_URL=$URL
${P}_VERSIONS=$API_VERSIONS
${P}_SLURM_VERSION=$SLURM_VERSION
${P}_USER=slurmjob
${P}_TENANTS=alice,bob
${P}_FOREIGN_USERS=carol,dave
${P}_TOKEN_FILE=$STATE_DIR/token
${P}_JWT_KEY=$ETC/jwt_hs256.key
${P}_CONF=$CONF
${P}_CHROOT=$ROOT
${P}_JUPYTER_VENV=$JUPYTER_VENV
${P}_HEAD=$HEAD
${P}_NODES=$(IFS=,; echo "${NODES[*]}")
${P}_NODE_IPS=$(IFS=,; echo "${NODE_IPS[*]}")
ENV
log "up: $URL (Slurm $SLURM_VERSION, REST $API_VERSIONS, nodes ${NODES[*]})"
