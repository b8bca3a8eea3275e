#!/usr/bin/env bash
# Prints the directory holding `etcd`, `kube-apiserver` and `kube-controller-manager` for the local
# control plane, building them first from the Go module proxy at the versions pinned in this folder's
# go.mod files if they are not cached yet. The cache lives outside target/ so that `cargo clean` does
# not cost a 10-minute rebuild. Both Kubernetes binaries come from one module (kube-apiserver/go.mod):
# one pinned release, one go.sum.
#
# Existing binaries win, as envtest users expect: TEST_ASSET_ETCD, TEST_ASSET_KUBE_APISERVER and
# TEST_ASSET_KUBE_CONTROLLER_MANAGER name files, KUBEBUILDER_ASSETS names a directory holding them.
# A binary provided that way is not built (envtest's asset bundles hold no kube-controller-manager,
# so that one is usually built); the caller prefers the provided ones too.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
apiserver_version=$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$here/kube-apiserver/go.mod")
etcd_version=$(grep -oE "go.etcd.io/etcd/server/v3 v[0-9.]+" "$here/etcd/go.mod" | head -n1 | cut -d" " -f2)
cache=${SCOPED_SECRETS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scoped-secrets}/controlplane/apiserver-${apiserver_version}_etcd-${etcd_version}
mkdir -p "$cache"

provided() { # name, TEST_ASSET_* variable
  local name=$1 var=$2
  [ -n "${!var:-}" ] || [ -x "${KUBEBUILDER_ASSETS:-/nonexistent}/$name" ]
}

build() { # name, TEST_ASSET_* variable, module dir, package
  local name=$1 var=$2 dir=$3 pkg=$4
  [ -x "$cache/$name" ] && return 0
  provided "$name" "$var" && return 0
  command -v go >/dev/null || { echo "go is required to build $name (or set $var or KUBEBUILDER_ASSETS)" >&2; exit 1; }
  echo "building $name ($pkg) into $cache; the first build takes several minutes" >&2
  (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=readonly nice -n "${GO_NICE:-15}" go build -trimpath -ldflags='-s -w' -o "$cache/$name.tmp" "$pkg")
  mv "$cache/$name.tmp" "$cache/$name"
}
build etcd TEST_ASSET_ETCD "$here/etcd" .
build kube-apiserver TEST_ASSET_KUBE_APISERVER "$here/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
build kube-controller-manager TEST_ASSET_KUBE_CONTROLLER_MANAGER "$here/kube-apiserver" k8s.io/kubernetes/cmd/kube-controller-manager
# `build.sh --node`: also the node's binaries for `make test-cluster` (kubelet alone is ~13 minutes
# cold on two busy cores), from the same module, so the same release and replace block.
if [ "${1:-}" = --node ]; then
  build kube-scheduler TEST_ASSET_KUBE_SCHEDULER "$here/kube-apiserver" k8s.io/kubernetes/cmd/kube-scheduler
  build kube-proxy TEST_ASSET_KUBE_PROXY "$here/kube-apiserver" k8s.io/kubernetes/cmd/kube-proxy
  build kubelet TEST_ASSET_KUBELET "$here/kube-apiserver" k8s.io/kubernetes/cmd/kubelet
fi
echo "$cache"
