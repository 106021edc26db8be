#!/usr/bin/env bash
# Brings up the Kubernetes node of the local environment, so the chart's pods really run:
#   - containerd 2.x, runc and the CNI plugins (bridge, host-local, loopback, portmap)
#     from Debian sid, in a cached chroot ($SLURMLAB_CACHE/chroot-node; bookworm's
#     containerd is 1.6); kubelet and kube-proxy (nftables mode) built by build-kube.sh run
#     in the same chroot, so every path the three exchange means the same file;
#     kube-proxy in iptables mode
#   - pods on bridge $POD_BRIDGE ($POD_CIDR), routed (no NAT) to the SLURM sites, whose
#     hosts route back through this machine
#   - a DNS server for pods (dnsmasq on $NODE_IP, answering from /etc/hosts only), so pods
#     resolve the compute hosts' names like a site's DNS would; nothing is forwarded
#   - a local OCI registry on $REGISTRY (Debian's docker-registry) for images built by
#     hack/image.sh
# Needs the control plane (hack/kube-up.sh). Idempotent. Stop with hack/node-down.sh.
#   hack/node-up.sh prepare   only build the cached chroot (up.sh does it in parallel)
LOG_TAG=node
# shellcheck source=hack/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=hack/chroot.sh
. "$HACK_DIR/chroot.sh"
# shellcheck source=hack/node.sh
. "$HACK_DIR/node.sh"

ROOT=$NODE_ROOT
PIDS=$NODE_DIR/pids LOGS=$NODE_DIR/log
MOUNTS=$NODE_DIR/mounts
mkdir -p "$NODE_DIR" "$PIDS" "$LOGS"
chroot_ensure "$ROOT" sid "${NODE_PACKAGES[@]}"
if [ "${1:-}" = prepare ]; then chroot_unmount_all; exit 0; fi

