#!/usr/bin/env bash
# Checks every kustomization under deploy/ against a real kube-apiserver:
#   1. `kubectl kustomize` builds it (client side);
#   2. `kubectl apply --dry-run=server` accepts it (server side: schemas, CEL compilation of the
#      webhooks' matchConditions, RBAC objects, the CRD, Pod Security warnings).
# Any error, and any warning from the server, fails the check.
#
# Usage: KUBECONFIG=/path/to/kubeconfig hack/check-manifests.sh
#
# Meant for a throwaway cluster such as the local control plane
# (`cargo run -p testbed --bin local-control-plane -- --dir /tmp/cp`). It writes two things for real, because a
# server-side dry run cannot do without them:
#   - the namespace scoped-secrets-system (namespaced objects are dry-run into an existing namespace);
#     it is left in place: without a namespace controller (the local control plane has none) a
#     deleted namespace would stay Terminating and break the next run;
#   - stand-in CRDs for cert-manager's Issuer and Certificate (only if the cluster has no
#     cert-manager CRDs), so the cert-manager overlay can be dry-run; they accept any spec, so that
#     overlay's cert-manager objects are checked for shape only by `kubectl kustomize`. The
#     stand-ins carry the label scoped-secrets.io/stand-in=true and are deleted on exit.
# The self-signed and dev overlays need certificate files; the check runs on a copy of deploy/ with
# throwaway certificates made by openssl, so your working tree is never touched.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
: "${KUBECONFIG:?set KUBECONFIG to the cluster to check against}"
export KUBECONFIG

work=$(mktemp -d)
standins_created=false
cleanup() {
  if $standins_created; then
    kubectl delete crd -l scoped-secrets.io/stand-in=true --ignore-not-found --wait=false >/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "check-manifests: $*" >&2; exit 1; }

kubectl get --raw /readyz >/dev/null 2>&1 || fail "cannot reach the cluster in $KUBECONFIG"

# A copy of deploy/, with throwaway certificates for the overlays that read certs/ files.
cp -r "$root/deploy" "$work/deploy"
certs="$work/deploy/overlays/self-signed/certs"
rm -rf "$certs" && mkdir -p "$certs"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj "/CN=check-manifests CA" -keyout "$certs/ca.key" -out "$certs/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=scoped-secrets.scoped-secrets-system.svc" -keyout "$certs/tls.key" -out "$certs/tls.csr" 2>/dev/null
openssl x509 -req -days 1 -in "$certs/tls.csr" -CA "$certs/ca.crt" -CAkey "$certs/ca.key" -CAcreateserial \
  -extfile <(printf 'subjectAltName=DNS:scoped-secrets.scoped-secrets-system.svc,DNS:scoped-secrets.scoped-secrets-system.svc.cluster.local') \
  -out "$certs/tls.crt" 2>/dev/null

# The namespace, for real (see above).
kubectl apply -f "$root/deploy/base/namespace.yaml" >/dev/null

# cert-manager stand-ins, unless the real CRDs are there.
if ! kubectl get crd certificates.cert-manager.io issuers.cert-manager.io >/dev/null 2>&1; then
  echo "installing stand-in CRDs for cert-manager Issuer and Certificate (removed on exit)"
  standins_created=true
  kubectl apply -f "$root/hack/testdata/cert-manager-stand-in-crds.yaml" >/dev/null
  kubectl wait --for=condition=Established --timeout=30s \
    crd/certificates.cert-manager.io crd/issuers.cert-manager.io >/dev/null
fi

status=0
for dir in "$work"/deploy/base "$work"/deploy/overlays/*/ "$work"/deploy/downstream-access; do
  dir=${dir%/}
  name=${dir#"$work"/}
  [ -f "$dir/kustomization.yaml" ] || continue
  out="$work/$(echo "$name" | tr / _)"
  if ! kubectl kustomize "$dir" >"$out.yaml" 2>"$out.err"; then
    echo "FAIL $name: kubectl kustomize"; sed 's/^/    /' "$out.err"; status=1; continue
  fi
  # kubectl prints server warnings (deprecations, Pod Security) on stderr prefixed "Warning:".
  if ! kubectl apply --dry-run=server -f "$out.yaml" >"$out.log" 2>"$out.err"; then
    echo "FAIL $name: kubectl apply --dry-run=server"; sed 's/^/    /' "$out.err"; status=1; continue
  fi
  if grep -q . "$out.err"; then
    echo "FAIL $name: warnings from the server"; sed 's/^/    /' "$out.err"; status=1; continue
  fi
  echo "ok   $name ($(grep -c . "$out.log") objects)"
done
exit $status
