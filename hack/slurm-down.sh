#!/usr/bin/env bash
# Stops a cluster started by hack/slurm-up.sh SUITE: cancels its jobs, stops the daemons
# it recorded (by PID, checked against their command line), unmounts what it mounted.
SUITE=${1:?usage: slurm-down.sh trixie|sid}
LOG_TAG=slurm-$SUITE-down
# shellcheck source=hack/lib.sh
. "$(dirname "$0")/lib.sh"
set +e
STATE_DIR=$SLURMLAB_STATE/slurm-$SUITE
PIDS=$STATE_DIR/pids
[ -d "$STATE_DIR" ] || exit 0
ROOT=$(cat "$STATE_DIR/chroot" 2>/dev/null)
ctl() { chroot "$ROOT" env SLURM_CONF="$STATE_DIR/etc/slurm.conf" "$@"; }

if [ -n "$ROOT" ] && pid_alive slurmctld "$PIDS" "$STATE_DIR"; then
  ids=$(ctl squeue -h -o %i 2>/dev/null | tr '\n' ' ')
  if [ -n "${ids// /}" ]; then
    log "cancelling jobs: $ids"
    # shellcheck disable=SC2086
    ctl scancel $ids
    for _ in $(seq 1 30); do
      [ -z "$(ctl squeue -h -t R,CG,PD -o %i 2>/dev/null)" ] && break
      sleep 1
    done
  fi
fi
for name in slurmrestd slurmd slurmctld munged; do stop_pid "$name" "$PIDS" "$STATE_DIR"; done
if [ -s "$STATE_DIR/mounts" ]; then
  tac "$STATE_DIR/mounts" | while read -r m; do
    mountpoint -q "$m" && { umount "$m" || umount -l "$m"; }
  done
  rm -f "$STATE_DIR/mounts"
fi
exit 0
