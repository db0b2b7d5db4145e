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

{{/* Labels of the rebalance controller's objects plus Helm's. */}}
{{- define "gputopo.rebalance.labels" -}}
app.kubernetes.io/name: gputopo-rebalance
app.kubernetes.io/part-of: gputopo
{{ include "gputopo.helmLabels" . }}
{{- end -}}

{{/* The agent's image, with the tag defaulting to the chart's appVersion. */}}
{{- define "gputopo.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The scheduler's, the extender's and the rebalance controller's image: schedulerImage, else
the agent's. */}}
{{- define "gputopo.schedulerImage" -}}
{{- $repository := .Values.schedulerImage.repository | default .Values.image.repository -}}
{{- $tag := .Values.schedulerImage.tag | default .Values.image.tag | default .Chart.AppVersion -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}

{{/* The agent's ServiceAccount as the API server names its requests (the admission policy). */}}
{{- define "gputopo.agent.username" -}}
{{- printf "system:serviceaccount:%s:gputopo-agent" .Release.Namespace -}}
{{- end -}}

{{/*
The objects of daemonset/ (kustomize; charts/gputopo/manifests links there), the source of truth
for what is deployed, as the chart deploys them: the release namespace wherever the manifests say
gputopo-system (namespaced objects, ServiceAccount subjects, the admission policies' user name),
Helm's labels (and, for `labels`, the labels a kustomization adds) on every object.
  file      a manifest under daemonset/, or dir: every resource its kustomization.yaml lists
  labels    the name of a labels template
  exclude   object names left out
  dropRuleGroups  RBAC rules whose first API group is one of these are left out
  keep      add helm.sh/resource-policy: keep (CRDs: uninstall keeps them and their objects)
*/}}
{{- define "gputopo.manifests" -}}
{{- $ctx := .ctx -}}
{{- $files := list -}}
{{- if .dir -}}
{{- $kustomization := fromYaml ($ctx.Files.Get (printf "manifests/%s/kustomization.yaml" .dir)) -}}
{{- if not $kustomization.resources -}}
{{- fail (printf "charts/gputopo/manifests/%s/kustomization.yaml: no resources (is manifests a link to daemonset/?)" .dir) -}}
{{- end -}}
{{- range $kustomization.resources -}}
{{- $files = append $files (printf "%s/%s" $.dir .) -}}
{{- end -}}
{{- else -}}
{{- $files = list .file -}}
{{- end -}}
{{- $namespace := $ctx.Release.Namespace -}}
{{- $labels := fromYaml (include .labels $ctx) -}}
{{- $namespaced := list "ServiceAccount" "Role" "RoleBinding" "ConfigMap" "Secret" "Service" "Deployment" "DaemonSet" "NetworkPolicy" -}}
{{- range $file := $files -}}
{{- $text := $ctx.Files.Get (printf "manifests/%s" $file) -}}
{{- if not $text -}}
{{- fail (printf "charts/gputopo/manifests/%s: missing (is manifests a link to daemonset/?)" $file) -}}
{{- end -}}
{{- $text = replace "system:serviceaccount:gputopo-system:" (printf "system:serviceaccount:%s:" $namespace) $text -}}
{{- range $document := regexSplit "(?m)^---[ \\t]*$" $text -1 -}}
{{- $object := fromYaml $document -}}
{{- if hasKey $object "Error" -}}
{{- fail (printf "daemonset/%s: %s" $file $object.Error) -}}
{{- end -}}
{{- if and $object.kind (not (has $object.metadata.name (default list $.exclude))) -}}
{{- $_ := set $object.metadata "labels" (merge (deepCopy $labels) (default dict $object.metadata.labels)) -}}
{{- if $.keep -}}
{{- $_ := set $object.metadata "annotations" (merge (dict "helm.sh/resource-policy" "keep") (default dict $object.metadata.annotations)) -}}
{{- end -}}
{{- if has $object.kind $namespaced -}}
{{- $_ := set $object.metadata "namespace" $namespace -}}
{{- end -}}
{{- range $subject := default list $object.subjects -}}
{{- if eq $subject.kind "ServiceAccount" -}}
{{- $_ := set $subject "namespace" $namespace -}}
{{- end -}}
{{- end -}}
{{- if and $object.rules $.dropRuleGroups -}}
{{- $rules := list -}}
{{- range $rule := $object.rules -}}
{{- if not (has (first $rule.apiGroups) $.dropRuleGroups) -}}
{{- $rules = append $rules $rule -}}
{{- end -}}
{{- end -}}
{{- $_ := set $object "rules" $rules -}}
{{- end }}
---
# From daemonset/{{ $file }}
{{ toYaml $object }}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
