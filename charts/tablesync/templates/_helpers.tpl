{{/*
Names, labels and images shared by every template.
*/}}

{{- define "tablesync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
"<release>-<chart>", or the release name alone when it already contains the chart name.
Truncated so that the longest suffix we add ("-operator-leader-election") still fits 63.
*/}}
{{- define "tablesync.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 38 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 38 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 38 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tablesync.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of the operator pods (immutable once deployed: keep them few). */}}
{{- define "tablesync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tablesync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Standard labels without the component; callers add app.kubernetes.io/component. */}}
{{- define "tablesync.baseLabels" -}}
helm.sh/chart: {{ include "tablesync.chart" . }}
app.kubernetes.io/name: {{ include "tablesync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: tablesync
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "tablesync.labels" -}}
{{ include "tablesync.baseLabels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "tablesync.operatorName" -}}
{{- printf "%s-operator" (include "tablesync.fullname" .) -}}
{{- end -}}

{{- define "tablesync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tablesync.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tablesync.jobServiceAccountName" -}}
{{- if .Values.job.serviceAccount.create -}}
{{- default (printf "%s-job" (include "tablesync.fullname" .)) .Values.job.serviceAccount.name -}}
{{- else -}}
{{- required "job.serviceAccount.name must name a ServiceAccount that exists in every namespace holding TableSyncs (e.g. default) when job.serviceAccount.create is false" .Values.job.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tablesync.leaseName" -}}
{{- default (include "tablesync.operatorName" .) .Values.operator.leaderElection.leaseName -}}
{{- end -}}

{{- define "tablesync.operatorImage" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "tablesync.jobImage" -}}
{{- printf "%s:%s" .Values.job.image.repository (default .Chart.AppVersion .Values.job.image.tag) -}}
{{- end -}}

{{/*
Namespaces that get the job ServiceAccount: the release namespace, the watched namespaces and
job.serviceAccount.namespaces, without repeats, as a JSON list (use with fromJsonArray).
*/}}
{{- define "tablesync.jobNamespaces" -}}
{{- $all := concat (list .Release.Namespace) .Values.operator.watchNamespaces .Values.job.serviceAccount.namespaces -}}
{{- toJson (uniq $all) -}}
{{- end -}}
