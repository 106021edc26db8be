#!/usr/bin/env bash
# `make demo`: brings the local environment up, installs the CRDs and the examples, and
# shows them with kubectl. Leaves everything running; `make down` stops it.
LOG_TAG=demo
# shellcheck source=hack/lib.sh
. "$(dirname "$0")/lib.sh"

"$HACK_DIR/up.sh"
# shellcheck disable=SC1091
. "$SLURMLAB_STATE/env"
export KUBECONFIG=$KUBECONFIG_ADMIN
k() { "$KUBECTL" "$@"; }

log "building slurmlab"
(cd "$REPO_DIR" && cargo build --locked --quiet)
SLURMLAB=$CARGO_TARGET_DIR/debug/slurmlab

log "installing the CRDs"
"$SLURMLAB" crds | k apply --server-side --force-conflicts --field-manager slurmlab-demo -f - >/dev/null
k wait --for condition=Established --timeout 60s \
  crd/slurmclusters.slurmlab.io crd/computeallocations.slurmlab.io crd/jupytersessions.slurmlab.io >/dev/null

log "registering the local Slurm 24.11 cluster as SlurmCluster 'local'"
k create namespace slurmlab-system --dry-run=client -o yaml | k apply -f - >/dev/null
k -n slurmlab-system create secret generic slurm-jwt-local \
  --from-file=jwt_hs256.key="$SLURM_TRIXIE_JWT_KEY" --dry-run=client -o yaml | k apply -f - >/dev/null
k apply -f "$REPO_DIR/examples/slurmcluster-local.yaml" >/dev/null

log "creating an allocation and a session in namespace 'demo'"
k create namespace demo --dry-run=client -o yaml | k apply -f - >/dev/null
k -n demo apply -f "$REPO_DIR/examples/computeallocation.yaml" -f "$REPO_DIR/examples/jupytersession.yaml" >/dev/null

cat <<MSG

The local environment is up:
  Kubernetes API  $KUBE_URL   (admin kubeconfig: $KUBECONFIG_ADMIN)
  Slurm 24.11     $SLURM_TRIXIE_URL   Slurm 26.05  $SLURM_SID_URL

$(k get slurmlab -A 2>&1)

Look around:
  export KUBECONFIG=$KUBECONFIG_ADMIN
  $KUBECTL get slurmlab -A
  $KUBECTL -n demo describe computeallocation demo
  $KUBECTL explain computeallocation.spec

(The controller and the MCP gateway are not part of the demo yet: the resources above
wait for them.) Stop everything with: make down
MSG
