//! Typed load errors.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Where a base model or adapter list came from: a file or mounted directory,
/// the YAML document within the file, and the ConfigMap's name when it has
/// one. Errors name origins so an operator can find the offending object.
///
/// Cheap to clone (shared), so every adapter can remember where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin(Arc<OriginParts>);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct OriginParts {
    path: PathBuf,
    document: Option<usize>,
    name: Option<String>,
}

impl Origin {
    /// An origin that is a whole file or directory (or any label, for maps
    /// built in code).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(Arc::new(OriginParts {
            path: path.into(),
            document: None,
            name: None,
        }))
    }

    pub(crate) fn with_document(mut self, document: usize) -> Self {
        Arc::make_mut(&mut self.0).document = Some(document);
        self
    }

    pub(crate) fn with_name(mut self, name: Option<String>) -> Self {
        Arc::make_mut(&mut self.0).name = name;
        self
    }

    /// The file or mounted directory.
    pub fn path(&self) -> &std::path::Path {
        &self.0.path
    }

    /// The 1-based YAML document within a multi-document file, if it came from one.
    pub fn document(&self) -> Option<usize> {
        self.0.document
    }

    /// The ConfigMap's `metadata.namespace/metadata.name` (or just the name), if set.
    pub fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.path.display())?;
        if let Some(document) = self.0.document {
            write!(f, " document {document}")?;
        }
        if let Some(name) = &self.0.name {
            write!(f, " (ConfigMap {name})")?;
        }
        Ok(())
    }
}

/// A YAML syntax or type error from the parser. Wrapped so that the parser
/// crate is not part of this crate's public API.
#[derive(Debug)]
pub struct YamlError(pub(crate) serde_norway::Error);

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for YamlError {}

/// Why an adapter map could not be loaded. A failed load never replaces a
/// good map (see [`AdapterStore`](crate::AdapterStore)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A configured path, or a file below it, could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is larger than [`MAX_FILE_BYTES`](crate::MAX_FILE_BYTES).
    #[error("{} is larger than {limit} bytes", path.display())]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// Directories are nested deeper than [`MAX_DIR_DEPTH`](crate::MAX_DIR_DEPTH)
    /// below a configured path (or a symlink loop).
    #[error("{}: directories nested deeper than {limit}", path.display())]
    TooDeep {
        /// The directory that was not entered.
        path: PathBuf,
        /// The depth limit.
        limit: usize,
    },
    /// A file is not valid YAML (or not UTF-8).
    #[error("{origin}: invalid yaml")]
    Yaml {
        /// Where.
        origin: Origin,
        /// The parser's error.
        #[source]
        source: YamlError,
    },
    /// A YAML document is neither empty nor a Kubernetes object (a mapping).
    #[error("{origin}: not a Kubernetes object")]
    NotAnObject {
        /// Where.
        origin: Origin,
    },
    /// A ConfigMap has no `data.baseModel`, or it is blank.
    #[error("{origin}: data.baseModel is missing or blank")]
    MissingBaseModel {
        /// Where.
        origin: Origin,
    },
    /// `data.baseModel` is not a string (a list or a mapping).
    #[error("{origin}: data.baseModel is not a string")]
    BaseModelNotAString {
        /// Where.
        origin: Origin,
    },
    /// `data.adapters` is not a YAML list of strings.
    #[error("{origin}: data.adapters is not a yaml list of strings")]
    AdaptersNotAList {
        /// Where.
        origin: Origin,
        /// The parser's error, when the list text itself failed to parse.
        #[source]
        source: Option<YamlError>,
    },
    /// One adapter is listed under two different base models.
    #[error(
        "adapter {adapter:?} is listed under base model {first_base_model:?} ({first_origin}) \
         and under base model {second_base_model:?} ({second_origin})"
    )]
    ConflictingBaseModels {
        /// The adapter name.
        adapter: String,
        /// The base model it was listed under first.
        first_base_model: String,
        /// Where that was.
        first_origin: Origin,
        /// The other base model.
        second_base_model: String,
        /// Where that was.
        second_origin: Origin,
    },
    /// An adapter has the name of another base model, so a lookup of that
    /// name would be ambiguous.
    #[error(
        "adapter {adapter:?} of base model {base_model:?} ({adapter_origin}) is also \
         a base model ({base_model_origin})"
    )]
    AdapterIsBaseModel {
        /// The name.
        adapter: String,
        /// The base model the adapter is listed under.
        base_model: String,
        /// Where the adapter is listed.
        adapter_origin: Origin,
        /// Where the name is declared as a base model.
        base_model_origin: Origin,
    },
    /// An `InferenceModelRewrite` document is not a usable rule set.
    #[error("{origin}: invalid InferenceModelRewrite")]
    Rewrite {
        /// Where (the document, and the resource's name when it has one).
        origin: Origin,
        /// What is wrong with it.
        #[source]
        problem: RewriteProblem,
    },
}

impl LoadError {
    /// The message and every cause after it, `: `-separated: one line for
    /// a log (a YAML error's line and column are in its cause).
    ///
    /// ```
    /// let error = bbr_adapters::AdapterMap::from_yaml_str("data: [", "inline").unwrap_err();
    /// assert!(error.with_causes().starts_with(&format!("{error}: ")));
    /// ```
    pub fn with_causes(&self) -> String {
        bbr_core::ErrorChain::new(self).to_string()
    }
}

/// What is wrong with an `InferenceModelRewrite` document (see
/// [`rewrite`](crate::rewrite)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RewriteProblem {
    /// `apiVersion` is not `inference.networking.x-k8s.io/v1alpha2`.
    #[error("unsupported apiVersion {0:?} (expected inference.networking.x-k8s.io/v1alpha2)")]
    UnsupportedApiVersion(String),
    /// The document does not have the resource's shape (a missing
    /// `spec.rules`, a field of the wrong type).
    #[error("not an InferenceModelRewrite")]
    Shape(#[source] YamlError),
    /// A match's `model.type` is not `Exact` (the only type the CRD has).
    #[error("rule {rule}: match type {kind:?} is not supported (only Exact)")]
    UnsupportedMatchType {
        /// Index of the rule in `spec.rules`.
        rule: usize,
        /// The type given.
        kind: String,
    },
    /// A match's `model.value` is empty or not a valid model name.
    #[error("rule {rule}: match value {value:?} is not a valid model name")]
    InvalidMatch {
        /// Index of the rule in `spec.rules`.
        rule: usize,
        /// The value given.
        value: String,
    },
    /// A rule without targets.
    #[error("rule {rule}: no targets")]
    NoTargets {
        /// Index of the rule in `spec.rules`.
        rule: usize,
    },
    /// A target's `modelRewrite` is not a valid model name (empty, spaces
    /// around it, a control character, longer than 256 bytes).
    #[error("rule {rule}: modelRewrite {target:?} is not a valid model name")]
    InvalidTarget {
        /// Index of the rule in `spec.rules`.
        rule: usize,
        /// The value given.
        target: String,
    },
    /// Some targets of a rule have a weight and others do not.
    #[error("rule {rule}: weights must be set on every target or on none")]
    PartialWeights {
        /// Index of the rule in `spec.rules`.
        rule: usize,
    },
    /// A weight outside 1..=1000000.
    #[error("rule {rule}: weight {weight} is outside 1..=1000000")]
    WeightOutOfRange {
        /// Index of the rule in `spec.rules`.
        rule: usize,
        /// The weight given.
        weight: i64,
    },
}
