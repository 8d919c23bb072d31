//! The gateway's configuration: a YAML file, Gateway API `HTTPRoute`
//! manifests, and the embedded reference scenario.
//!
//! # File format
//!
//! ```yaml
//! listen: 127.0.0.1:8080            # optional; --listen / BBR_LISTEN win
//! pools:
//!   - name: vllm-llama3-8b-instruct
//!     endpoints: [127.0.0.1:8000, 127.0.0.1:8001]   # host:port or http://host:port
//!     models:                       # optional, for GET /v1/models
//!       base: meta-llama/Llama-3.1-8B-Instruct
//!       adapters: [food-review-1]
//!   - name: vllm-deepseek-r1
//!     simulate:                     # instead of endpoints: start simulated servers
//!       replicas: 1
//!       model: deepseek/vllm-deepseek-r1
//!       lora_modules: [ski-resorts, movie-critique]
//!       max_loras: 2
//! routes:
//!   - name: llama
//!     pool: vllm-llama3-8b-instruct
//!     timeout: 300s                 # default 300s (Gateway API duration: 1h30m, 500ms, ...)
//!     matches:                      # ORed; inside one match everything is ANDed
//!       - model: food-review-1      # exact X-Gateway-Model-Name
//!       - base_model: meta-llama/Llama-3.1-8B-Instruct   # exact X-Gateway-Base-Model-Name
//!         path_prefix: /v1          # default "/"
//!       - headers: [{name: x-tenant, value: blue}]
//! httproutes: [deploy/httproutes.yaml]   # Gateway API HTTPRoutes, appended to routes
//! bbr:                              # the body-based routing layer (bbr-tower)
//!   max_model_len: 256
//!   max_depth: 128
//!   max_scan_bytes: 32MiB
//!   max_body_bytes: 128MiB
//!   duplicate_keys: reject          # reject | first-wins | last-wins
//!   missing_model: forward          # forward | reject
//!   client_headers: strip           # strip | reject (a client-sent X-Gateway-* header)
//! adapters:                         # adapter map (ConfigMap files or directories)
//!   paths: [/etc/bbr/adapters]
//! proxy:
//!   x_forwarded_for: true
//!   connect_timeout: 5s
//! ```
//!
//! Relative paths (`httproutes`, `adapters.paths`) are resolved against the
//! directory of the config file.
//!
//! Kubernetes manifests can be reused as they are: every `HTTPRoute` document
//! of the files named in `httproutes` (or passed with `--httproutes`) becomes
//! routes, and each `backendRef` (an `InferencePool` or a `Service`) names a
//! pool of the `pools` table. See [`routes_from_httproutes`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;

/// The header the body-based routing layer sets to the body's `model`.
pub const MODEL_HEADER: &str = "x-gateway-model-name";
/// The header the body-based routing layer sets to the base model (adapter map).
pub const BASE_MODEL_HEADER: &str = "x-gateway-base-model-name";
/// Default per-route request timeout (as the scenario's HTTPRoutes set it).
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default upstream connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The embedded default configuration: the reference scenario's two pools
/// of simulated model servers.
pub const SCENARIO_CONFIG_YAML: &str = include_str!("../config/scenario.yaml");
/// The reference scenario's HTTPRoutes, as applied to a cluster
/// (`httproute_bbr_lora.yaml`).
pub const SCENARIO_HTTPROUTES_YAML: &str = include_str!("../config/httproute_bbr_lora.yaml");

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on, if the file names one.
    pub listen: Option<std::net::SocketAddr>,
    /// Pools of model servers, in file order.
    pub pools: Vec<PoolConfig>,
    /// Routes, in file order (the file's `routes`, then the HTTPRoutes).
    pub routes: Vec<RouteConfig>,
    /// Options of the body-based routing layer.
    pub bbr: BbrOptions,
    /// Adapter map files or directories (ConfigMap format).
    pub adapter_paths: Vec<PathBuf>,
    /// Proxy options.
    pub proxy: ProxyOptions,
}

