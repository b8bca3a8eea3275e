#!/usr/bin/env bash
# PID 1 of the node's namespaces (started by hack/node/test-cluster.sh with BINS, STATE, REPO): brings
# up the control plane on the node address, containerd, kube-scheduler, kube-proxy and the kubelet,
# imports the images, then runs hack/node/scenarios.sh. Everything it starts dies with it.
set -euo pipefail
cd "$REPO"
node_ip=10.200.0.1
pod_cidr=10.244.0.0/24
logs=$STATE/logs
kubeconfig=$STATE/control-plane/kubeconfig
export KUBECONFIG=$kubeconfig
trap 'kill -TERM -- -1 2>/dev/null; exit 143' TERM INT

# Network: only interfaces made here. `ss-node0` (an empty bridge) holds the node's (and the apiserver's) address;
# the CNI bridge plugin makes the pods' bridge `ss-br0`.
ip link set lo up
ip link add ss-node0 type bridge # (a bridge without ports: this kernel has no dummy driver)
ip addr add "$node_ip/32" dev ss-node0
ip link set ss-node0 up
# No default route in here: give the Service range one, so that a connection to a ClusterIP from the
# node itself (the apiserver calling the webhook) passes routing and reaches kube-proxy's DNAT.
ip route add 10.0.0.0/24 dev ss-node0
# Mounts private to this namespace: a sysfs that shows this network namespace (keeping the cgroup
# hierarchy), and empty /run, /var/lib and /var/log for the paths the kubelet, containerd and CNI
# hard-code (/var/log/pods, /var/log/containers, /var/lib/cni, /run/containerd).
mkdir -p "$STATE/cgroup-hold"
mount --rbind /sys/fs/cgroup "$STATE/cgroup-hold"
mount -t sysfs sysfs /sys
mount --move "$STATE/cgroup-hold" /sys/fs/cgroup
for d in /run /var/lib /var/log; do mount -t tmpfs -o mode=0755 tmpfs "$d"; done

start() { # name, command...
  local name=$1; shift
  "$@" >"$logs/$name.log" 2>&1 &
  echo "$!" >"$STATE/$name.pid"
}
wait_for() { # seconds, description, command...
  local seconds=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + seconds ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then echo "timed out after ${seconds}s waiting for $what" >&2; return 1; fi
    sleep 0.5
  done
}
t0=$(date +%s)

# Control plane on the node address: the apiserver serves 10.0.0.1 (the `kubernetes` Service) and
# the endpoint reconciler publishes $node_ip there; the controller manager runs the controllers a
# node's workloads need.
export SCOPED_SECRETS_CONTROL_PLANE_CONTROLLERS="namespace-controller,garbage-collector-controller,\
serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,\
deployment-controller,replicaset-controller,endpoints-controller,endpointslice-controller,\
endpointslice-mirroring-controller,disruption-controller,node-lifecycle-controller,\
pod-garbage-collector-controller,taint-eviction-controller,ttl-controller"
start control-plane "$CARGO_TARGET_DIR/debug/local-control-plane" --dir "$STATE/control-plane" --address "$node_ip"
wait_for 180 "the control plane" grep -q '^ready kubeconfig=' "$logs/control-plane.log"
echo "control plane ready after $(( $(date +%s) - t0 ))s"

# containerd: its own root and socket; runc; cgroupfs; CNI bridge.
mkdir -p "$STATE/containerd" "$STATE/cni/net.d" "$STATE/kubelet" "$STATE/pod-logs"
sock=/run/ss-node/containerd.sock
cat >"$STATE/containerd/config.toml" <<TOML
version = 2
root = "$STATE/containerd/root"
state = "/run/ss-node/containerd"
oom_score = 0
[grpc]
  address = "$sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  # This machine's processes cannot lower their OOM score adjustment below their parent's.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
TOML
cat >"$STATE/cni/net.d/10-ss-node.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "ss-node",
  "plugins": [
    {"type": "bridge", "bridge": "ss-br0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$pod_cidr"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
start containerd containerd --config "$STATE/containerd/config.toml"
wait_for 60 containerd ctr -a "$sock" version
for image in "$STATE"/images/*.tar; do ctr -a "$sock" -n k8s.io images import "$image" >/dev/null; done
echo "containerd ready, images imported after $(( $(date +%s) - t0 ))s"

cat >"$STATE/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication: {anonymous: {enabled: false}, webhook: {enabled: false}, x509: {}}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$sock
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
oomScoreAdj: 0
protectKernelDefaults: false
resolvConf: ""
podLogsDir: $STATE/pod-logs
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%"}
staticPodPath: ""
YAML
start kubelet "$BINS/kubelet" --config="$STATE/kubelet/config.yaml" --kubeconfig="$kubeconfig" \
  --root-dir="$STATE/kubelet" --hostname-override=ss-node --node-ip="$node_ip" --v=1
cat >"$STATE/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $kubeconfig}
hostnameOverride: ss-node
mode: iptables
clusterCIDR: $pod_cidr
bindAddress: $node_ip
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false}
YAML
start kube-proxy "$BINS/kube-proxy" --config="$STATE/kube-proxy.yaml"
start kube-scheduler "$BINS/kube-scheduler" --kubeconfig="$kubeconfig" --leader-elect=false \
  --bind-address=127.0.0.1
wait_for 120 "node ss-node Ready" kubectl wait --for=condition=Ready node/ss-node --timeout=5s
echo "node Ready after $(( $(date +%s) - t0 ))s"

NODE_IP=$node_ip bash hack/node/scenarios.sh
