{{/* Labels on every object: upstream's `app`, plus the standard ones. */}}
{{- define "bbr.labels" -}}
app: {{ .Values.bbr.name }}
app.kubernetes.io/name: body-based-routing
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* ServiceAccount, Role and RoleBinding name, as upstream: <bbr.name>-<release>. */}}
{{- define "bbr.rbacName" -}}
{{ .Values.bbr.name }}-{{ .Release.Name }}
{{- end }}

{{/* The Service's cluster DNS name. */}}
{{- define "bbr.serviceHost" -}}
{{ .Values.bbr.name }}.{{ .Release.Namespace }}.svc.cluster.local
{{- end }}

{{/* The Secret holding the serving certificate, "" for self-signed. */}}
{{- define "bbr.tlsSecret" -}}
{{- if .Values.bbr.tls.secretName -}}
{{ .Values.bbr.tls.secretName }}
{{- else if .Values.bbr.tls.certManager.issuerRef -}}
{{ .Values.bbr.name }}-tls
{{- end -}}
{{- end }}

{{/* Whether the Kubernetes API is used (adapter discovery): RBAC and a token. */}}
{{- define "bbr.usesApi" -}}
{{- if eq .Values.bbr.adapters.source "kubernetes" }}true{{ end -}}
{{- end }}

{{- define "bbr.image" -}}
{{- $tag := .Values.bbr.image.tag | default .Chart.AppVersion -}}
{{- if .Values.bbr.image.registry -}}
{{ .Values.bbr.image.registry }}/{{ .Values.bbr.image.repository }}:{{ $tag }}
{{- else -}}
{{ .Values.bbr.image.repository }}:{{ $tag }}
{{- end -}}
{{- end }}

{{/* Fails the rendering on values that cannot work, with a message naming the key. */}}
{{- define "bbr.validate" -}}
{{- $p := .Values.provider.name -}}
{{- if not (has $p (list "none" "gke" "istio")) -}}
{{- fail (printf "provider.name must be none, gke or istio, got %q" $p) -}}
{{- end -}}
{{- $s := .Values.bbr.adapters.source -}}
{{- if not (has $s (list "kubernetes" "configMaps" "none")) -}}
{{- fail (printf "bbr.adapters.source must be kubernetes, configMaps or none, got %q" $s) -}}
{{- end -}}
{{- if and (eq $s "configMaps") (not .Values.bbr.adapters.configMaps) -}}
{{- fail "bbr.adapters.source=configMaps needs at least one name in bbr.adapters.configMaps" -}}
{{- end -}}
{{- if and .Values.bbr.duplicateKeys (not (has .Values.bbr.duplicateKeys (list "reject" "first-wins" "last-wins"))) -}}
{{- fail (printf "bbr.duplicateKeys must be reject, first-wins or last-wins, got %q" .Values.bbr.duplicateKeys) -}}
{{- end -}}
{{- if and .Values.bbr.missingModel (not (has .Values.bbr.missingModel (list "forward" "reject"))) -}}
{{- fail (printf "bbr.missingModel must be forward or reject, got %q" .Values.bbr.missingModel) -}}
{{- end -}}
{{- with (.Values.bbr.modelRewrites | default dict).stickyHeader -}}
{{- if not (regexMatch "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$" .) -}}
{{- fail (printf "bbr.modelRewrites.stickyHeader must be an HTTP header name, got %q" .) -}}
{{- end -}}
{{- end -}}
{{- $spool := .Values.bbr.spool | default dict -}}
{{- if $spool.enabled -}}
{{- range $key := list "threshold" "maxSpooledBytes" -}}
{{- $size := toString (get $spool $key) -}}
{{- if not (regexMatch "^[0-9]+(\\.[0-9]+)? ?([KMGTP]i?B|B)$" $size) -}}
{{- fail (printf "bbr.spool.%s must be a size with a unit (e.g. 4MiB), got %q" $key $size) -}}
{{- end -}}
{{- end -}}
{{- if not $spool.mountPath -}}
{{- fail "bbr.spool.enabled needs bbr.spool.mountPath" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.bbr.tls.caSecretName .Values.bbr.tls.caCertificates -}}
{{- fail "set at most one of bbr.tls.caSecretName and bbr.tls.caCertificates" -}}
{{- end -}}
{{- end }}

{{/* The model rewrite ConfigMaps to mount: the named ones, then the chart's own
     when bbr.modelRewrites.resources is set. A YAML list (use with fromYamlArray). */}}
{{- define "bbr.modelRewriteConfigMaps" -}}
{{- $r := .Values.bbr.modelRewrites | default dict -}}
{{- $names := concat ($r.configMaps | default list) list -}}
{{- if $r.resources -}}
{{- $names = append $names (printf "%s-model-rewrites" .Values.bbr.name) -}}
{{- end -}}
{{- toYaml $names -}}
{{- end }}
