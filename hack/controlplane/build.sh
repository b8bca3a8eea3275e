#!/usr/bin/env bash
# Prints the directory holding `etcd` and `kube-apiserver` for the local control plane, building them
# first from the Go module proxy at the versions pinned in this folder's go.mod files if they are not
# cached yet. The cache lives outside target/ so that `cargo clean` does not cost a 10-minute rebuild.
#
# Existing binaries win, as envtest users expect: TEST_ASSET_KUBE_APISERVER and TEST_ASSET_ETCD name
# files, KUBEBUILDER_ASSETS names a directory holding both. (Those are honoured by the caller too; this
# script only builds what is missing.)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
apiserver_version=$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$here/kube-apiserver/go.mod")
etcd_version=$(grep -oE "go.etcd.io/etcd/server/v3 v[0-9.]+" "$here/etcd/go.mod" | head -n1 | cut -d" " -f2)
cache=${SCOPED_SECRETS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scoped-secrets}/controlplane/apiserver-${apiserver_version}_etcd-${etcd_version}
mkdir -p "$cache"

build() { # name, module dir, package
  local name=$1 dir=$2 pkg=$3
  [ -x "$cache/$name" ] && return 0
  command -v go >/dev/null || { echo "go is required to build $name (or set KUBEBUILDER_ASSETS)" >&2; exit 1; }
  echo "building $name ($pkg) into $cache; the first build takes several minutes" >&2
  (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -ldflags='-s -w' -o "$cache/$name.tmp" "$pkg")
  mv "$cache/$name.tmp" "$cache/$name"
}
build etcd "$here/etcd" .
build kube-apiserver "$here/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
echo "$cache"
