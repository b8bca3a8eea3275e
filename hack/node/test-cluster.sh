#!/usr/bin/env bash
# `make test-cluster`: a real one-node cluster — the local control plane plus kube-scheduler,
# kube-proxy, containerd and a kubelet — running deploy/ unchanged, then the scenarios in
# hack/node/scenarios.sh. The whole node lives in namespaces this script creates (network, mount,
# PID): its interfaces (a bridge `ss-node0` with the node address, the pods' bridge), iptables rules,
# mounts, ports (10250, 10248, 10249, 10256, …) and processes go away with them. What it shares with
# the host — global sysctls the kubelet sets and the cgroups runc makes — is recorded before and
# restored after, on every exit path, and then the host is checked against the record.
#
# Prints `SKIPPED: <reason>` and exits 0 where containers cannot run (not root, no namespaces).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo=$(pwd)
state=${TEST_CLUSTER_DIR:-$repo/.local/test-cluster}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}

skip() { echo "SKIPPED: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "make test-cluster needs root (a kubelet, containerd and network namespaces)"
command -v unshare >/dev/null || skip "no unshare(1) to make the node's namespaces"
unshare --net --mount --pid --fork true 2>/dev/null \
  || skip "this machine cannot create network, mount and PID namespaces (unshare failed): no containers here"
[ -d /sys/fs/cgroup ] || skip "no /sys/fs/cgroup: no cgroups for containers"

# Tools from Debian, installed on a fresh machine.
missing=()
for pair in containerd:containerd runc:runc iptables:iptables ip:iproute2 ctr:containerd \
  buildah:buildah mmdebstrap:mmdebstrap conntrack:conntrack gcc:gcc; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} with apt" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" libc6-dev >/dev/null
fi

t0=$(date +%s)
bins=$(hack/controlplane/build.sh --node)
echo "node binaries ready after $(( $(date +%s) - t0 ))s: $bins"
cargo build --quiet --workspace --bins
echo "cargo binaries ready after $(( $(date +%s) - t0 ))s"

rm -rf "$state"
mkdir -p "$state/images" "$state/logs"
# Images: the release image exactly as `make image` builds it, and the pod sandbox's pause image.
hack/image/build.sh scoped-secrets:0.1.0
buildah --storage-driver=vfs push -q scoped-secrets:0.1.0 \
  "docker-archive:$state/images/scoped-secrets.tar:docker.io/library/scoped-secrets:0.1.0" >/dev/null
gcc -static -Os -o "$state/images/pause" hack/node/pause.c
pause_ctr=$(buildah --storage-driver=vfs from scratch)
buildah --storage-driver=vfs copy "$pause_ctr" "$state/images/pause" /pause >/dev/null
buildah --storage-driver=vfs config --entrypoint '["/pause"]' --user 65535:65535 "$pause_ctr"
buildah --storage-driver=vfs commit --rm -q "$pause_ctr" registry.k8s.io/pause:3.10 >/dev/null
buildah --storage-driver=vfs push -q registry.k8s.io/pause:3.10 \
  "docker-archive:$state/images/pause.tar:registry.k8s.io/pause:3.10" >/dev/null
echo "images ready after $(( $(date +%s) - t0 ))s"

# --- host state: recorded, restored, checked -----------------------------------------------------
sysctls=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes net.ipv4.ip_forward net.ipv4.conf.all.route_localnet
  net.bridge.bridge-nf-call-iptables net.netfilter.nf_conntrack_max)
cgroup_dirs() { find /sys/fs/cgroup -mindepth 1 -maxdepth 4 -type d 2>/dev/null | sort; }
host_state() {
  echo "## sysctls"; for s in "${sysctls[@]}"; do sysctl -e "$s" 2>/dev/null || true; done
  echo "## links"; ip -o link show | awk -F': ' '{ print $2 }' | sort
  echo "## addresses"; ip -o addr show | awk '{ print $2, $4 }' | sort
  echo "## iptables"; for t in filter nat mangle raw; do iptables-save -t "$t" 2>/dev/null | grep -v '^#' | sed 's/\[[0-9]*:[0-9]*\]//'; done
  echo "## listening"; ss -Hltn 2>/dev/null | awk '{ print $4 }' | grep -E ':(10250|10248|10249|10256|10257|10259)$' || true
  echo "## mounts"; awk '{ print $5, $9 }' /proc/self/mountinfo | sort
  echo "## cgroups"; cgroup_dirs
  echo "## paths"; for p in /var/lib/kubelet /var/lib/containerd /run/containerd /var/lib/cni /var/log/pods /var/log/containers /etc/cni/net.d; do [ -e "$p" ] && echo "$p"; done; true
}
host_state >"$state/host-before"
node_pid=
teardown() {
  local rc=$?
  trap - EXIT INT TERM HUP
  set +e
  if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
    # The namespace's PID 1 dies, the kernel kills every process in it (kubelet, shims, pods).
    kill -TERM "$node_pid"; for _ in $(seq 50); do kill -0 "$node_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$node_pid" 2>/dev/null; wait "$node_pid" 2>/dev/null
  fi
  # Cgroups the node made (runc's per-container ones), deepest first, once their processes are gone.
  comm -13 <(sed -n '/^## cgroups/,/^## /p' "$state/host-before" | grep '^/' ) <(cgroup_dirs) \
    | awk '{ print length, $0 }' | sort -rn | cut -d' ' -f2- | while read -r d; do
      for _ in $(seq 25); do rmdir "$d" 2>/dev/null && break; [ -d "$d" ] || break; sleep 0.2; done
    done
  # Global sysctls the kubelet sets (it "protects kernel defaults" by changing them).
  grep ' = ' <(sed -n '/^## sysctls/,/^## /p' "$state/host-before") | while read -r k _ v; do
    [ "$(sysctl -n "$k" 2>/dev/null)" = "$v" ] || sysctl -q -w "$k=$v"
  done
  host_state >"$state/host-after"
  if diff -u "$state/host-before" "$state/host-after" >"$state/host-diff"; then
    echo "host state check: restored (sysctls, links, addresses, iptables, ports, mounts, cgroups, paths identical to before)"
  else
    echo "host state check: FAILED, the host differs from before the test:" >&2; cat "$state/host-diff" >&2
    [ "$rc" = 0 ] && rc=1
  fi
  echo "test-cluster finished in $(( $(date +%s) - t0 ))s (rc=$rc)"
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# The node: new network, mount and PID namespaces; PID 1 in them runs hack/node/node.sh.
BINS=$bins STATE=$state REPO=$repo unshare --net --mount --pid --fork --kill-child --mount-proc --propagation private \
  bash hack/node/node.sh &
node_pid=$!
wait "$node_pid"
