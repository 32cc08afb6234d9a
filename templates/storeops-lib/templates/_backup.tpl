{{- /*
Backups and restore (backup.*, restore.from), shared by both engine charts. Nothing here renders
unless backup.enabled or restore.from is set.

A backup pod: the database's own image dumps the database to WORK_DIR (an emptyDir) in an init
container, then files/backup.py (credentials image, standard library only) gzips the dump, tars the
content volume and uploads both to s3://<bucket>/<prefix>/<store>/<backup-id>/, manifest.json last.
  * CronJob `backup` (backup.schedule, BACKUP_KIND=scheduled; its jobTemplate also works as a plain
    Job: storeops makes on-demand ones from it with BACKUP_KIND=manual or pre-upgrade), suspended
    with the store;
  * no Job of the chart's own at deletion: Argo CD renders an Application's PreDelete hooks from its
    target revision, where a deleted store's values file is already gone, so such a hook cannot
    render and would hold the deletion forever. storeops takes the final backup (a Job from the
    CronJob's jobTemplate, BACKUP_KIND=final) before it commits a store's removal.
A restore pod (restore.from "<store>/<backup-id>"): an Argo CD Sync hook in wave 1, with the web
component and the content claim it mounts, after the database (wave 0); the web pods wait for the
restore marker (also for plain Helm, where it is a post-install hook): backup.py fetch (download, sha256 checks) → the
database image loads the dump (only into an empty database, or one this restore began) → backup.py
extract (files into the content volume, marker done). Idempotent: a done restore is skipped.
restore.replace: true (a rollback of this same store to an earlier backup) empties the database and
the content volume first instead of refusing a store with data; still once per restore.from.

None of these pods gets an API token. Each engine chart defines "store.backup" (see its _helpers.tpl).
*/ -}}

{{- define "storeops.backupWanted" -}}
{{- if or .Values.backup.enabled .Values.restore.from }}true{{ end }}
{{- end }}

{{- define "storeops.backupScript" -}}
{{- $lib := index .Subcharts "storeops-lib" | required "storeops-lib is not a dependency of this chart (or has an alias)" -}}
{{- required "storeops-lib: files/backup.py is missing" ($lib.Files.Get "files/backup.py") -}}
{{- end }}

{{- /* What backup.py needs to reach the bucket (the keys from backup.secretName, never from values). */ -}}
{{- define "storeops.backupEnv" -}}
{{- $s3 := .Values.backup.s3 -}}
- name: STORE_ID
  value: {{ .Values.store.id | quote }}
- name: ENGINE
  value: {{ .Values.store.engine | quote }}
- name: CHART_VERSION
  value: {{ .Chart.Version | quote }}
- name: S3_ENDPOINT
  value: {{ required "backup.s3.endpoint is required for backups and restores" $s3.endpoint | quote }}
- name: S3_BUCKET
  value: {{ required "backup.s3.bucket is required for backups and restores" $s3.bucket | quote }}
- name: S3_REGION
  value: {{ $s3.region | default "us-east-1" | quote }}
- name: S3_PREFIX
  value: {{ $s3.prefix | quote }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.backup.secretName }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.backup.secretName }}
      key: AWS_SECRET_ACCESS_KEY
- name: WORK_DIR
  value: /work
- name: CONTENT_DIR
  value: /content
{{ include "storeops.pythonJobEnv" . }}
{{- end }}

{{- define "storeops.backupMounts" -}}
- name: work
  mountPath: /work
- name: content
  mountPath: /content
  {{- if .readOnly }}
  readOnly: true
  {{- end }}
{{- end }}

{{- /* The ConfigMap with backup.py: a managed object (wave -1), there before any backup or restore pod. */ -}}
{{- define "storeops.backupScriptConfigMap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: backup-script
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "storeops.componentLabels" (dict "root" . "component" "backup") | nindent 4 }}
data:
  backup.py: |
    {{- include "storeops.backupScript" . | nindent 4 }}
{{- end }}