/// One pool of model servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Pool name (the InferencePool's name in a cluster).
    pub name: String,
    /// Endpoints as `host:port` (empty when `simulate` is set).
    pub endpoints: Vec<String>,
    /// The models served, when known (for `GET /v1/models`).
    pub models: Option<PoolModels>,
    /// Simulated replicas to start instead of `endpoints`.
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
    /// `--time-to-first-token` (`100ms`; a bare integer means milliseconds).
    #[serde(default, deserialize_with = "sim_duration")]
    pub time_to_first_token: Duration,
    /// `--inter-token-latency` (`20ms`; a bare integer means milliseconds).
    #[serde(default, deserialize_with = "sim_duration")]
    pub inter_token_latency: Duration,
    /// `--mode`: `random` (default) or `echo`.
    #[serde(default)]
    pub mode: Option<String>,
    /// `--max-num-seqs` (simulator default 5).
    #[serde(default)]
    pub max_num_seqs: Option<usize>,
    /// `--max-model-len` in tokens (simulator default 1024).
    #[serde(default)]
    pub max_model_len: Option<u32>,
    /// Largest request body the simulator accepts (simulator default 4 MiB).
    #[serde(default)]
    pub max_request_body_bytes: Option<ByteSize>,
    /// `--seed`.
    #[serde(default)]
    pub seed: Option<u64>,
}

/// The simulator's duration syntax: a bare integer is milliseconds.
fn sim_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Int(ms) => Ok(Duration::from_millis(ms)),
        Raw::Text(text) => match text.trim().parse::<u64>() {
            Ok(ms) => Ok(Duration::from_millis(ms)),
            Err(_) => parse_duration(&text)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid duration `{text}`"))),
        },
    }
}

fn one() -> usize {
    1
}

/// One route: matches (ORed) that send a request to a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// Route name (for logs), e.g. `llm-llama-route/0`.
    pub name: String,
    /// Target pool.
    pub pool: String,
    /// Matches, ORed. Never empty (a rule without matches matches `/`).
    pub matches: Vec<RouteMatch>,
    /// Request timeout: from the request until the response is complete.
    pub timeout: Duration,
}

/// One match: a path and header conditions that must all hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// Path condition.
    pub path: PathMatch,
    /// Exact header conditions (names lowercase).
    pub headers: Vec<HeaderMatch>,
}

/// A path condition, with Gateway API semantics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// Element-wise prefix: `/v1` matches `/v1` and `/v1/completions`, not `/v1x`.
    Prefix(String),
    /// The whole path.
    Exact(String),
}

impl PathMatch {
    /// Whether `path` satisfies the condition.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => {
                let p = p.trim_end_matches('/');
                path.strip_prefix(p)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
        }
    }
}

/// An exact header condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    /// Header name, lowercase.
    pub name: String,
    /// Exact value.
    pub value: String,
}

/// What to do with a valid body that has no top-level `model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissingModel {
    /// Forward without the header (the contract's default).
    #[default]
    Forward,
    /// Answer 400 `missing_model`.
    Reject,
}

/// What to do with a routing header the client sent itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientHeaderPolicy {
    /// Remove it; the layer sets its own (default).
    #[default]
    Strip,
    /// Answer 400 `routing_header_not_allowed`.
    Reject,
}

/// Duplicate top-level `model` keys policy (see `bbr_core::DuplicateKeys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DuplicatePolicy {
    /// Reject a second top-level `model` (default).
    #[default]
    Reject,
    /// The first one wins; the rest is not checked.
    FirstWins,
    /// The last one wins; decided at the end of the body.
    LastWins,
}

/// Options of the body-based routing layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    pub duplicate_keys: DuplicatePolicy,
    /// Missing `model` policy.
    pub missing_model: MissingModel,
    /// Client-sent routing header policy.
    pub client_headers: ClientHeaderPolicy,
}

impl Default for BbrOptions {
    fn default() -> Self {
        let limits = bbr_core::Limits::new();
        Self {
            max_model_len: limits.max_model_len(),
            max_depth: limits.max_depth(),
            max_scan_bytes: limits.max_scan_bytes(),
            max_body_bytes: limits.max_body_bytes(),
            duplicate_keys: DuplicatePolicy::Reject,
            missing_model: MissingModel::Forward,
            client_headers: ClientHeaderPolicy::Strip,
        }
    }
}

