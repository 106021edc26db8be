# shellcheck shell=bash
# The Kubernetes node of the local environment (sourced after lib.sh by kube-up.sh,
# node-up.sh and node-down.sh): one machine that is control plane and worker at once,
# like kind or minikube, at an address of its own so pods can reach the API server.
NODE_NAME=slurmlab-node
# The node's address sits on the loopback device (this kernel has no dummy interfaces):
# the API server, the kubelet and the site DNS listen there, and pods reach it through
# their bridge's gateway.
NODE_IP=172.30.0.1
POD_CIDR=10.244.0.0/24
POD_BRIDGE=sl-pods
SERVICE_CIDR=10.0.0.0/24
API_SERVICE_IP=10.0.0.1
REGISTRY=127.0.0.1:15000
NODE_DIR=$SLURMLAB_STATE/node
NODE_ROOT=$SLURMLAB_CACHE/chroot-node
# containerd 2.x, runc and the CNI plugins from Debian sid (bookworm's containerd is 1.6);
# iptables (its nf_tables backend) for kube-proxy, nftables for the portmap plugin.
NODE_PACKAGES=(containerd runc containernetworking-plugins nftables iptables iproute2 util-linux
  mount procps ca-certificates)

# node_address_up / node_address_down: the node's address.
node_address_up() {
  ip addr show dev lo | grep -q " $NODE_IP/32 " || ip addr add "$NODE_IP/32" dev lo
}
node_address_down() {
  ip addr show dev lo | grep -q " $NODE_IP/32 " && ip addr del "$NODE_IP/32" dev lo
  return 0
}
