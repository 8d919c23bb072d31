//! The upstream's plugin chain, parsed for real: `--plugin
//! type:name[:json]` arguments (GAIE's BBR) or a `PayloadProcessorConfig`
//! from `--config-file` / `--config-text` (its successor, llm-d's inference
//! payload processor).
//!
//! Two plugin types exist, as upstream:
//!
//! - `body-field-to-header` with parameters `{"fieldName": F, "headerName":
//!   H}` (both required): the top-level string field `F` of the body goes
//!   into header `H` (lower-cased), with every rule the core applies to
//!   `model`. At most one instance (the core extracts one field per body).
//! - `base-model-to-header` (no parameters): the base model of the `model`
//!   field, from the adapter map (`--adapters`), goes into
//!   `x-gateway-base-model-name`. At most one instance; with a
//!   `body-field-to-header` on another field than `model` it is refused
//!   (that would take two fields per body).
//!
//! No plugin flags and no config: the upstream default, `model` into
//! `X-Gateway-Model-Name` plus the base model. Anything else (an unknown
//! type, bad JSON, unknown parameters, a second instance of a type, a
//! config section bbr has no equivalent for) stops the start with an error
//! that names the argument or the config entry.

use bbr_core::{FieldName, InvalidFieldName};
use serde::Deserialize;

use crate::metrics::PluginNames;
use crate::routing::{InvalidHeaderName, RoutingHeaders};

/// The `body-field-to-header` type name.
pub const BODY_FIELD_TO_HEADER: &str = "body-field-to-header";
/// The `base-model-to-header` type name.
pub const BASE_MODEL_TO_HEADER: &str = "base-model-to-header";

/// The `apiVersion` of the successor's config.
pub const CONFIG_API_VERSION: &str = "llm-d.ai/v1alpha1";
/// The `kind` of the successor's config.
pub const CONFIG_KIND: &str = "PayloadProcessorConfig";

/// A plugin chain that cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// `--plugin` without `type:name`.
    #[error("--plugin {arg:?}: expected type:name[:json]")]
    Syntax {
        /// The argument.
        arg: String,
    },
    /// A plugin type bbr does not have.
    #[error(
        "{origin}: unknown plugin type `{plugin_type}` (expected body-field-to-header or base-model-to-header)"
    )]
    UnknownType {
        /// The argument or config entry.
        origin: String,
        /// The type given.
        plugin_type: String,
    },
    /// The parameters are not JSON, or not the plugin's parameters.
    #[error("{origin}: bad parameters for {plugin_type}")]
    Parameters {
        /// The argument or config entry.
        origin: String,
        /// The type.
        plugin_type: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// `fieldName` or `headerName` empty.
    #[error("{origin}: body-field-to-header needs a non-empty {parameter}")]
    MissingParameter {
        /// The argument or config entry.
        origin: String,
        /// `fieldName` or `headerName`.
        parameter: &'static str,
    },
    /// `headerName` cannot be set.
    #[error("{origin}: bad headerName")]
    HeaderName {
        /// The argument or config entry.
        origin: String,
        /// Why.
        #[source]
        source: InvalidHeaderName,
    },
    /// A field name the core cannot route on.
    #[error("{origin}: bad fieldName")]
    FieldName {
        /// The argument or config entry.
        origin: String,
        /// Why.
        #[source]
        source: InvalidFieldName,
    },
    /// `base-model-to-header` (which looks up `model`) with
    /// `body-field-to-header` on another field: the core extracts one
    /// field per body.
    #[error(
        "{origin}: base-model-to-header looks up `model`, but body-field-to-header routes on `{field}`; bbr extracts one field per body, so this chain is not supported"
    )]
    BaseModelNeedsModel {
        /// The argument or config entry.
        origin: String,
        /// The body-field-to-header field.
        field: String,
    },
    /// A second instance of a plugin type.
    #[error("{origin}: a second {plugin_type} plugin; bbr runs at most one of each type")]
    Duplicate {
        /// The argument or config entry.
        origin: String,
        /// The type.
        plugin_type: &'static str,
    },
    /// The config text is not a `PayloadProcessorConfig` bbr supports.
    #[error("{origin}: {reason}")]
    Config {
        /// `--config-file PATH` or `--config-text`.
        origin: String,
        /// What is wrong or unsupported.
        reason: String,
    },
    /// The config text is not valid YAML of the expected shape.
    #[error("{origin}: not a PayloadProcessorConfig")]
    ConfigSyntax {
        /// `--config-file PATH` or `--config-text`.
        origin: String,
        /// The cause.
        #[source]
        source: serde_norway::Error,
    },
}

