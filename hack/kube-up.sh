#!/usr/bin/env bash
# Brings up a real Kubernetes control plane on 127.0.0.1: etcd (Debian's etcd-server),
# kube-apiserver and kube-controller-manager (v$KUBE_VERSION, default 1.36.3, built once
# from the published Go modules by hack/build-kube.sh and cached) with RBAC, static-token users, service-account
# signing keys, and one kubeconfig per user. The controller-manager gives us garbage
# collection of owned objects, namespace deletion and service-account tokens.
#
# Users (tokens in $STATE/kube/tokens.csv, kubeconfigs next to it):
#   admin  system:masters              admin.kubeconfig
#   alice  slurmlab:users (no RBAC)    alice.kubeconfig
#   bob    slurmlab:users (no RBAC)    bob.kubeconfig
# Idempotent: running processes are left alone. Stop with hack/kube-down.sh.
LOG_TAG=kube
# shellcheck source=hack/lib.sh
. "$(dirname "$0")/lib.sh"

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
ETCD=$(command -v etcd || echo /usr/bin/etcd)

# ---------------------------------------------------------------- credentials --
# Our own CA and serving certificate (SAN 127.0.0.1 and localhost), so clients can
# verify the server instead of skipping TLS checks.
if [ ! -s "$CERTS/serving.crt" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=slurmlab-local-ca" \
    -keyout "$CERTS/ca.key" -out "$CERTS/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$CERTS/serving.key" -out "$CERTS/serving.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >"$CERTS/serving.ext"
  openssl x509 -req -in "$CERTS/serving.csr" -CA "$CERTS/ca.crt" -CAkey "$CERTS/ca.key" \
    -CAcreateserial -days 3650 -extfile "$CERTS/serving.ext" -out "$CERTS/serving.crt" 2>/dev/null
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
  } >"$DIR/tokens.csv"
  umask 022
fi
user_token() { awk -F, -v u="$1" '$2 == u { print $1 }' "$DIR/tokens.csv"; }
URL=https://127.0.0.1:$API_PORT
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
for u in admin alice bob system:kube-controller-manager; do
  write_kubeconfig "$u" "$DIR/${u#system:}.kubeconfig"
done

# ------------------------------------------------------------------ processes --
start() { # NAME CMD...: start in its own session, record the PID
  local name=$1; shift
  if pid_alive "$name" "$PIDS" "$DIR"; then return; fi
  log "starting $name"
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}
show_logs() { tail -n 40 "$LOGS"/*.log >&2 || true; }

start etcd "$ETCD" --name slurmlab --data-dir "$DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
  --initial-cluster "slurmlab=http://127.0.0.1:$((ETCD_PORT + 10))" \
  --quota-backend-bytes 2147483648 --log-level warn
wait_for etcd 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health" || { show_logs; exit 1; }

start kube-apiserver "$APISERVER" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --secure-port "$API_PORT" --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
  --tls-cert-file "$CERTS/serving.crt" --tls-private-key-file "$CERTS/serving.key" \
  --client-ca-file "$CERTS/ca.crt" --cert-dir "$CERTS" \
  --service-cluster-ip-range 10.0.0.0/24 --authorization-mode RBAC \
  --token-auth-file "$DIR/tokens.csv" \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$CERTS/sa.pub" --service-account-signing-key-file "$CERTS/sa.key" \
  --api-audiences https://kubernetes.default.svc,slurmlab \
  --disable-admission-plugins ServiceAccount --endpoint-reconciler-type none
ADMIN_TOKEN=$(user_token admin)
api_ready() { [ "$(curl -fsS --cacert "$CERTS/ca.crt" -H "Authorization: Bearer $ADMIN_TOKEN" "$URL/readyz")" = ok ]; }
wait_for kube-apiserver 90 api_ready || { show_logs; exit 1; }

start kube-controller-manager "$CONTROLLER_MANAGER" \
  --kubeconfig "$DIR/kube-controller-manager.kubeconfig" \
  --authentication-kubeconfig "$DIR/kube-controller-manager.kubeconfig" \
  --authorization-kubeconfig "$DIR/kube-controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false \
  --controllers garbagecollector,namespace,serviceaccount,serviceaccount-token \
  --service-account-private-key-file "$CERTS/sa.key" --root-ca-file "$CERTS/ca.crt" \
  --cert-dir "$CERTS/kcm"
# It is ready once it has created the default ServiceAccount in a namespace.
kubectl_admin() { "$SLURMLAB_CACHE/venv/bin/kubectl" --kubeconfig "$DIR/admin.kubeconfig" "$@"; }
wait_for "kube-controller-manager" 60 kubectl_admin get serviceaccount default -n default || { show_logs; exit 1; }

cat >"$DIR/env" <<ENV
KUBE_URL=$URL
KUBE_CA=$CERTS/ca.crt
KUBECONFIG_ADMIN=$DIR/admin.kubeconfig
KUBECONFIG_ALICE=$DIR/alice.kubeconfig
KUBECONFIG_BOB=$DIR/bob.kubeconfig
KUBE_TOKENS=$DIR/tokens.csv
ENV
log "up: $URL (kubeconfigs in $DIR)"