{{- /* The pod of a backup: (dict "root" $ "kind" "scheduled") */ -}}
{{- define "storeops.backupPod" -}}
{{- $root := .root -}}
{{- $db := include "store.backup" $root | fromYaml -}}
metadata:
  labels:
    {{- include "storeops.componentLabels" (dict "root" $root "component" "backup") | nindent 4 }}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  enableServiceLinks: false
  securityContext:
    {{- /* One user for both steps: the dump is the dump step's file. */}}
    {{- include "storeops.podSecurityContext" (dict "user" $db.user) | nindent 4 }}
  # The content volume is ReadWriteOnce: run on the node that has the web component (and the volume).
  affinity:
    podAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        - topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "storeops.selectorLabels" (dict "root" $root "component" $db.component) | nindent 14 }}
  initContainers:
    - name: dump
      image: {{ $db.image | quote }}
      imagePullPolicy: IfNotPresent
      command: ["sh", "-ec", {{ $db.dump | quote }}]
      terminationMessagePolicy: FallbackToLogsOnError
      env:
        {{- toYaml $db.env | nindent 8 }}
      securityContext:
        {{- include "storeops.containerSecurityContext" true | nindent 8 }}
      resources:
        {{- toYaml $root.Values.backup.resources | nindent 8 }}
      volumeMounts:
        - name: work
          mountPath: /work
  containers:
    - name: backup
      image: {{ printf "%s:%s" $root.Values.credentials.image.repository $root.Values.credentials.image.tag | quote }}
      imagePullPolicy: IfNotPresent
      command: ["python3", "/scripts/backup.py", "backup"]
      terminationMessagePolicy: FallbackToLogsOnError
      env:
        - name: BACKUP_KIND
          value: {{ .kind | quote }}
        - name: RETENTION
          value: {{ $root.Values.backup.retention | int | quote }}
        {{- include "storeops.backupEnv" $root | nindent 8 }}
      securityContext:
        {{- include "storeops.containerSecurityContext" true | nindent 8 }}
      resources:
        {{- toYaml $root.Values.backup.resources | nindent 8 }}
      volumeMounts:
        {{- include "storeops.backupMounts" (dict "readOnly" true) | nindent 8 }}
        - name: script
          mountPath: /scripts
          readOnly: true
  volumes:
    - name: work
      emptyDir: {}
    - name: content
      persistentVolumeClaim:
        claimName: {{ $db.contentClaim }}
        readOnly: true
    - name: script
      configMap:
        name: backup-script
{{- end }}

{{- /* The Job spec of a backup (the CronJob's jobTemplate and the final backup): (dict "root" $ "kind" "scheduled") */ -}}
{{- define "storeops.backupJobSpec" -}}
backoffLimit: 2
activeDeadlineSeconds: {{ .root.Values.backup.activeDeadlineSeconds }}
# Bad settings (2) and refusals (3) will not pass on a retry.
podFailurePolicy:
  rules:
    - action: FailJob
      onExitCodes:
        containerName: backup
        operator: In
        values: [2, 3]
template:
  {{- include "storeops.backupPod" . | nindent 2 }}
{{- end }}

{{- define "storeops.backup" -}}
{{- if include "storeops.backupWanted" . }}
{{ include "storeops.backupScriptConfigMap" . }}
{{- end }}
{{- if .Values.backup.enabled }}
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: backup
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "storeops.componentLabels" (dict "root" . "component" "backup") | nindent 4 }}
spec:
  schedule: {{ .Values.backup.schedule | quote }}
  timeZone: Etc/UTC
  concurrencyPolicy: Forbid
  # Nothing runs while the store is suspended (the database is down then).
  suspend: {{ .Values.suspended }}
  startingDeadlineSeconds: 3600
  successfulJobsHistoryLimit: 3
  failedJobsHistoryLimit: 3
  jobTemplate:
    metadata:
      labels:
        {{- include "storeops.componentLabels" (dict "root" . "component" "backup") | nindent 8 }}
    spec:
      {{- include "storeops.backupJobSpec" (dict "root" . "kind" "scheduled") | nindent 6 }}
{{- end }}
{{- if .Values.restore.from }}
---
{{ include "storeops.restoreJob" . }}
{{- end }}
{{- end }}

