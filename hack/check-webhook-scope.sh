#!/usr/bin/env bash
# Proves, against a real kube-apiserver, WHICH requests reach which webhook entry of deploy/, and
# what an outage of the webhook costs. The server-side dry run of check-manifests.sh only compiles
# the matchConditions; their behaviour at request time (`object` is null on DELETE, `oldObject` on
# CREATE; missing labels/annotations maps) is only seen when a request is admitted.
#
# How: the base's RBAC and webhook configurations are applied for real, but no Service exists, so
# every call to the webhook fails at once. A request the apiserver sends to a Fail entry is then
# refused with `failed calling webhook "<entry>"`; one sent only to Ignore entries (or to none)
# passes. That is exactly the outage behaviour docs/SPEC.md §5 asks for, observed rather than assumed.
# Probes are server-side dry runs, so they leave nothing behind; the few objects they act on are
# written before the webhooks are registered. Requests made as the reconciler's service account
# (impersonation) check the matchConditions and the ClusterRole together.
#
# Usage: KUBECONFIG=/path/to/throwaway/kubeconfig hack/check-webhook-scope.sh [base|beside-rancher]
#   base            (default) deploy/base: the reconciler's full permissions
#   beside-rancher  deploy/overlays/beside-rancher: read-only permissions, and Rancher's identities
#                   skip the webhooks too (they get a temporary cluster-admin binding for the probe)
# Refuses to run where a scoped-secrets webhook configuration already exists. Removes the webhook
# configurations and RBAC it applied on exit; leaves the namespaces scoped-secrets-system and
# scoped-secrets-probe(-member) (a cluster without a namespace controller cannot delete them).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:-base}
case $mode in
  base) kdir=$root/deploy/base ;;
  beside-rancher) kdir=$root/deploy/overlays/beside-rancher ;;
  *) echo "usage: $0 [base|beside-rancher]" >&2; exit 2 ;;
esac
rancher_users=(system:serviceaccount:cattle-system:rancher system:serviceaccount:cattle-system:cattle)
: "${KUBECONFIG:?set KUBECONFIG to a throwaway cluster}"
export KUBECONFIG
sa=system:serviceaccount:scoped-secrets-system:scoped-secrets
ns=scoped-secrets-probe
member=scoped-secrets-probe-member
work=$(mktemp -d)
applied=false
crd_created=false

