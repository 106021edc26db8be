#!/usr/bin/env bash
# `make demo`: brings the local environment up, installs the CRDs and the examples, starts
# the controller and the MCP gateway, waits until the example allocation runs a Jupyter
# server in a SLURM job and the example session has a kernel, then runs an example agent
# session through MCP (examples/agent_session.rs) and shows it all with kubectl. Leaves
# everything running; `make down` stops it.
LOG_TAG=demo
# shellcheck source=hack/lib.sh
. "$(dirname "$0")/lib.sh"

# A fresh start: an earlier demo's controller and objects go away first.
stop_pid controller "$SLURMLAB_STATE/demo/pids" slurmlab 2>/dev/null || true
stop_pid gateway "$SLURMLAB_STATE/demo/pids" slurmlab 2>/dev/null || true
SLURMLAB_FRESH=1 "$HACK_DIR/up.sh"
# shellcheck disable=SC1091
. "$SLURMLAB_STATE/env"
export KUBECONFIG=$KUBECONFIG_ADMIN
k() { "$KUBECTL" "$@"; }

log "building slurmlab and the example agent"
(cd "$REPO_DIR" && cargo build --locked --quiet --bin slurmlab --example agent_session)
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

DEMO=$SLURMLAB_STATE/demo
mkdir -p "$DEMO/pids"
log "starting the controller (log: $DEMO/controller.log)"
setsid "$SLURMLAB" controller --kubeconfig "$KUBECONFIG_ADMIN" --metrics-addr 127.0.0.1:18080 \
  --leader-election=false >"$DEMO/controller.log" 2>&1 </dev/null &
echo $! >"$DEMO/pids/controller.pid"
log "waiting for the allocation (a SLURM job running Jupyter) and the session (a kernel)"
ready() { [ "$(k -n demo get "$1" -o jsonpath='{.status.phase}' 2>/dev/null)" = Ready ]; }
wait_for "computeallocation demo Ready" 180 ready computeallocation/demo ||
  { tail -n 20 "$DEMO/controller.log" >&2; die "the allocation did not become Ready (see above)"; }
wait_for "jupytersession analysis Ready" 120 ready jupytersession/analysis ||
  { tail -n 20 "$DEMO/controller.log" >&2; die "the session did not become Ready (see above)"; }

log "letting user alice use sessions in 'demo' (RBAC), as a platform would"
# The same rules as the chart's slurmlab-user role; running code takes jupytersessions/exec.
k apply -f - >/dev/null <<'ROLE'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: slurmlab-user
rules:
  - apiGroups: ["slurmlab.io"]
    resources: ["jupytersessions", "computeallocations"]
    verbs: ["get", "list", "watch", "create", "delete", "patch", "update"]
  - apiGroups: ["slurmlab.io"]
    resources: ["jupytersessions/exec"]
    verbs: ["create"]
ROLE
k -n demo create rolebinding slurmlab-user-alice --clusterrole=slurmlab-user --user=alice \
  --dry-run=client -o yaml | k apply -f - >/dev/null

log "starting the MCP gateway at http://127.0.0.1:18000/mcp (log: $DEMO/gateway.log)"
setsid "$SLURMLAB" gateway --kubeconfig "$KUBECONFIG_ADMIN" --listen 127.0.0.1:18000 \
  --health-addr 127.0.0.1:18081 --namespace demo --cluster local --state-namespace slurmlab-system \
  >"$DEMO/gateway.log" 2>&1 </dev/null &
echo $! >"$DEMO/pids/gateway.pid"
wait_for "the gateway" 30 curl -fsS 127.0.0.1:18081/healthz ||
  { tail -n 20 "$DEMO/gateway.log" >&2; die "the gateway did not start (see above)"; }

ALICE_TOKEN=$(awk -F, '$2 == "alice" { print $1 }' "$KUBE_TOKENS")
log "running the example agent session as alice (examples/agent_session.rs)"
echo
"$CARGO_TARGET_DIR/debug/examples/agent_session" --url http://127.0.0.1:18000/mcp \
  --token "$ALICE_TOKEN" --out "$DEMO/output" ||
  { tail -n 20 "$DEMO/gateway.log" >&2; die "the agent session failed (see above)"; }

cat <<MSG

The local environment is up:
  Kubernetes API  $KUBE_URL   (admin kubeconfig: $KUBECONFIG_ADMIN)
  Slurm 24.11     $SLURM_TRIXIE_URL   Slurm 26.05  $SLURM_SID_URL
  MCP gateway     http://127.0.0.1:18000/mcp   (bearer: alice's token in $KUBE_TOKENS)

$(k get slurmclusters 2>&1)

$(k get slurmlab -n demo -o wide 2>&1)

The agent's plot: $DEMO/output/plot.png

Look around:
  export KUBECONFIG=$KUBECONFIG_ADMIN
  $KUBECTL get slurmlab -A
  $KUBECTL -n demo describe computeallocation demo     # events: Submitted, Starting, Ready
  $KUBECTL explain computeallocation.spec
  curl -s 127.0.0.1:18080/metrics | grep ^slurmlab_    # the controller's metrics
  curl -s 127.0.0.1:18081/metrics | grep ^slurmlab_    # the gateway's metrics
  claude mcp add --transport http slurmlab http://127.0.0.1:18000/mcp --header "Authorization: Bearer $ALICE_TOKEN"

Stop everything with: make down
MSG
