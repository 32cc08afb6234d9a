{{- /*
Shared by the storeops store charts: this library chart (templates/storeops-lib) is a file://
dependency of templates/woocommerce and templates/medusa, present in each as charts/storeops-lib, a
symlink to ../../storeops-lib (tests/integration/test_chart_library.py checks). The defines run in
the scope of the chart that includes them: .Chart, .Values and .Files are the engine chart's. Each
engine chart defines "store.credentialKeys" and "store.webService".

Everything here lives in the store's own namespace, so object names are fixed component names;
the namespace carries the store id.
*/ -}}

{{- define "storeops.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: storeops
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
storeops.io/store: {{ .Values.store.id }}
{{- end }}

{{- /* Selector labels of one component: (dict "root" $ "component" "mariadb") */ -}}
{{- define "storeops.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "storeops.componentLabels" -}}
{{ include "storeops.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- /* Argo CD sync wave and, for plain Helm, nothing: waves only order Argo CD syncs. */ -}}
{{- define "storeops.wave" -}}
argocd.argoproj.io/sync-wave: {{ . | quote }}
{{- end }}

{{- /*
Hook annotations for Argo CD and Helm:
(dict "argocd" "PreSync" "helm" "pre-install,pre-upgrade" "weight" -5 ["helmWeight" -6]).
Within one sync wave Argo CD applies kinds in install order, each kind before the next: Namespace,
NetworkPolicy, ResourceQuota, LimitRange, ServiceAccount, Secret, ConfigMap, PersistentVolumeClaim, Role,
RoleBinding, Service, Deployment, StatefulSet, Job, CronJob, Ingress. So a hook Job shares its wave with its
ServiceAccount, RBAC and script ConfigMap, and a wave holds every object that needs nothing healthy before
it: each wave is one more step of every sync (Argo CD applies it, waits for it to be healthy, checks the
whole store again), and those steps are most of what a fleet's syncs cost. Helm orders hooks of one weight
by name, not kind: those objects take a lower helmWeight than their Job (Helm has no steps to save).
*/ -}}
{{- define "storeops.hook" -}}
argocd.argoproj.io/hook: {{ .argocd }}
argocd.argoproj.io/hook-delete-policy: BeforeHookCreation
argocd.argoproj.io/sync-wave: {{ .weight | quote }}
helm.sh/hook: {{ .helm }}
helm.sh/hook-delete-policy: before-hook-creation
helm.sh/hook-weight: {{ ternary .helmWeight .weight (hasKey . "helmWeight") | quote }}
{{- end }}

{{- /*
Data is never pruned by a sync (a renamed or dropped object stays, and the app shows OutOfSync);
deleting the store (cascade delete of the Application) still deletes it: Argo CD skips only
Delete=false and helm.sh/resource-policy: keep there, not Prune=false.
*/ -}}
{{- define "storeops.keepOnPrune" -}}
argocd.argoproj.io/sync-options: Prune=false
{{- end }}

{{- define "storeops.replicas" -}}
{{- if .root.Values.suspended }}0{{ else }}{{ .replicas }}{{ end }}
{{- end }}

{{- /* Pod-level security: non-root with the image's user, RuntimeDefault seccomp. (dict "user" 999 "extra" dict) */ -}}
{{- define "storeops.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .user }}
runAsGroup: {{ .user }}
fsGroup: {{ .user }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- /* The environment every Python Job container of the charts shares (after its own variables). */ -}}
{{- define "storeops.pythonJobEnv" -}}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- end }}

{{- define "storeops.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ . }}
capabilities:
  drop: ["ALL"]
{{- end }}

{{- define "storeops.namespace" -}}
{{- if .Values.namespace.create }}
# The store's namespace is part of the release so that deleting the store (the Argo CD Application,
# with its resources finalizer) deletes the namespace and everything in it, PVCs included.
# Argo CD never deletes a namespace it only created through CreateNamespace=true. This manifest takes
# precedence over the Application's managedNamespaceMetadata, so it carries the same labels.
apiVersion: v1
kind: Namespace
metadata:
  name: {{ .Release.Namespace }}
  labels:
    {{- include "storeops.labels" . | nindent 4 }}
    pod-security.kubernetes.io/enforce: {{ .Values.namespace.podSecurity.enforce }}
    pod-security.kubernetes.io/audit: {{ .Values.namespace.podSecurity.audit }}
    pod-security.kubernetes.io/warn: {{ .Values.namespace.podSecurity.warn }}
  annotations:
    {{- include "storeops.keepOnPrune" . | nindent 4 }}
{{- end }}
{{- end }}

{{- define "storeops.isolation" -}}
apiVersion: v1
kind: ResourceQuota
metadata:
  name: store-quota
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "storeops.labels" . | nindent 4 }}
spec:
  hard:
    requests.cpu: {{ .Values.quota.cpu | quote }}
    requests.memory: {{ .Values.quota.memory | quote }}
    requests.storage: {{ .Values.quota.storage | quote }}
---
apiVersion: v1
kind: LimitRange
metadata:
  name: store-limits
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "storeops.labels" . | nindent 4 }}
spec:
  limits:
    - type: Container
      defaultRequest:
        {{- toYaml .Values.limitRange.defaultRequest | nindent 8 }}
      default:
        {{- toYaml .Values.limitRange.default | nindent 8 }}
      max:
        cpu: {{ .Values.quota.cpu | quote }}
        memory: {{ .Values.quota.memory | quote }}
    - type: PersistentVolumeClaim
      max:
        storage: {{ .Values.quota.storage | quote }}
---
# Nothing reaches a store's pods from outside the namespace...
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-ingress
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "storeops.labels" . | nindent 4 }}
spec:
  podSelector: {}
  policyTypes: ["Ingress"]
  ingress:
    # ...except from pods of this same namespace,
    - from:
        - podSelector: {}
---
# ...and from the ingress controller, to the web port of the web component only.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-ingress-controller
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "storeops.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "storeops.selectorLabels" (dict "root" . "component" (include "store.webService" . | fromYaml).component) | nindent 6 }}
  policyTypes: ["Ingress"]
  ingress:
    - from:
        - namespaceSelector:
            matchLabels:
              kubernetes.io/metadata.name: {{ .Values.networkPolicy.ingressControllerNamespace | quote }}
          {{- with .Values.networkPolicy.ingressControllerPodLabels }}
          podSelector:
            matchLabels:
              {{- toYaml . | nindent 14 }}
          {{- end }}
      ports:
        - protocol: TCP
          port: {{ (include "store.webService" . | fromYaml).targetPort }}
{{- end }}

{{- define "storeops.ingress" -}}
{{- $web := include "store.webService" . | fromYaml -}}
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: store
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "storeops.labels" . | nindent 4 }}
  annotations:
    {{- include "storeops.wave" "5" | nindent 4 }}
    {{- if .Values.ingress.tls.enabled }}
    {{- if eq (.Values.ingress.tls.issuerKind | default "ClusterIssuer") "Issuer" }}
    cert-manager.io/issuer: {{ required "ingress.tls.issuer is required when ingress.tls.enabled" .Values.ingress.tls.issuer | quote }}
    {{- else }}
    cert-manager.io/cluster-issuer: {{ required "ingress.tls.issuer is required when ingress.tls.enabled" .Values.ingress.tls.issuer | quote }}
    {{- end }}
    {{- end }}
    {{- with .Values.ingress.annotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  ingressClassName: {{ .Values.ingress.className | quote }}
  {{- if .Values.ingress.tls.enabled }}
  tls:
    - hosts: [{{ .Values.host | quote }}]
      secretName: {{ .Values.ingress.tls.secretName | default "store-tls" | quote }}
  {{- end }}
  rules:
    - host: {{ .Values.host | quote }}
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service:
                name: {{ $web.name }}
                port:
                  name: http
{{- end }}

{{- /*
The credentials script: files/credentials.py of this chart. .Files here are the engine chart's, so
the script is read from this chart's scope, which Helm gives the parent as .Subcharts.<name>; the
dependency must therefore keep its name (no alias).
*/ -}}
{{- define "storeops.credentialsScript" -}}
{{- $lib := index .Subcharts "storeops-lib" | required "storeops-lib is not a dependency of this chart (or has an alias)" -}}
{{- required "storeops-lib: files/credentials.py is missing" ($lib.Files.Get "files/credentials.py") -}}
{{- end }}

{{- /*
The credentials Secret: created inside the cluster by a hook Job, before anything that reads it.
A ServiceAccount whose Role may create Secrets and get/patch only this one; its token is mounted
in the Job's pod only. Skipped while suspended (nothing runs then); the Secret stays.
*/ -}}
{{- define "storeops.credentials" -}}
{{- if not .Values.suspended }}
{{- $name := .Values.credentials.secretName -}}
{{- $hook := dict "argocd" "PreSync" "helm" "pre-install,pre-upgrade" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: credentials-writer
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "storeops.componentLabels" (dict "root" . "component" "credentials") | nindent 4 }}
  annotations:
    {{- include "storeops.hook" (merge (dict "weight" -10 "helmWeight" -20) $hook) | nindent 4 }}
automountServiceAccountToken: false
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: credentials-writer
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "storeops.componentLabels" (dict "root" . "component" "credentials") | nindent 4 }}
  annotations:
    {{- include "storeops.hook" (merge (dict "weight" -10 "helmWeight" -20) $hook) | nindent 4 }}
