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

{{- /*
What the shared backup and restore pods (storeops-lib _backup.tpl) need of this chart: the web
component (its node, its user, its content volume) and the database's own client tools, run in the
PostgreSQL image as the web component's user, with libpq's environment variables.
*/ -}}
{{- define "store.backup" -}}
component: medusa
user: {{ .Values.medusa.user }}
contentClaim: medusa-uploads
image: {{ printf "%s:%s" .Values.postgres.image.repository .Values.postgres.image.tag }}
env:
  {{- include "store.secretEnv" (dict "root" . "env" "PGPASSWORD" "key" "postgres-password") | nindent 2 }}
  - name: PGHOST
    value: postgres
  - name: PGUSER
    value: {{ .Values.postgres.username | quote }}
  - name: PGDATABASE
    value: {{ .Values.postgres.database | quote }}
# --clean --if-exists: loading the dump again (a retried restore) replaces what the first attempt loaded.
dump: |-
  pg_dump --clean --if-exists --no-owner --no-privileges -f /work/database.sql
wait: |-
  until pg_isready -q; do echo "waiting for postgres"; sleep 2; done
tables: |-
  psql -tAq -c "SELECT count(*) FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
load: |-
  psql -q -v ON_ERROR_STOP=1 --single-transaction -f /work/database.sql
# restore.replace: the schema the dump fills, emptied (Medusa keeps everything in public).
clear: |-
  psql -q -v ON_ERROR_STOP=1 -c "DROP SCHEMA IF EXISTS public CASCADE" -c "CREATE SCHEMA public"
{{- end }}
