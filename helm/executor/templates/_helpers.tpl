{{/* Names, labels and the pieces the server and runner pods share. */}}

{{- define "executor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "executor.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "executor.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "executor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component (server, runner). */}}
{{- define "executor.selector" -}}
app.kubernetes.io/name: {{ include "executor.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "executor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "executor.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "executor.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Seconds runs in progress may go on after SIGTERM, and the pods' grace. */}}
{{- define "executor.grace" -}}
{{- .Values.longestJobTimeoutSeconds | int -}}
{{- end -}}
{{- define "executor.terminationGrace" -}}
{{- add (.Values.longestJobTimeoutSeconds | int) 30 -}}
{{- end -}}

{{/* The server's URL as runners reach it. */}}
{{- define "executor.serverUrl" -}}
{{- if .Values.runners.serverUrl -}}
{{- .Values.runners.serverUrl -}}
{{- else -}}
{{- printf "http://%s-server:%d" (include "executor.fullname" .) (.Values.server.port | int) -}}
{{- end -}}
{{- end -}}

{{/* Pod-level securityContext by isolation. */}}
{{- define "executor.podSecurityContext" -}}
{{- if eq .Values.isolation "namespace" -}}
hostUsers: false
securityContext:
  seccompProfile:
    type: Unconfined
  appArmorProfile:
    type: Unconfined
{{- else -}}
securityContext:
  runAsUser: 0
  runAsGroup: 0
  runAsNonRoot: false
  seccompProfile:
    type: RuntimeDefault
{{- end -}}
{{- end -}}

{{/* Container securityContext by isolation. in-place: root, no added
capability, RuntimeDefault seccomp, no privilege escalation; namespace:
CAP_SYS_ADMIN within the pod's user namespace, Unconfined seccomp and
AppArmor, an unmasked /proc (README: "What executor build needs from its
pod"). */}}
{{- define "executor.containerSecurityContext" -}}
{{- if eq .Values.isolation "namespace" -}}
capabilities:
  add: [SYS_ADMIN]
seccompProfile:
  type: Unconfined
appArmorProfile:
  type: Unconfined
procMount: Unmasked
{{- else -}}
runAsUser: 0
runAsNonRoot: false
allowPrivilegeEscalation: false
privileged: false
seccompProfile:
  type: RuntimeDefault
{{- end -}}
{{- end -}}

{{/* The store and scratch volumes of a pod that builds. */}}
{{- define "executor.storeVolumes" -}}
{{- if .Values.store.ephemeral.enabled }}
- name: store
  ephemeral:
    volumeClaimTemplate:
      spec:
        accessModes: [ReadWriteOnce]
        {{- with .Values.store.ephemeral.storageClassName }}
        storageClassName: {{ . | quote }}
        {{- end }}
        resources:
          requests:
            storage: {{ .Values.store.ephemeral.size | quote }}
{{- else }}
- name: store
  emptyDir:
    sizeLimit: {{ .Values.store.sizeLimit | quote }}
{{- end }}
- name: work
  emptyDir:
    sizeLimit: {{ .Values.store.workSizeLimit | quote }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.store.workSizeLimit | quote }}
{{- with .Values.registryAuth.secretName }}
- name: docker-config
  secret:
    secretName: {{ . | quote }}
    items:
      - key: .dockerconfigjson
        path: config.json
{{- end }}
{{- end -}}

{{- define "executor.storeMounts" -}}
- name: store
  mountPath: /kaniko/cache
- name: work
  mountPath: /kaniko/work
- name: tmp
  mountPath: /kaniko/tmp
{{- if .Values.registryAuth.secretName }}
- name: docker-config
  mountPath: /kaniko/.docker
  readOnly: true
{{- end }}
{{- end -}}

{{/* Environment of every executor container: the store, the scratch dir
for temporary files (protected from in-place builds) and the registry
credentials' directory. */}}
{{- define "executor.env" -}}
- name: EXECUTOR_CACHE_DIR
  value: /kaniko/cache
- name: TMPDIR
  value: /kaniko/tmp
- name: DOCKER_CONFIG
  value: /kaniko/.docker/
{{- end -}}

{{/* The runner container's command line (deployment and keda modes). */}}
{{- define "executor.runnerArgs" -}}
- runner
- --server
- {{ include "executor.serverUrl" . | quote }}
- --token-file
- /etc/executor/runner/token
- --cache-dir
- /kaniko/cache
- --work-dir
- /kaniko/work
- --isolation
- {{ .Values.isolation | quote }}
- --grace
- {{ include "executor.grace" . | quote }}
- --concurrency
- {{ .Values.runners.concurrency | int | toString | quote }}
{{- if eq .Values.isolation "in-place" }}
{{- /* In place, jobs share the root: one at a time. */}}
- --jobs
- "1"
{{- else if gt (.Values.runners.jobs | int) 0 }}
- --jobs
- {{ .Values.runners.jobs | int | toString | quote }}
{{- end }}
{{- range .Values.runners.insecureRegistries }}
- --insecure-registry
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/* A runner pod's spec (the Deployment's and the ScaledJob's). */}}
{{- define "executor.runnerPodSpec" -}}
{{- $root := .root -}}
serviceAccountName: {{ include "executor.serviceAccountName" $root }}
automountServiceAccountToken: false
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{ include "executor.podSecurityContext" $root }}
terminationGracePeriodSeconds: {{ include "executor.terminationGrace" $root }}
{{- if .restartPolicy }}
restartPolicy: {{ .restartPolicy }}
{{- end }}
containers:
  - name: runner
    image: {{ include "executor.image" $root | quote }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    command: [/kaniko/executor]
    args:
      {{- include "executor.runnerArgs" $root | nindent 6 }}
      {{- if .once }}
      - --once
      {{- end }}
    env:
      {{- include "executor.env" $root | nindent 6 }}
      {{- with $root.Values.runners.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    securityContext:
      {{- include "executor.containerSecurityContext" $root | nindent 6 }}
    {{- with $root.Values.runners.resources }}
    resources:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    volumeMounts:
      {{- include "executor.storeMounts" $root | nindent 6 }}
      - name: runner-token
        mountPath: /etc/executor/runner
        readOnly: true
      {{- with $root.Values.runners.extraVolumeMounts }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
volumes:
  {{- include "executor.storeVolumes" $root | nindent 2 }}
  - name: runner-token
    secret:
      secretName: {{ $root.Values.secret.name | quote }}
      items:
        - key: {{ $root.Values.runners.tokenKey | quote }}
          path: token
  {{- with $root.Values.runners.extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with $root.Values.runners.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.runners.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.runners.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.runners.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