rules:
  # create cannot be limited to a name (the name is in the body); get and patch are.
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["create"]
  - apiGroups: [""]
    resources: ["secrets"]
    resourceNames: [{{ $name | quote }}]
    verbs: ["get", "patch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: credentials-writer
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "storeops.componentLabels" (dict "root" . "component" "credentials") | nindent 4 }}
  annotations:
    {{- include "storeops.hook" (merge (dict "weight" -10 "helmWeight" -20) $hook) | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: credentials-writer
subjects:
  - kind: ServiceAccount
    name: credentials-writer
    namespace: {{ .Release.Namespace }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: credentials-writer
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "storeops.componentLabels" (dict "root" . "component" "credentials") | nindent 4 }}
  annotations:
    {{- include "storeops.hook" (merge (dict "weight" -10 "helmWeight" -20) $hook) | nindent 4 }}
data:
  credentials.py: |
    {{- include "storeops.credentialsScript" . | nindent 4 }}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: credentials
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "storeops.componentLabels" (dict "root" . "component" "credentials") | nindent 4 }}
  annotations:
    {{- include "storeops.hook" (merge (dict "weight" -10) $hook) | nindent 4 }}
spec:
  backoffLimit: 4
  activeDeadlineSeconds: 300
  template:
    metadata:
      labels:
        {{- include "storeops.componentLabels" (dict "root" . "component" "credentials") | nindent 8 }}
    spec:
      restartPolicy: Never
      serviceAccountName: credentials-writer
      # The only pod of a store that gets an API token.
      automountServiceAccountToken: true
      securityContext:
        {{- include "storeops.podSecurityContext" (dict "user" 65534) | nindent 8 }}
      containers:
        - name: credentials
          image: {{ printf "%s:%s" .Values.credentials.image.repository .Values.credentials.image.tag | quote }}
          imagePullPolicy: IfNotPresent
          command: ["python3", "/scripts/credentials.py"]
          env:
            - name: SECRET_NAME
              value: {{ $name | quote }}
            - name: SECRET_KEYS
              value: {{ include "store.credentialKeys" . | quote }}
            - name: SECRET_LABELS
              value: {{ dict "app.kubernetes.io/part-of" "storeops" "app.kubernetes.io/instance" .Release.Name "storeops.io/store" .Values.store.id | toJson | quote }}
            {{- include "storeops.pythonJobEnv" . | nindent 12 }}
          securityContext:
            {{- include "storeops.containerSecurityContext" true | nindent 12 }}
          resources:
            {{- toYaml .Values.credentials.resources | nindent 12 }}
          volumeMounts:
            - name: script
              mountPath: /scripts
              readOnly: true
      volumes:
        - name: script
          configMap:
            name: credentials-writer
{{- end }}
{{- end }}