apt_install docker-registry dnsmasq-base
KUBE_BIN=$("$HACK_DIR/build-kube.sh")
echo "$KUBE_BIN" >"$NODE_DIR/kube-bin"
KUBE_DIR=$SLURMLAB_STATE/kube
[ -s "$KUBE_DIR/env" ] || die "the control plane is not up (hack/kube-up.sh)"
# shellcheck disable=SC1091
. "$KUBE_DIR/env"
kubectl_admin() { "$SLURMLAB_CACHE/venv/bin/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

# ------------------------------------------------------------------- mounts --
# The host's cgroup hierarchies (v1 here) for the kubelet and runc.
if ! mountpoint -q "$ROOT/sys/fs/cgroup"; then
  chroot_mount "$ROOT/sys/fs/cgroup" --rbind /sys/fs/cgroup
  mount --make-rslave "$ROOT/sys/fs/cgroup"
fi
# runc's pivot_root refuses a root that is not a mount point, which a chroot is not.
if ! mountpoint -q "$ROOT"; then chroot_mount "$ROOT" --rbind "$ROOT"; fi
chroot_mount "$ROOT$NODE_DIR" --bind "$NODE_DIR"
chroot_mount "$ROOT$KUBE_DIR" --bind "$KUBE_DIR"
chroot_mount "$ROOT$KUBE_BIN" --bind "$KUBE_BIN"
# containerd builds each pod's /etc/hosts from the node's.
hosts_copy_to "$ROOT/etc/hosts"

# ------------------------------------------------------------------ network --
# Pods are routed, not masqueraded: the sites' hosts route back through this machine.
if [ "$(sysctl -n net.ipv4.ip_forward)" != 1 ]; then
  [ -s "$NODE_DIR/ip_forward.orig" ] || sysctl -n net.ipv4.ip_forward >"$NODE_DIR/ip_forward.orig"
  sysctl -qw net.ipv4.ip_forward=1
fi
# Bridged pod-to-pod traffic must pass kube-proxy's rules (a Service's backend on the
# same bridge).
sysctl -qw net.bridge.bridge-nf-call-iptables=1
# write_config FILE < TEXT: replace FILE only when TEXT differs (kube-proxy exits when its
# configuration file is written, even with the same content).
write_config() {
  local tmp
  tmp=$(mktemp "$1.XXXXXX")
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}
mkdir -p "$NODE_DIR/cni" "$NODE_DIR/cni-ipam"
write_config "$NODE_DIR/cni/10-slurmlab.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "slurmlab",
  "plugins": [
    {
      "type": "bridge", "bridge": "$POD_BRIDGE", "isGateway": true, "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$NODE_DIR/cni-ipam",
        "ranges": [[{ "subnet": "$POD_CIDR" }]], "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "backend": "nftables", "capabilities": { "portMappings": true } }
  ]
}
CNI

start() { start_recorded "$1" "$NODE_DIR" "${@:2}"; }
show_logs() { tail -n 30 "$LOGS"/*.log >&2 || true; }

# ------------------------------------------------------------ DNS, registry --
echo "nameserver $NODE_IP" >"$NODE_DIR/resolv.conf"
start dnsmasq /usr/sbin/dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-poll \
  --bind-interfaces --listen-address="$NODE_IP" --log-facility="$LOGS/dnsmasq-queries.log" \
  --pid-file="$NODE_DIR/dnsmasq.pid"
write_config "$NODE_DIR/registry.yml" <<YML
version: 0.1
log: { level: warn }
storage:
  filesystem: { rootdirectory: $NODE_DIR/registry }
  delete: { enabled: true }
http: { addr: "$REGISTRY" }
YML
start registry /usr/bin/docker-registry serve "$NODE_DIR/registry.yml"
wait_for registry 30 curl -fsS "http://$REGISTRY/v2/" || { show_logs; exit 1; }

# --------------------------------------------------------------- containerd --
mkdir -p "$NODE_DIR/certs.d/$REGISTRY"
write_config "$NODE_DIR/certs.d/$REGISTRY/hosts.toml" <<TOML
server = "http://$REGISTRY"
[host."http://$REGISTRY"]
  capabilities = ["pull", "resolve"]
TOML
write_config "$NODE_DIR/containerd.toml" <<TOML
# generated by hack/node-up.sh (containerd 2.x, config version 3)
version = 3
root = "$NODE_DIR/containerd"
state = "$NODE_DIR/cstate"
[grpc]
  address = "$NODE_DIR/containerd.sock"
[ttrpc]
  address = "$NODE_DIR/containerd.sock.ttrpc"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$REGISTRY/pause:3.10"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "$NODE_DIR/certs.d"
[plugins.'io.containerd.cri.v1.runtime']
  # Pods' network namespaces under the state directory, so node-down.sh finds them.
  netns_mounts_under_state_dir = true
  # Some machines (this VM) withhold CAP_SYS_RESOURCE even from root, so the kubelet's
  # negative oom_score_adj for sandboxes cannot be set: none below containerd's own.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$NODE_DIR/cni"
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      # cgroup v1 and no systemd here: runc writes the cgroupfs itself, as the kubelet does.
      SystemdCgroup = false
TOML
start containerd chroot "$ROOT" /usr/bin/containerd --config "$NODE_DIR/containerd.toml"
wait_for containerd 30 test -S "$NODE_DIR/containerd.sock" || { show_logs; exit 1; }

# ------------------------------------------------------------------ kubelet --
write_config "$NODE_DIR/kubelet.yaml" <<YML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1 only; kubelet 1.35+ refuses to start on v1 unless told so.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$NODE_DIR/containerd.sock
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: true }
  x509: { clientCAFile: $KUBE_CA }
authorization: { mode: Webhook }
# No cluster DNS add-on: pods ask the site DNS (dnsmasq above), which knows the hosts.
clusterDNS: [$NODE_IP]
clusterDomain: cluster.local
resolvConf: $NODE_DIR/resolv.conf
failSwapOn: false
# A shared build disk: evict only when it is really full.
evictionHard: { memory.available: 200Mi, nodefs.available: 2%, imagefs.available: 2%, nodefs.inodesFree: 2% }
imageGCHighThresholdPercent: 98
imageGCLowThresholdPercent: 97
maxPods: 40
serializeImagePulls: false
YML
start kubelet chroot "$ROOT" "$KUBE_BIN/kubelet" --config "$NODE_DIR/kubelet.yaml" \
  --kubeconfig "$KUBE_DIR/node.kubeconfig" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
  --root-dir "$NODE_DIR/kubelet" --cert-dir "$NODE_DIR/kubelet-pki"

# --------------------------------------------------------------- kube-proxy --
write_config "$NODE_DIR/kube-proxy.yaml" <<YML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
# iptables mode (iptables-nft): in nftables mode kube-proxy 1.36 dropped the kubernetes
# Service from its service map after a failed partial sync here, refusing pods' API calls.
mode: iptables
nodePortAddresses: [primary]
hostnameOverride: $NODE_NAME
clientConnection: { kubeconfig: $KUBE_DIR/kube-proxy.kubeconfig }
clusterCIDR: $POD_CIDR
# Leave the machine's conntrack table size alone.
conntrack: { maxPerCore: 0 }
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
YML
start kube-proxy chroot "$ROOT" "$KUBE_BIN/kube-proxy" --config "$NODE_DIR/kube-proxy.yaml"

node_ready() {
  [ "$(kubectl_admin get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
wait_for "node $NODE_NAME Ready" 120 node_ready || { show_logs; exit 1; }

cat >"$NODE_DIR/env" <<ENV
KUBE_NODE=$NODE_NAME
KUBE_NODE_IP=$NODE_IP
IMAGE_REGISTRY=$REGISTRY
ENV
log "up: node $NODE_NAME ($NODE_IP), pods $POD_CIDR, registry $REGISTRY"
