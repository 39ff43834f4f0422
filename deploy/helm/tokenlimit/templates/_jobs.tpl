{{/* The jobs service's credential keys (docs/jobs.md "Credentials: least exposure"): Fernet
keys, one a line, that encrypt the credentials each job keeps in Redis. */}}

{{/* The Secret that holds them: the user's (jobs.credentialKey.existingSecret) or the chart's. */}}
{{- define "tokenlimit.jobs.credentialKeySecretName" -}}
{{- .Values.jobs.credentialKey.existingSecret | default (printf "%s-jobs-credential-key" (include "tokenlimit.fullname" .)) -}}
{{- end }}

{{- define "tokenlimit.jobs.credentialKeySecretKey" -}}
{{- if .Values.jobs.credentialKey.existingSecret -}}
{{- .Values.jobs.credentialKey.existingSecretKey -}}
{{- else -}}
keys
{{- end -}}
{{- end }}

{{/* The chart's key file, base64 for the Secret's data: what the cluster holds (kept across
upgrades, and any key added to it by hand for a rotation), else one new key of 32 random
bytes in the URL-safe base64 Fernet reads. */}}
{{- define "tokenlimit.jobs.generatedCredentialKeys" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .name }}
{{- if and $existing $existing.data (hasKey $existing.data "keys") }}
{{- index $existing.data "keys" }}
{{- else }}
{{- printf "%s\n" (randBytes 32 | replace "+" "-" | replace "/" "_") | b64enc }}
{{- end }}
{{- end }}
