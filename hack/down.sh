#!/usr/bin/env bash
# Stops everything hack/up.sh (and the demo) started, by recorded PID, and unmounts the
# chroot mounts. Cached builds stay in $SLURMLAB_CACHE. --purge also removes
# $SLURMLAB_STATE (etcd data, Slurm state, logs).
LOG_TAG=down
# shellcheck source=hack/lib.sh
. "$(dirname "$0")/lib.sh"
set +e
if [ -d "$SLURMLAB_STATE/demo/pids" ]; then
  for name in gateway controller; do stop_pid "$name" "$SLURMLAB_STATE/demo/pids" slurmlab; done
fi
"$HACK_DIR/node-down.sh"
"$HACK_DIR/slurm-down.sh" trixie
"$HACK_DIR/slurm-down.sh" sid
"$HACK_DIR/kube-down.sh"
if [ "${1:-}" = --purge ]; then
  if grep -qs "$SLURMLAB_STATE" /proc/mounts; then
    die "something under $SLURMLAB_STATE is still mounted; not removing it"
  fi
  rm -rf "$SLURMLAB_STATE"
fi
log "down"
