#!/usr/bin/env bash
# The scenarios run on the test node (by hack/node/node.sh, inside the node's namespaces, KUBECONFIG
# set to the admin kubeconfig).
set -euo pipefail
k() { kubectl "$@"; }
step() { echo "--- $*"; }

eventually() { # seconds, description, command...
  local seconds=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + seconds ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then echo "not within ${seconds}s: $what" >&2; return 1; fi
    sleep 0.5
  done
}
copied() { # namespace, name, expected base64 value of key
  [ "$(k -n "$1" get secret "$2" -o jsonpath='{.data.key}' 2>/dev/null)" = "$3" ]
}

# Ready pods are not yet a routed Service: until kube-proxy has programmed the new endpoints, a
# fail-closed webhook is refused a connection. Waits until the secret guard (failurePolicy Fail;
# called for this labelled secret) answers through the Service, admitting or denying, as an operator
# would before relying on it.
guard_answers() {
  local out
  out=$(k create --dry-run=server -o name -f "$STATE/routing-probe.yaml" 2>&1) || true
  grep -qE '^secret/routing-probe$|"secret-guard.scoped-secrets.io" denied' <<<"$out"
}
webhook_routed() {
  cat >"$STATE/routing-probe.yaml" <<YAML
apiVersion: v1
kind: Secret
metadata: {name: routing-probe, namespace: default, labels: {management.cattle.io/project-scoped-secret: p-probe}}
YAML
  local t; t=$(date +%s%N)
  eventually 60 "the webhook reachable through its Service" guard_answers
  echo "the webhook answered through the Service $(( ($(date +%s%N) - t) / 1000000 )) ms after the pods were Ready"
}

