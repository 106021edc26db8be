#!/usr/bin/env bash
# Stops what hack/node-up.sh started: the kubelet and kube-proxy first, then every pod
# process (the kubelet's kubepods cgroups hold exactly those), containerd and its shims,
# the registry and DNS; removes kube-proxy's rules, the pod bridge and what was
# mounted, and restores ip_forward. --purge also removes its state (images, pods' data).
LOG_TAG=node-down
# shellcheck source=hack/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=hack/chroot.sh
. "$HACK_DIR/chroot.sh"
# shellcheck source=hack/node.sh
. "$HACK_DIR/node.sh"
set +e
[ -d "$NODE_DIR" ] || exit 0
PIDS=$NODE_DIR/pids MOUNTS=$NODE_DIR/mounts
for name in kube-proxy kubelet; do stop_pid "$name" "$PIDS" "$NODE_DIR"; done

# Pods: everything in the kubelet's cgroup tree (any v1 hierarchy lists every task).
kubepods=/sys/fs/cgroup/pids/kubepods
if [ -d "$kubepods" ]; then
  pids=$(find "$kubepods" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
  if [ -n "$pids" ]; then
    log "ending pod processes: $(echo $pids)"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null
  fi
fi
# containerd's shims outlive it; each names our socket on its command line.
shims=$(pgrep -f "containerd-shim-runc-v2 .*$NODE_DIR/containerd.sock")
for name in containerd registry dnsmasq; do stop_pid "$name" "$PIDS" "$NODE_DIR"; done
# shellcheck disable=SC2086
[ -z "$shims" ] || kill -KILL $shims 2>/dev/null
sleep 0.3
# The now empty pod cgroups, deepest first, in every hierarchy.
for h in /sys/fs/cgroup/*/; do
  [ -d "$h/kubepods" ] && find "$h/kubepods" -depth -type d -exec rmdir {} + 2>/dev/null
done
# kube-proxy's own cleanup removes its rules (iptables and nftables alike).
kube_bin=$(cat "$NODE_DIR/kube-bin" 2>/dev/null)
if [ -n "$kube_bin" ] && [ -x "$kube_bin/kube-proxy" ] && mountpoint -q "$NODE_ROOT$kube_bin"; then
  chroot "$NODE_ROOT" "$kube_bin/kube-proxy" --cleanup >/dev/null 2>&1
fi
# ...except a few chains it and the kubelet leave (KUBE-FIREWALL, KUBE-KUBELET-CANARY,
# KUBE-IPTABLES-HINT): every KUBE-* chain here is theirs, so remove the jumps to them,
# then the chains.
for ipt in iptables ip6tables; do
  [ -x "$NODE_ROOT/usr/sbin/$ipt" ] || continue
  for table in filter nat mangle; do
    rules=$(chroot "$NODE_ROOT" "$ipt" -w -t "$table" -S 2>/dev/null)
    grep -E '^-A [A-Z]+ .*-j KUBE-' <<<"$rules" | grep -v '^-A KUBE-' | while read -r rule; do
      # shellcheck disable=SC2086
      chroot "$NODE_ROOT" "$ipt" -w -t "$table" -D ${rule#-A }
    done
    for chain in $(awk '$1 == "-N" && $2 ~ /^KUBE-/ { print $2 }' <<<"$rules"); do
      chroot "$NODE_ROOT" "$ipt" -w -t "$table" -F "$chain"
    done
    for chain in $(awk '$1 == "-N" && $2 ~ /^KUBE-/ { print $2 }' <<<"$rules"); do
      chroot "$NODE_ROOT" "$ipt" -w -t "$table" -X "$chain"
    done
  done
done
ip link show "$POD_BRIDGE" >/dev/null 2>&1 && ip link delete "$POD_BRIDGE"
chroot_unmount_all
if [ -s "$NODE_DIR/ip_forward.orig" ]; then
  sysctl -qw "net.ipv4.ip_forward=$(cat "$NODE_DIR/ip_forward.orig")"
  rm -f "$NODE_DIR/ip_forward.orig"
fi
if [ "${1:-}" = --purge ]; then
  if grep -qs "$NODE_DIR" /proc/mounts; then
    log "something under $NODE_DIR is still mounted; not removing it"
  else
    rm -rf "$NODE_DIR"
  fi
fi
exit 0
