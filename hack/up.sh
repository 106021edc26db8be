#!/usr/bin/env bash
# Brings up the whole local environment and writes $SLURMLAB_STATE/env, the one file
# tests and the demo read:
#   - Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
#     kube-scheduler) and one node (kubelet, containerd, kube-proxy, a local registry) at
#     172.30.0.1; pods on their own bridge reach the sites
#   - two SLURM sites, Slurm 24.11 (Debian trixie chroot) and Slurm 26.05 (Debian sid
#     chroot): each a head host (slurmctld, slurmdbd + MariaDB, slurmrestd with JWT) and
#     two compute hosts in network namespaces, several users, PrivateData, accounting,
#     and a Jupyter venv for batch jobs (see docs/testing.md)
#   - host tools (kubectl) in a cached venv
# Cold (nothing cached) about 20 minutes on 2 cores; warm about 10 seconds.
# Idempotent. Stop everything with hack/down.sh. SLURMLAB_FRESH=1 starts the control plane
# from an empty etcd (what `make test` does, so no run sees objects of an earlier one).
LOG_TAG=up
# shellcheck source=hack/lib.sh
. "$(dirname "$0")/lib.sh"

# Host packages first, in one apt run, so the parallel steps below never race for the
# dpkg lock.
apt_install etcd-server openssl curl jq debootstrap rsync \
  make python3-venv docker-registry dnsmasq-base skopeo gcc libc6-dev
mkdir -p "$SLURMLAB_STATE"
BIN=$("$HACK_DIR/host-tools.sh")

# The slow, independent steps in parallel: the Go build is CPU-bound, the chroots are
# mostly download and disk.
pids=() names=()
run_bg() { local name=$1; shift; "$@" >"$SLURMLAB_STATE/$name.log" 2>&1 & pids+=($!); names+=("$name"); }
run_bg build-kube "$HACK_DIR/build-kube.sh"
run_bg slurm-trixie "$HACK_DIR/slurm-up.sh" trixie
run_bg slurm-sid "$HACK_DIR/slurm-up.sh" sid
run_bg node-chroot "$HACK_DIR/node-up.sh" prepare
failed=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    log "${names[$i]} failed; its log ($SLURMLAB_STATE/${names[$i]}.log) ends with:"
    tail -n 30 "$SLURMLAB_STATE/${names[$i]}.log" >&2
    failed=1
  fi
done
[ $failed = 0 ] || die "the environment did not come up (see above)"
if [ "${SLURMLAB_FRESH:-}" = 1 ]; then
  "$HACK_DIR/node-down.sh" --purge
  "$HACK_DIR/kube-down.sh" --purge
fi
"$HACK_DIR/kube-up.sh"
"$HACK_DIR/node-up.sh"

{
  echo "# written by hack/up.sh; read by tests and the demo"
  echo "SLURMLAB_STATE=$SLURMLAB_STATE"
  echo "KUBECTL=$BIN/kubectl"
  echo "NODE_MODULES=$SLURMLAB_CACHE/node-mcp/node_modules"
  echo "SLURM_CLUSTERS=trixie,sid"
  cat "$SLURMLAB_STATE/kube/env" "$SLURMLAB_STATE/node/env" \
    "$SLURMLAB_STATE/slurm-trixie/env" "$SLURMLAB_STATE/slurm-sid/env"
} >"$SLURMLAB_STATE/env.new"
mv "$SLURMLAB_STATE/env.new" "$SLURMLAB_STATE/env"
log "environment up; settings in $SLURMLAB_STATE/env"
