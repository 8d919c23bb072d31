//! Glue to the body-based routing layer (`bbr-tower`): the layer built
//! from the config, and the recognition of its typed body violation.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use bbr_adapters::{AdapterStore, ReloadWatcher};
use bbr_core::contract;
use bbr_tower::ModelRoutingLayer;

use crate::config::{ClientHeaderPolicy, Config, MissingModel};
use crate::error::ConfigError;
use crate::proxy::BodyErrorResponder;

/// How often a configured adapter map is re-read (a mounted ConfigMap
/// changes in place).
pub(crate) const ADAPTER_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// The adapter map of the config, loaded and watched; `None` without paths.
pub(crate) fn load_adapters(
    config: &Config,
) -> Result<Option<(AdapterStore, ReloadWatcher)>, ConfigError> {
    if config.adapter_paths.is_empty() {
        return Ok(None);
    }
    let store = AdapterStore::load(&config.adapter_paths).map_err(ConfigError::Adapters)?;
    let watcher = store.watch(ADAPTER_RELOAD_INTERVAL).map_err(|e| {
        ConfigError::Invalid(format!("cannot start the adapter map reload thread: {e}"))
    })?;
    Ok(Some((store, watcher)))
}

/// Puts the body-based routing layer in front of `router`.
pub(crate) fn apply(router: Router, config: &Config, adapters: Option<AdapterStore>) -> Router {
    let missing_model = match config.bbr.missing_model {
        MissingModel::Forward => contract::MissingModel::Forward,
        MissingModel::Reject => contract::MissingModel::Reject,
    };
    let client_headers = match config.bbr.client_headers {
        ClientHeaderPolicy::Strip => contract::ClientHeaders::Strip,
        ClientHeaderPolicy::Reject => contract::ClientHeaders::Reject,
    };
    let mut layer = ModelRoutingLayer::new()
        .limits(config.bbr.limits())
        .missing_model(missing_model)
        .client_headers(client_headers);
    if let Some(adapters) = adapters {
        layer = layer.adapters(adapters);
    }
    router.layer(layer)
}

/// Recognises the layer's typed violation error in a failed request body
/// and answers with the contract's 400/413.
pub(crate) fn body_error_responder() -> BodyErrorResponder {
    std::sync::Arc::new(|error: &axum::Error| {
        bbr_tower::BodyViolation::find(error).map(|violation| {
            let (parts, body) = violation.to_response().into_parts();
            Response::from_parts(parts, Body::new(body))
        })
    })
}
