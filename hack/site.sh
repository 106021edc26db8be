# shellcheck shell=bash
# The test SLURM site's hosts and network (sourced after lib.sh by slurm-up.sh,
# slurm-down.sh, site-fault.sh and foreign-jobs.sh): names, addresses, network
# namespaces, and how a daemon is started "on" a host.
# shellcheck source=hack/node.sh
. "$HACK_DIR/node.sh"

# site_vars SUITE: names and addresses of SUITE's site.
site_vars() {
  SUITE=$1
  case $SUITE in
    trixie) SUBNET=172.30.1 ;;
    sid) SUBNET=172.30.2 ;;
    *) die "unknown suite $SUITE (trixie or sid)" ;;
  esac
  CLUSTER=$SUITE
  STATE_DIR=$SLURMLAB_STATE/slurm-$SUITE
  ETC=$STATE_DIR/etc RUN=$STATE_DIR/run LOGS=$STATE_DIR/log PIDS=$STATE_DIR/pids MUNGE=$STATE_DIR/munge
  BRIDGE=sl-$SUITE
  HOST_IP=$SUBNET.1
  HEAD=$SUITE-head HEAD_IP=$SUBNET.2
  NODES=("$SUITE-node1" "$SUITE-node2")
  NODE_IPS=("$SUBNET.11" "$SUBNET.12")
  HOSTS=("$HEAD" "${NODES[@]}")
  HOST_IPS=("$HEAD_IP" "${NODE_IPS[@]}")
}

netns_of() { echo "sl-$1"; }          # network namespace of host $1
# Host-side veth name (at most 15 characters): tx-head, sd-node1, ...
veth_of() { local h=$1; echo "${SUITE:0:1}${SUITE: -1}-${h#"$SUITE"-}"; }
ip_of() {
  local i
  for i in "${!HOSTS[@]}"; do [ "${HOSTS[$i]}" = "$1" ] && { echo "${HOST_IPS[$i]}"; return; }; done
  die "no host $1 in site $SUITE"
}

# hosts_block_set SUITE LINES: replace this site's marked block in /etc/hosts (flock: two
# sites come up in parallel).
hosts_block_set() {
  local begin="# slurmlab site $1 begin" end="# slurmlab site $1 end" lines=$2
  (
    flock 9
    local tmp
    tmp=$(mktemp)
    sed "/^$begin\$/,/^$end\$/d" /etc/hosts >"$tmp"
    if [ -n "$lines" ]; then printf '%s\n%s\n%s\n' "$begin" "$lines" "$end" >>"$tmp"; fi
    # Overwrite in place: /etc/hosts may be a bind mount that rename would not replace.
    cat "$tmp" >/etc/hosts
    rm -f "$tmp"
  ) 9>"$HOSTS_LOCK"
}

# site_network_up: the bridge, one network namespace per host, the names in /etc/hosts.
site_network_up() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "network: bridge $BRIDGE $HOST_IP/24"
    ip link add "$BRIDGE" type bridge
    ip addr add "$HOST_IP/24" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
  local i h ns veth lines=""
  for i in "${!HOSTS[@]}"; do
    h=${HOSTS[$i]} ns=$(netns_of "$h") veth=$(veth_of "$h")
    [ -e "/run/netns/$ns" ] || ip netns add "$ns"
    if ! ip link show "$veth" >/dev/null 2>&1; then
      ip link add "$veth" type veth peer name eth0 netns "$ns"
      ip netns exec "$ns" ip addr add "${HOST_IPS[$i]}/24" dev eth0
    fi
    ip link set "$veth" master "$BRIDGE" up
    ip netns exec "$ns" ip link set lo up
    ip netns exec "$ns" ip link set eth0 up
    # Pods (on the Kubernetes node's own bridge) reach the hosts and get their answers
    # back through the Kubernetes side. Only that network: a default route would turn
    # lookups of unreachable addresses (DNS) from instant errors into timeouts.
    ip netns exec "$ns" ip route replace "$POD_CIDR" via "$HOST_IP"
    lines+="${HOST_IPS[$i]} $h"$'\n'
  done
  hosts_block_set "$SUITE" "${lines%$'\n'}"
}

# site_network_down: undo site_network_up (no process may be left in the namespaces).
site_network_down() {
  local h ns
  for h in "${HOSTS[@]}"; do
    ns=$(netns_of "$h")
    [ -e "/run/netns/$ns" ] && ip netns delete "$ns"
    ip link show "$(veth_of "$h")" >/dev/null 2>&1 && ip link delete "$(veth_of "$h")"
  done
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
  hosts_block_set "$SUITE" ""
}

# start_daemon NAME HOST CMD...: run CMD in the chroot "on" HOST (its network namespace,
# a UTS namespace named HOST), or on the Kubernetes side when HOST is empty. setsid, ip
# netns exec, unshare and chroot all exec, so $! is the daemon's own PID.
start_daemon() {
  local name=$1 host=$2; shift 2
  if pid_alive "$name" "$PIDS" "$STATE_DIR"; then return; fi
  log "starting $name${host:+ on $host}"
  if [ -z "$host" ]; then
    setsid chroot "$ROOT" "$@" >>"$LOGS/$name.out" 2>&1 </dev/null &
  else
    setsid ip netns exec "$(netns_of "$host")" unshare --uts \
      bash -c 'hostname "$1" && shift && exec chroot "$@"' _ "$host" "$ROOT" "$@" \
      >>"$LOGS/$name.out" 2>&1 </dev/null &
  fi
  echo $! >"$PIDS/$name.pid"
}

node_ready() {
  chroot "$ROOT" env SLURM_CONF="$ETC/slurm.conf" sinfo -h -n "$1" -o %T | grep -Eq '^(idle|mixed|allocated)'
}

# host_pids HOST: every process on HOST (in its network namespace).
host_pids() { ip netns pids "$(netns_of "$1")" 2>/dev/null; }
