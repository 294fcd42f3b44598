{{/*
Chart name, or nameOverride; 63 characters at most (a DNS label).
*/}}
{{- define "access-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: fullnameOverride, else the release name, suffixed with the chart name unless the
release name already contains it. Truncated to 63 characters (some name fields are DNS labels).
*/}}
{{- define "access-gateway.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "access-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "access-gateway.labels" -}}
helm.sh/chart: {{ include "access-gateway.chart" . }}
{{ include "access-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: kube-access-gateway
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels: the Deployment's selector, the Services', the PDB's, and --replica-selector.
Never change them in an upgrade (a Deployment's selector is immutable).
*/}}
{{- define "access-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "access-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The selector labels as k=v,k=v (for --replica-selector).
*/}}
{{- define "access-gateway.selectorString" -}}
{{- $pairs := list }}
{{- range $k, $v := (include "access-gateway.selectorLabels" . | fromYaml) }}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/*
The operator's ServiceAccount name.
*/}}
{{- define "access-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "access-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: required with serviceAccount.create=false (the chart binds cluster-admin-level roles to it; never to the namespace's default account)" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference.
*/}}
{{- define "access-gateway.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Namespace of the leader-election Lease.
*/}}
{{- define "access-gateway.leaseNamespace" -}}
{{- .Values.leaderElection.namespace | default .Release.Namespace }}
{{- end }}

{{/*
Whether the JWKS revocation watches (cluster-wide list/watch of serviceaccounts, pods, secrets)
are granted: the value, or (null) true exactly when the operator watches the whole cluster.
*/}}
{{- define "access-gateway.jwksRevocationWatches" -}}
{{- if kindIs "invalid" .Values.rbac.jwksRevocationWatches }}
{{- empty .Values.rbac.watchNamespaces }}
{{- else }}
{{- .Values.rbac.jwksRevocationWatches }}
{{- end }}
{{- end }}

{{/*
The listener port range as [low, high] (validated).
*/}}
{{- define "access-gateway.portRange" -}}
{{- $parts := splitList "-" .Values.operator.portRange }}
{{- $lo := index $parts 0 | atoi }}
{{- $hi := index $parts 1 | atoi }}
{{- if or (lt $lo 1) (gt $hi 65535) (gt $lo $hi) }}
{{- fail (printf "operator.portRange %q: expected LOW-HIGH within 1-65535" .Values.operator.portRange) }}
{{- end }}
{{- list $lo $hi | toJson }}
{{- end }}

{{/*
Refuse value combinations that cannot work.
*/}}
{{- define "access-gateway.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled=true (otherwise every replica writes status, Services and EndpointSlices)" }}
{{- end }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int .Values.operator.drainSeconds) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed operator.drainSeconds (%d)" (int .Values.terminationGracePeriodSeconds) (int .Values.operator.drainSeconds)) }}
{{- end }}
{{- if eq (int .Values.admin.port) 0 }}{{ fail "admin.port is required" }}{{ end }}
{{- $token := .Values.metrics.serviceMonitor.bearerToken }}
{{- if and .Values.metrics.serviceMonitor.enabled (eq $token.source "none") (eq .Values.admin.metricsAuth "kubernetes") }}
{{- fail "metrics.serviceMonitor.bearerToken.source=none cannot scrape: admin.metricsAuth=kubernetes answers 401 without a token" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (eq $token.source "secret") (not $token.secret.name) }}
{{- fail "metrics.serviceMonitor.bearerToken.source=secret needs metrics.serviceMonitor.bearerToken.secret.name" }}
{{- end }}
{{- $range := include "access-gateway.portRange" . | fromJsonArray }}
{{- if and (ge (int .Values.admin.port) (int (index $range 0))) (le (int .Values.admin.port) (int (index $range 1))) }}
{{- fail (printf "admin.port %d lies inside operator.portRange %s" (int .Values.admin.port) .Values.operator.portRange) }}
{{- end }}
{{- end }}
