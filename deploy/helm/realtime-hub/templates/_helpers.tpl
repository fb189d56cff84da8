{{- define "hub.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hub.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The hub pods only: the migration Job and the test Pod carry other components, so the Service never selects them. */}}
{{- define "hub.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: hub
{{- end -}}

{{- define "hub.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if eq $tag "latest" }}{{ fail "image.tag latest is refused: pin a version so rollouts and rollbacks are reproducible" }}{{ end -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}

{{/* DATABASE_URL from the configured Secret, unless the shared existingSecret holds it. */}}
{{- define "hub.databaseEnv" -}}
{{- if not .Values.existingSecret }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "postgres.existingSecret (or existingSecret) is required with the postgres backend" .Values.postgres.existingSecret }}
      key: {{ .Values.postgres.secretKey }}
{{- end }}
{{- end -}}

{{- define "hub.securityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The sources file's text when it is given in values (`sources` as a string, or `sources.toml`). */}}
{{- define "hub.sourcesText" -}}
{{- if kindIs "string" .Values.sources }}{{ .Values.sources }}{{ else }}{{ .Values.sources.toml }}{{ end -}}
{{- end -}}

{{/* The Secret holding the sources file, when one does. */}}
{{- define "hub.sourcesSecret" -}}
{{- if kindIs "map" .Values.sources }}{{ .Values.sources.existingSecret }}{{ end -}}
{{- end -}}
