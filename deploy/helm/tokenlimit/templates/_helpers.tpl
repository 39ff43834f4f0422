{{/* Names ------------------------------------------------------------------------------ */}}

{{- define "tokenlimit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every object name; component suffixes are at most 9 characters, so 54. */}}
{{- define "tokenlimit.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tokenlimit.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tokenlimit.operator.fullname" -}}{{ include "tokenlimit.fullname" . }}-operator{{- end }}
{{- define "tokenlimit.bridge.fullname" -}}{{ include "tokenlimit.fullname" . }}-bridge{{- end }}
{{- define "tokenlimit.redis.fullname" -}}{{ include "tokenlimit.fullname" . }}-redis{{- end }}
{{- define "tokenlimit.module.fullname" -}}{{ include "tokenlimit.fullname" . }}-module{{- end }}

{{- define "tokenlimit.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tokenlimit.operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator's Lease has a fixed name (tokenlimit.operator.leader.LEASE_NAME). */}}
{{- define "tokenlimit.leaseName" -}}tokenlimit-operator{{- end }}

{{/* Labels ----------------------------------------------------------------------------- */}}

{{/* Call with (dict "ctx" $ "component" "operator"). */}}
{{- define "tokenlimit.labels" -}}
helm.sh/chart: {{ include "tokenlimit.chart" .ctx }}
{{ include "tokenlimit.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: tokenlimit
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{- define "tokenlimit.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tokenlimit.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Images ----------------------------------------------------------------------------- */}}

{{- define "tokenlimit.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* What runs ------------------------------------------------------------------------- */}}

{{/* The bridge runs for gateways built on stock Envoy; Higress reaches Redis natively. */}}
{{- define "tokenlimit.bridge.enabled" -}}
{{- if and .Values.bridge.enabled (ne .Values.gateway "higress") }}true{{- end }}
{{- end }}

{{/* An external host wins over redis.enabled, so nothing in-cluster is rendered for it. */}}
{{- define "tokenlimit.redis.inCluster" -}}
{{- if and .Values.redis.enabled (not .Values.redis.external.host) }}true{{- end }}
{{- end }}

{{- define "tokenlimit.filter.served" -}}
{{- if not .Values.filter.image }}true{{- end }}
{{- end }}

{{/* Redis ------------------------------------------------------------------------------ */}}

{{- define "tokenlimit.redis.host" -}}
{{- if include "tokenlimit.redis.inCluster" . }}
{{- printf "%s.%s.svc.%s" (include "tokenlimit.redis.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- else }}
{{- .Values.redis.external.host }}
{{- end }}
{{- end }}

{{- define "tokenlimit.redis.port" -}}
{{- if include "tokenlimit.redis.inCluster" . }}6379{{- else }}{{ .Values.redis.external.port }}{{- end }}
{{- end }}

{{/* redis://[user@]host:port/db — never a password: that travels as a mounted Secret file. */}}
{{- define "tokenlimit.redis.url" -}}
{{- $user := "" }}
{{- if and (not (include "tokenlimit.redis.inCluster" .)) .Values.redis.external.username }}
{{- $user = printf "%s@" .Values.redis.external.username }}
{{- end }}
{{- $host := include "tokenlimit.redis.host" . }}
{{- if contains ":" $host }}{{- $host = printf "[%s]" $host }}{{- end }}
{{- printf "redis://%s%s:%s/%d" $user $host (include "tokenlimit.redis.port" .) (int .Values.redis.database) }}
{{- end }}

{{/* Name of the Secret holding the Redis password; empty when Redis has no password. */}}
{{- define "tokenlimit.redis.secretName" -}}
{{- if .Values.redis.auth.existingSecret }}
{{- .Values.redis.auth.existingSecret }}
{{- else if include "tokenlimit.redis.inCluster" . }}
{{- include "tokenlimit.redis.fullname" . }}
{{- end }}
{{- end }}

{{- define "tokenlimit.redis.secretKey" -}}
{{- .Values.redis.auth.existingSecretPasswordKey }}
{{- end }}

{{/* Higress: the Secret name policies reference for the Redis password; the operator may
read Secrets of this name only. Empty: no Secret access at all. */}}
{{- define "tokenlimit.operator.redisSecretName" -}}
{{- if eq .Values.gateway "higress" }}
{{- default (include "tokenlimit.redis.secretName" .) .Values.operator.redisSecretName }}
{{- end }}
{{- end }}

{{/* Bridge ----------------------------------------------------------------------------- */}}

{{- define "tokenlimit.bridge.secretName" -}}
{{- default (include "tokenlimit.bridge.fullname" .) .Values.bridge.auth.existingSecret }}
{{- end }}

{{- define "tokenlimit.bridge.secretKey" -}}
{{- if .Values.bridge.auth.existingSecret }}{{ .Values.bridge.auth.existingSecretKey }}{{- else }}token{{- end }}
{{- end }}

{{- define "tokenlimit.bridge.auth" -}}
{{- if include "tokenlimit.bridge.enabled" . }}true{{- end }}
{{- end }}

{{/* Filter module ------------------------------------------------------------------------ */}}

{{/* Higress loads the build with its native Redis ABI; Istio and Envoy load the stock build. */}}
{{- define "tokenlimit.filter.file" -}}
{{- if eq .Values.gateway "higress" }}tokenlimit-higress.wasm{{- else }}tokenlimit.wasm{{- end }}
{{- end }}

{{/* Base URL of the module Service; the operator appends /filters/<file>. */}}
{{- define "tokenlimit.filter.urlBase" -}}
{{- printf "http://%s.%s.svc.%s:%d" (include "tokenlimit.module.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.filter.service.port) }}
{{- end }}

{{- define "tokenlimit.filter.image" -}}
{{- if hasPrefix "oci://" .Values.filter.image }}{{ .Values.filter.image }}{{- else }}oci://{{ .Values.filter.image }}{{- end }}
{{- end }}

{{/* Where gateways get the module, for NOTES. */}}
{{- define "tokenlimit.filter.url" -}}
{{- if .Values.filter.image }}
{{- include "tokenlimit.filter.image" . }}
{{- else if eq .Values.gateway "envoy" }}
{{- printf "%s (fetch from %s/filters/%s)" .Values.filter.envoyModulePath (include "tokenlimit.filter.urlBase" .) (include "tokenlimit.filter.file" .) }}
{{- else }}
{{- printf "%s/filters/%s" (include "tokenlimit.filter.urlBase" .) (include "tokenlimit.filter.file" .) }}
{{- end }}
{{- end }}

{{/* Secrets ---------------------------------------------------------------------------- */}}

{{/* A generated secret value that survives upgrades: reuse what the cluster already holds.
Call with (dict "ctx" $ "name" NAME "key" KEY). */}}
{{- define "tokenlimit.generatedSecretValue" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .name }}
{{- if and $existing $existing.data (hasKey $existing.data .key) }}
{{- index $existing.data .key }}
{{- else }}
{{- randAlphaNum 40 | b64enc }}
{{- end }}
{{- end }}

{{/* Pod pieces ------------------------------------------------------------------------- */}}

{{- define "tokenlimit.metricsAnnotations" -}}
{{- if .ctx.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* Probe timings from values; the path and port are fixed by the program. */}}
{{- define "tokenlimit.probe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
{{ toYaml .timing }}
{{- end }}

{{/* Rules across several values, with messages that say what to change. Rendered once, from
the operator Deployment (always present). */}}
{{- define "tokenlimit.validate" -}}
{{- if and (eq .Values.gateway "envoy") .Values.filter.image }}
{{- fail "filter.image: stock Envoy loads Wasm modules over HTTP only; leave filter.image empty for gateway=envoy (the operator serves the module)" }}
{{- end }}
{{- if and (not .Values.redis.enabled) (not .Values.redis.external.host) }}
{{- fail "redis.enabled is false and redis.external.host is empty: set redis.external.host to an existing Redis, or leave redis.enabled on" }}
{{- end }}
{{- end }}