step "a pod with a restricted securityContext on the node"
t=$(date +%s%N)
k apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: pause, namespace: default}
spec:
  automountServiceAccountToken: false
  securityContext: {runAsNonRoot: true, runAsUser: 65535, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: pause
    image: registry.k8s.io/pause:3.10
    imagePullPolicy: Never
    securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
YAML
k wait --for=condition=Ready pod/pause --timeout=120s >/dev/null
echo "first pod Ready in $(( ($(date +%s%N) - t) / 1000000 )) ms"
k delete pod pause --wait=false >/dev/null

# ---------------------------------------------------------------------------------------------------
step "deploy/overlays/self-signed, unchanged, applied with kubectl (server-side)"
# A copy of deploy/ so that the certificates made here never touch the checkout's certs/ folder.
work=$STATE/deploy-copy
rm -rf "$work" && cp -r "$REPO/deploy" "$work"
"$CARGO_TARGET_DIR/debug/scoped-secrets" certs --out "$work/overlays/self-signed/certs" >/dev/null
diff -r --exclude=certs "$REPO/deploy" "$work" >/dev/null || { echo "the manifests were changed" >&2; exit 1; }
t=$(date +%s%N)
k apply --server-side -k "$work/overlays/self-signed" >/dev/null
k -n scoped-secrets-system rollout status deploy/scoped-secrets --timeout=300s
ready=$(k -n scoped-secrets-system get deploy scoped-secrets -o jsonpath='{.status.readyReplicas}')
[ "$ready" = 3 ] || { echo "expected 3 ready replicas, got ${ready:-0}" >&2; exit 1; }
echo "3 replicas Ready $(( ($(date +%s%N) - t) / 1000000 )) ms after the apply"
k -n scoped-secrets-system get pods -o wide
webhook_routed

step "Rancher's documented example (examples/rancher/), copied by the in-cluster reconciler"
k apply -f "$REPO/examples/rancher/01-project.yaml" >/dev/null
eventually 60 "the project's backing namespace local-p-vwxyz" k get namespace local-p-vwxyz
k apply -f "$REPO/examples/rancher/02-namespaces.yaml" >/dev/null
k apply -f "$REPO/examples/rancher/03-test-secret.yaml" >/dev/null
eventually 60 "test-secret copied into team-a" copied team-a test-secret ZG9n
eventually 60 "test-secret copied into team-b" copied team-b test-secret ZG9n
leader=$(k -n scoped-secrets-system get lease scoped-secrets -o jsonpath='{.spec.holderIdentity}')
echo "copied into team-a and team-b by $leader; copy's managed-by: $(k -n team-a get secret test-secret -o jsonpath='{.metadata.managedFields[*].manager}')"

step "the apiserver calls the webhook through the Service: a denial, a warning and a mutation"
if out=$(k -n team-a label secret test-secret edited=yes 2>&1); then
  echo "a copy was edited: $out" >&2; exit 1
fi
grep -q 'is a copy of project-scoped secret "local-p-vwxyz/test-secret"' <<<"$out" \
  || { echo "unexpected denial: $out" >&2; exit 1; }
echo "denial: $out"
k -n team-b create secret generic db --from-literal=key=team-b-own >/dev/null
k -n local-p-vwxyz apply -f - 2>"$STATE/warning.txt" >/dev/null <<YAML
apiVersion: v1
kind: Secret
metadata: {name: db, namespace: local-p-vwxyz, labels: {management.cattle.io/project-scoped-secret: p-vwxyz}}
stringData: {key: shared}
YAML
grep -q '^Warning: .*team-b' "$STATE/warning.txt" || { echo "no overwrite warning: $(cat "$STATE/warning.txt")" >&2; exit 1; }
echo "warning: $(grep '^Warning:' "$STATE/warning.txt")"
out=$(k label namespace team-a field.cattle.io/projectId=p-other --overwrite 2>&1)
grep -q 'Warning: label field.cattle.io/projectId was reset to p-vwxyz' <<<"$out" || { echo "no reset warning: $out" >&2; exit 1; }
label=$(k get namespace team-a -o jsonpath='{.metadata.labels.field\.cattle\.io/projectId}')
[ "$label" = p-vwxyz ] || { echo "the label was not reset by the mutating webhook: $label" >&2; exit 1; }
echo "mutation: label field.cattle.io/projectId=p-other was reset to $label ($out)"

step "deleting the leader pod: another replica takes the Lease and keeps copying"
holder() { k -n scoped-secrets-system get lease scoped-secrets -o jsonpath='{.spec.holderIdentity}'; }
leader=$(holder)
[ -n "$leader" ] || { echo "no replica holds the Lease" >&2; exit 1; }
t=$(date +%s%N)
k -n scoped-secrets-system delete pod "$leader" --wait=false >/dev/null
new_leader() { local h; h=$(holder); [ -n "$h" ] && [ "$h" != "$leader" ]; }
eventually 60 "another replica holding the Lease" new_leader
echo "leader failover: $leader -> $(holder) in $(( ($(date +%s%N) - t) / 1000000 )) ms"
k -n local-p-vwxyz create secret generic after-failover --from-literal=key=bW9yZQ== >/dev/null
k -n local-p-vwxyz label secret after-failover management.cattle.io/project-scoped-secret=p-vwxyz >/dev/null
eventually 60 "a secret made after the failover copied into team-b" k -n team-b get secret after-failover
echo "the new leader copies: local-p-vwxyz/after-failover is in team-b"
k -n scoped-secrets-system rollout status deploy/scoped-secrets --timeout=300s >/dev/null

step "a rolling update (an env var changed) under a steady stream of admission requests"
# Each request goes through the secret guard (failurePolicy Fail) of whichever replica the Service
# picks: a replica that is gone or not draining properly shows up as a failed request.
stream() {
  local i=0
  while [ ! -e "$STATE/stream.stop" ]; do
    i=$((i + 1))
    if k create --dry-run=server -o name -f - >/dev/null 2>>"$STATE/stream-errors.txt" <<YAML
apiVersion: v1
kind: Secret
metadata: {name: stream-$i, namespace: local-p-vwxyz, labels: {management.cattle.io/project-scoped-secret: p-vwxyz}}
stringData: {key: x}
YAML
    then echo ok; else echo failed; fi >>"$STATE/stream.log"
  done
}
count() { grep -c "^$1\$" "$STATE/stream.log" || true; }
rm -f "$STATE/stream.stop" "$STATE/stream-errors.txt" "$STATE/stream.log"
touch "$STATE/stream.log"
stream &
stream_pid=$!
some_ok() { [ "$(count ok)" -ge 3 ]; }
eventually 60 "the first requests of the stream admitted" some_ok
k -n scoped-secrets-system set env deploy/scoped-secrets ROLLOUT_MARK="$(date +%s)" >/dev/null
k -n scoped-secrets-system rollout status deploy/scoped-secrets --timeout=300s >/dev/null
# Until the old pods have finished draining and are gone, not only until the new ones are Ready.
three_pods() { [ "$(k -n scoped-secrets-system get pods -l app.kubernetes.io/name=scoped-secrets --no-headers | wc -l)" = 3 ]; }
eventually 120 "the old pods gone" three_pods
touch "$STATE/stream.stop"
wait "$stream_pid"
ok=$(count ok) failed=$(count failed)
echo "rolling update: $ok admission requests succeeded, $failed failed"
[ "$ok" -gt 0 ] || { echo "no request went through" >&2; exit 1; }
[ "$failed" = 0 ] || { echo "failed requests during the rollout:" >&2; cat "$STATE/stream-errors.txt" >&2; exit 1; }
# ---------------------------------------------------------------------------------------------------
step "the Helm chart: the kustomize install removed, then helm install into the same namespace"
helm=$("$REPO/hack/helm/build.sh")
# The chart's cluster-wide objects have the overlay's names: the overlay goes first, all of it.
k delete -k "$work/overlays/self-signed" --wait=false >/dev/null
k wait --for=delete namespace/scoped-secrets-system --timeout=300s >/dev/null
k wait --for=delete crd/projects.management.cattle.io --timeout=120s >/dev/null 2>&1 || true
k create namespace scoped-secrets-system >/dev/null
k label namespace scoped-secrets-system pod-security.kubernetes.io/enforce=restricted >/dev/null
t=$(date +%s%N)
"$helm" install scoped-secrets "$REPO/charts/scoped-secrets" --namespace scoped-secrets-system \
  --set image.pullPolicy=Never --wait --timeout 5m >/dev/null
ready=$(k -n scoped-secrets-system get deploy scoped-secrets -o jsonpath='{.status.readyReplicas}')
[ "$ready" = 3 ] || { echo "helm: expected 3 ready replicas, got ${ready:-0}" >&2; exit 1; }
echo "helm install: 3 replicas Ready $(( ($(date +%s%N) - t) / 1000000 )) ms after it began"
cat >"$STATE/p-helm.yaml" <<YAML
apiVersion: management.cattle.io/v3
kind: Project
metadata: {name: p-helm, namespace: local}
spec: {clusterName: local, displayName: Installed by helm}
YAML
webhook_routed
k apply -f "$STATE/p-helm.yaml" >/dev/null
eventually 60 "the project's backing namespace local-p-helm" k get namespace local-p-helm
k apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: team-helm, annotations: {field.cattle.io/projectId: "local:p-helm"}}
---
apiVersion: v1
kind: Secret
metadata: {name: helm-secret, namespace: local-p-helm, labels: {management.cattle.io/project-scoped-secret: p-helm}}
data: {key: aGVsbQ==}
YAML
eventually 60 "helm-secret copied into team-helm by the chart's reconciler" copied team-helm helm-secret aGVsbQ==
if out=$(k -n team-helm label secret helm-secret edited=yes 2>&1); then
  echo "a copy was edited under the chart's webhook: $out" >&2; exit 1