/// One configured plugin instance.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Plugin {
    /// `body-field-to-header`.
    BodyFieldToHeader {
        /// Instance name.
        name: String,
        /// Top-level body field.
        field: FieldName,
        /// Header it goes into (lower case).
        header: String,
    },
    /// `base-model-to-header`.
    BaseModelToHeader {
        /// Instance name.
        name: String,
    },
}

/// The validated plugin chain: at most one instance of each type.
///
/// ```
/// use bbr_extproc::PluginChain;
/// let chain = PluginChain::from_flags(&[
///     r#"body-field-to-header:model-extractor:{"fieldName":"model","headerName":"X-Gateway-Model-Name"}"#.to_owned(),
///     "base-model-to-header:base-model-mapper".to_owned(),
/// ]).unwrap();
/// assert_eq!(chain.routing().model(), Some("x-gateway-model-name"));
/// assert!(chain.routing().base_model());
/// let err = PluginChain::from_flags(&["model-to-header:x".to_owned()]).unwrap_err();
/// assert!(err.to_string().contains("unknown plugin type `model-to-header`"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginChain {
    body_field: Option<(String, FieldName)>,
    base_model: Option<String>,
    routing: RoutingHeaders,
}

impl Default for PluginChain {
    /// The upstream default: `model` into `X-Gateway-Model-Name`, and the
    /// base model; each instance named after its type.
    fn default() -> Self {
        Self {
            body_field: Some((BODY_FIELD_TO_HEADER.to_owned(), FieldName::MODEL)),
            base_model: Some(BASE_MODEL_TO_HEADER.to_owned()),
            routing: RoutingHeaders::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BodyFieldParameters {
    #[serde(rename = "fieldName", default)]
    field_name: String,
    #[serde(rename = "headerName", default)]
    header_name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParameters {}

impl PluginChain {
    /// From `--plugin` arguments; none gives [`PluginChain::default`].
    pub fn from_flags(args: &[String]) -> Result<Self, PluginError> {
        if args.is_empty() {
            return Ok(Self::default());
        }
        let mut plugins = Vec::new();
        for arg in args {
            let mut parts = arg.splitn(3, ':');
            let (Some(plugin_type), Some(name)) = (parts.next(), parts.next()) else {
                return Err(PluginError::Syntax { arg: arg.clone() });
            };
            if plugin_type.is_empty() || name.is_empty() {
                return Err(PluginError::Syntax { arg: arg.clone() });
            }
            let origin = format!("--plugin {arg:?}");
            let parameters = parts.next().filter(|json| !json.trim().is_empty());
            plugins.push(Self::plugin(&origin, plugin_type, name, parameters)?);
            // A second instance is reported against the argument that adds it.
            Self::from_plugins(plugins.clone(), &origin)?;
        }
        Self::from_plugins(plugins, "--plugin")
    }

    fn plugin(
        origin: &str,
        plugin_type: &str,
        name: &str,
        parameters: Option<&str>,
    ) -> Result<Plugin, PluginError> {
        match plugin_type {
            BODY_FIELD_TO_HEADER => {
                let parameters: BodyFieldParameters =
                    serde_json::from_str(parameters.unwrap_or("{}")).map_err(|source| {
                        PluginError::Parameters {
                            origin: origin.to_owned(),
                            plugin_type: BODY_FIELD_TO_HEADER,
                            source,
                        }
                    })?;
                for (parameter, value) in [
                    ("fieldName", &parameters.field_name),
                    ("headerName", &parameters.header_name),
                ] {
                    if value.is_empty() {
                        return Err(PluginError::MissingParameter {
                            origin: origin.to_owned(),
                            parameter,
                        });
                    }
                }
                let field = FieldName::new(&parameters.field_name).map_err(|source| {
                    PluginError::FieldName {
                        origin: origin.to_owned(),
                        source,
                    }
                })?;
                let routing = RoutingHeaders::new(Some(&parameters.header_name), false).map_err(
                    |source| PluginError::HeaderName {
                        origin: origin.to_owned(),
                        source,
                    },
                )?;
                Ok(Plugin::BodyFieldToHeader {
                    name: name.to_owned(),
                    field,
                    header: routing.model().unwrap_or_default().to_owned(),
                })
            }
            BASE_MODEL_TO_HEADER => {
                let _: NoParameters =
                    serde_json::from_str(parameters.unwrap_or("{}")).map_err(|source| {
                        PluginError::Parameters {
                            origin: origin.to_owned(),
                            plugin_type: BASE_MODEL_TO_HEADER,
                            source,
                        }
                    })?;
                Ok(Plugin::BaseModelToHeader {
                    name: name.to_owned(),
                })
            }
            other => Err(PluginError::UnknownType {
                origin: origin.to_owned(),
                plugin_type: other.to_owned(),
            }),
        }
    }

    fn from_plugins(plugins: Vec<Plugin>, origin: &str) -> Result<Self, PluginError> {
        let mut body_field = None;
        let mut header = None;
        let mut base_model = None;
        for plugin in plugins {
            match plugin {
                Plugin::BodyFieldToHeader {
                    name,
                    field,
                    header: to,
                } => {
                    if body_field.replace((name, field)).is_some() {
                        return Err(PluginError::Duplicate {
                            origin: origin.to_owned(),
                            plugin_type: BODY_FIELD_TO_HEADER,
                        });
                    }
                    header = Some(to);
                }
                Plugin::BaseModelToHeader { name } => {
                    if base_model.replace(name).is_some() {
                        return Err(PluginError::Duplicate {
                            origin: origin.to_owned(),
                            plugin_type: BASE_MODEL_TO_HEADER,
                        });
                    }
                }
            }
        }
        if let (Some((_, field)), Some(_)) = (&body_field, &base_model)
            && *field != FieldName::MODEL
        {
            return Err(PluginError::BaseModelNeedsModel {
                origin: origin.to_owned(),
                field: field.as_str().to_owned(),
            });
        }
        let routing = RoutingHeaders::new(header.as_deref(), base_model.is_some())
            .expect("header names are validated when each plugin is parsed");
        Ok(Self {
            body_field,
            base_model,
            routing,
        })
    }

    /// From a `PayloadProcessorConfig` (YAML; `origin` names it in errors).
    ///
    /// Supported: `plugins` of the two types above, one profile whose
    /// `request` list references them, an empty `response` list, and no
    /// `profilePicker` other than `single-profile-picker`. Refused with an
    /// error: `preProcessing`, `postProcessing`, `datalayer`, response
    /// plugins, more than one profile, unknown fields. Plugins declared but
    /// not referenced by the profile do not run.
    ///
    /// ```
    /// use bbr_extproc::PluginChain;
    /// let chain = PluginChain::from_config_text("--config-text", r#"
    /// apiVersion: llm-d.ai/v1alpha1
    /// kind: PayloadProcessorConfig
    /// plugins:
    /// - type: body-field-to-header
    ///   parameters: {fieldName: model, headerName: X-Gateway-Model-Name}
    /// profiles:
    /// - name: default
    ///   plugins:
    ///     request:
    ///     - pluginRef: body-field-to-header
    /// "#).unwrap();
    /// assert!(!chain.routing().base_model());
    /// ```
    pub fn from_config_text(origin: &str, text: &str) -> Result<Self, PluginError> {
        let config: ConfigFile =
            serde_norway::from_str(text).map_err(|source| PluginError::ConfigSyntax {
                origin: origin.to_owned(),
                source,
            })?;
        let refuse = |reason: String| PluginError::Config {
            origin: origin.to_owned(),
            reason,
        };
        if config.api_version != CONFIG_API_VERSION || config.kind != CONFIG_KIND {
            return Err(refuse(format!(
                "expected apiVersion: {CONFIG_API_VERSION} and kind: {CONFIG_KIND}, got {} / {}",
                config.api_version, config.kind
            )));
        }
        for (section, present) in [
            ("preProcessing", config.pre_processing.is_some()),
            ("postProcessing", config.post_processing.is_some()),
            ("datalayer", config.datalayer.is_some()),
        ] {
            if present {
                return Err(refuse(format!("`{section}` is not supported by bbr")));
            }
        }
        if let Some(picker) = &config.profile_picker
            && picker.plugin_ref != "single-profile-picker"
        {
            return Err(refuse(format!(
                "profilePicker `{}` is not supported (bbr runs one profile)",
                picker.plugin_ref
            )));
        }
        let [profile] = config.profiles.as_slice() else {
            return Err(refuse(format!(
                "exactly one profile is supported, found {}",
                config.profiles.len()
            )));
        };
        if !profile.plugins.response.is_empty() {
            return Err(refuse(format!(
                "profile `{}`: response plugins are not supported",
                profile.name
            )));
        }
        // Every declared instance is built (an unknown type or bad
        // parameters stop the start even when no profile uses it), as
        // upstream; then the profile picks which run, in its order.
        let mut declared = Vec::new();
        for (i, spec) in config.plugins.iter().enumerate() {
            let entry = format!("{origin}: plugins[{i}] ({})", spec.name());
            let parameters = spec.parameters.as_ref().map(|value| value.to_string());
            let plugin = Self::plugin(
                &entry,
                &spec.plugin_type,
                spec.name(),
                parameters.as_deref(),
            )?;
            declared.push((spec.name(), plugin));
        }
        let mut plugins = Vec::new();
        for reference in &profile.plugins.request {
            let Some((_, plugin)) = declared
                .iter()
                .find(|(name, _)| *name == reference.plugin_ref)
            else {
                return Err(refuse(format!(
                    "profile `{}` references plugin `{}`, which `plugins` does not declare",
                    profile.name, reference.plugin_ref
                )));
            };
            plugins.push(plugin.clone());
        }
        for (name, _) in &declared {
            if !profile
                .plugins
                .request
                .iter()
                .any(|reference| reference.plugin_ref == *name)
            {
                tracing::warn!(
                    plugin = name,
                    "{origin}: declared but not in the profile; it does not run"
                );
            }
        }
        Self::from_plugins(plugins, origin)
    }

    /// The headers a decision sets.
    pub fn routing(&self) -> &RoutingHeaders {
        &self.routing
    }

    /// The body field extracted: the `body-field-to-header` field, else
    /// `model` (what `base-model-to-header` looks up).
    pub fn field(&self) -> FieldName {
        self.body_field
            .as_ref()
            .map_or(FieldName::MODEL, |(_, field)| *field)
    }

    /// The instance names and the field, as the metrics label them.
    pub fn names(&self) -> PluginNames {
        PluginNames {
            body_field: self.body_field.as_ref().map(|(name, _)| name.clone()),
            base_model: self.base_model.clone(),
            field: self.field().as_str().to_owned(),
        }
    }
}

/// The subset of the successor's `PayloadProcessorConfig` that bbr reads;
/// unknown fields are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConfigFile {
    api_version: String,
    kind: String,
    plugins: Vec<PluginSpec>,
    #[serde(default)]
    pre_processing: Option<serde_json::Value>,
    #[serde(default)]
    profile_picker: Option<PluginRef>,
    profiles: Vec<Profile>,
    #[serde(default)]
    post_processing: Option<serde_json::Value>,
    #[serde(default)]
    datalayer: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginSpec {
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "type")]
    plugin_type: String,
    #[serde(default)]
    parameters: Option<serde_json::Value>,
}

impl PluginSpec {
    /// The name, defaulting to the type as upstream.
    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.plugin_type)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PluginRef {
    plugin_ref: String,
    /// Scorer weights: accepted so a reference parses, meaningless here.
    #[serde(default)]
    #[allow(dead_code)]
    weight: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    name: String,
    plugins: ProfilePlugins,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfilePlugins {
    #[serde(default)]
    request: Vec<PluginRef>,
    #[serde(default)]
    response: Vec<PluginRef>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Result<PluginChain, PluginError> {
        PluginChain::from_flags(&args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn the_upstream_chart_plugins_are_the_default_chain() {
        let chart = flags(&[
            r#"body-field-to-header:model-extractor:{"fieldName":"model","headerName":"X-Gateway-Model-Name"}"#,
            "base-model-to-header:base-model-mapper",
        ])
        .unwrap();
        assert_eq!(chart.routing(), PluginChain::default().routing());
        assert_eq!(chart.field(), FieldName::MODEL);
        assert_eq!(
            chart.names(),
            PluginNames {
                body_field: Some("model-extractor".into()),
                base_model: Some("base-model-mapper".into()),
                field: "model".into(),
            }
        );
        assert_eq!(flags(&[]).unwrap(), PluginChain::default());
    }

    #[test]
    fn header_name_is_honoured_and_base_model_only_with_its_plugin() {
        let chain =
            flags(&[r#"body-field-to-header:x:{"fieldName":"model","headerName":"X-Foo"}"#])
                .unwrap();
        assert_eq!(chain.routing().model(), Some("x-foo"));
        assert!(!chain.routing().base_model());
        let chain = flags(&["base-model-to-header:b"]).unwrap();
        assert_eq!(chain.routing().model(), None);
        assert!(chain.routing().base_model());
        assert_eq!(chain.field(), FieldName::MODEL);
    }

    #[test]
    fn every_bad_argument_is_refused_naming_it() {
        let cases: [(&[&str], &str); 11] = [
            (&["body-field-to-header"], "expected type:name[:json]"),
            (&[":name"], "expected type:name[:json]"),
            (
                &["model-to-header:x"],
                "unknown plugin type `model-to-header`",
            ),
            (
                &["body-field-to-header:x:{fieldName:model}"],
                "bad parameters for body-field-to-header",
            ),
            (
                &[r#"body-field-to-header:x:{"fieldName":"model","headerName":"X","extra":1}"#],
                "bad parameters",
            ),
            (
                &[r#"body-field-to-header:x:{"fieldName":"model"}"#],
                "non-empty headerName",
            ),
            (
                &[r#"body-field-to-header:x:{"headerName":"X"}"#],
                "non-empty fieldName",
            ),
            (&["body-field-to-header:x"], "non-empty fieldName"),
            (
                &[r#"body-field-to-header:x:{"fieldName":"model","headerName":"bad name"}"#],
                "bad headerName",
            ),
            (
                &[r#"body-field-to-header:x:{"fieldName":"model","headerName":"content-length"}"#],
                "bad headerName",
            ),
            (
                &[r#"base-model-to-header:b:{"x":1}"#],
                "bad parameters for base-model-to-header",
            ),
        ];
        for (args, expected) in cases {
            let message = flags(args).unwrap_err().to_string();
            assert!(message.contains(expected), "{args:?}: {message}");
            assert!(
                message.contains(args[0]) || message.contains(&format!("{:?}", args[0])),
                "{message}"
            );
        }
        let second = flags(&[
            r#"body-field-to-header:a:{"fieldName":"model","headerName":"X-A"}"#,
            r#"body-field-to-header:b:{"fieldName":"model","headerName":"X-B"}"#,
        ])
        .unwrap_err()
        .to_string();
        assert!(
            second.contains("a second body-field-to-header") && second.contains("X-B"),
            "{second}"
        );
        let second = flags(&["base-model-to-header:a", "base-model-to-header:b"]).unwrap_err();
        assert!(matches!(second, PluginError::Duplicate { .. }));
    }

    #[test]
    fn any_valid_top_level_field_is_routed_and_base_model_needs_model() {
        let chain =
            flags(&[r#"body-field-to-header:x:{"fieldName":"prompt","headerName":"X-Foo"}"#])
                .unwrap();
        assert_eq!(chain.field().as_str(), "prompt");
        assert_eq!(chain.names().field, "prompt");
        assert_eq!(chain.routing().model(), Some("x-foo"));
        let message =
            flags(&[r#"body-field-to-header:x:{"fieldName":"a\"b","headerName":"X-Foo"}"#])
                .unwrap_err()
                .to_string();
        assert!(message.contains("bad fieldName"), "{message}");
        let message = flags(&[
            r#"body-field-to-header:x:{"fieldName":"prompt","headerName":"X-Foo"}"#,
            "base-model-to-header:b",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("base-model-to-header looks up `model`"),
            "{message}"
        );
        assert!(message.contains("base-model-to-header:b"), "{message}");
    }

    const PP_DEFAULT: &str = r#"
apiVersion: llm-d.ai/v1alpha1
kind: PayloadProcessorConfig
plugins:
- type: body-field-to-header
  name: model-extractor
  parameters:
    fieldName: model
    headerName: X-Gateway-Model-Name
- type: base-model-to-header
profiles:
- name: default
  plugins:
    request:
    - pluginRef: model-extractor
    - pluginRef: base-model-to-header
    response: []
"#;

    #[test]
    fn the_successor_config_subset_parses() {
        let chain = PluginChain::from_config_text("--config-text", PP_DEFAULT).unwrap();
        assert_eq!(chain.routing(), PluginChain::default().routing());
        assert_eq!(chain.names().body_field.as_deref(), Some("model-extractor"));
        assert_eq!(
            chain.names().base_model.as_deref(),
            Some("base-model-to-header")
        );
        let picker = PP_DEFAULT.replace(
            "profiles:",
            "profilePicker:\n  pluginRef: single-profile-picker\nprofiles:",
        );
        assert!(PluginChain::from_config_text("--config-text", &picker).is_ok());
    }

    #[test]
    fn unsupported_config_is_refused_with_the_reason() {
        let cases = [
            (
                PP_DEFAULT.replace("llm-d.ai/v1alpha1", "llm-d.ai/v2"),
                "expected apiVersion",
            ),
            (
                PP_DEFAULT.replace(
                    "response: []",
                    "response:\n    - pluginRef: model-extractor",
                ),
                "response plugins are not supported",
            ),
            (
                format!("{PP_DEFAULT}preProcessing:\n  plugins:\n  - pluginRef: model-extractor\n"),
                "`preProcessing` is not supported",
            ),
            (
                format!("{PP_DEFAULT}- name: second\n  plugins: {{request: []}}\n"),
                "exactly one profile",
            ),
            (
                PP_DEFAULT.replace("pluginRef: base-model-to-header", "pluginRef: nowhere"),
                "does not declare",
            ),
            (
                PP_DEFAULT.replace("type: base-model-to-header", "type: model-selector"),
                "unknown plugin type `model-selector`",
            ),
            (
                PP_DEFAULT.replace("fieldName: model", "fieldName: prompt"),
                "base-model-to-header looks up `model`",
            ),
            (
                format!("{PP_DEFAULT}featureGates: {{}}\n"),
                "not a PayloadProcessorConfig",
            ),
            ("plugins: [".to_owned(), "not a PayloadProcessorConfig"),
            (
                PP_DEFAULT.replace("profilePicker", "x").replace(
                    "profiles:",
                    "profilePicker: {pluginRef: weighted}\nprofiles:",
                ),
                "profilePicker `weighted`",
            ),
        ];
        for (text, expected) in cases {
            let message = PluginChain::from_config_text("--config-file /etc/ipp.yaml", &text)
                .unwrap_err()
                .to_string();
            assert!(
                message.starts_with("--config-file /etc/ipp.yaml"),
                "{message}"
            );
            assert!(message.contains(expected), "{expected}: {message}");
        }
    }
}
