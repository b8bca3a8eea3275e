{{/*
Labels on every object. deploy/base puts app.kubernetes.io/name and part-of on everything, so
`kubectl get ... -l app.kubernetes.io/name=scoped-secrets` finds the same objects either way.
*/}}
{{- define "scoped-secrets.labels" -}}
app.kubernetes.io/name: scoped-secrets
app.kubernetes.io/part-of: scoped-secrets
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The pods' selector, exactly deploy/base's (written out, never derived from the release). */}}
{{- define "scoped-secrets.selectorLabels" -}}
app.kubernetes.io/name: scoped-secrets
app.kubernetes.io/component: webhook
{{- end }}

{{/* Does the reconciler run (copies, backing namespaces, leader election, Events)? */}}
{{- define "scoped-secrets.reconciles" -}}
{{- if eq .Values.mode "standalone" }}true{{ end }}
{{- end }}

{{/* The chart's own service account, as the apiserver names it in requests. */}}
{{- define "scoped-secrets.serviceAccountUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:scoped-secrets
{{- end }}

{{/*
Identities whose writes skip the rules: the service account, beside Rancher its copiers, and any
extra ones, as a JSON list (templates cannot return lists).
*/}}
{{- define "scoped-secrets.trustedUsers" -}}
{{- $users := list (include "scoped-secrets.serviceAccountUser" .) }}
{{- if eq .Values.mode "besideRancher" }}
{{- $users = concat $users .Values.rancher.identities }}
{{- end }}
{{- $users = concat $users .Values.serve.extraTrustedUsers | uniq }}
{{- toJson $users }}
{{- end }}

{{/*
The not-the-reconciler matchCondition of every entry: the trusted identities never reach the
webhook. One identity in deploy/base's form, several in deploy/overlays/beside-rancher's.
*/}}
{{- define "scoped-secrets.notTheReconciler" -}}
{{- $users := include "scoped-secrets.trustedUsers" . | fromJsonArray -}}
- name: not-the-reconciler
{{- if eq (len $users) 1 }}
  expression: {{ printf "request.userInfo.username != '%s'" (first $users) | quote }}
{{- else }}
{{- $quoted := list }}
{{- range $users }}{{ $quoted = append $quoted (printf "'%s'" .) }}{{ end }}
  expression: {{ printf "!(request.userInfo.username in [%s])" (join ", " $quoted) | quote }}
{{- end }}
{{- end }}

{{/* The webhook Service every entry calls. */}}
{{- define "scoped-secrets.clientConfig" -}}
service:
  name: scoped-secrets
  namespace: {{ .root.Release.Namespace }}
  path: {{ .path }}
  port: 443
{{- with .caBundle }}
caBundle: {{ . }}
{{- end }}
{{- end }}

{{/*
Never for the control plane's namespaces or the release's own (the serving certificate and the
lease live there): an outage of the webhook must not be able to lock itself or the cluster out.
*/}}
{{- define "scoped-secrets.namespaceSelector" -}}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values: ["kube-system", "kube-public", "kube-node-lease", {{ .Release.Namespace | quote }}]
{{- end }}
