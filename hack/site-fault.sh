#!/usr/bin/env bash
# Faults on demand for the test SLURM site of hack/slurm-up.sh (tests call this too):
#
#   site-fault.sh SUITE kill-node NODE     SIGKILL every process on NODE (slurmd, job steps,
#                                          Jupyter servers): a node failure. slurmctld marks
#                                          it DOWN after SlurmdTimeout and fails its jobs.
#   site-fault.sh SUITE revive             start whatever daemon of the site is not running
#                                          (a killed node boots again; ReturnToService=2)
#   site-fault.sh SUITE restart DAEMON     stop DAEMON (slurmrestd, slurmctld, slurmdbd) and
#                                          start it again
#   site-fault.sh SUITE partition NODE     drop all traffic between NODE and the Kubernetes
#                                          side (the head still reaches it)
#   site-fault.sh SUITE heal NODE          undo partition
SUITE=${1:?usage: site-fault.sh SUITE kill-node|revive|restart|partition|heal [ARG]}
ACTION=${2:?action}
LOG_TAG=fault-$SUITE
# shellcheck source=hack/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=hack/site.sh
. "$HACK_DIR/site.sh"
site_vars "$SUITE"

node_arg() {
  local n=${1:?which node?}
  printf '%s\n' "${NODES[@]}" | grep -qx "$n" || die "$n is not a compute host of $SUITE (${NODES[*]})"
  echo "$n"
}

case $ACTION in
  kill-node)
    n=$(node_arg "${3:-}")
    pids=$(host_pids "$n")
    log "killing $n: $(echo $pids)"
    # shellcheck disable=SC2086
    [ -z "$pids" ] || kill -KILL $pids
    ;;
  revive) "$HACK_DIR/slurm-up.sh" "$SUITE" ;;
  restart)
    d=${3:?which daemon?}
    case $d in slurmrestd | slurmctld | slurmdbd) ;; *) die "cannot restart $d" ;; esac
    stop_pid "$d" "$PIDS" "$STATE_DIR"
    "$HACK_DIR/slurm-up.sh" "$SUITE"
    ;;
  partition | heal)
    n=$(node_arg "${3:-}")
    ip=$(ip_of "$n")
    op=add; [ "$ACTION" = heal ] && op=del
    # Blackhole routes on both sides: packets vanish silently, as on a cut link. On the
    # node: the host and the pods routed through it, but not the head.
    ns=$(netns_of "$n")
    ip route "$op" blackhole "$ip/32" 2>/dev/null || [ $op = del ]
    ip netns exec "$ns" ip route "$op" blackhole "$HOST_IP/32" 2>/dev/null || [ $op = del ]
    if [ $op = add ]; then
      ip netns exec "$ns" ip route replace blackhole "$POD_CIDR"
    else
      ip netns exec "$ns" ip route replace "$POD_CIDR" via "$HOST_IP"
    fi
    log "$ACTION $n ($ip) from the Kubernetes side"
    ;;
  *) die "unknown action $ACTION" ;;
esac