{{- /*
Who may read the credentials Secret from outside the store: storeops' own ServiceAccount, to show
them once to the owner. get on that one Secret, nothing else (RBAC cannot match namespaces by pattern,
so each store grants it in its own). Empty credentials.reader.serviceAccount grants nobody.
*/ -}}
{{- define "storeops.credentialsReader" -}}
{{- with .Values.credentials.reader }}
{{- if .serviceAccount }}
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: storeops-credentials-reader
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "storeops.componentLabels" (dict "root" $ "component" "credentials") | nindent 4 }}
rules:
  - apiGroups: [""]
    resources: ["secrets"]
    resourceNames: [{{ $.Values.credentials.secretName | quote }}]
    verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: storeops-credentials-reader
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "storeops.componentLabels" (dict "root" $ "component" "credentials") | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: storeops-credentials-reader
subjects:
  - kind: ServiceAccount
    name: {{ .serviceAccount | quote }}
    namespace: {{ .namespace | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- /*
The shop admin's password change, when the store entry's adminPasswordRotation (credentials.rotation)
went up: a PostSync hook Job (wave 7: the scripts it mounts are ordinary objects of the store by then),
before the shop's own setup (wave 10; so a setup that fails, e.g. a WooCommerce
plugin source that is down, does not hold it back; an admin the setup has not made yet is made by it
with the new password). Three steps in one pod, in order:
  1. prepare (credentials image, API token): a new password kept in the Secret as admin-password-next,
     handed on in a file of this pod only; nothing when the Secret is at that rotation already;
  2. the engine's own step ("setter", no token) sets it in the shop when the file is there;
  3. finish (credentials image, API token): admin-password takes it, and the Secret's annotation
     storeops.io/admin-password-rotation the new count.
A failure anywhere leaves the old password working in the Secret's admin-password (and the shop, but
after step 2); the next attempt reuses admin-password-next. Runs as credentials-writer, the PreSync
hook's ServiceAccount, which may get and patch this one Secret.
(dict "root" $ "user" <uid of every step> "setter" <container YAML> "volumes" <volume list YAML>
 "affinity" <affinity YAML>)
*/ -}}
{{- define "storeops.passwordRotation" -}}
{{- $root := .root -}}
{{- if gt (int ($root.Values.credentials.rotation | default 0)) 0 }}
# The count the rotation Job works to, as a managed object: Argo CD compares only managed objects, so a
# change of the count alone (hooks are not compared) makes the store OutOfSync and its sync runs the Job.
apiVersion: v1
kind: ConfigMap
metadata:
  name: credentials-rotation
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "storeops.componentLabels" (dict "root" $root "component" "credentials-rotation") | nindent 4 }}
data:
  rotation: {{ $root.Values.credentials.rotation | int | quote }}
{{- end }}
{{- if and (gt (int ($root.Values.credentials.rotation | default 0)) 0) (not $root.Values.suspended) }}
---
{{- $sel := dict "root" $root "component" "credentials-rotation" -}}
{{- $hook := dict "argocd" "PostSync" "helm" "post-install,post-upgrade" "weight" 7 -}}
{{- $python := dict "image" (printf "%s:%s" $root.Values.credentials.image.repository $root.Values.credentials.image.tag) -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: credentials-rotation
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "storeops.componentLabels" $sel | nindent 4 }}
  annotations:
    {{- include "storeops.hook" $hook | nindent 4 }}
