{{- /* Medusa-specific helpers the shared _storeops.tpl calls. */ -}}

{{- /* Keys of the credentials Secret (the Job adds any that are missing, never changes one). */ -}}
{{- define "store.credentialKeys" -}}
postgres-password admin-password jwt-secret cookie-secret
{{- end }}

{{- /* The component the Ingress and the ingress NetworkPolicy point at. */ -}}
{{- define "store.webService" -}}
name: medusa
component: medusa
targetPort: {{ .Values.medusa.port }}
{{- end }}

{{- define "store.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .root.Values.credentials.secretName }}
      key: {{ .key }}
{{- end }}

{{- /* What the Medusa server, its migrations and its CLI need. Generated values are URL-safe. */ -}}
{{- define "store.medusaEnv" -}}
{{ include "store.secretEnv" (dict "root" . "env" "POSTGRES_PASSWORD" "key" "postgres-password") }}
- name: DATABASE_URL
  value: {{ printf "postgres://%s:$(POSTGRES_PASSWORD)@postgres:5432/%s?sslmode=disable" .Values.postgres.username .Values.postgres.database | quote }}
- name: REDIS_URL
  value: redis://redis:6379
{{ include "store.secretEnv" (dict "root" . "env" "JWT_SECRET" "key" "jwt-secret") }}
{{ include "store.secretEnv" (dict "root" . "env" "COOKIE_SECRET" "key" "cookie-secret") }}
- name: NODE_ENV
  value: production
- name: PORT
  value: {{ .Values.medusa.port | quote }}
- name: MEDUSA_BACKEND_URL
  value: {{ .Values.url | quote }}
- name: STORE_CORS
  value: {{ .Values.medusa.storeCors | default .Values.url | quote }}
- name: ADMIN_CORS
  value: {{ .Values.url | quote }}
- name: AUTH_CORS
  value: {{ list .Values.url .Values.medusa.storeCors | compact | join "," | quote }}
- name: HOME
  value: /tmp
- name: npm_config_cache
  value: /tmp/.npm
{{- with .Values.medusa.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "store.medusaImage" -}}
{{ printf "%s:%s" .Values.medusa.image.repository .Values.medusa.image.tag | quote }}
{{- end }}