{{- /* A step of the restore pod in the credentials image: backup.py <step>. (dict "root" $ "step" "fetch") */ -}}
{{- define "storeops.restoreStep" -}}
{{- $root := .root -}}
- name: {{ .step }}
  image: {{ printf "%s:%s" $root.Values.credentials.image.repository $root.Values.credentials.image.tag | quote }}
  imagePullPolicy: IfNotPresent
  command: ["python3", "/scripts/backup.py", {{ .step | quote }}]
  terminationMessagePolicy: FallbackToLogsOnError
  env:
    - name: RESTORE_FROM
      value: {{ $root.Values.restore.from | quote }}
    - name: RESTORE_REPLACE
      value: {{ $root.Values.restore.replace | default false | quote }}
    {{- include "storeops.backupEnv" $root | nindent 4 }}
  securityContext:
    {{- include "storeops.containerSecurityContext" true | nindent 4 }}
  resources:
    {{- toYaml $root.Values.backup.resources | nindent 4 }}
  volumeMounts:
    {{- include "storeops.backupMounts" dict | nindent 4 }}
    - name: script
      mountPath: /scripts
      readOnly: true
{{- end }}

{{- define "storeops.restoreJob" -}}
{{- $db := include "store.backup" . | fromYaml -}}
{{- $from := .Values.restore.from -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: restore
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "storeops.componentLabels" (dict "root" . "component" "restore") | nindent 4 }}
  annotations:
    # Argo CD: a Sync hook in wave 1, with the web component and its content claim (which the restore
    # pod mounts: in an earlier wave the claim is not there yet, and the pod waits for it for good); the
    # web pods wait for the marker the restore writes last. Helm: after the install, the same way.
    {{- include "storeops.hook" (dict "argocd" "Sync" "helm" "post-install,post-upgrade" "weight" 1) | nindent 4 }}
spec:
  backoffLimit: 3
  activeDeadlineSeconds: {{ .Values.backup.activeDeadlineSeconds }}
  podFailurePolicy:
    rules:
      {{- range $step := list "fetch" "load" "extract" }}
      - action: FailJob
        onExitCodes:
          containerName: {{ $step }}
          operator: In
          values: [2, 3]
      {{- end }}
  template:
    metadata:
      labels:
        {{- include "storeops.componentLabels" (dict "root" . "component" "restore") | nindent 8 }}
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      enableServiceLinks: false
      securityContext:
        {{- /* The web component's user: the files it extracts are the web component's. */}}
        {{- include "storeops.podSecurityContext" (dict "user" $db.user) | nindent 8 }}
      # A new store has no web pod yet (this pod binds the volume); replacing a running store's data,
      # the ReadWriteOnce content volume is on the web pod's node.
      affinity:
        podAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector:
                  matchLabels:
                    {{- include "storeops.selectorLabels" (dict "root" . "component" $db.component) | nindent 20 }}
      initContainers:
        {{- include "storeops.restoreStep" (dict "root" . "step" "fetch") | nindent 8 }}
        # The database's own client: waits for the server, refuses a database with tables unless this
        # restore began loading it (the marker), loads the dump, then records that in the marker.
        - name: load
          image: {{ $db.image | quote }}
          imagePullPolicy: IfNotPresent
          command:
            - sh
            - -ec
            - |
              if [ -f /work/skip ] || [ -f /work/database-done ]; then echo "database already restored"; exit 0; fi
              {{- $db.wait | nindent 14 }}
              if [ -f /work/check-empty ]; then
                tables=$({{ $db.tables }})
                if [ "$tables" != "0" ]; then
                  echo "the database has $tables tables and no restore marker: refusing to restore {{ $from }} over it"
                  exit 3
                fi
              fi
              printf '{"from": "%s", "state": "%s"}\n' {{ $from | quote }} database > /content/.storeops-restore
              if [ -f /work/replace ]; then
                echo "replacing the store's data with {{ $from }}: emptying the database"
                {{- $db.clear | nindent 16 }}
              fi
              {{- $db.load | nindent 14 }}
              printf '{"from": "%s", "state": "%s"}\n' {{ $from | quote }} files > /content/.storeops-restore.tmp
              mv /content/.storeops-restore.tmp /content/.storeops-restore
              echo "database loaded from {{ $from }}"
          terminationMessagePolicy: FallbackToLogsOnError
          env:
            {{- toYaml $db.env | nindent 12 }}
          securityContext:
            {{- include "storeops.containerSecurityContext" true | nindent 12 }}
          resources:
            {{- toYaml .Values.backup.resources | nindent 12 }}
          volumeMounts:
            {{- include "storeops.backupMounts" dict | nindent 12 }}
      containers:
        {{- include "storeops.restoreStep" (dict "root" . "step" "extract") | nindent 8 }}
      volumes:
        - name: work
          emptyDir: {}
        - name: content
          persistentVolumeClaim:
            claimName: {{ $db.contentClaim }}
        - name: script
          configMap:
            name: backup-script
{{- end }}

