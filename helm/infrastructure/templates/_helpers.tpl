{{/* Common labels of objects this chart renders. */}}
{{- define "infra.labels" -}}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: k3sfleet-infrastructure
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/*
One Argo CD Application for an upstream chart.
Usage: {{ include "infra.application" (dict "root" . "name" "velero" "cfg" .Values.velero "values" $values) }}
  cfg: the component's values (namespace, chart.{repoURL,name,version}, syncWave)
  values: a dict passed as spec.source.helm.valuesObject
  extra (optional): YAML appended to spec (ignoreDifferences ...)
*/}}
{{- define "infra.application" -}}
{{- $root := .root -}}
{{- $cfg := .cfg -}}
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: {{ .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "infra.labels" $root | nindent 4 }}
  annotations:
    argocd.argoproj.io/sync-wave: {{ $cfg.syncWave | quote }}
  finalizers:
    - resources-finalizer.argocd.argoproj.io
spec:
  project: {{ $root.Values.global.project }}
  source:
    repoURL: {{ $cfg.chart.repoURL }}
    chart: {{ $cfg.chart.name }}
    targetRevision: {{ required (printf "%s.chart.version must be pinned" .name) $cfg.chart.version | quote }}
    helm:
      releaseName: {{ .name }}
      {{- with .values }}
      valuesObject:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  destination:
    server: https://kubernetes.default.svc
    namespace: {{ $cfg.namespace }}
  syncPolicy:
    automated:
      prune: true
      selfHeal: true
    syncOptions:
      - CreateNamespace=true
      - ServerSideApply=true
      {{- if .extra }}
      - RespectIgnoreDifferences=true
      {{- end }}
  {{- with .extra }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* The public hostname of a service: <name>.<domain>. */}}
{{- define "infra.host" -}}
{{- printf "%s.%s" .name .root.Values.global.domain -}}
{{- end -}}
