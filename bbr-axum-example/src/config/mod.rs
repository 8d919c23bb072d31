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
//!     timeout: 300s                 # default 300s; durations need a unit (1h30m, 500ms, ...)
//!     matches:                      # ORed; inside one match everything is ANDed
//!       - model: food-review-1      # exact X-Gateway-Model-Name
//!       - base_model: meta-llama/Llama-3.1-8B-Instruct   # exact X-Gateway-Base-Model-Name
//!         path_prefix: /v1          # default "/"
//!       - headers: [{name: x-tenant, value: blue}]
//! httproutes: [deploy/httproutes.yaml]   # Gateway API HTTPRoutes, appended to routes
//! bbr:                              # the body-based routing layer (bbr-tower)
//!   max_model_len: 256
//!   max_depth: 128
//!   max_scan_bytes: 32MiB         # sizes need a unit: B, KiB, MiB, GiB, KB, MB, GB
//!   max_body_bytes: 128MiB
//!   duplicate_keys: reject          # reject | first-wins | last-wins
//!   missing_model: forward          # forward | reject
//!   client_headers: strip           # strip | reject (a client-sent X-Gateway-* header)
//!   spool: true                     # held bytes past spool_threshold go to a temp file
//!   spool_threshold: 4MiB           # per request, in memory before the spool
//!   spool_dir: /var/spool/bbr       # default $TMPDIR; must be a writable directory at start
//!   max_spooled_bytes: 4GiB         # all requests together; 503 overloaded past it
//! adapters:                         # adapter map (ConfigMap files or directories)
//!   paths: [/etc/bbr/adapters]
//! model_rewrites:                   # InferenceModelRewrite files or directories
//!   paths: [/etc/bbr/rewrites]      # (--model-rewrites PATH replaces them)
//!   sticky_header: x-session-id     # same value, same target (--model-rewrite-sticky-header)
//! proxy:
//!   x_forwarded_for: true
//!   connect_timeout: 5s
//! ```
//!
//! Durations and sizes need a unit (see [`parse_duration`] and
//! [`parse_byte_size`]): a bare number is an error. Policies take the
//! names of `bbr_core::contract` (`MissingModel`, `ClientHeaders`) and
//! `bbr_core::DuplicateKeys`.
//!
//! Relative paths (`httproutes`, `adapters.paths`, `model_rewrites.paths`,
//! `bbr.spool_dir`) are resolved against the directory of the config file.
//!
//! # Model rewrites
//!
//! `model_rewrites.paths` (or `--model-rewrites PATH`, repeatable, which
//! replaces the file's list) names YAML files of upstream
//! `InferenceModelRewrite` documents, or directories of them such as a
//! mounted ConfigMap, read like the adapter map (`bbr_adapters::rewrite`)
//! and re-read every 10 seconds, a new set swapped in only when all of it
//! loads. The first matching rule wins; its weights pick a target per
//! request, at random, or by a hash of the `sticky_header` request header
//! (same value, same target). The routing layer then sends the model
//! server the client's body with only the `model` token replaced,
//! `content-length` corrected, routes on the target
//! (`x-gateway-model-name`, and the base model from it) and passes the
//! requested name in `x-gateway-requested-model-name`. A compressed body
//! or a form field is routed as requested. Responses are passed on as the
//! model server wrote them: their `model` names the target that served
//! them, as the upstream gateways do. The embedded reference scenario has
//! one rule (`food-review` split 90/10 over `food-review-1` and
//! `food-review-2`, [`SCENARIO_REWRITES_YAML`]); `--model-rewrites`
//! replaces it.
//!
//! Kubernetes manifests can be reused as they are: every `HTTPRoute` document
//! of the files named in `httproutes` (or passed with `--httproutes`) becomes
//! routes, and each `backendRef` (an `InferencePool` or a `Service`) names a
//! pool of the `pools` table. See [`routes_from_httproutes`].

mod error;
mod file;
mod httproute;
mod route;
mod units;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bbr_core::contract::{BASE_MODEL_HEADER, MODEL_HEADER};

pub use error::{ConfigError, Unsupported};
pub use file::{
    BbrOptions, DEFAULT_CONNECT_TIMEOUT, PoolConfig, PoolModels, ProxyOptions, RewriteOptions,
    SimulateConfig,
};
pub use httproute::routes_from_httproutes;
pub use route::{DEFAULT_ROUTE_TIMEOUT, HeaderMatch, PathMatch, RouteConfig, RouteMatch};
pub use units::{ByteSizeError, parse_byte_size, parse_duration, parse_header_name};

use file::{RawConfig, RawRoute};

