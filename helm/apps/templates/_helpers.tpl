{{/*
The node a stateful service is pinned to: nodeOverrides.<name>, else statefulServices[].node.
Usage: {{ include "apps.node" (list . "postgresql") }}
*/}}
{{- define "apps.node" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $node := "" -}}
{{- range $root.Values.statefulServices -}}
{{- if eq .name $name }}{{ $node = .node }}{{ end -}}
{{- end -}}
{{- $node = default $node (get ($root.Values.nodeOverrides | default dict) $name) -}}
{{- $node -}}
{{- end -}}

{{/*
nodeSelector (as YAML) of a stateful service: kubernetes.io/hostname when a node is set,
else its label-based nodeSelector. Fails the render when a listed service has neither.
Usage: nodeSelector: {{- include "apps.nodeSelector" (list . "postgresql") | nindent 4 }}
*/}}
{{- define "apps.nodeSelector" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $svc := dict -}}
{{- range $root.Values.statefulServices -}}
{{- if eq .name $name }}{{ $svc = . }}{{ end -}}
{{- end -}}
{{- if not $svc -}}
{{- fail (printf "%s is not listed in statefulServices" $name) -}}
{{- end -}}
{{- $node := include "apps.node" (list $root $name) -}}
{{- if $node -}}
kubernetes.io/hostname: {{ $node | quote }}
{{- else if $svc.nodeSelector -}}
{{- toYaml $svc.nodeSelector -}}
{{- else -}}
{{- fail (printf "statefulServices %s: set node or nodeSelector" $name) -}}
{{- end -}}
{{- end -}}

{{/* The stateful service entry (a dict) named by the second argument. */}}
{{- define "apps.stateful" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- range $root.Values.statefulServices -}}
{{- if eq .name $name }}{{ toYaml . }}{{ end -}}
{{- end -}}
{{- end -}}

{{/* Common labels of objects this chart renders. */}}
{{- define "apps.labels" -}}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: k3sfleet-apps
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The sync policy every child Application uses. */}}
{{- define "apps.syncPolicy" -}}
syncPolicy:
  automated:
    prune: true
    selfHeal: true
  syncOptions:
    - CreateNamespace=true
    - ServerSideApply=true
{{- end -}}
