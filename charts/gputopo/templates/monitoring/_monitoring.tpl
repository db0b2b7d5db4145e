{{/*
Monitoring (rendered only where its values switch it on): the ServiceMonitors, the alert and
DCGM-compat PrometheusRules and the Grafana dashboard ConfigMap. The rules and the dashboard are
read unchanged from files/ (their one source; daemonset/components/monitoring carries copies made
by `python -m hack.monitoring`). Labels: the kustomize copy's, plus Helm's (_helpers.tpl).
*/}}
{{- define "gputopo.monitoring.labels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/part-of: gputopo
{{ include "gputopo.helmLabels" .context }}
{{- end }}
