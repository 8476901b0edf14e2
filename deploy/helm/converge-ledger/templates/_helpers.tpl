{{/* Expand the name of the chart. */}}
{{- define "converge-ledger.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A default fully qualified app name, truncated at 63 characters (some Kubernetes name fields
are limited to this by the DNS naming spec). If the release name contains the chart name it is
used as the full name.
*/}}
{{- define "converge-ledger.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The headless Service: stable pod names, and the gossip seed (it resolves to every pod). */}}
{{- define "converge-ledger.headless" -}}
{{- printf "%s-headless" (include "converge-ledger.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Chart name and version as used by the chart label. */}}
{{- define "converge-ledger.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels */}}
{{- define "converge-ledger.labels" -}}
helm.sh/chart: {{ include "converge-ledger.chart" . }}
{{ include "converge-ledger.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels */}}
{{- define "converge-ledger.selectorLabels" -}}
app.kubernetes.io/name: {{ include "converge-ledger.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The service account to use */}}
{{- define "converge-ledger.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "converge-ledger.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference */}}
{{- define "converge-ledger.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
A probe on grpc.health.v1 for the whole server: the kubelet's gRPC probe, or
`converge-ledger health` run in the container.
*/}}
{{- define "converge-ledger.probe" -}}
{{- if eq .root.Values.probes.type "exec" -}}
exec:
  command: ["converge-ledger", "health", "--addr", "http://127.0.0.1:{{ .root.Values.ports.grpc }}"]
{{- else if eq .root.Values.probes.type "grpc" -}}
grpc:
  port: {{ .root.Values.ports.grpc }}
  service: ""
{{- else -}}
{{- fail "probes.type must be grpc or exec" -}}
{{- end }}
{{ toYaml .probe }}
{{- end }}
