{{/* Names. */}}
{{- define "provenant.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "provenant.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "provenant.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "provenant.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "provenant.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels: every resource gets the common labels; selectors use name, instance and component. */}}
{{- define "provenant.labels" -}}
helm.sh/chart: {{ include "provenant.chart" . }}
app.kubernetes.io/name: {{ include "provenant.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: provenant
{{- end -}}

{{- define "provenant.selectorLabels" -}}
app.kubernetes.io/name: {{ include "provenant.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Component selector labels: (dict "root" $ "component" "ingest") */}}
{{- define "provenant.componentSelectorLabels" -}}
{{ include "provenant.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Image of a service: (dict "root" $ "name" "ingest") */}}
{{- define "provenant.image" -}}
{{- $tag := default .root.Chart.AppVersion .root.Values.image.tag -}}
{{- printf "%s/provenant-%s:%s" .root.Values.image.registry .name $tag -}}
{{- with get .root.Values.image.digests .name }}@{{ . }}{{ end -}}
{{- end -}}

{{- define "provenant.workerImage" -}}
{{- $tag := .Values.trainWorker.image.tag | default (printf "%s-cuda" (default .Chart.AppVersion .Values.image.tag)) -}}
{{- printf "%s/%s:%s" .Values.image.registry .Values.trainWorker.image.repository $tag -}}
{{- with get .Values.image.digests "train-worker" }}@{{ . }}{{ end -}}
{{- end -}}

{{/* Stream replicas the services declare. */}}
{{- define "provenant.streamReplicas" -}}
{{- if .Values.nats.enabled -}}{{ .Values.nats.replicas }}{{- else -}}{{ .Values.externalNats.streamReplicas }}{{- end -}}
{{- end -}}

{{/* Short names resolve within the release's namespace, so the manifests do not bind it. */}}
{{- define "provenant.natsHost" -}}
{{- printf "%s-nats" (include "provenant.fullname" .) -}}
{{- end -}}

{{/*
A service's configuration file: config.common, then what the chart knows (listen on all
interfaces on the service's port, producer name, stream replicas), then the service's own
sections. (dict "root" $ "name" "ingest" "port" 8081 "config" {...} "identity" bool)
*/}}
{{- define "provenant.serviceConfig" -}}
{{- $root := .root -}}
{{- $generated := dict "http" (dict "host" "0.0.0.0" "port" (int .port)) "bus" (dict "producer" .name "replicas" (include "provenant.streamReplicas" $root | int)) -}}
{{- $config := mustMergeOverwrite (dict) (deepCopy $root.Values.config.common) $generated (deepCopy (.config | default dict)) -}}
{{- if and .identity $root.Values.identity.apiKeys -}}
{{- $_ := set $config "identity" (dict "api_keys" $root.Values.identity.apiKeys) -}}
{{- end -}}
# Rendered by the Helm chart from its values; read as $PROVENANT_CONFIG_DIR/<environment>.yaml.
{{ toYaml $config }}
{{- end -}}

{{/* Environment of a service container: (dict "root" $ "name" "ingest" "database" bool) */}}
{{- define "provenant.env" -}}
{{- $root := .root -}}
- name: PROVENANT_CONFIG_DIR
  value: /etc/provenant
- name: PROVENANT_ENVIRONMENT
  value: {{ $root.Values.config.environment | quote }}
{{- if $root.Values.nats.enabled }}
{{- if $root.Values.nats.auth.enabled }}
- name: NATS_USER
  valueFrom:
    secretKeyRef:
      name: {{ required "nats.auth.existingSecret is required when nats.auth.enabled" $root.Values.nats.auth.existingSecret }}
      key: {{ $root.Values.nats.auth.usernameKey }}
- name: NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.nats.auth.existingSecret }}
      key: {{ $root.Values.nats.auth.passwordKey }}
- name: PROVENANT_BUS__URL
  value: "nats://$(NATS_USER):$(NATS_PASSWORD)@{{ include "provenant.natsHost" $root }}:4222"
{{- else }}
- name: PROVENANT_BUS__URL
  value: "nats://{{ include "provenant.natsHost" $root }}:4222"
{{- end }}
{{- else if $root.Values.externalNats.existingSecret }}
- name: PROVENANT_BUS__URL
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.externalNats.existingSecret }}
      key: {{ $root.Values.externalNats.urlKey }}
{{- else }}
- name: PROVENANT_BUS__URL
  value: {{ required "externalNats.url or externalNats.existingSecret is required when nats.enabled is false" $root.Values.externalNats.url | quote }}
{{- end }}
{{- if .database }}
- name: PROVENANT_DATABASE__URL
  valueFrom:
    secretKeyRef:
      name: {{ required "database.existingSecret is required" $root.Values.database.existingSecret }}
      key: {{ get $root.Values.database.keys .name | default (printf "%s-url" .name) }}
{{- end }}
{{- with $root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod and container security contexts shared by every Provenant container. */}}
{{- define "provenant.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "provenant.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
The config directory: the rendered ConfigMap as <environment>.yaml and, when configured, the
identity Secret as base.yaml (the loader reads <dir>/base.yaml before <dir>/<environment>.yaml).
(dict "root" $ "configMap" "name" "identity" bool)
*/}}
{{- define "provenant.configVolume" -}}
- name: config
  projected:
    defaultMode: 0440
    sources:
      - configMap:
          name: {{ .configMap }}
          items:
            - key: config.yaml
              path: {{ .root.Values.config.environment }}.yaml
{{- if and .identity .root.Values.identity.existingSecret }}
      - secret:
          name: {{ .root.Values.identity.existingSecret }}
          items:
            - key: {{ .root.Values.identity.secretKey }}
              path: base.yaml
{{- end }}
{{- end -}}

{{- define "provenant.validateValues" -}}
{{- if and .Values.nats.enabled (or .Values.externalNats.url .Values.externalNats.existingSecret) -}}
{{- fail "set either nats.enabled or externalNats, not both" -}}
{{- end -}}
{{- if and .Values.trainWorker.keda.enabled (not .Values.trainWorker.enabled) -}}
{{- fail "trainWorker.keda.enabled needs trainWorker.enabled" -}}
{{- end -}}
{{- if and .Values.trainWorker.keda.enabled (not .Values.nats.enabled) (not .Values.externalNats.monitoringEndpoint) -}}
{{- fail "trainWorker.keda.enabled with external NATS needs externalNats.monitoringEndpoint" -}}
{{- end -}}
{{- if and .Values.nats.enabled (lt (int .Values.nats.replicas) 1) -}}
{{- fail "nats.replicas must be at least 1" -}}
{{- end -}}
{{- end -}}

{{/*
The bundled NATS server's configuration. $SERVER_NAME (the pod name) and the credentials are
environment variables the server expands at start.
*/}}
{{- define "provenant.natsConf" -}}
{{- $fullname := include "provenant.fullname" . -}}
server_name: $SERVER_NAME
listen: 0.0.0.0:4222
http: 0.0.0.0:8222
pid_file: /var/run/nats/nats.pid
max_payload: {{ .Values.nats.maxPayload }}
lame_duck_duration: 30s
lame_duck_grace_period: 10s
jetstream {
  store_dir: /data
  max_file_store: {{ .Values.nats.jetstream.maxFileStore }}
  max_memory_store: {{ .Values.nats.jetstream.maxMemoryStore }}
  # fsync every write before the ack. Server-wide: NATS has no per-stream setting, and the
  # settlement (money) streams must survive a node crash with every acknowledged entry.
  sync_interval: {{ .Values.nats.syncInterval }}
}
{{- if gt (int .Values.nats.replicas) 1 }}
cluster {
  name: {{ .Values.nats.clusterName }}
  listen: 0.0.0.0:6222
  routes: [
    {{- range $i := until (int .Values.nats.replicas) }}
    nats://{{ $fullname }}-nats-{{ $i }}.{{ $fullname }}-nats-headless:6222
    {{- end }}
  ]
}
{{- end }}
{{- if .Values.nats.auth.enabled }}
authorization {
  user: $NATS_USER
  password: $NATS_PASSWORD
}
{{- end }}
{{- end -}}
