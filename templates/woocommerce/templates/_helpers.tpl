{{- /* WooCommerce-specific helpers the shared _storeops.tpl calls. */ -}}

{{- /* Keys of the credentials Secret (the Job adds any that are missing, never changes one). */ -}}
{{- define "store.credentialKeys" -}}
mariadb-root-password mariadb-password admin-password auth-key secure-auth-key logged-in-key nonce-key auth-salt secure-auth-salt logged-in-salt nonce-salt
{{- end }}

{{- /* The component the Ingress and the ingress NetworkPolicy point at. */ -}}
{{- define "store.webService" -}}
name: wordpress
component: wordpress
targetPort: 80
{{- end }}

{{- define "store.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .root.Values.credentials.secretName }}
      key: {{ .key }}
{{- end }}

{{- /* What WordPress and wp-cli both need to reach the database. */ -}}
{{- define "store.wordpressEnv" -}}
- name: WORDPRESS_DB_HOST
  value: mariadb:3306
- name: WORDPRESS_DB_NAME
  value: {{ .Values.mariadb.database | quote }}
- name: WORDPRESS_DB_USER
  value: {{ .Values.mariadb.username | quote }}
{{ include "store.secretEnv" (dict "root" . "env" "WORDPRESS_DB_PASSWORD" "key" "mariadb-password") }}
{{- range $key := list "auth-key" "secure-auth-key" "logged-in-key" "nonce-key" "auth-salt" "secure-auth-salt" "logged-in-salt" "nonce-salt" }}
{{ include "store.secretEnv" (dict "root" $ "env" (printf "WORDPRESS_%s" ($key | upper | replace "-" "_")) "key" $key) }}
{{- end }}
- name: STORE_URL
  value: {{ .Values.url | quote }}
- name: WORDPRESS_CONFIG_EXTRA
  value: |
    define('WP_HOME', getenv('STORE_URL'));
    define('WP_SITEURL', getenv('STORE_URL'));
    define('DISALLOW_FILE_EDIT', true);
    {{- with .Values.wordpress.configExtra }}
    {{- . | nindent 4 }}
    {{- end }}
{{- end }}

{{- /*
What the shared backup and restore pods (storeops-lib _backup.tpl) need of this chart: the web
component (its node, its user, its content volume: the whole WordPress folder, /var/www/html) and
the database's own client tools, run in the MariaDB image as the web component's user.
*/ -}}
{{- define "store.backup" -}}
component: wordpress
user: {{ .Values.wordpress.user }}
contentClaim: wordpress-content
image: {{ printf "%s:%s" .Values.mariadb.image.repository .Values.mariadb.image.tag }}
env:
  {{- include "store.secretEnv" (dict "root" . "env" "MYSQL_PWD" "key" "mariadb-password") | nindent 2 }}
# --single-transaction: a consistent dump of InnoDB tables without locking WordPress out. The dump
# drops each table before creating it, so loading it again (a retried restore) replaces the first attempt.
dump: |-
  mariadb-dump -h mariadb -u {{ .Values.mariadb.username }} --single-transaction --quick --no-tablespaces --routines --result-file=/work/database.sql {{ .Values.mariadb.database }}
wait: |-
  until mariadb-admin -h mariadb -u {{ .Values.mariadb.username }} --silent ping; do echo "waiting for mariadb"; sleep 2; done
tables: |-
  mariadb -h mariadb -u {{ .Values.mariadb.username }} -N -B -e "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{{ .Values.mariadb.database }}'"
load: |-
  mariadb -h mariadb -u {{ .Values.mariadb.username }} {{ .Values.mariadb.database }} < /work/database.sql
# restore.replace: the database dropped and made again (the user's grants on it stay).
clear: |-
  mariadb -h mariadb -u {{ .Values.mariadb.username }} -e "DROP DATABASE IF EXISTS {{ .Values.mariadb.database }}; CREATE DATABASE {{ .Values.mariadb.database }}"
{{- end }}
