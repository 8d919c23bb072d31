//! Glue to the body-based routing layer (`bbr-tower`).

use axum::Router;

use crate::config::Config;
use crate::error::ConfigError;
use crate::proxy::BodyErrorResponder;

/// Puts the body-based routing layer in front of `router`.
pub(crate) fn apply(router: Router, _config: &Config) -> Result<Router, ConfigError> {
    // Pending bbr-tower.
    Ok(router)
}

/// Recognises the layer's typed violation error in a failed request body.
pub(crate) fn body_error_responder() -> BodyErrorResponder {
    std::sync::Arc::new(|_error: &axum::Error| None)
}
