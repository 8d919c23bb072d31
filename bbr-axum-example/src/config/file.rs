//! The config file's schema: what each YAML section holds and its defaults.
//! Policies parse through the contract's `FromStr`s, durations and sizes
//! through [`units`](super::units).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bbr_core::DuplicateKeys;
use bbr_core::contract::{ClientHeaders, MissingModel};
use bbr_model_sim::Mode;
use serde::Deserialize;

use super::units;

/// Default upstream connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One pool of model servers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Pool name (the InferencePool's name in a cluster).
    pub name: String,
    /// Endpoints as `host:port` (empty when `simulate` is set).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// The models served, when known (for `GET /v1/models`).
    #[serde(default)]
    pub models: Option<PoolModels>,
    /// Simulated replicas to start instead of `endpoints`.
    #[serde(default)]
    pub simulate: Option<SimulateConfig>,
}

/// Base model and adapters served by a pool.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolModels {
    /// The base model.
    pub base: String,
    /// LoRA adapters of that base.
    #[serde(default)]
    pub adapters: Vec<String>,
}

/// Simulated model servers for a pool (bbr-model-sim).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulateConfig {
    /// Number of replicas (each its own HTTP server on 127.0.0.1:0).
    #[serde(default = "one")]
    pub replicas: usize,
    /// The base model (`--model`).
    pub model: String,
    /// LoRA adapters (`--lora-modules`).
    #[serde(default)]
    pub lora_modules: Vec<String>,
    /// `--max-loras`.
    #[serde(default = "one")]
    pub max_loras: usize,
    /// `--time-to-first-token` (`100ms`; a unit is required).
    #[serde(default, deserialize_with = "units::duration")]
    pub time_to_first_token: Duration,
    /// `--inter-token-latency` (`20ms`; a unit is required).
    #[serde(default, deserialize_with = "units::duration")]
    pub inter_token_latency: Duration,
    /// `--mode`: `random` (default) or `echo`.
    #[serde(default, deserialize_with = "units::opt_from_str")]
    pub mode: Option<Mode>,
    /// `--max-num-seqs` (simulator default 5).
    #[serde(default)]
    pub max_num_seqs: Option<usize>,
    /// `--max-model-len` in tokens (simulator default 1024).
    #[serde(default)]
    pub max_model_len: Option<u32>,
    /// Largest request body the simulator accepts in bytes (`4MiB`, the
    /// simulator's default).
    #[serde(default, deserialize_with = "units::opt_bytes")]
    pub max_request_body_bytes: Option<u64>,
    /// `--seed`.
    #[serde(default)]
    pub seed: Option<u64>,
}

fn one() -> usize {
    1
}

/// Options of the body-based routing layer (`bbr:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BbrOptions {
    /// Longest accepted model name in bytes.
    pub max_model_len: usize,
    /// Deepest accepted nesting.
    pub max_depth: u32,
    /// Bytes scanned for a decision before 413.
    pub max_scan_bytes: u64,
    /// Largest accepted body before 413.
    pub max_body_bytes: u64,
    /// Duplicate `model` keys policy.
    pub duplicate_keys: DuplicateKeys,
    /// Missing `model` policy.
    pub missing_model: MissingModel,
    /// Client-sent routing header policy.
    pub client_headers: ClientHeaders,
    /// Held bytes of one request past this go to a temp file (in
    /// `spool_dir`); `None` (`spool: false`) keeps everything in memory.
    pub spool_threshold: Option<u64>,
    /// Directory of the spool files; `None` is `$TMPDIR`. Point it at a
    /// disk volume where `$TMPDIR` is a small tmpfs: a full directory
    /// answers 503 `overloaded`.
    pub spool_dir: Option<PathBuf>,
    /// Cap on the bytes spooled by all requests together (503 past it).
    pub max_spooled_bytes: u64,
}

impl Default for BbrOptions {
    fn default() -> Self {
        let limits = bbr_core::Limits::new();
        Self {
            max_model_len: limits.max_model_len(),
            max_depth: limits.max_depth(),
            max_scan_bytes: limits.max_scan_bytes(),
            max_body_bytes: limits.max_body_bytes(),
            duplicate_keys: limits.duplicate_keys(),
            missing_model: MissingModel::default(),
            client_headers: ClientHeaders::default(),
            spool_threshold: Some(bbr_tower::DEFAULT_SPOOL_THRESHOLD),
            spool_dir: None,
            max_spooled_bytes: bbr_tower::DEFAULT_MAX_SPOOLED_BYTES,
        }
    }
}

impl BbrOptions {
    /// The extractor limits these options describe.
    pub fn limits(&self) -> bbr_core::Limits {
        bbr_core::Limits::new()
            .with_max_model_len(self.max_model_len)
            .with_max_depth(self.max_depth)
            .with_max_scan_bytes(self.max_scan_bytes)
            .with_max_body_bytes(self.max_body_bytes)
            .with_duplicate_keys(self.duplicate_keys)
    }
}