impl BbrOptions {
    /// The extractor limits these options describe.
    pub fn limits(&self) -> bbr_core::Limits {
        let duplicate_keys = match self.duplicate_keys {
            DuplicatePolicy::Reject => bbr_core::DuplicateKeys::Reject,
            DuplicatePolicy::FirstWins => bbr_core::DuplicateKeys::FirstWins,
            DuplicatePolicy::LastWins => bbr_core::DuplicateKeys::LastWins,
        };
        bbr_core::Limits::new()
            .with_max_model_len(self.max_model_len)
            .with_max_depth(self.max_depth)
            .with_max_scan_bytes(self.max_scan_bytes)
            .with_max_body_bytes(self.max_body_bytes)
            .with_duplicate_keys(duplicate_keys)
    }
}

/// Proxy options.
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

// ---------------------------------------------------------------------------
// Raw file format.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listen: Option<std::net::SocketAddr>,
    #[serde(default)]
    pools: Vec<RawPool>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    httproutes: Vec<PathBuf>,
    #[serde(default)]
    bbr: RawBbr,
    #[serde(default)]
    adapters: RawAdapters,
    #[serde(default)]
    proxy: RawProxy,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    name: String,
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default)]
    models: Option<PoolModels>,
    #[serde(default)]
    simulate: Option<SimulateConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(default)]
    name: Option<String>,
    pool: String,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    matches: Vec<RawMatch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    base_model: Option<String>,
    #[serde(default)]
    path_prefix: Option<String>,
    #[serde(default)]
    path_exact: Option<String>,
    #[serde(default)]
    headers: Vec<RawHeader>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    name: String,
    value: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBbr {
    max_model_len: Option<usize>,
    max_depth: Option<u32>,
    max_scan_bytes: Option<ByteSize>,
    max_body_bytes: Option<ByteSize>,
    duplicate_keys: Option<DuplicatePolicy>,
    missing_model: Option<MissingModel>,
    client_headers: Option<ClientHeaderPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdapters {
    #[serde(default)]
    paths: Vec<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    x_forwarded_for: Option<bool>,
    connect_timeout: Option<String>,
}

/// A byte size: an integer, or a number with a unit (`KiB`, `MiB`, `GiB`,
/// `KB`, `MB`, `GB`, `B`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(s) => parse_byte_size(&s).map(ByteSize).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid byte size `{s}` (use e.g. 1048576, 32MiB)"
                ))
            }),
        }
    }
}

/// Parses `32MiB`, `1 KB`, `100` into bytes.
pub fn parse_byte_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// Parses a Gateway API duration (`300s`, `1h30m`, `500ms`; a bare integer
/// means seconds, as in Kubernetes' `timeoutSeconds`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "h" => Duration::from_secs(value.checked_mul(3600)?),
            "m" => Duration::from_secs(value.checked_mul(60)?),
            "s" => Duration::from_secs(value),
            "ms" => Duration::from_millis(value),
            _ => return None,
        };
        total = total.checked_add(part)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

fn duration_field(
    text: Option<&str>,
    default: Duration,
    what: &str,
) -> Result<Duration, ConfigError> {
    match text {
        None => Ok(default),
        Some(t) => parse_duration(t)
            .ok_or_else(|| ConfigError::Invalid(format!("{what}: invalid duration `{t}`"))),
    }
}