spec:
  backoffLimit: 3
  activeDeadlineSeconds: 900
  template:
    metadata:
      labels:
        {{- include "storeops.componentLabels" $sel | nindent 8 }}
    spec:
      restartPolicy: Never
      serviceAccountName: credentials-writer
      automountServiceAccountToken: false
      enableServiceLinks: false
      securityContext:
        {{- /* One user for every step: the password file is mode 0600. */}}
        {{- include "storeops.podSecurityContext" (dict "user" .user) | nindent 8 }}
      {{- with .affinity }}
      affinity:
        {{- . | nindent 8 }}
      {{- end }}
      initContainers:
        - name: prepare-rotation
          image: {{ $python.image | quote }}
          imagePullPolicy: IfNotPresent
          command: ["python3", "/scripts/credentials.py", "prepare-rotation"]
          terminationMessagePolicy: FallbackToLogsOnError
          env:
            {{- include "storeops.rotationEnv" $root | nindent 12 }}
          securityContext:
            {{- include "storeops.containerSecurityContext" true | nindent 12 }}
          resources:
            {{- toYaml $root.Values.credentials.resources | nindent 12 }}
          volumeMounts:
            {{- include "storeops.rotationMounts" $root | nindent 12 }}
        # The engine's step: the same password in the shop, only when prepare wrote the file.
        - {{ .setter | trim | nindent 10 | trim }}
      containers:
        - name: finish-rotation
          image: {{ $python.image | quote }}
          imagePullPolicy: IfNotPresent
          command: ["python3", "/scripts/credentials.py", "finish-rotation"]
          terminationMessagePolicy: FallbackToLogsOnError
          env:
            {{- include "storeops.rotationEnv" $root | nindent 12 }}
          securityContext:
            {{- include "storeops.containerSecurityContext" true | nindent 12 }}
          resources:
            {{- toYaml $root.Values.credentials.resources | nindent 12 }}
          volumeMounts:
            {{- include "storeops.rotationMounts" $root | nindent 12 }}
      volumes:
        # The new password between the steps: memory only, this pod only.
        - name: rotation
          emptyDir:
            medium: Memory
            sizeLimit: 1Mi
        - name: script
          configMap:
            name: credentials-writer
        # The ServiceAccount's token, for the two credentials steps only.
        {{- include "storeops.apiTokenVolume" . | nindent 8 }}
        {{- with .volumes }}
        {{- . | nindent 8 }}
        {{- end }}
{{- end }}
{{- end }}

