{{/* Names: <release>-consentry, or the release name when it already contains "consentry". */}}
{{- define "consentry.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "consentry.labels" -}}
app.kubernetes.io/name: consentry
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: consentry
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "consent") */}}
{{- define "consentry.selector" -}}
app.kubernetes.io/name: consentry
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "consentry.componentLabels" -}}
{{ include "consentry.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "consentry.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "consentry.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "consentry.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Where the Kafka Secret's files are mounted. */}}
{{- define "consentry.kafkaDir" -}}/etc/consentry/kafka{{- end -}}

{{- define "consentry.tls" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") -}}true{{- end -}}
{{- end -}}

{{- define "consentry.sasl" -}}
{{- if has .Values.kafka.securityProtocol (list "SASL_PLAINTEXT" "SASL_SSL") -}}true{{- end -}}
{{- end -}}

{{/* The Kafka security settings (docs/kafka-security.md), ConfigMap data: paths, never secrets. */}}
{{- define "consentry.kafkaSettings" -}}
{{- $dir := include "consentry.kafkaDir" . -}}
{{- $k := .Values.kafka -}}
{{- if ne $k.securityProtocol "PLAINTEXT" }}
CONSENTRY_KAFKA_SECURITY_PROTOCOL: {{ $k.securityProtocol }}
{{- end }}
{{- if include "consentry.tls" . }}
CONSENTRY_KAFKA_SSL_CAFILE: {{ if eq $k.tls.ca "system" }}system{{ else }}{{ printf "%s/%s" $dir $k.tls.ca }}{{ end }}
{{- if $k.tls.cert }}
CONSENTRY_KAFKA_SSL_CERTFILE: {{ printf "%s/%s" $dir $k.tls.cert }}
{{- end }}
{{- if $k.tls.key }}
CONSENTRY_KAFKA_SSL_KEYFILE: {{ printf "%s/%s" $dir $k.tls.key }}
{{- end }}
{{- if $k.tls.keyPassword }}
CONSENTRY_KAFKA_SSL_KEY_PASSWORD_FILE: {{ printf "%s/%s" $dir $k.tls.keyPassword }}
{{- end }}
{{- if not $k.tls.checkHostname }}
CONSENTRY_KAFKA_SSL_CHECK_HOSTNAME: "False"
{{- end }}
{{- end }}
{{- if include "consentry.sasl" . }}
CONSENTRY_KAFKA_SASL_MECHANISM: {{ $k.sasl.mechanism }}
CONSENTRY_KAFKA_SASL_USERNAME_FILE: {{ printf "%s/%s" $dir $k.sasl.usernameKey }}
CONSENTRY_KAFKA_SASL_PASSWORD_FILE: {{ printf "%s/%s" $dir $k.sasl.passwordKey }}
{{- end }}
{{- end -}}

{{- define "consentry.kafkaMount" -}}
{{- if .Values.kafka.secret }}
- name: kafka-credentials
  mountPath: {{ include "consentry.kafkaDir" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "consentry.kafkaVolume" -}}
{{- if .Values.kafka.secret }}
- name: kafka-credentials
  secret:
    secretName: {{ .Values.kafka.secret }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "consentry.storeUri" -}}
{{- default "/var/lib/consentry/training" .Values.storage.uri -}}
{{- end -}}

{{/* The Delta audit table: beside the training store (CONSENTRY_AUDIT_URI). */}}
{{- define "consentry.auditUri" -}}
{{- if .Values.storage.uri -}}
{{- regexReplaceAll "/[^/]*/?$" .Values.storage.uri "" -}}/audit
{{- else -}}
/var/lib/consentry/audit
{{- end -}}
{{- end -}}

{{/* The table's delta-rs storage options, as the env of the sink, vacuum and reconcile. */}}
{{- define "consentry.storeOptions" -}}
{{- with .Values.storage.options }}
- name: CONSENTRY_STORE_OPTIONS
  value: {{ toJson . | quote }}
{{- end }}
{{- end -}}

{{/* A local table lives on the training-store volume. */}}
{{- define "consentry.localStore" -}}
{{- if not .Values.storage.uri -}}true{{- end -}}
{{- end -}}

{{- define "consentry.storeCredentials" -}}
{{- if .Values.storage.credentialsSecret }}
- secretRef:
    name: {{ .Values.storage.credentialsSecret }}
{{- end }}
{{- end -}}

{{- define "consentry.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .root.Values.keys.existingSecret }}
      key: {{ .name }}
{{- end -}}

{{/*
Refuses what the contract and docs/kafka-security.md refuse at start-up, before anything is
applied: every Consentry pod listens beyond loopback, so the keys and the service token must
come from a Secret; a half-made or clear-text Kafka security configuration is an error.
*/}}
{{- define "consentry.validate" -}}
{{- $k := .Values.kafka -}}
{{- if not .Values.keys.existingSecret -}}
{{- fail "keys.existingSecret is required: every Consentry service listens beyond loopback in a cluster, so the gateway needs a key set per purpose (CONSENTRY_USER_KEYS, CONSENTRY_ADMIN_KEYS, CONSENTRY_LINK_KEYS) and the consent service CONSENTRY_SERVICE_TOKEN, from a Secret you create (deploy/k8s/README.md, step 3)" -}}
{{- end -}}
{{- if not $k.bootstrapServers -}}
{{- fail "kafka.bootstrapServers is required: the chart runs on your Kafka cluster (the embedded broker is for development only)" -}}
{{- end -}}
{{- if not (has $k.securityProtocol (list "PLAINTEXT" "SSL" "SASL_PLAINTEXT" "SASL_SSL")) -}}
{{- fail (printf "kafka.securityProtocol %q is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL" $k.securityProtocol) -}}
{{- end -}}
{{- if include "consentry.tls" . -}}
{{- if not $k.tls.ca -}}
{{- fail (printf "kafka.securityProtocol %s needs kafka.tls.ca: \"system\" or the key of kafka.secret holding the brokers' CA (PEM)" $k.securityProtocol) -}}
{{- end -}}
{{- if and (ne $k.tls.ca "system") (not $k.secret) -}}
{{- fail "kafka.tls.ca names a file of kafka.secret, which is not set" -}}
{{- end -}}
{{- if and (or $k.tls.key $k.tls.keyPassword) (not $k.tls.cert) -}}
{{- fail "kafka.tls.key and kafka.tls.keyPassword need kafka.tls.cert (the client certificate)" -}}
{{- end -}}
{{- if and $k.tls.cert (not $k.secret) -}}
{{- fail "kafka.tls.cert names a file of kafka.secret, which is not set" -}}
{{- end -}}
{{- else if or $k.tls.ca $k.tls.cert $k.tls.key $k.tls.keyPassword -}}
{{- fail (printf "kafka.tls.* is set but kafka.securityProtocol %s does not use TLS (SSL or SASL_SSL): a half-made configuration is refused" $k.securityProtocol) -}}
{{- end -}}
{{- if include "consentry.sasl" . -}}
{{- if not (has $k.sasl.mechanism (list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512")) -}}
{{- fail (printf "kafka.securityProtocol %s needs kafka.sasl.mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512" $k.securityProtocol) -}}
{{- end -}}
{{- if and (eq $k.securityProtocol "SASL_PLAINTEXT") (eq $k.sasl.mechanism "PLAIN") -}}
{{- fail "kafka.sasl.mechanism PLAIN over SASL_PLAINTEXT sends the password in clear: use SASL_SSL, or SCRAM" -}}
{{- end -}}
{{- if not $k.secret -}}
{{- fail "SASL needs kafka.secret: the Secret holding the user name and password (keys kafka.sasl.usernameKey and kafka.sasl.passwordKey)" -}}
{{- end -}}
{{- else if $k.sasl.mechanism -}}
{{- fail (printf "kafka.sasl.mechanism is set but kafka.securityProtocol %s does not use SASL: a half-made configuration is refused" $k.securityProtocol) -}}
{{- end -}}
{{- if and (gt (int .Values.sink.replicas) 1) (include "consentry.localStore" .) -}}
{{- fail "sink.replicas > 1 needs storage.uri (an object store every replica can commit to): the local table is on one ReadWriteOnce volume" -}}
{{- end -}}
{{- range $name := list "consent" "ingest" "sink" -}}
{{- $replicas := int (index $.Values $name).replicas -}}
{{- if or (lt $replicas 1) (gt $replicas (int $.Values.partitions)) -}}
{{- fail (printf "%s.replicas must be between 1 and partitions (%d): a replica beyond the partition count gets nothing to do" $name (int $.Values.partitions)) -}}
{{- end -}}
{{- end -}}
{{- range $service := list "consent" "ingest" "sink" "gateway" -}}
{{- range $item := (index $.Values $service).extraEnv -}}
{{- if has $item.name (list "CONSENTRY_JWT_SECRET" "CONSENTRY_DEMO") -}}
{{- fail (printf "%s.extraEnv sets %s: the single secret and the demo's development secret are for loopback and the demo only; the chart's services listen beyond loopback and take a key set per purpose from keys.existingSecret" $service $item.name) -}}
{{- end -}}
{{- if and (has $item.name (list "CONSENTRY_USER_KEYS" "CONSENTRY_ADMIN_KEYS" "CONSENTRY_LINK_KEYS" "CONSENTRY_SERVICE_TOKEN")) (hasKey $item "value") -}}
{{- fail (printf "%s.extraEnv gives %s as a plain value: keys and tokens come from a Secret (keys.existingSecret), never from values" $service $item.name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if ge (int .Values.consent.standbyReplicas) (int .Values.consent.replicas) -}}
{{- if gt (int .Values.consent.standbyReplicas) 0 -}}
{{- fail "consent.standbyReplicas must be smaller than consent.replicas (a standby copy lives on another worker)" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "consentry.operator" -}}
{{- $mode := toString .Values.monitoring.prometheusOperator -}}
{{- if or (eq $mode "true") (and (eq $mode "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}true{{- end -}}
{{- end -}}