/// Model rewrites (`model_rewrites:`): aliases and weighted splits in the
/// upstream `InferenceModelRewrite` format, applied by the routing layer
/// (`ModelRoutingLayer::model_rewrites`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewriteOptions {
    /// YAML files of `InferenceModelRewrite` documents, or directories of
    /// them (a mounted ConfigMap), re-read when they change. Empty: the
    /// rules of `embedded`, if any.
    pub paths: Vec<PathBuf>,
    /// Rules given as text (the embedded reference scenario's), used when
    /// `paths` is empty; never reloaded.
    pub embedded: Option<String>,
    /// Picks targets by a hash of this request header's value (same value,
    /// same target) instead of at random; lowercase.
    pub sticky_header: Option<String>,
}

impl RewriteOptions {
    /// True when no rule source is configured.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.embedded.is_none()
    }
}

/// Proxy options (`proxy:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyOptions {
    /// Append the client address to `x-forwarded-for` (default true).
    pub x_forwarded_for: bool,
    /// Upstream connect timeout (default 5 s).
    pub connect_timeout: Duration,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            x_forwarded_for: true,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) listen: Option<std::net::SocketAddr>,
    #[serde(default)]
    pub(super) pools: Vec<PoolConfig>,
    #[serde(default)]
    pub(super) routes: Vec<RawRoute>,
    #[serde(default)]
    pub(super) httproutes: Vec<PathBuf>,
    #[serde(default)]
    pub(super) bbr: RawBbr,
    #[serde(default)]
    pub(super) adapters: RawAdapters,
    #[serde(default)]
    pub(super) model_rewrites: RawRewrites,
    #[serde(default)]
    pub(super) proxy: RawProxy,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    #[serde(default)]
    pub(super) name: Option<String>,
    pub(super) pool: String,
    #[serde(default, deserialize_with = "units::opt_duration")]
    pub(super) timeout: Option<Duration>,
    #[serde(default)]
    pub(super) matches: Vec<RawMatch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMatch {
    #[serde(default)]
    pub(super) model: Option<String>,
    #[serde(default)]
    pub(super) base_model: Option<String>,
    #[serde(default)]
    pub(super) path_prefix: Option<String>,
    #[serde(default)]
    pub(super) path_exact: Option<String>,
    #[serde(default)]
    pub(super) headers: Vec<RawHeader>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeader {
    pub(super) name: String,
    pub(super) value: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBbr {
    max_model_len: Option<usize>,
    max_depth: Option<u32>,
    #[serde(default, deserialize_with = "units::opt_bytes")]
    max_scan_bytes: Option<u64>,
    #[serde(default, deserialize_with = "units::opt_bytes")]
    max_body_bytes: Option<u64>,
    #[serde(default, deserialize_with = "units::opt_from_str")]
    duplicate_keys: Option<DuplicateKeys>,
    #[serde(default, deserialize_with = "units::opt_from_str")]
    missing_model: Option<MissingModel>,
    #[serde(default, deserialize_with = "units::opt_from_str")]
    client_headers: Option<ClientHeaders>,
    spool: Option<bool>,
    #[serde(default, deserialize_with = "units::opt_bytes")]
    spool_threshold: Option<u64>,
    spool_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "units::opt_bytes")]
    max_spooled_bytes: Option<u64>,
}

impl RawBbr {
    /// The options; a relative `spool_dir` resolves against `base_dir`.
    pub(super) fn options(self, base_dir: &Path) -> BbrOptions {
        let d = BbrOptions::default();
        BbrOptions {
            max_model_len: self.max_model_len.unwrap_or(d.max_model_len),
            max_depth: self.max_depth.unwrap_or(d.max_depth),
            max_scan_bytes: self.max_scan_bytes.unwrap_or(d.max_scan_bytes),
            max_body_bytes: self.max_body_bytes.unwrap_or(d.max_body_bytes),
            duplicate_keys: self.duplicate_keys.unwrap_or(d.duplicate_keys),
            missing_model: self.missing_model.unwrap_or(d.missing_model),
            client_headers: self.client_headers.unwrap_or(d.client_headers),
            spool_threshold: match self.spool {
                Some(false) => None,
                _ => self.spool_threshold.or(d.spool_threshold),
            },
            spool_dir: self.spool_dir.map(|dir| base_dir.join(dir)),
            max_spooled_bytes: self.max_spooled_bytes.unwrap_or(d.max_spooled_bytes),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdapters {
    #[serde(default)]
    pub(super) paths: Vec<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRewrites {
    #[serde(default)]
    pub(super) paths: Vec<PathBuf>,
    #[serde(default, deserialize_with = "units::opt_header_name")]
    pub(super) sticky_header: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxy {
    x_forwarded_for: Option<bool>,
    #[serde(default, deserialize_with = "units::opt_duration")]
    connect_timeout: Option<Duration>,
}

impl RawProxy {
    pub(super) fn options(self) -> ProxyOptions {
        let d = ProxyOptions::default();
        ProxyOptions {
            x_forwarded_for: self.x_forwarded_for.unwrap_or(d.x_forwarded_for),
            connect_timeout: self.connect_timeout.unwrap_or(d.connect_timeout),
        }
    }
}
