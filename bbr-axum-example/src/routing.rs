//! The route table: header and path matches that pick a pool.
//!
//! Precedence follows the Gateway API: among all matches that hold, an
//! `Exact` path beats a prefix, a longer prefix beats a shorter one, more
//! header conditions beat fewer; remaining ties go to the route listed first.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use bbr_core::contract::{BASE_MODEL_HEADER, MODEL_HEADER};

use crate::config::{Config, PathMatch, RouteMatch};
use crate::pools::Pool;

/// A route that matched: where to send the request and for how long.
#[derive(Debug)]
pub struct Route {
    /// The route's name.
    pub name: String,
    /// The target pool.
    pub pool: Arc<Pool>,
    /// The request timeout.
    pub timeout: Duration,
}

#[derive(Debug)]
struct CompiledMatch {
    condition: RouteMatch,
    route: Arc<Route>,
    /// Higher wins: (exact path, path length, header count).
    rank: (bool, usize, usize),
}

/// All routes, ready to match requests.
#[derive(Debug)]
pub struct RouteTable {
    matches: Vec<CompiledMatch>,
    pools: Vec<Arc<Pool>>,
}

impl RouteTable {
    /// Builds the table from a validated config whose pools have endpoints
    /// (`endpoints` gives the endpoints of pools to fill, e.g. started
    /// simulators).
    pub fn new(
        config: &Config,
        endpoints: &HashMap<String, Vec<String>>,
    ) -> Result<Self, crate::ConfigError> {
        let mut pools = HashMap::new();
        let mut ordered = Vec::new();
        for pool in &config.pools {
            let list = endpoints.get(&pool.name).unwrap_or(&pool.endpoints);
            let built = Pool::new(pool.name.clone(), list).map_err(|source| {
                crate::ConfigError::Endpoint {
                    pool: pool.name.clone(),
                    endpoint: String::new(),
                    source,
                }
            })?;
            let built = Arc::new(built);
            pools.insert(pool.name.clone(), Arc::clone(&built));
            ordered.push(built);
        }
        let mut matches = Vec::new();
        for route in &config.routes {
            let pool = pools
                .get(&route.pool)
                .ok_or_else(|| crate::ConfigError::UnknownPool {
                    route: route.name.clone(),
                    pool: route.pool.clone(),
                })?;
            let compiled = Arc::new(Route {
                name: route.name.clone(),
                pool: Arc::clone(pool),
                timeout: route.timeout,
            });
            for condition in &route.matches {
                let rank = match &condition.path {
                    PathMatch::Exact(p) => (true, p.len(), condition.headers.len()),
                    PathMatch::Prefix(p) => (
                        false,
                        p.trim_end_matches('/').len(),
                        condition.headers.len(),
                    ),
                };
                matches.push(CompiledMatch {
                    condition: condition.clone(),
                    route: Arc::clone(&compiled),
                    rank,
                });
            }
        }
        Ok(Self {
            matches,
            pools: ordered,
        })
    }

    /// The route for a request, if any.
    pub fn find(&self, path: &str, headers: &HeaderMap) -> Option<&Arc<Route>> {
        self.find_labeled(path, headers).map(|(route, _)| route)
    }

    /// The route for a request and a metrics label for it: the model (or
    /// base model) value the match required, `""` when the match did not
    /// name one. Labels therefore only take configured values.
    pub fn find_labeled(&self, path: &str, headers: &HeaderMap) -> Option<(&Arc<Route>, &str)> {
        let mut best: Option<&CompiledMatch> = None;
        for candidate in &self.matches {
            if !candidate.condition.path.matches(path) {
                continue;
            }
            let headers_hold = candidate.condition.headers.iter().all(|h| {
                headers
                    .get_all(h.name.as_str())
                    .iter()
                    .any(|v| v.as_bytes() == h.value.as_bytes())
            });
            if !headers_hold {
                continue;
            }
            if best.is_none_or(|b| candidate.rank > b.rank) {
                best = Some(candidate);
            }
        }
        best.map(|m| {
            let label = m
                .condition
                .headers
                .iter()
                .find(|h| h.name == MODEL_HEADER)
                .or_else(|| {
                    m.condition
                        .headers
                        .iter()
                        .find(|h| h.name == BASE_MODEL_HEADER)
                })
                .map_or("", |h| h.value.as_str());
            (&m.route, label)
        })
    }

    /// The pools, in config order.
    pub fn pools(&self) -> &[Arc<Pool>] {
        &self.pools
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn scenario_table() -> RouteTable {
        let config = Config::scenario();
        let endpoints = HashMap::from([
            (
                "vllm-llama3-8b-instruct".to_owned(),
                vec!["127.0.0.1:1".to_owned(); 3],
            ),
            (
                "vllm-deepseek-r1".to_owned(),
                vec!["127.0.0.1:2".to_owned()],
            ),
        ]);
        RouteTable::new(&config, &endpoints).unwrap()
    }

    #[test]
    fn scenario_models_pick_their_pool() {
        let table = scenario_table();
        for (model, pool) in [
            (
                "meta-llama/Llama-3.1-8B-Instruct",
                "vllm-llama3-8b-instruct",
            ),
            ("food-review-1", "vllm-llama3-8b-instruct"),
            ("deepseek/vllm-deepseek-r1", "vllm-deepseek-r1"),
            ("ski-resorts", "vllm-deepseek-r1"),
            ("movie-critique", "vllm-deepseek-r1"),
        ] {
            let route = table
                .find("/v1/chat/completions", &headers(&[(MODEL_HEADER, model)]))
                .unwrap();
            assert_eq!(route.pool.name(), pool, "{model}");
        }
        assert!(
            table
                .find("/v1/completions", &headers(&[(MODEL_HEADER, "foo")]))
                .is_none()
        );
        assert!(
            table
                .find(
                    "/v1/completions",
                    &headers(&[(MODEL_HEADER, "Food-Review-1")])
                )
                .is_none()
        );
        assert!(table.find("/v1/completions", &HeaderMap::new()).is_none());
    }

    #[test]
    fn more_specific_match_wins() {
        let text = r#"
pools:
  - {name: any, endpoints: [127.0.0.1:1]}
  - {name: v1, endpoints: [127.0.0.1:2]}
  - {name: exact, endpoints: [127.0.0.1:3]}
  - {name: model, endpoints: [127.0.0.1:4]}
routes:
  - {pool: any}
  - {pool: v1, matches: [{path_prefix: /v1}]}
  - {pool: exact, matches: [{path_exact: /v1/completions}]}
  - {pool: model, matches: [{path_prefix: /v1, model: m}]}
"#;
        let config = Config::from_yaml_str(text, Path::new(".")).unwrap();
        let table = RouteTable::new(&config, &HashMap::new()).unwrap();
        let pool = |path: &str, h: &[(&str, &str)]| {
            table
                .find(path, &headers(h))
                .unwrap()
                .pool
                .name()
                .to_owned()
        };
        assert_eq!(pool("/other", &[]), "any");
        assert_eq!(pool("/v1/chat/completions", &[]), "v1");
        assert_eq!(pool("/v1/completions", &[]), "exact");
        assert_eq!(
            pool("/v1/chat/completions", &[(MODEL_HEADER, "m")]),
            "model"
        );
        assert_eq!(pool("/v1/completions", &[(MODEL_HEADER, "m")]), "exact");
    }
}
