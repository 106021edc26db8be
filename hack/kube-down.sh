#!/usr/bin/env bash
# Stops what hack/kube-up.sh started (by recorded PID) and removes the node address. Data stays in $SLURMLAB_STATE/kube
# unless --purge is given.
LOG_TAG=kube-down
# shellcheck source=hack/lib.sh
. "$(dirname "$0")/lib.sh"
DIR=$SLURMLAB_STATE/kube
[ -d "$DIR/pids" ] || exit 0
for name in kube-scheduler kube-controller-manager kube-apiserver etcd; do stop_pid "$name" "$DIR/pids" "$DIR"; done
# shellcheck source=hack/node.sh
. "$HACK_DIR/node.sh"
node_address_down
if [ "${1:-}" = --purge ]; then rm -rf "$DIR"; fi
