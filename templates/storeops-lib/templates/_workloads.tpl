{{- /*
The pieces of a store's components that both engine charts build the same way: the Service in front
of a component, the claim spec of a volume, the content volume's PVC, the common part of a Deployment
or StatefulSet spec and a database's volumeClaimTemplates. Each takes a dict with the chart's root
scope as "root" and the component's name as "component" (the object names and the
app.kubernetes.io/component label); what differs between the engines (ports, sizes, users, claim
names) comes as the other keys. The engine chart keeps its containers, probes and comments.
*/ -}}

{{- /*
The Service of a component, named after it, selecting its pods, with one port whose targetPort is the
container port of the same name:
(dict "root" $ "component" "mariadb" "portName" "mysql" "port" 3306 "headless" true)
*/ -}}
{{- define "storeops.service" -}}
{{- $sel := dict "root" .root "component" .component -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "storeops.componentLabels" $sel | nindent 4 }}
spec:
  {{- if .headless }}
  clusterIP: None
  {{- end }}
  selector:
    {{- include "storeops.selectorLabels" $sel | nindent 4 }}
  ports:
    - name: {{ .portName }}
      port: {{ .port }}
      targetPort: {{ .portName }}
{{- end }}

{{- /*
The spec of a store volume's claim: ReadWriteOnce, the cluster's storage class (persistence.storageClassName;
none: the default StorageClass) and a size: (dict "root" $ "size" .Values.persistence.database.size)
*/ -}}
{{- define "storeops.claimSpec" -}}
accessModes: ["ReadWriteOnce"]
{{- with .root.Values.persistence.storageClassName }}
storageClassName: {{ . | quote }}
{{- end }}
resources:
  requests:
    storage: {{ .size | quote }}
{{- end }}

{{- /*
The content volume (persistence.content.size) of the web component, never pruned by a sync, in the
sync wave of the Deployment that mounts it ("wave"): Argo CD applies claims before Deployments within
a wave, and an earlier wave would wait for the claim to be Bound, which a WaitForFirstConsumer class
does only once the pod exists:
(dict "root" $ "component" "wordpress" "name" "wordpress-content" "wave" "1")
*/ -}}
{{- define "storeops.contentClaim" -}}
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ .name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "storeops.componentLabels" . | nindent 4 }}
  annotations:
    {{- include "storeops.wave" (required "storeops.contentClaim: the wave of the Deployment that mounts it" .wave) | nindent 4 }}
    {{- include "storeops.keepOnPrune" .root | nindent 4 }}
spec:
  {{- include "storeops.claimSpec" (dict "root" .root "size" .root.Values.persistence.content.size) | nindent 2 }}
{{- end }}

{{- /*
The part of a Deployment or StatefulSet spec both charts write alike, from `selector:` to the pod's
securityContext (non-root as "user"); include it with `| nindent 2` under `spec:` and go on with the
rest of the pod spec (initContainers, containers, volumes) indented by 6, so a caller may also add to
the securityContext (8).
  "statefulSet" true: the volume claims are kept when the StatefulSet is scaled down or deleted.
  "terminationGracePeriodSeconds": set on the pod when given.
  "volumeSize": the size of the claim the pod mounts, as the pod annotation storeops.io/volume-size: a
  growth restarts the pod once, so a driver that grows filesystems only while they are not mounted
  finishes the growth (see the chart READMEs, "Volumes that grow").
(dict "root" $ "component" "mariadb" "user" 999 "statefulSet" true "terminationGracePeriodSeconds" 60
 "volumeSize" .Values.persistence.database.size)
*/ -}}
{{- define "storeops.workloadSpec" -}}
{{- $sel := dict "root" .root "component" .component -}}
selector:
  matchLabels:
    {{- include "storeops.selectorLabels" $sel | nindent 4 }}
{{- if .statefulSet }}
# Suspending scales to zero and keeps the data volume.
persistentVolumeClaimRetentionPolicy:
  whenScaled: Retain
  whenDeleted: Retain
{{- end }}
template:
  metadata:
    labels:
      {{- include "storeops.componentLabels" $sel | nindent 6 }}
    {{- with .volumeSize }}
    annotations:
      storeops.io/volume-size: {{ . | quote }}
    {{- end }}
  spec:
    automountServiceAccountToken: false
    enableServiceLinks: false
    {{- with .terminationGracePeriodSeconds }}
    terminationGracePeriodSeconds: {{ . }}
    {{- end }}
    securityContext:
      {{- include "storeops.podSecurityContext" (dict "user" .user) | nindent 6 }}
{{- end }}

{{- /*
A database's volume: the StatefulSet's claim template `data` of persistence.database.size, and the same
claim as an object of the chart, named as the StatefulSet names the claim of its pod 0
(data-<component>-0). Kubernetes never changes a StatefulSet's volumeClaimTemplates (the Application
ignores differences there), so the claim object is what follows the plan: a bigger plan patches its
spec.resources.requests.storage and the StorageClass's driver grows the volume in place. For a store
made before the claim was part of the chart, Argo CD adopts the claim the StatefulSet made (same name,
same spec): nothing is recreated and no data moves. A new store's claim is created in the same wave as
the StatefulSet and before it (Argo CD applies claims before StatefulSets within a wave); an earlier
wave would wait for the claim to be Bound, which a WaitForFirstConsumer class only does once the pod
exists. Like the content volume, a sync never prunes it; deleting the store deletes it.
  "databaseClaim": the PersistentVolumeClaim; include it as a document of its own:
(dict "root" $ "component" "postgres")
  "databaseClaims": the volumeClaimTemplates; include it with `| nindent 2` under the StatefulSet's `spec:`:
(dict "root" $ "component" "postgres")
*/ -}}
{{- define "storeops.databaseClaimName" -}}
data-{{ .component }}-0
{{- end }}

{{- define "storeops.databaseClaim" -}}
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ include "storeops.databaseClaimName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "storeops.componentLabels" . | nindent 4 }}
  annotations:
    {{- include "storeops.keepOnPrune" .root | nindent 4 }}
spec:
  {{- include "storeops.claimSpec" (dict "root" .root "size" .root.Values.persistence.database.size) | nindent 2 }}
{{- end }}

{{- define "storeops.databaseClaims" -}}
volumeClaimTemplates:
  - metadata:
      name: data
      labels:
        {{- include "storeops.componentLabels" . | nindent 8 }}
    spec:
      {{- include "storeops.claimSpec" (dict "root" .root "size" .root.Values.persistence.database.size) | nindent 6 }}
{{- end }}
