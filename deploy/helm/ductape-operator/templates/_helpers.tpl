{{/* Names and labels shared by every template. */}}

{{- define "ductape-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ductape-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ductape-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ductape-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ductape-operator.labels" -}}
{{ include "ductape-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ductape-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ductape-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ductape-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The kopf peering object's name: fixed in the operator (handlers.startup). */}}
{{- define "ductape-operator.peeringName" -}}ductape-operator{{- end -}}

{{- define "ductape-operator.validate" -}}
{{- if and (not .Values.peering.enabled) (gt (int .Values.replicas) 1) -}}
{{- fail "replicas > 1 needs peering.enabled=true: without peering every replica would reconcile" -}}
{{- end -}}
{{- end -}}
