//! Glue to the body-based routing layer (`bbr-tower`): the layer built
//! from the config, and the recognition of its typed body violation.

use std::time::Duration;

use axum::Router;
use bbr_adapters::rewrite::{RewritePicker, RewriteRules, RewriteStore};
use bbr_adapters::{AdapterStore, ReloadWatcher, WatchedConfig};
use bbr_core::contract::Refusal;
use bbr_core::spool::SpoolConfig;
use bbr_tower::ModelRoutingLayer;

use crate::config::{Config, ConfigError};

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
    let watcher = store
        .watch_events(ADAPTER_RELOAD_INTERVAL, |event| {
            event.log(WatchedConfig::Adapters)
        })
        .map_err(ConfigError::AdapterWatch)?;
    Ok(Some((store, watcher)))
}

/// The model rewrite rules of the config, loaded (and watched when they
/// come from files); `None` without a source.
pub(crate) fn load_rewrites(
    config: &Config,
) -> Result<Option<(RewriteStore, Option<ReloadWatcher>)>, ConfigError> {
    let options = &config.model_rewrites;
    if !options.paths.is_empty() {
        let store = RewriteStore::load(&options.paths).map_err(ConfigError::Rewrites)?;
        let watcher = store
            .watch_events(ADAPTER_RELOAD_INTERVAL, |event| {
                event.log(WatchedConfig::ModelRewrites)
            })
            .map_err(ConfigError::RewriteWatch)?;
        return Ok(Some((store, Some(watcher))));
    }
    match &options.embedded {
        Some(text) => {
            let rules = RewriteRules::from_yaml_str(text, "embedded model-rewrites.yaml")
                .map_err(ConfigError::Rewrites)?;
            Ok(Some((RewriteStore::from_rules(rules), None)))
        }
        None => Ok(None),
    }
}

/// The layer's disk spool, when it is on.
fn spool_config(config: &Config) -> Option<SpoolConfig> {
    let threshold = config.bbr.spool_threshold?;
    let spool = SpoolConfig::new().with_memory_threshold(threshold);
    Some(match &config.bbr.spool_dir {
        Some(dir) => spool.with_dir(dir),
        None => spool,
    })
}

/// Proves the spool directory can hold a spool file
/// ([`SpoolConfig::check_dir`]), so a missing or read-only directory stops
/// the start instead of failing the first large upload.
pub(crate) fn check_spool_dir(config: &Config) -> Result<(), ConfigError> {
    match spool_config(config) {
        Some(spool) => spool.check_dir().map_err(ConfigError::SpoolDir),
        None => Ok(()),
    }
}

/// Puts the body-based routing layer in front of `router`.
pub(crate) fn apply(
    router: Router,
    config: &Config,
    adapters: Option<AdapterStore>,
    rewrites: Option<RewriteStore>,
) -> Router {
    let mut layer = ModelRoutingLayer::new()
        .limits(config.bbr.limits())
        .missing_model(config.bbr.missing_model)
        .client_headers(config.bbr.client_headers);
    if let Some(spool) = spool_config(config) {
        // A late `model` (a form field after the file) costs disk, not memory.
        layer = layer
            .spool(spool)
            .max_spooled_bytes(config.bbr.max_spooled_bytes);
    }
    if let Some(adapters) = adapters {
        layer = layer.adapters(adapters);
    }
    if let Some(store) = rewrites {
        let mut picker = RewritePicker::new(store);
        if let Some(header) = &config.model_rewrites.sticky_header {
            picker = picker.sticky_by(header);
        }
        layer = layer.model_rewrites(picker);
    }
    router.layer(layer)
}

/// The contract's refusal for a request body that failed after `offset`
/// bytes while it streamed to the upstream: the layer's typed violation
/// (invalid tail, duplicate `model`, body limit) when the error chain holds
/// one, else a failed upload.
pub(crate) fn body_refusal(error: &axum::Error, offset: u64) -> Refusal {
    match bbr_tower::BodyViolation::find(error) {
        Some(violation) => violation.refusal().clone(),
        None => Refusal::BodyRead { offset },
    }
}
