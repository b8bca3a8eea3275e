#!/usr/bin/env bash
# Prints the path of a `helm` binary for the chart's tests, building it first from the Go module proxy
# at the release pinned in this folder's go.mod if it is not cached yet. The cache lives beside the
# control plane's (outside target/, so `cargo clean` does not cost a rebuild).
#
# An existing binary wins: HELM names one (it is used as it is, whatever its version).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -n "${HELM:-}" ]; then
  [ -x "$HELM" ] || { echo "HELM=$HELM is not an executable file" >&2; exit 1; }
  echo "$HELM"
  exit 0
fi
version=$(awk '$1 == "helm.sh/helm/v3" { print $2 }' "$here/go.mod")
# helm's Makefile stamps the Kubernetes version its client-go speaks (client-go v0.34 is Kubernetes
# 1.34) as the default of `helm template` and `helm lint`; unstamped, helm assumes 1.20.
client_go_minor=$(awk '$1 == "k8s.io/client-go" { split($2, v, "."); print v[2] }' "$here/go.mod")
cache=${SCOPED_SECRETS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scoped-secrets}/helm/$version
if [ ! -x "$cache/helm" ]; then
  command -v go >/dev/null || { echo "go is required to build helm (or set HELM)" >&2; exit 1; }
  mkdir -p "$cache"
  echo "building helm $version into $cache; the first build takes a few minutes" >&2
  # The machine is shared: build at low priority. Versions are stamped as helm's own Makefile does.
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$client_go_minor"
  done
  (cd "$here" && CGO_ENABLED=0 GOFLAGS=-mod=readonly nice -n 15 go build -trimpath -ldflags="$ldflags" \
    -o "$cache/helm.tmp" helm.sh/helm/v3/cmd/helm)
  mv "$cache/helm.tmp" "$cache/helm"
fi
echo "$cache/helm"