{{- define "storeops.rotationEnv" -}}
- name: SECRET_NAME
  value: {{ .Values.credentials.secretName | quote }}
- name: ROTATION
  value: {{ .Values.credentials.rotation | int | quote }}
- name: ROTATION_FILE
  value: /rotation/password
{{ include "storeops.pythonJobEnv" . }}
{{- end }}

{{- define "storeops.rotationMounts" -}}
- name: rotation
  mountPath: /rotation
- name: script
  mountPath: /scripts
  readOnly: true
- name: api-token
  mountPath: /var/run/secrets/kubernetes.io/serviceaccount
  readOnly: true
{{- end }}

{{- /* A ServiceAccount token for the containers that mount it only (pods set automountServiceAccountToken: false). */ -}}
{{- define "storeops.apiTokenVolume" -}}
- name: api-token
  projected:
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3600
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
{{- end }}

{{- /*
On a cluster with backups, storeops' ServiceAccount (credentials.reader) may, in this namespace: keep
the S3 keys' Secret (backup.secretName) in step with the profile's source Secret, and start a backup
now (a Job from the backup CronJob: manual, pre-upgrade before a rollout moves the store, or final
before the store is removed) and follow it, and remove the finished backup Jobs before the store goes
(their Pods keep the content claim from being deleted). Creating a Secret cannot be limited to one name in RBAC; get and update are.
*/ -}}
{{- define "storeops.backupKeeper" -}}
{{- with .Values.credentials.reader }}
{{- if and .serviceAccount $.Values.backup.enabled }}
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: storeops-backups
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "storeops.componentLabels" (dict "root" $ "component" "backup") | nindent 4 }}
rules:
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["create"]
  - apiGroups: [""]
    resources: ["secrets"]
    resourceNames: [{{ $.Values.backup.secretName | quote }}]
    verbs: ["get", "update"]
  - apiGroups: ["batch"]
    resources: ["cronjobs"]
    resourceNames: ["backup"]
    verbs: ["get"]
  - apiGroups: ["batch"]
    resources: ["jobs"]
    verbs: ["create", "get", "list", "deletecollection"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: storeops-backups
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "storeops.componentLabels" (dict "root" $ "component" "backup") | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: storeops-backups
subjects:
  - kind: ServiceAccount
    name: {{ .serviceAccount | quote }}
    namespace: {{ .namespace | quote }}
{{- end }}
{{- end }}
{{- end }}