cleanup() {
  if $applied; then
    kubectl delete validatingwebhookconfiguration scoped-secrets --ignore-not-found >/dev/null || true
    kubectl delete mutatingwebhookconfiguration scoped-secrets --ignore-not-found >/dev/null || true
    kubectl delete -f "$work/rbac.yaml" --ignore-not-found >/dev/null 2>&1 || true
    kubectl delete clusterrolebinding scoped-secrets-probe-rancher --ignore-not-found >/dev/null 2>&1 || true
    kubectl delete secret -n "$ns" -l scoped-secrets.io/probe=true --ignore-not-found >/dev/null 2>&1 || true
  fi
  if $crd_created; then
    kubectl delete crd projects.management.cattle.io --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if kubectl get validatingwebhookconfiguration scoped-secrets >/dev/null 2>&1 ||
   kubectl get mutatingwebhookconfiguration scoped-secrets >/dev/null 2>&1; then
  echo "check-webhook-scope: scoped-secrets is installed in this cluster; run this on a throwaway one" >&2
  exit 2
fi

kubectl kustomize "$kdir" >"$work/all.yaml"
yq 'select(.kind == "ClusterRole" or .kind == "ClusterRoleBinding" or .kind == "Role" or .kind == "RoleBinding" or .kind == "ServiceAccount")' \
  "$work/all.yaml" >"$work/rbac.yaml"
# The CRD comes from the base in both modes (beside Rancher, Rancher would have installed it).
kubectl kustomize "$root/deploy/base" | yq 'select(.kind == "CustomResourceDefinition")' >"$work/crd.yaml"
yq 'select(.kind == "ValidatingWebhookConfiguration" or .kind == "MutatingWebhookConfiguration")' \
  "$work/all.yaml" >"$work/webhooks.yaml"
if yq -e 'select(.kind == "Service")' "$work/webhooks.yaml" >/dev/null 2>&1; then exit 3; fi

kubectl apply -f "$root/deploy/base/namespace.yaml" >/dev/null
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
applied=true
kubectl apply -f "$work/rbac.yaml" >/dev/null
if [ "$mode" = beside-rancher ]; then
  # Stand-ins for Rancher's own rights, so its requests get past authorization to admission.
  kubectl create clusterrolebinding scoped-secrets-probe-rancher --clusterrole=cluster-admin \
    --serviceaccount=cattle-system:rancher --serviceaccount=cattle-system:cattle >/dev/null
fi
# The Project CRD (removed on exit unless it was there before): the reconciler's rights on projects
# are checked below, and `kubectl get projects -A` must show the backing namespace.
if ! kubectl get crd projects.management.cattle.io >/dev/null 2>&1; then
  crd_created=true
  kubectl apply -f "$work/crd.yaml" >/dev/null
  kubectl wait --for=condition=Established --timeout=30s crd/projects.management.cattle.io >/dev/null
fi

# Fixtures, written before the webhooks exist: a namespace in a project, an original, a copy.
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $member
  annotations: {field.cattle.io/projectId: "local:p-probe"}
  labels: {field.cattle.io/projectId: p-probe}
---
apiVersion: v1
kind: Secret
metadata:
  name: original
  namespace: $ns
  labels: {management.cattle.io/project-scoped-secret: p-probe, scoped-secrets.io/probe: "true"}
---
apiVersion: v1
kind: Secret
metadata:
  name: copy
  namespace: $ns
  labels: {scoped-secrets.io/probe: "true"}
  annotations: {management.cattle.io/project-scoped-secret-copy: "true"}
---
apiVersion: v1
kind: Secret
metadata:
  name: plain
  namespace: $ns
  labels: {scoped-secrets.io/probe: "true"}
EOF

# A Project in cluster "local" (the project guard judges writes to it once registered).
kubectl create namespace local --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -f - >/dev/null <<EOF
apiVersion: management.cattle.io/v3
kind: Project
metadata: {name: p-probe, namespace: local}
spec: {clusterName: local, displayName: Probe}
EOF
if [ "$mode" = base ]; then
  # The printer columns, with status.backingNamespace set through the status subresource (before the
  # project guard exists: it judges an admin's status write too). The reconciler's own merge patch
  # of projects/status, with only the `patch` verb, is exercised by tests/reconciler's
  # projects_without_a_backing_namespace_get_one.
  kubectl patch project p-probe -n local --subresource=status --type=merge \
    -p '{"status":{"backingNamespace":"local-p-probe"}}' >/dev/null
fi

kubectl apply -f "$work/webhooks.yaml" >/dev/null
# Webhook configurations reach the apiserver's admission chain asynchronously; wait until a probe
# that must be refused is refused.
for _ in $(seq 1 50); do
  kubectl label secret original -n "$ns" warm=up --dry-run=server >/dev/null 2>&1 || break
  sleep 0.2
done

failures=0
# expect <blocked-by-entry|pass> <description> -- <kubectl args...>
expect() {
  local want=$1 what=$2; shift 3
  local out
  if out=$(kubectl "$@" 2>&1); then
    if [ "$want" = pass ]; then echo "ok   passes:  $what"; return; fi
    echo "FAIL $what: admitted, want refused by $want"
  else
    if [ "$want" != pass ] && grep -q "failed calling webhook \"$want\"" <<<"$out"; then
      echo "ok   blocked: $what"; return
    fi
    echo "FAIL $what: want ${want/#pass/admitted}, got: $out"
  fi
  failures=$((failures + 1))
}

guard=secret-guard.scoped-secrets.io
nsguard=namespace-guard.scoped-secrets.io
label=management.cattle.io/project-scoped-secret
copy=management.cattle.io/project-scoped-secret-copy

echo "-- secrets (an outage blocks only project-scoped secrets and copies)"
expect pass   "create an ordinary secret (secret-names fails open)" -- \
  create secret generic probe-plain -n "$ns" --from-literal=k=v --dry-run=server
expect pass   "update an ordinary secret" -- label secret plain -n "$ns" probe=1 --dry-run=server
expect pass   "delete an ordinary secret" -- delete secret plain -n "$ns" --dry-run=server
expect "$guard" "create with the project-scoped label (oldObject is null)" -- \
  apply --dry-run=server -f - <<<"{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"l\",\"namespace\":\"$ns\",\"labels\":{\"$label\":\"p\"}}}"
expect "$guard" "create with a forged copy marker" -- \
  apply --dry-run=server -f - <<<"{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"c\",\"namespace\":\"$ns\",\"annotations\":{\"$copy\":\"true\"}}}"
expect "$guard" "create with a forged origin annotation" -- \
  apply --dry-run=server -f - <<<"{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"o\",\"namespace\":\"$ns\",\"annotations\":{\"scoped-secrets.io/origin\":\"x/y\"}}}"
expect "$guard" "add a copy marker to an ordinary secret" -- \
  annotate secret plain -n "$ns" "$copy=true" --dry-run=server
expect "$guard" "remove the label from an original (seen on oldObject)" -- \
  label secret original -n "$ns" "$label-" --dry-run=server
expect "$guard" "delete an original (object is null on DELETE)" -- delete secret original -n "$ns" --dry-run=server
expect "$guard" "delete a copy" -- delete secret copy -n "$ns" --dry-run=server
if [ "$mode" = base ]; then
  expect pass "the reconciler's account skips the guard (matchConditions)" -- \
    delete secret copy -n "$ns" --dry-run=server --as="$sa"
else
  for u in "${rancher_users[@]}"; do
    expect pass "$u skips the guard (Rancher's copier)" -- delete secret copy -n "$ns" --dry-run=server --as="$u"
  done
fi
expect pass   "kube-system is outside every webhook (namespaceSelector)" -- \
  apply --dry-run=server -f - <<<"{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"l\",\"namespace\":\"kube-system\",\"labels\":{\"$label\":\"p\"}}}"
expect pass   "scoped-secrets-system is outside every webhook (its TLS secret can always be fixed)" -- \
  apply --dry-run=server -f - <<<"{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"l\",\"namespace\":\"scoped-secrets-system\",\"labels\":{\"$label\":\"p\"}}}"

echo "-- namespaces (an outage blocks only changes of project membership)"
expect pass     "create an ordinary namespace" -- create namespace probe-plain --dry-run=server
expect "$nsguard" "create a namespace with the projectId annotation" -- \
  apply --dry-run=server -f - <<<'{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"probe-a","annotations":{"field.cattle.io/projectId":"local:p"}}}'
expect pass     "create a namespace with only the projectId label (the mutator's; no membership change)" -- \
  apply --dry-run=server -f - <<<'{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"probe-l","labels":{"field.cattle.io/projectId":"p"}}}'
expect "$nsguard" "move a namespace into a project" -- \
  annotate namespace "$ns" field.cattle.io/projectId=local:p --dry-run=server
expect "$nsguard" "take a namespace out of its project (seen on oldObject)" -- \
  annotate namespace "$member" field.cattle.io/projectId- --dry-run=server
expect "$nsguard" "kube-system joining a project (no namespace is exempt from the guard)" -- \
  annotate namespace kube-system field.cattle.io/projectId=local:p --dry-run=server
expect "$nsguard" "marking a namespace as a project's backing namespace (N5)" -- \
  annotate namespace "$ns" scoped-secrets.io/backing-namespace-of=local:p --dry-run=server
expect pass     "an ordinary change to kube-system (matchConditions)" -- \
  label namespace kube-system probe=1 --dry-run=server
expect pass     "an ordinary change to a namespace in a project (matchConditions)" -- \
  label namespace "$member" probe=1 --dry-run=server
# No rule is about deleting a namespace, so the fail-closed guard is not called for it: an outage
# never holds up namespace deletion (or the namespace controller).
expect pass "delete a namespace in a project (no rule is about it)" -- delete namespace "$member" --dry-run=server
if [ "$mode" = base ]; then
  expect pass "the reconciler's account skips the guard" -- \
    label namespace "$member" field.cattle.io/projectId=p-probe2 --overwrite --dry-run=server --as="$sa"
else
  for u in "${rancher_users[@]}"; do
    expect pass "$u skips the guard" -- \
      label namespace "$member" field.cattle.io/projectId=p-probe2 --overwrite --dry-run=server --as="$u"
  done
fi

pguard=project-guard.scoped-secrets.io
project_json='{"apiVersion":"management.cattle.io/v3","kind":"Project","metadata":{"name":"p-new","namespace":"local"},"spec":{"clusterName":"local"}}'
echo "-- projects (an outage blocks only creating Projects and changing their cluster or backing namespace)"
expect "$pguard" "create a Project" -- apply --dry-run=server -f - <<<"$project_json"
expect "$pguard" "set status.backingNamespace (the status subresource)" -- \
  patch project p-probe -n local --subresource=status --type=merge \
  -p '{"status":{"backingNamespace":"somewhere"}}' --dry-run=server
expect "$pguard" "change spec.clusterName" -- \
  patch project p-probe -n local --type=merge -p '{"spec":{"clusterName":"other"}}' --dry-run=server
expect pass "label a Project (its claim unchanged)" -- label project p-probe -n local probe=1 --dry-run=server
expect pass "write a Project's status conditions (its claim unchanged)" -- \
  patch project p-probe -n local --subresource=status --type=merge \
  -p '{"status":{"conditions":[{"type":"Probe","status":"True"}]}}' --dry-run=server
expect pass "delete a Project (no rule is about it)" -- delete project p-probe -n local --dry-run=server
if [ "$mode" = base ]; then
  # The admin lends the reconciler's name its group: the reconciler's RBAC lacks the GET kubectl
  # makes first; only the username matters to the matchConditions.
  expect pass "the reconciler's account skips the guard" -- \
    patch project p-probe -n local --subresource=status --type=merge \
    -p '{"status":{"backingNamespace":"somewhere"}}' --dry-run=server --as="$sa" --as-group=system:masters
else
  # Rancher names the Projects it creates and records their backing namespaces itself.
  for u in "${rancher_users[@]}"; do
    expect pass "$u skips the guard" -- apply --dry-run=server --as="$u" -f - <<<"$project_json"
  done
fi

echo "-- recovery"
expect pass "deleting the webhook configurations is never blocked" -- \
  delete validatingwebhookconfiguration scoped-secrets --dry-run=server

echo "-- the reconciler's ClusterRole (kubectl auth can-i as $sa)"
can() {
  local want=$1; shift
  local got
  got=$(kubectl auth can-i "$@" --as="$sa" 2>/dev/null || true)
  if [ "$got" = "$want" ]; then echo "ok   can-i $* = $want"; else
    echo "FAIL can-i $*: want $want, got $got"; failures=$((failures + 1)); fi
}
if [ "$mode" = base ]; then
  for v in get list watch create update delete; do can yes "$v" secrets -A; done
  can no patch secrets -A
  for v in get list watch create patch; do can yes "$v" namespaces; done
  for v in update delete; do can no "$v" namespaces; done
  for v in get list watch; do can yes "$v" projects.management.cattle.io -A; done
  can no update projects.management.cattle.io -A
  can yes patch projects.management.cattle.io --subresource=status -A
  can no update projects.management.cattle.io --subresource=status -A
  can yes create subjectaccessreviews.authorization.k8s.io
  can yes create events.events.k8s.io -A
  can no create events -A
  for v in get create update; do can yes "$v" leases.coordination.k8s.io -n scoped-secrets-system; done
  can no get leases.coordination.k8s.io -n kube-system
  can no get configmaps -A
else
  # Webhook only: reads its index, asks SubjectAccessReviews, writes nothing else.
  for r in secrets namespaces projects.management.cattle.io; do
    for v in get list watch; do can yes "$v" "$r" -A; done
    for v in create update patch delete; do can no "$v" "$r" -A; done
  done
  can no update projects.management.cattle.io --subresource=status -A
  can yes create subjectaccessreviews.authorization.k8s.io
  can no create events.events.k8s.io -A
  can no create leases.coordination.k8s.io -n scoped-secrets-system
fi

if [ "$mode" = base ]; then
  echo "-- the Project CRD"
  if kubectl get projects -A >"$work/projects.txt" && grep -q "BACKING NAMESPACE" "$work/projects.txt" &&
     grep -Eq "^local +p-probe +Probe +local +local-p-probe " "$work/projects.txt"; then
    echo "ok   kubectl get projects -A shows the backing namespace"
  else
    echo "FAIL Project printer columns or status write:"; cat "$work/projects.txt" 2>/dev/null || true
    failures=$((failures + 1))
  fi
  # The CRD's own validation runs before any webhook, so these hold during an outage too; the
  # messages tell them apart from the (unreachable) project guard's refusal.
  crd_refuses() {
    local what=$1 want=$2 out
    if out=$(kubectl apply --dry-run=server -f - 2>&1) || ! grep -q -- "$want" <<<"$out"; then
      echo "FAIL $what: want the CRD's \"$want\", got: $out"; failures=$((failures + 1))
    else echo "ok   $what"; fi
  }
  crd_refuses "spec.clusterName is required" "spec.clusterName: Required value" <<EOF
apiVersion: management.cattle.io/v3
kind: Project
metadata: {name: p-bad, namespace: local}
spec: {displayName: No cluster}
EOF
  crd_refuses "a Project name must be able to name a namespace" "cannot form a namespace name" <<EOF
apiVersion: management.cattle.io/v3
kind: Project
metadata: {name: p.dotted, namespace: local}
spec: {clusterName: local}
EOF
fi
kubectl delete project p-probe -n local --ignore-not-found >/dev/null

if [ "$failures" -ne 0 ]; then echo "$failures check(s) failed"; exit 1; fi
echo "all checks passed"
