{{/*
Monitoring (rendered only where its values switch it on): the ServiceMonitors, the alert and
DCGM-compat PrometheusRules and the Grafana dashboard ConfigMap. The rules and the dashboard are
read unchanged from files/ (their one source; daemonset/components/monitoring carries copies made
by `python -m hack.monitoring`).
*/}}
{{- define "gputopo.monitoring.labels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/part-of: gputopo
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .context.Chart.Name .context.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}
