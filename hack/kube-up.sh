#!/usr/bin/env bash
# Brings up a real Kubernetes control plane at the node's address ($NODE_IP, an address
# on loopback, so pods reach it too): etcd (Debian's etcd-server), kube-apiserver,
# kube-controller-manager and kube-scheduler (v$KUBE_VERSION, default 1.36.3, built once
# from the published Go modules by hack/build-kube.sh and cached) with Node and RBAC
# authorization, static-token users, service-account signing keys, and one kubeconfig per
# user. The node itself (kubelet, containerd, kube-proxy) is hack/node-up.sh.
#
# Users (tokens in $STATE/kube/tokens.csv, kubeconfigs next to it):
#   admin  system:masters              admin.kubeconfig
#   alice  slurmlab:users (no RBAC)    alice.kubeconfig
#   bob    slurmlab:users (no RBAC)    bob.kubeconfig
# Idempotent: running processes are left alone. Stop with hack/kube-down.sh.
LOG_TAG=kube
# shellcheck source=hack/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=hack/node.sh
. "$HACK_DIR/node.sh"

ETCD_PORT=${SLURMLAB_ETCD_PORT:-23790}
API_PORT=${SLURMLAB_APISERVER_PORT:-16443}
DIR=$SLURMLAB_STATE/kube
PIDS=$DIR/pids LOGS=$DIR/log CERTS=$DIR/certs
mkdir -p "$DIR" "$PIDS" "$LOGS" "$CERTS"
chmod 0700 "$DIR"

apt_install etcd-server openssl curl
KUBE_BIN=$("$HACK_DIR/build-kube.sh")
APISERVER=$KUBE_BIN/kube-apiserver
CONTROLLER_MANAGER=$KUBE_BIN/kube-controller-manager
SCHEDULER=$KUBE_BIN/kube-scheduler
ETCD=$(command -v etcd || echo /usr/bin/etcd)

