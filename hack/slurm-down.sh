#!/usr/bin/env bash
# Stops a site started by hack/slurm-up.sh SUITE: cancels its jobs, stops the daemons it
# recorded (by PID, checked against their command line), ends whatever is left in the
# site's own network namespaces (job processes), removes the network and the /etc/hosts
# block, and unmounts what it mounted.
SUITE=${1:?usage: slurm-down.sh trixie|sid}
LOG_TAG=slurm-$SUITE-down
# shellcheck source=hack/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=hack/site.sh
. "$HACK_DIR/site.sh"
# shellcheck source=hack/chroot.sh
. "$HACK_DIR/chroot.sh"
site_vars "$SUITE"
set +e
[ -d "$STATE_DIR" ] || exit 0
ROOT=$(cat "$STATE_DIR/chroot" 2>/dev/null)
ctl() { chroot "$ROOT" env SLURM_CONF="$ETC/slurm.conf" "$@"; }

if [ -n "$ROOT" ] && pid_alive slurmctld "$PIDS" "$STATE_DIR"; then
  "$HACK_DIR/foreign-jobs.sh" "$SUITE" stop >/dev/null 2>&1
  if [ -n "$(ctl squeue -h -o %i 2>/dev/null | head -n 1)" ]; then
    log "cancelling every job"
    for u in slurmjob alice bob carol dave; do ctl scancel --quiet --user="$u"; done
    for _ in $(seq 1 30); do
      [ -z "$(ctl squeue -h -t R,CG -o %i 2>/dev/null | head -n 1)" ] && break
      sleep 1
    done
  fi
fi
names=(slurmrestd)
for h in "${NODES[@]}"; do names+=("slurmd-$h"); done
names+=(slurmctld slurmdbd mariadb munged)
for name in "${names[@]}"; do stop_pid "$name" "$PIDS" "$STATE_DIR"; done
# Anything still running in the site's namespaces (job steps of a killed slurmd) is ours.
for h in "${HOSTS[@]}"; do
  pids=$(host_pids "$h")
  if [ -n "$pids" ]; then
    log "ending what is left on $h: $(echo $pids)"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null
  fi
done
sleep 0.2
site_network_down
MOUNTS=$STATE_DIR/mounts chroot_unmount_all
exit 0
