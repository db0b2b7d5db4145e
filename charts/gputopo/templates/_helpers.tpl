{{/*
Names are fixed, as in daemonset/ (kustomize): they are part of gputopo's contract (the agent's
field manager and ServiceAccount name appear in the admission policy, the scheduler's Lease is
named after it), so one release per cluster.
*/}}

{{/* The chart label value: name-version. */}}
{{- define "gputopo.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Helm's own labels, added to every object's metadata (never to selectors): who installed it.
*/}}
{{- define "gputopo.helmLabels" -}}
helm.sh/chart: {{ include "gputopo.chart" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Labels of the agent's objects (as daemonset/ labels them) plus Helm's. */}}
{{- define "gputopo.agent.labels" -}}
app.kubernetes.io/name: gputopo-agent
app.kubernetes.io/part-of: gputopo
{{ include "gputopo.helmLabels" . }}
{{- end -}}

{{/* Labels of the scheduler's objects (daemonset/scheduler's kustomize labels) plus Helm's. */}}
{{- define "gputopo.scheduler.labels" -}}
app.kubernetes.io/name: gputopo-scheduler
app.kubernetes.io/part-of: gputopo
{{ include "gputopo.helmLabels" . }}
{{- end -}}

{{/* Labels of the extender's objects plus Helm's. */}}
{{- define "gputopo.extender.labels" -}}
app.kubernetes.io/name: gputopo-extender
app.kubernetes.io/part-of: gputopo
{{ include "gputopo.helmLabels" . }}
{{- end -}}

{{/* The image, with the tag defaulting to the chart's appVersion. */}}
{{- define "gputopo.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The agent's ServiceAccount as the API server names its requests (the admission policy). */}}
{{- define "gputopo.agent.username" -}}
{{- printf "system:serviceaccount:%s:gputopo-agent" .Release.Namespace -}}
{{- end -}}

{{/* imagePullSecrets for a pod spec, if any. */}}
{{- define "gputopo.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