impl Config {
    /// Reads a config file; relative paths in it are resolved against its
    /// directory, and the HTTPRoute files it names are read.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_yaml_str(&text, base)
    }

    /// Parses a config text; relative paths resolve against `base_dir`.
    pub fn from_yaml_str(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_norway::from_str(text).map_err(ConfigError::Yaml)?;
        let mut routes = Vec::new();
        for (i, r) in raw.routes.into_iter().enumerate() {
            routes.push(route_from_raw(r, i)?);
        }
        let mut config = Config {
            listen: raw.listen,
            pools: raw
                .pools
                .into_iter()
                .map(|p| PoolConfig {
                    name: p.name,
                    endpoints: p.endpoints,
                    models: p.models,
                    simulate: p.simulate,
                })
                .collect(),
            routes,
            bbr: bbr_from_raw(raw.bbr),
            adapter_paths: raw
                .adapters
                .paths
                .into_iter()
                .map(|p| base_dir.join(p))
                .collect(),
            proxy: ProxyOptions {
                x_forwarded_for: raw.proxy.x_forwarded_for.unwrap_or(true),
                connect_timeout: duration_field(
                    raw.proxy.connect_timeout.as_deref(),
                    DEFAULT_CONNECT_TIMEOUT,
                    "proxy.connect_timeout",
                )?,
            },
        };
        for file in raw.httproutes {
            let file = base_dir.join(file);
            let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Read {
                path: file.clone(),
                source,
            })?;
            config.routes.extend(routes_from_httproutes(&text)?);
        }
        config.validate()?;
        Ok(config)
    }

    /// The embedded reference scenario: two pools of simulated servers and
    /// the scenario's HTTPRoutes.
    pub fn scenario() -> Self {
        let mut config = Self::from_yaml_str(SCENARIO_CONFIG_YAML, Path::new("."))
            .expect("the embedded scenario config is valid (tested)");
        config.routes.extend(
            routes_from_httproutes(SCENARIO_HTTPROUTES_YAML)
                .expect("the embedded HTTPRoutes are valid (tested)"),
        );
        config
            .validate()
            .expect("the embedded scenario is consistent (tested)");
        config
    }

    /// Sets the simulated latency of every `simulate:` pool (zero leaves
    /// what the file says).
    pub fn set_simulated_latency(
        &mut self,
        time_to_first_token: Duration,
        inter_token_latency: Duration,
    ) {
        for sim in self.pools.iter_mut().filter_map(|p| p.simulate.as_mut()) {
            if !time_to_first_token.is_zero() {
                sim.time_to_first_token = time_to_first_token;
            }
            if !inter_token_latency.is_zero() {
                sim.inter_token_latency = inter_token_latency;
            }
        }
    }

    /// Adds routes (e.g. from `--httproutes`) and validates again.
    pub fn add_routes(&mut self, routes: Vec<RouteConfig>) -> Result<(), ConfigError> {
        self.routes.extend(routes);
        self.validate()
    }

    /// Checks names and references.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for pool in &self.pools {
            if !seen.insert(pool.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "pool `{}` is defined twice",
                    pool.name
                )));
            }
            match (&pool.simulate, pool.endpoints.is_empty()) {
                (Some(_), false) => {
                    return Err(ConfigError::Invalid(format!(
                        "pool `{}`: set either `endpoints` or `simulate`, not both",
                        pool.name
                    )));
                }
                (None, true) => {
                    return Err(ConfigError::Invalid(format!(
                        "pool `{}` has no endpoints",
                        pool.name
                    )));
                }
                (Some(sim), true) if sim.replicas == 0 => {
                    return Err(ConfigError::Invalid(format!(
                        "pool `{}`: simulate.replicas must be at least 1",
                        pool.name
                    )));
                }
                _ => {}
            }
            for endpoint in &pool.endpoints {
                crate::pools::parse_endpoint(endpoint).map_err(|reason| {
                    ConfigError::Invalid(format!(
                        "pool `{}`: endpoint `{endpoint}`: {reason}",
                        pool.name
                    ))
                })?;
            }
        }
        for route in &self.routes {
            if !seen.contains(route.pool.as_str()) {
                return Err(ConfigError::UnknownPool {
                    route: route.name.clone(),
                    pool: route.pool.clone(),
                });
            }
        }
        Ok(())
    }
}

fn bbr_from_raw(raw: RawBbr) -> BbrOptions {
    let d = BbrOptions::default();
    BbrOptions {
        max_model_len: raw.max_model_len.unwrap_or(d.max_model_len),
        max_depth: raw.max_depth.unwrap_or(d.max_depth),
        max_scan_bytes: raw.max_scan_bytes.map_or(d.max_scan_bytes, |b| b.0),
        max_body_bytes: raw.max_body_bytes.map_or(d.max_body_bytes, |b| b.0),
        duplicate_keys: raw.duplicate_keys.unwrap_or(d.duplicate_keys),
        missing_model: raw.missing_model.unwrap_or(d.missing_model),
        client_headers: raw.client_headers.unwrap_or(d.client_headers),
    }
}