# ---------------------------------------------------------------- credentials --
# Our own CA and serving certificate (the node's address, the API's Service address for
# pods, and loopback), so clients verify the server instead of skipping TLS checks; a
# client certificate for the API server's calls to the kubelet (logs, exec).
if [ ! -s "$CERTS/serving.crt" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=slurmlab-local-ca" \
    -keyout "$CERTS/ca.key" -out "$CERTS/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$CERTS/serving.key" -out "$CERTS/serving.csr" 2>/dev/null
  printf 'subjectAltName=IP:%s,IP:%s,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' "$NODE_IP" "$API_SERVICE_IP" >"$CERTS/serving.ext"
  openssl x509 -req -in "$CERTS/serving.csr" -CA "$CERTS/ca.crt" -CAkey "$CERTS/ca.key" \
    -CAcreateserial -days 3650 -extfile "$CERTS/serving.ext" -out "$CERTS/serving.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" \
    -keyout "$CERTS/kubelet-client.key" -out "$CERTS/kubelet-client.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >"$CERTS/client.ext"
  openssl x509 -req -in "$CERTS/kubelet-client.csr" -CA "$CERTS/ca.crt" -CAkey "$CERTS/ca.key" \
    -CAcreateserial -days 3650 -extfile "$CERTS/client.ext" -out "$CERTS/kubelet-client.crt" 2>/dev/null
fi
if [ ! -s "$CERTS/sa.key" ]; then
  openssl genrsa -out "$CERTS/sa.key" 2048 2>/dev/null
  openssl rsa -in "$CERTS/sa.key" -pubout -out "$CERTS/sa.pub" 2>/dev/null
fi
token() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
if [ ! -s "$DIR/tokens.csv" ]; then
  umask 077
  {
    echo "$(token),admin,admin-uid,\"system:masters\""
    echo "$(token),alice,alice-uid,\"slurmlab:users\""
    echo "$(token),bob,bob-uid,\"slurmlab:users\""
    # system:masters: the namespace and garbage-collector controllers delete anything;
    # a real cluster gives each controller its own service account instead.
    echo "$(token),system:kube-controller-manager,kcm-uid,\"system:masters\""
    # The node, scheduler and proxy as a real cluster names them: the Node authorizer and
    # the default RBAC bindings give each exactly its own rights.
    echo "$(token),system:node:$NODE_NAME,node-uid,\"system:nodes\""
    echo "$(token),system:kube-scheduler,scheduler-uid"
    echo "$(token),system:kube-proxy,proxy-uid"
  } >"$DIR/tokens.csv"
  umask 022
fi
user_token() { awk -F, -v u="$1" '$2 == u { print $1 }' "$DIR/tokens.csv"; }
URL=https://$NODE_IP:$API_PORT
write_kubeconfig() { # USER FILE
  cat >"$2" <<KC
apiVersion: v1
kind: Config
clusters:
- name: slurmlab-local
  cluster:
    server: $URL
    certificate-authority: $CERTS/ca.crt
users:
- name: $1
  user:
    token: $(user_token "$1")
contexts:
- name: $1@slurmlab-local
  context:
    cluster: slurmlab-local
    user: $1
    namespace: default
current-context: $1@slurmlab-local
KC
  chmod 0600 "$2"
}
for u in admin alice bob system:kube-controller-manager system:node:$NODE_NAME system:kube-scheduler system:kube-proxy; do
  f=${u#system:}; write_kubeconfig "$u" "$DIR/${f%%:*}.kubeconfig"
done

# ------------------------------------------------------------------ processes --
start() { start_recorded "$1" "$DIR" "${@:2}"; }
show_logs() { tail -n 40 "$LOGS"/*.log >&2 || true; }

start etcd "$ETCD" --name slurmlab --data-dir "$DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
  --initial-cluster "slurmlab=http://127.0.0.1:$((ETCD_PORT + 10))" \
  --quota-backend-bytes 2147483648 --log-level warn
wait_for etcd 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health" || { show_logs; exit 1; }

node_address_up
# --api-audiences lists slurmlab so the static test users' tokens (audience-agnostic) pass
# the gateway's default audience check; service-account tokens still carry exactly the
# audience they were minted for. A real cluster leaves slurmlab out.
start kube-apiserver "$APISERVER" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --secure-port "$API_PORT" --bind-address "$NODE_IP" --advertise-address "$NODE_IP" \
  --tls-cert-file "$CERTS/serving.crt" --tls-private-key-file "$CERTS/serving.key" \
  --client-ca-file "$CERTS/ca.crt" --cert-dir "$CERTS" \
  --service-cluster-ip-range "$SERVICE_CIDR" --authorization-mode Node,RBAC \
  --enable-admission-plugins NodeRestriction \
  --kubelet-client-certificate "$CERTS/kubelet-client.crt" --kubelet-client-key "$CERTS/kubelet-client.key" \
  --kubelet-preferred-address-types InternalIP \
  --token-auth-file "$DIR/tokens.csv" \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$CERTS/sa.pub" --service-account-signing-key-file "$CERTS/sa.key" \
  --api-audiences https://kubernetes.default.svc,slurmlab
ADMIN_TOKEN=$(user_token admin)
api_ready() { [ "$(curl -fsS --cacert "$CERTS/ca.crt" -H "Authorization: Bearer $ADMIN_TOKEN" "$URL/readyz")" = ok ]; }
wait_for kube-apiserver 90 api_ready || { show_logs; exit 1; }

start kube-controller-manager "$CONTROLLER_MANAGER" \
  --kubeconfig "$DIR/kube-controller-manager.kubeconfig" \
  --authentication-kubeconfig "$DIR/kube-controller-manager.kubeconfig" \
  --authorization-kubeconfig "$DIR/kube-controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false \
  --controllers garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,deployment-controller,replicaset-controller,endpointslice-controller,disruption-controller,pod-garbage-collector-controller,clusterrole-aggregation-controller,node-lifecycle-controller,job-controller \
  --service-account-private-key-file "$CERTS/sa.key" --root-ca-file "$CERTS/ca.crt" \
  --cert-dir "$CERTS/kcm"
# It is ready once it has created the default ServiceAccount in a namespace.
kubectl_admin() { "$SLURMLAB_CACHE/venv/bin/kubectl" --kubeconfig "$DIR/admin.kubeconfig" "$@"; }
wait_for "kube-controller-manager" 60 kubectl_admin get serviceaccount default -n default || { show_logs; exit 1; }

start kube-scheduler "$SCHEDULER" --kubeconfig "$DIR/kube-scheduler.kubeconfig" \
  --authentication-kubeconfig "$DIR/kube-scheduler.kubeconfig" \
  --authorization-kubeconfig "$DIR/kube-scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false

cat >"$DIR/env" <<ENV
KUBE_URL=$URL
KUBE_CA=$CERTS/ca.crt
KUBECONFIG_ADMIN=$DIR/admin.kubeconfig
KUBECONFIG_ALICE=$DIR/alice.kubeconfig
KUBECONFIG_BOB=$DIR/bob.kubeconfig
KUBE_TOKENS=$DIR/tokens.csv
ENV
log "up: $URL (kubeconfigs in $DIR)"