fi
grep -q 'is a copy of project-scoped secret "local-p-helm/helm-secret"' <<<"$out" \
  || { echo "unexpected denial under the chart: $out" >&2; exit 1; }
echo "helm: copied by $(k -n scoped-secrets-system get lease scoped-secrets -o jsonpath='{.spec.holderIdentity}'); denial: $out"
# ---------------------------------------------------------------------------------------------------
step "beside Rancher: the chart upgraded to mode besideRancher (deploy/overlays/beside-rancher's objects), the webhook only"
"$helm" upgrade scoped-secrets "$REPO/charts/scoped-secrets" --namespace scoped-secrets-system \
  --set mode=besideRancher --set image.pullPolicy=Never --wait --timeout 5m >/dev/null
k -n scoped-secrets-system rollout status deploy/scoped-secrets --timeout=300s >/dev/null
eventually 120 "the standalone pods gone" three_pods
reconciler=$(k -n scoped-secrets-system get deploy scoped-secrets \
  -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="SCOPED_SECRETS_RECONCILER")].value}')
[ "$reconciler" = false ] || { echo "beside Rancher the reconciler must be off, got ${reconciler:-unset}" >&2; exit 1; }
k get crd projects.management.cattle.io >/dev/null || { echo "the upgrade removed the Project CRD" >&2; exit 1; }
webhook_routed
if out=$(k -n team-helm label secret helm-secret edited=yes 2>&1); then
  echo "a copy was edited beside Rancher: $out" >&2; exit 1
fi
grep -q 'is a copy of project-scoped secret "local-p-helm/helm-secret"' <<<"$out" \
  || { echo "unexpected denial beside Rancher: $out" >&2; exit 1; }
echo "beside Rancher: 3 replicas, reconciler off, Project CRD kept; denial: $out"
echo "all scenarios passed"