{{- /*
An init container of the web component while restore.from is set: waits until the restore marker
on the content volume says done (mounted at "mountPath" of the web container). A plain shell loop
in the web image: (dict "root" $ "image" <image> "mountPath" "/var/www/html")
*/ -}}
{{- define "storeops.waitForRestore" -}}
{{- if .root.Values.restore.from }}
- name: wait-for-restore
  image: {{ .image }}
  imagePullPolicy: IfNotPresent
  command:
    - sh
    - -c
    - |
      marker={{ .mountPath }}/.storeops-restore
      until [ -f "$marker" ] && read -r line < "$marker" && [ "${line#*\"state\": \"done\"}" != "$line" ]; do
        echo "waiting for the restore of {{ .root.Values.restore.from }}"; sleep 5
      done
  securityContext:
    {{- include "storeops.containerSecurityContext" true | nindent 4 }}
  resources:
    requests: {cpu: 10m, memory: 16Mi}
    limits: {cpu: 100m, memory: 64Mi}
  volumeMounts:
    - name: {{ .volume }}
      mountPath: {{ .mountPath | quote }}
      readOnly: true
{{- end }}
{{- end }}

{{- /*
Egress of the backup and restore pods: the store's own pods (the database), DNS, and the S3
endpoint (backup.egress.namespace: pods of that namespace; backup.egress.cidr: those addresses).
Rendered when one of the two is set; without, their egress is the rest of the store's (unrestricted).
*/ -}}
{{- define "storeops.backupEgress" -}}
{{- with .Values.backup.egress }}
{{- if and (include "storeops.backupWanted" $) (or .namespace .cidr) }}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: backup-egress
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "storeops.labels" $ | nindent 4 }}
spec:
  podSelector:
    matchExpressions:
      - key: app.kubernetes.io/component
        operator: In
        values: [backup, restore]
  policyTypes: ["Egress"]
  egress:
    # The store's database.
    - to:
        - podSelector: {}
    # Cluster DNS, to find the endpoint by name.
    - ports:
        - protocol: UDP
          port: 53
        - protocol: TCP
          port: 53
    # The S3 endpoint.
    - to:
        {{- if .namespace }}
        - namespaceSelector:
            matchLabels:
              kubernetes.io/metadata.name: {{ .namespace | quote }}
        {{- end }}
        {{- if .cidr }}
        - ipBlock:
            cidr: {{ .cidr | quote }}
        {{- end }}
{{- end }}
{{- end }}
{{- end }}