fn route_from_raw(raw: RawRoute, index: usize) -> Result<RouteConfig, ConfigError> {
    let name = raw.name.unwrap_or_else(|| format!("route-{index}"));
    let timeout = duration_field(
        raw.timeout.as_deref(),
        DEFAULT_ROUTE_TIMEOUT,
        &format!("route `{name}`"),
    )?;
    let mut matches = Vec::new();
    for m in raw.matches {
        let path = match (m.path_prefix, m.path_exact) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(format!(
                    "route `{name}`: path_prefix and path_exact are exclusive"
                )));
            }
            (None, Some(p)) => PathMatch::Exact(p),
            (p, None) => PathMatch::Prefix(p.unwrap_or_else(|| "/".to_owned())),
        };
        let mut headers: Vec<HeaderMatch> = m
            .headers
            .into_iter()
            .map(|h| HeaderMatch {
                name: h.name.to_ascii_lowercase(),
                value: h.value,
            })
            .collect();
        if let Some(model) = m.model {
            headers.push(HeaderMatch {
                name: MODEL_HEADER.to_owned(),
                value: model,
            });
        }
        if let Some(base) = m.base_model {
            headers.push(HeaderMatch {
                name: BASE_MODEL_HEADER.to_owned(),
                value: base,
            });
        }
        matches.push(RouteMatch { path, headers });
    }
    if matches.is_empty() {
        matches.push(RouteMatch {
            path: PathMatch::Prefix("/".to_owned()),
            headers: Vec::new(),
        });
    }
    Ok(RouteConfig {
        name,
        pool: raw.pool,
        matches,
        timeout,
    })
}