/// The embedded default configuration: the reference scenario's two pools
/// of simulated model servers.
pub const SCENARIO_CONFIG_YAML: &str = include_str!("../../config/scenario.yaml");
/// The reference scenario's HTTPRoutes, as applied to a cluster
/// (`httproute_bbr_lora.yaml`).
pub const SCENARIO_HTTPROUTES_YAML: &str = include_str!("../../config/httproute_bbr_lora.yaml");
/// The reference scenario's model rewrite: `food-review` split 90/10 over
/// `food-review-1` and `food-review-2` (`model-rewrites.yaml`, the same
/// object as `deploy/scenario/rewrites/`).
pub const SCENARIO_REWRITES_YAML: &str = include_str!("../../config/model-rewrites.yaml");

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
    /// Model rewrite rules.
    pub model_rewrites: RewriteOptions,
    /// Proxy options.
    pub proxy: ProxyOptions,
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
            pools: raw.pools,
            routes,
            bbr: raw.bbr.options(base_dir),
            adapter_paths: raw
                .adapters
                .paths
                .into_iter()
                .map(|p| base_dir.join(p))
                .collect(),
            model_rewrites: RewriteOptions {
                paths: raw
                    .model_rewrites
                    .paths
                    .into_iter()
                    .map(|p| base_dir.join(p))
                    .collect(),
                embedded: None,
                sticky_header: raw.model_rewrites.sticky_header,
            },
            proxy: raw.proxy.options(),
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

    /// The embedded reference scenario: two pools of simulated servers, the
    /// scenario's HTTPRoutes and its model rewrite.
    pub fn scenario() -> Self {
        let mut config = Self::from_yaml_str(SCENARIO_CONFIG_YAML, Path::new("."))
            .expect("the embedded scenario config is valid (tested)");
        config.model_rewrites.embedded = Some(SCENARIO_REWRITES_YAML.to_owned());
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

    /// Replaces the rewrite rules' source with these files or directories
    /// (`--model-rewrites`); an empty list keeps the configured source.
    pub fn set_model_rewrites(&mut self, paths: Vec<PathBuf>) {
        if !paths.is_empty() {
            self.model_rewrites.paths = paths;
            self.model_rewrites.embedded = None;
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
            let name = || pool.name.clone();
            if !seen.insert(pool.name.as_str()) {
                return Err(ConfigError::DuplicatePool { pool: name() });
            }
            match (&pool.simulate, pool.endpoints.is_empty()) {
                (Some(_), false) => return Err(ConfigError::EndpointsAndSimulate { pool: name() }),
                (None, true) => return Err(ConfigError::NoEndpoints { pool: name() }),
                (Some(sim), true) if sim.replicas == 0 => {
                    return Err(ConfigError::NoReplicas { pool: name() });
                }
                _ => {}
            }
            for endpoint in &pool.endpoints {
                crate::pools::parse_endpoint(endpoint).map_err(|source| ConfigError::Endpoint {
                    pool: name(),
                    endpoint: endpoint.clone(),
                    source,
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

fn route_from_raw(raw: RawRoute, index: usize) -> Result<RouteConfig, ConfigError> {
    let name = raw.name.unwrap_or_else(|| format!("route-{index}"));
    let mut matches = Vec::new();
    for m in raw.matches {
        let path = match (m.path_prefix, m.path_exact) {
            (Some(_), Some(_)) => return Err(ConfigError::ExclusivePaths { route: name }),
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
        matches.push(RouteMatch::any());
    }
    Ok(RouteConfig {
        name,
        pool: raw.pool,
        matches,
        timeout: raw.timeout.unwrap_or(DEFAULT_ROUTE_TIMEOUT),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(pools[0].1.lora_modules, ["food-review-1", "food-review-2"]);
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
            [
                "meta-llama/Llama-3.1-8B-Instruct",
                "food-review-1",
                "food-review-2"
            ]
        );
        let rewrites = bbr_adapters::rewrite::RewriteRules::from_yaml_str(
            config.model_rewrites.embedded.as_deref().unwrap(),
            "embedded",
        )
        .unwrap();
        let rule = rewrites.find("food-review").unwrap();
        let targets: Vec<_> = rule
            .targets()
            .iter()
            .map(|t| (t.model(), t.weight()))
            .collect();
        assert_eq!(targets, [("food-review-1", 90), ("food-review-2", 10)]);
        assert_eq!(rule.name(), "food-review/0");
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
  max_body_bytes: 2097152B
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
        assert_eq!(config.bbr.duplicate_keys, bbr_core::DuplicateKeys::LastWins);
        assert_eq!(
            config.bbr.missing_model,
            bbr_core::contract::MissingModel::Reject
        );
        assert_eq!(
            config.bbr.client_headers,
            bbr_core::contract::ClientHeaders::Reject
        );
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
            Err(ConfigError::NoEndpoints { pool }) if pool == "a"
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
            Err(ConfigError::Yaml(_))
        ));
        let bare_number =
            "pools: [{name: a, endpoints: [127.0.0.1:1]}]\nroutes: [{pool: a, timeout: '10'}]";
        let error = Config::from_yaml_str(bare_number, Path::new(".")).unwrap_err();
        let ConfigError::Yaml(yaml) = &error else {
            panic!("{error:?}")
        };
        assert!(yaml.to_string().contains("time unit needed"), "{yaml}");
        for (field, value) in [
            ("missing_model", "drop"),
            ("client_headers", "keep"),
            ("duplicate_keys", "any"),
            ("max_body_bytes", "1048576"),
        ] {
            let text = format!("bbr: {{{field}: '{value}'}}");
            assert!(
                matches!(
                    Config::from_yaml_str(&text, Path::new(".")),
                    Err(ConfigError::Yaml(_))
                ),
                "{field}: {value}"
            );
        }
        let bad_endpoint = "pools: [{name: a, endpoints: ['https://x:1']}]";
        assert!(matches!(
            Config::from_yaml_str(bad_endpoint, Path::new(".")),
            Err(ConfigError::Endpoint {
                source: crate::pools::EndpointError::Scheme,
                ..
            })
        ));
    }
}
