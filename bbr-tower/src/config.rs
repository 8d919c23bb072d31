//! Configuration shared by a layer and every service it builds, with the
//! documented defaults.

use std::sync::Arc;
use std::time::Duration;

use bbr_core::Limits;
use bbr_core::contract::{ClientHeaders, MissingModel};

use crate::base_model::BaseModels;
use crate::counters::Counters;

/// Default decision deadline: 30 s from the first body byte (the contract's,
/// shared with bbr-extproc).
pub use bbr_core::contract::DEFAULT_DECISION_DEADLINE;

/// Default global cap on the bytes held by all requests of a layer: 512 MiB
/// (the contract's, shared with bbr-extproc).
pub use bbr_core::contract::DEFAULT_MAX_HELD_BYTES;

/// Default cap on the bytes spooled to disk by all requests of a layer
/// (feature `spool`): 4 GiB.
pub use bbr_core::spool::DEFAULT_MAX_SPOOLED_BYTES;

/// Default bytes of one request held in memory before the rest goes to the
/// spool (feature `spool`): 4 MiB.
pub use bbr_core::spool::DEFAULT_SPOOL_THRESHOLD;

/// Default drain budget of a refused upload, in bytes: 1 MiB.
pub const DEFAULT_DRAIN_MAX_BYTES: u64 = 1 << 20;

/// Default drain budget of a refused upload, in time: 2 s.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// How much of a refused upload is read and dropped before giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DrainBudget {
    pub(crate) max_bytes: u64,
    pub(crate) timeout: Duration,
}

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) limits: Limits,
    pub(crate) missing_model: MissingModel,
    pub(crate) client_headers: ClientHeaders,
    pub(crate) base_models: Option<Arc<dyn BaseModels>>,
    #[cfg(feature = "adapters")]
    pub(crate) rewrites: Option<bbr_adapters::rewrite::RewritePicker>,
    pub(crate) decision_deadline: Duration,
    pub(crate) max_held_bytes: u64,
    /// Set only through the `spool` feature's builder.
    pub(crate) spool: Option<bbr_core::spool::SpoolConfig>,
    pub(crate) max_spooled_bytes: u64,
    pub(crate) drain: DrainBudget,
    pub(crate) counters: Arc<Counters>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            limits: Limits::new(),
            missing_model: MissingModel::default(),
            client_headers: ClientHeaders::default(),
            base_models: None,
            #[cfg(feature = "adapters")]
            rewrites: None,
            decision_deadline: DEFAULT_DECISION_DEADLINE,
            max_held_bytes: DEFAULT_MAX_HELD_BYTES,
            spool: None,
            max_spooled_bytes: DEFAULT_MAX_SPOOLED_BYTES,
            drain: DrainBudget {
                max_bytes: DEFAULT_DRAIN_MAX_BYTES,
                timeout: DEFAULT_DRAIN_TIMEOUT,
            },
            counters: Arc::new(Counters::default()),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("limits", &self.limits)
            .field("missing_model", &self.missing_model)
            .field("client_headers", &self.client_headers)
            .field("base_models", &self.base_models.is_some())
            .field("decision_deadline", &self.decision_deadline)
            .field("max_held_bytes", &self.max_held_bytes)
            .field("spool", &self.spool)
            .field("max_spooled_bytes", &self.max_spooled_bytes)
            .field("drain", &self.drain)
            .finish_non_exhaustive()
    }
}
