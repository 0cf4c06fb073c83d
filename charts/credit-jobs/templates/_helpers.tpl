{{/*
credit-jobs.name — the chart name (or .Values.nameOverride), cut to 63 characters because some Kubernetes name
fields are limited to the DNS-1123 label length.
*/}}
{{- define "credit-jobs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
credit-jobs.fullname — a fully qualified app name for the release's objects, cut to 63 characters.
If the release name already contains the chart name it is used as is (release "credit-jobs" → "credit-jobs",
not "credit-jobs-credit-jobs"). .Values.fullnameOverride wins over both.
*/}}
{{- define "credit-jobs.fullname" -}}
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
credit-jobs.operatorName — name of the operator Deployment, its metrics Service and ServiceMonitor. The suffix is
kept even when the fullname is cut, so objects never collide with the migrations Job.
*/}}
{{- define "credit-jobs.operatorName" -}}
{{- printf "%s-operator" (include "credit-jobs.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{/*
credit-jobs.chart — "name-version" for the helm.sh/chart label ("+" is not allowed in label values).
*/}}
{{- define "credit-jobs.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
credit-jobs.labels — common labels for every object of the release. Carries the chart version, so it must never
be used in a selector (selectors are immutable; an upgrade would fail): use credit-jobs.selectorLabels there.
*/}}
{{- define "credit-jobs.labels" -}}
helm.sh/chart: {{ include "credit-jobs.chart" . }}
{{ include "credit-jobs.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: credit-jobs
{{- end }}

{{/*
credit-jobs.selectorLabels — the stable labels that select the release's pods: name and instance only.
Components add app.kubernetes.io/component next to it.
*/}}
{{- define "credit-jobs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "credit-jobs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
credit-jobs.serviceAccountName — the operator's ServiceAccount: the created one, or the given existing one.
*/}}
{{- define "credit-jobs.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "credit-jobs.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
credit-jobs.image — the jobs image reference (operator, migrations and, by default, every CreditJob run use the
same image). A digest wins over a tag; the tag defaults to the chart's appVersion, never "latest".
*/}}
{{- define "credit-jobs.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
credit-jobs.jobImage — the default image of CreditJob runs (CREDITJOBS_DEFAULT_IMAGE): jobDefaults.image, else
the chart image.
*/}}
{{- define "credit-jobs.jobImage" -}}
{{- default (include "credit-jobs.image" .) .Values.jobDefaults.image }}
{{- end }}

{{/*
credit-jobs.watchedNamespaces — the namespaces the operator watches in namespaced mode, as a list (JSON, read back
with fromJsonArray): operator.watch.namespaces, or the release namespace when that list is empty.
*/}}
{{- define "credit-jobs.watchedNamespaces" -}}
{{- if .Values.operator.watch.namespaces }}
{{- .Values.operator.watch.namespaces | uniq | toJson }}
{{- else }}
{{- list .Release.Namespace | toJson }}
{{- end }}
{{- end }}

{{/*
credit-jobs.databaseSecret — name of the Secret holding the database URL; required, the chart never creates it
(credentials stay out of values files and Helm release history).
*/}}
{{- define "credit-jobs.databaseSecret" -}}
{{- required "database.existingSecret is required: create a Secret with the DATABASE_URL first (see docs/install.md)" .Values.database.existingSecret }}
{{- end }}

{{/*
credit-jobs.podSecurityContext / credit-jobs.containerSecurityContext — the hardened defaults every pod of the
chart runs with (non-root numeric UID, read-only root filesystem, no privilege escalation, no capabilities,
RuntimeDefault seccomp), shared by the operator and the migrations Job.
*/}}
{{- define "credit-jobs.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "credit-jobs.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/*
credit-jobs.runbookUrl — runbook_url of an alert: the runbook base URL plus the alert's section anchor (GitHub
heading slug: the alert name in lower case). Call with (dict "root" $ "alert" "CreditJobFailed").
*/}}
{{- define "credit-jobs.runbookUrl" -}}
{{- printf "%s#%s" (trimSuffix "/" .root.Values.prometheusRule.runbookBaseUrl) (lower .alert) }}
{{- end }}

{{/*
credit-jobs.operatorJobLabel — the `job` label Prometheus gives the operator's scrape target. The Prometheus
Operator names it after the Service, which is the operator name; override for other scrape setups.
*/}}
{{- define "credit-jobs.operatorJobLabel" -}}
{{- default (include "credit-jobs.operatorName" .) .Values.prometheusRule.operatorJobLabel }}
{{- end }}

{{/*
credit-jobs.discoveryName — the cluster-scoped ClusterRole(Binding) for Kopf's CRD discovery in namespaced mode,
cut so the suffix survives the 63-character limit.
*/}}
{{- define "credit-jobs.discoveryName" -}}
{{- printf "%s-operator-discovery" (include "credit-jobs.fullname" . | trunc 44 | trimSuffix "-") }}
{{- end }}