// ---------------------------------------------------------------------------
// Gateway API HTTPRoute.

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct K8sDoc {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: K8sMeta,
    #[serde(default)]
    spec: Option<serde_norway::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct K8sMeta {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpRouteSpec {
    #[serde(default)]
    rules: Vec<HttpRouteRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpRouteRule {
    #[serde(default)]
    matches: Vec<HttpRouteMatch>,
    #[serde(default)]
    backend_refs: Vec<BackendRef>,
    #[serde(default)]
    timeouts: Option<Timeouts>,
    #[serde(default)]
    filters: Vec<serde_norway::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpRouteMatch {
    #[serde(default)]
    path: Option<HttpPathMatch>,
    #[serde(default)]
    headers: Vec<HttpHeaderMatch>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    query_params: Vec<serde_norway::Value>,
}

#[derive(Debug, Deserialize)]
struct HttpPathMatch {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
struct HttpHeaderMatch {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    name: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BackendRef {
    name: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    weight: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Timeouts {
    #[serde(default)]
    request: Option<String>,
}

/// Turns Kubernetes Gateway API `HTTPRoute` manifests (one or more YAML
/// documents; documents of other kinds are skipped) into routes.
///
/// Each rule becomes one route named `<metadata.name>/<rule index>`. Its
/// single `backendRef` (an `InferencePool` or `Service`) names the pool;
/// `timeouts.request` is the route timeout (default 300 s). Supported
/// matches: `PathPrefix`/`Exact` paths and `Exact` headers, as the scenario
/// uses. Anything that would change routing and is not supported (regular
/// expressions, methods, query parameters, filters, several backends) is an
/// error rather than silently ignored. `parentRefs` and `hostnames` are not
/// used (there is one gateway).
///
/// ```
/// let routes = bbr_axum_example::config::routes_from_httproutes(
///     bbr_axum_example::config::SCENARIO_HTTPROUTES_YAML,
/// )?;
/// assert_eq!(routes.len(), 2);
/// assert_eq!(routes[1].pool, "vllm-deepseek-r1");
/// assert_eq!(routes[1].matches.len(), 3);
/// # Ok::<(), bbr_axum_example::ConfigError>(())
/// ```
pub fn routes_from_httproutes(text: &str) -> Result<Vec<RouteConfig>, ConfigError> {
    let mut routes = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let value = serde_norway::Value::deserialize(document).map_err(ConfigError::Yaml)?;
        if value.is_null() {
            continue;
        }
        let doc: K8sDoc = serde_norway::from_value(value).map_err(ConfigError::Yaml)?;
        if doc.kind.as_deref() != Some("HTTPRoute") {
            continue;
        }
        let route_name = doc.metadata.name.unwrap_or_else(|| "httproute".to_owned());
        let spec: HttpRouteSpec = match doc.spec {
            Some(spec) => serde_norway::from_value(spec).map_err(ConfigError::Yaml)?,
            None => HttpRouteSpec::default(),
        };
        for (index, rule) in spec.rules.into_iter().enumerate() {
            let name = format!("{route_name}/{index}");
            routes.push(route_from_rule(rule, name)?);
        }
    }
    Ok(routes)
}

fn route_from_rule(rule: HttpRouteRule, name: String) -> Result<RouteConfig, ConfigError> {
    let unsupported = |what: &str| ConfigError::Unsupported {
        route: name.clone(),
        what: what.to_owned(),
    };
    if !rule.filters.is_empty() {
        return Err(unsupported("filters"));
    }
    let pool = match rule.backend_refs.as_slice() {
        [one] => {
            if let Some(kind) = one.kind.as_deref()
                && kind != "InferencePool"
                && kind != "Service"
            {
                return Err(unsupported(&format!("backendRef kind {kind}")));
            }
            if one.weight == Some(0) {
                return Err(unsupported("backendRef weight 0"));
            }
            one.name.clone()
        }
        [] => return Err(unsupported("a rule without backendRefs")),
        _ => return Err(unsupported("several backendRefs")),
    };
    let timeout = duration_field(
        rule.timeouts.as_ref().and_then(|t| t.request.as_deref()),
        DEFAULT_ROUTE_TIMEOUT,
        &format!("route `{name}` timeouts.request"),
    )?;
    let mut matches = Vec::new();
    for m in rule.matches {
        if m.method.is_some() {
            return Err(unsupported("method matches"));
        }
        if !m.query_params.is_empty() {
            return Err(unsupported("queryParams matches"));
        }
        let path = match m.path {
            None => PathMatch::Prefix("/".to_owned()),
            Some(p) => {
                let value = p.value.unwrap_or_else(|| "/".to_owned());
                match p.kind.as_deref().unwrap_or("PathPrefix") {
                    "PathPrefix" => PathMatch::Prefix(value),
                    "Exact" => PathMatch::Exact(value),
                    other => return Err(unsupported(&format!("path match type {other}"))),
                }
            }
        };
        let mut headers = Vec::new();
        for h in m.headers {
            match h.kind.as_deref().unwrap_or("Exact") {
                "Exact" => headers.push(HeaderMatch {
                    name: h.name.to_ascii_lowercase(),
                    value: h.value,
                }),
                other => return Err(unsupported(&format!("header match type {other}"))),
            }
        }
        matches.push(RouteMatch { path, headers });
    }
    if matches.is_empty() {
        matches.push(RouteMatch {
            path: PathMatch::Prefix("/".to_owned()),
            headers: Vec::new(),
        });
    }
    Ok(RouteConfig {
        name,
        pool,
        matches,
        timeout,
    })
}

impl fmt::Display for PathMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathMatch::Prefix(p) => write!(f, "prefix {p}"),
            PathMatch::Exact(p) => write!(f, "exact {p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_gateway_api() {
        assert_eq!(parse_duration("300s"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_duration("2m5s100ms"),
            Some(Duration::from_millis(125_100))
        );
        assert_eq!(parse_duration("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("10x"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn byte_sizes_accept_units() {
        assert_eq!(parse_byte_size("32MiB"), Some(32 << 20));
        assert_eq!(parse_byte_size("1 KiB"), Some(1024));
        assert_eq!(parse_byte_size("100"), Some(100));
        assert_eq!(parse_byte_size("2MB"), Some(2_000_000));
        assert_eq!(parse_byte_size("2XB"), None);
    }

    #[test]
    fn path_prefix_matches_whole_segments() {
        let p = PathMatch::Prefix("/v1".into());
        assert!(p.matches("/v1"));
        assert!(p.matches("/v1/completions"));
        assert!(!p.matches("/v1x"));
        let root = PathMatch::Prefix("/".into());
        assert!(root.matches("/anything"));
        let slash = PathMatch::Prefix("/v1/".into());
        assert!(slash.matches("/v1/chat/completions"));
        assert!(PathMatch::Exact("/v1/models".into()).matches("/v1/models"));
        assert!(!PathMatch::Exact("/v1/models".into()).matches("/v1/models/x"));
    }

    #[test]
    fn scenario_config_has_the_seed_topology() {
        let config = Config::scenario();
        let pools: Vec<_> = config
            .pools
            .iter()
            .map(|p| (p.name.as_str(), p.simulate.clone().unwrap()))
            .collect();
        assert_eq!(pools[0].0, "vllm-llama3-8b-instruct");
        assert_eq!(pools[0].1.replicas, 3);
        assert_eq!(pools[0].1.model, "meta-llama/Llama-3.1-8B-Instruct");
        assert_eq!(pools[0].1.lora_modules, ["food-review-1"]);
        assert_eq!(pools[0].1.max_loras, 2);
        assert_eq!(pools[1].0, "vllm-deepseek-r1");
        assert_eq!(pools[1].1.replicas, 1);
        assert_eq!(pools[1].1.lora_modules, ["ski-resorts", "movie-critique"]);
        assert_eq!(config.routes.len(), 2);
        let values: Vec<_> = config.routes[0]
            .matches
            .iter()
            .map(|m| m.headers[0].value.as_str())
            .collect();
        assert_eq!(
            values,
            ["meta-llama/Llama-3.1-8B-Instruct", "food-review-1"]
        );
        for route in &config.routes {
            assert_eq!(route.timeout, Duration::from_secs(300));
            for m in &route.matches {
                assert_eq!(m.path, PathMatch::Prefix("/".into()));
                assert_eq!(m.headers.len(), 1);
                assert_eq!(m.headers[0].name, MODEL_HEADER);
            }
        }
    }

    #[test]
    fn full_config_file_parses() {
        let text = r#"
listen: 127.0.0.1:9000
pools:
  - name: a
    endpoints: [127.0.0.1:8000, "http://127.0.0.1:8001"]
    models: {base: base-a, adapters: [lora-a]}
  - name: b
    endpoints: [localhost:8002]
routes:
  - name: by-model
    pool: a
    timeout: 30s
    matches:
      - model: lora-a
      - base_model: base-a
        path_prefix: /v1
  - pool: b
    matches:
      - headers: [{name: X-Tenant, value: blue}]
        path_exact: /v1/completions
bbr:
  max_model_len: 64
  max_scan_bytes: 1MiB
  max_body_bytes: 2097152
  duplicate_keys: last-wins
  missing_model: reject
  client_headers: reject
adapters:
  paths: [adapters]
proxy:
  x_forwarded_for: false
  connect_timeout: 250ms
"#;
        let config = Config::from_yaml_str(text, Path::new("/etc/bbr")).unwrap();
        assert_eq!(config.listen, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(config.pools[0].endpoints.len(), 2);
        assert_eq!(
            config.pools[0].models.as_ref().unwrap().adapters,
            ["lora-a"]
        );
        assert_eq!(config.routes[0].timeout, Duration::from_secs(30));
        assert_eq!(
            config.routes[0].matches[0].headers,
            [HeaderMatch {
                name: MODEL_HEADER.into(),
                value: "lora-a".into()
            }]
        );
        assert_eq!(
            config.routes[0].matches[1].headers[0].name,
            BASE_MODEL_HEADER
        );
        assert_eq!(
            config.routes[0].matches[1].path,
            PathMatch::Prefix("/v1".into())
        );
        assert_eq!(config.routes[1].name, "route-1");
        assert_eq!(config.routes[1].timeout, DEFAULT_ROUTE_TIMEOUT);
        assert_eq!(config.routes[1].matches[0].headers[0].name, "x-tenant");
        assert_eq!(
            config.routes[1].matches[0].path,
            PathMatch::Exact("/v1/completions".into())
        );
        assert_eq!(config.bbr.max_model_len, 64);
        assert_eq!(config.bbr.max_scan_bytes, 1 << 20);
        assert_eq!(config.bbr.max_body_bytes, 2 << 20);
        assert_eq!(config.bbr.max_depth, 128);
        assert_eq!(config.bbr.duplicate_keys, DuplicatePolicy::LastWins);
        assert_eq!(config.bbr.missing_model, MissingModel::Reject);
        assert_eq!(config.bbr.client_headers, ClientHeaderPolicy::Reject);
        assert_eq!(config.adapter_paths, [PathBuf::from("/etc/bbr/adapters")]);
        assert!(!config.proxy.x_forwarded_for);
        assert_eq!(config.proxy.connect_timeout, Duration::from_millis(250));
    }

    #[test]
    fn config_errors_are_reported() {
        let unknown_pool = "pools: [{name: a, endpoints: [127.0.0.1:1]}]\nroutes: [{pool: b}]";
        assert!(matches!(
            Config::from_yaml_str(unknown_pool, Path::new(".")),
            Err(ConfigError::UnknownPool { pool, .. }) if pool == "b"
        ));
        let no_endpoints = "pools: [{name: a}]";
        assert!(matches!(
            Config::from_yaml_str(no_endpoints, Path::new(".")),
            Err(ConfigError::Invalid(_))
        ));
        let typo = "pools: [{name: a, endpoint: [127.0.0.1:1]}]";
        assert!(matches!(
            Config::from_yaml_str(typo, Path::new(".")),
            Err(ConfigError::Yaml(_))
        ));
        let bad_timeout =
            "pools: [{name: a, endpoints: [127.0.0.1:1]}]\nroutes: [{pool: a, timeout: soon}]";
        assert!(matches!(
            Config::from_yaml_str(bad_timeout, Path::new(".")),
            Err(ConfigError::Invalid(_))
        ));
        let bad_endpoint = "pools: [{name: a, endpoints: ['https://x:1']}]";
        assert!(matches!(
            Config::from_yaml_str(bad_endpoint, Path::new(".")),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn httproutes_of_the_scenario_parse_with_other_documents() {
        let text = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: inference-gateway}}\n---\n{SCENARIO_HTTPROUTES_YAML}"
        );
        let routes = routes_from_httproutes(&text).unwrap();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].name, "llm-llama-route/0");
        assert_eq!(routes[0].pool, "vllm-llama3-8b-instruct");
        assert_eq!(routes[1].name, "llm-deepseek-route/0");
        let values: Vec<_> = routes[1]
            .matches
            .iter()
            .map(|m| m.headers[0].value.as_str())
            .collect();
        assert_eq!(
            values,
            ["deepseek/vllm-deepseek-r1", "ski-resorts", "movie-critique"]
        );
    }

    #[test]
    fn httproute_defaults_and_unsupported_features() {
        let minimal =
            "kind: HTTPRoute\nmetadata: {name: r}\nspec:\n  rules:\n  - backendRefs: [{name: p}]\n";
        let routes = routes_from_httproutes(minimal).unwrap();
        assert_eq!(routes[0].timeout, DEFAULT_ROUTE_TIMEOUT);
        assert_eq!(
            routes[0].matches,
            [RouteMatch {
                path: PathMatch::Prefix("/".into()),
                headers: vec![]
            }]
        );
        let regex = "kind: HTTPRoute\nmetadata: {name: r}\nspec:\n  rules:\n  - backendRefs: [{name: p}]\n    matches:\n    - headers: [{type: RegularExpression, name: x, value: y}]\n";
        assert!(matches!(
            routes_from_httproutes(regex),
            Err(ConfigError::Unsupported { .. })
        ));
        let two = "kind: HTTPRoute\nmetadata: {name: r}\nspec:\n  rules:\n  - backendRefs: [{name: p}, {name: q}]\n";
        assert!(matches!(
            routes_from_httproutes(two),
            Err(ConfigError::Unsupported { .. })
        ));
        let timeout = "kind: HTTPRoute\nmetadata: {name: r}\nspec:\n  rules:\n  - backendRefs: [{name: p}]\n    timeouts: {request: 2s}\n";
        assert_eq!(
            routes_from_httproutes(timeout).unwrap()[0].timeout,
            Duration::from_secs(2)
        );
    }
}
