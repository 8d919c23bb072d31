//! Why a configuration cannot be used.

use std::path::PathBuf;

use crate::pools::EndpointError;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The spool directory cannot hold a spool file (missing, not a
    /// directory, not writable): checked at start, not at the first large
    /// upload.
    #[error("bbr.spool_dir: cannot create a spool file")]
    SpoolDir(#[source] bbr_core::spool::SpoolError),
    /// YAML syntax, an unknown field, or a value its parser refused (a
    /// policy name, a duration or size without a unit).
    #[error("invalid YAML")]
    Yaml(#[source] serde_norway::Error),
    /// Two pools with one name.
    #[error("pool `{pool}` is defined twice")]
    DuplicatePool {
        /// The pool.
        pool: String,
    },
    /// A pool with both `endpoints` and `simulate`.
    #[error("pool `{pool}`: set either `endpoints` or `simulate`, not both")]
    EndpointsAndSimulate {
        /// The pool.
        pool: String,
    },
    /// A pool with neither `endpoints` nor `simulate`.
    #[error("pool `{pool}` has no endpoints")]
    NoEndpoints {
        /// The pool.
        pool: String,
    },
    /// `simulate.replicas: 0`.
    #[error("pool `{pool}`: simulate.replicas must be at least 1")]
    NoReplicas {
        /// The pool.
        pool: String,
    },
    /// An endpoint that is not `host:port` or `http://host:port`.
    #[error("pool `{pool}`: endpoint `{endpoint}`")]
    Endpoint {
        /// The pool.
        pool: String,
        /// The endpoint as written (empty for a pool without endpoints).
        endpoint: String,
        /// Why.
        #[source]
        source: EndpointError,
    },
    /// A route names a pool that the pools table lacks.
    #[error("route `{route}` sends to pool `{pool}`, which is not in the pools table")]
    UnknownPool {
        /// The route.
        route: String,
        /// The missing pool.
        pool: String,
    },
    /// A match with both `path_prefix` and `path_exact`.
    #[error("route `{route}`: path_prefix and path_exact are exclusive")]
    ExclusivePaths {
        /// The route.
        route: String,
    },
    /// An HTTPRoute `timeouts.request` that is not a duration.
    #[error("HTTPRoute rule `{route}`: timeouts.request `{value}`")]
    Timeout {
        /// The rule (`<name>/<index>`).
        route: String,
        /// The value as written.
        value: String,
        /// Why.
        #[source]
        source: humantime::DurationError,
    },
    /// An HTTPRoute feature this gateway does not implement.
    #[error("HTTPRoute rule `{route}`: unsupported {feature}")]
    Unsupported {
        /// The rule (`<name>/<index>`).
        route: String,
        /// The feature.
        feature: Unsupported,
    },
    /// The adapter map could not be loaded.
    #[error("adapter map")]
    Adapters(#[source] bbr_adapters::LoadError),
    /// The adapter map's reload thread could not start.
    #[error("cannot start the adapter map reload thread")]
    AdapterWatch(#[source] std::io::Error),
    /// The model rewrite rules could not be loaded.
    #[error("model rewrites")]
    Rewrites(#[source] bbr_adapters::LoadError),
    /// The model rewrites' reload thread could not start.
    #[error("cannot start the model rewrites reload thread")]
    RewriteWatch(#[source] std::io::Error),
}

/// An HTTPRoute feature that would change routing and is not implemented
/// (an error rather than silently ignored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unsupported {
    /// `filters`.
    #[error("filters")]
    Filters,
    /// A rule without `backendRefs`.
    #[error("a rule without backendRefs")]
    NoBackendRefs,
    /// More than one `backendRef`.
    #[error("several backendRefs")]
    SeveralBackendRefs,
    /// A `backendRef` kind other than `InferencePool` or `Service`.
    #[error("backendRef kind {0}")]
    BackendKind(String),
    /// A `backendRef` of weight 0.
    #[error("backendRef weight 0")]
    ZeroWeight,
    /// `method` matches.
    #[error("method matches")]
    Method,
    /// `queryParams` matches.
    #[error("queryParams matches")]
    QueryParams,
    /// A path match type other than `PathPrefix` or `Exact`.
    #[error("path match type {0}")]
    PathType(String),
    /// A header match type other than `Exact`.
    #[error("header match type {0}")]
    HeaderType(String),
}
