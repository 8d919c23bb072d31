//! Gateway API `HTTPRoute` manifests translated into routes.

use serde::Deserialize;

use super::error::{ConfigError, Unsupported};
use super::route::{DEFAULT_ROUTE_TIMEOUT, HeaderMatch, PathMatch, RouteConfig, RouteMatch};
use super::units::parse_duration;

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
            routes.push(route_from_rule(rule, format!("{route_name}/{index}"))?);
        }
    }
    Ok(routes)
}

fn route_from_rule(rule: HttpRouteRule, name: String) -> Result<RouteConfig, ConfigError> {
    let unsupported = |feature: Unsupported| ConfigError::Unsupported {
        route: name.clone(),
        feature,
    };
    if !rule.filters.is_empty() {
        return Err(unsupported(Unsupported::Filters));
    }
    let pool = match rule.backend_refs.as_slice() {
        [one] => {
            if let Some(kind) = one.kind.as_deref()
                && kind != "InferencePool"
                && kind != "Service"
            {
                return Err(unsupported(Unsupported::BackendKind(kind.to_owned())));
            }
            if one.weight == Some(0) {
                return Err(unsupported(Unsupported::ZeroWeight));
            }
            one.name.clone()
        }
        [] => return Err(unsupported(Unsupported::NoBackendRefs)),
        _ => return Err(unsupported(Unsupported::SeveralBackendRefs)),
    };
    let timeout = match rule.timeouts.and_then(|t| t.request) {
        None => DEFAULT_ROUTE_TIMEOUT,
        Some(value) => parse_duration(&value).map_err(|source| ConfigError::Timeout {
            route: name.clone(),
            value,
            source,
        })?,
    };
    let mut matches = Vec::new();
    for m in rule.matches {
        if m.method.is_some() {
            return Err(unsupported(Unsupported::Method));
        }
        if !m.query_params.is_empty() {
            return Err(unsupported(Unsupported::QueryParams));
        }
        let path = match m.path {
            None => PathMatch::Prefix("/".to_owned()),
            Some(p) => {
                let value = p.value.unwrap_or_else(|| "/".to_owned());
                match p.kind.as_deref().unwrap_or("PathPrefix") {
                    "PathPrefix" => PathMatch::Prefix(value),
                    "Exact" => PathMatch::Exact(value),
                    other => return Err(unsupported(Unsupported::PathType(other.to_owned()))),
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
                other => return Err(unsupported(Unsupported::HeaderType(other.to_owned()))),
            }
        }
        matches.push(RouteMatch { path, headers });
    }
    if matches.is_empty() {
        matches.push(RouteMatch::any());
    }
    Ok(RouteConfig {
        name,
        pool,
        matches,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::SCENARIO_HTTPROUTES_YAML;

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
        assert_eq!(routes[0].matches, [RouteMatch::any()]);
        let regex = "kind: HTTPRoute\nmetadata: {name: r}\nspec:\n  rules:\n  - backendRefs: [{name: p}]\n    matches:\n    - headers: [{type: RegularExpression, name: x, value: y}]\n";
        assert!(matches!(
            routes_from_httproutes(regex),
            Err(ConfigError::Unsupported { feature: Unsupported::HeaderType(kind), .. }) if kind == "RegularExpression"
        ));
        let two = "kind: HTTPRoute\nmetadata: {name: r}\nspec:\n  rules:\n  - backendRefs: [{name: p}, {name: q}]\n";
        assert!(matches!(
            routes_from_httproutes(two),
            Err(ConfigError::Unsupported {
                feature: Unsupported::SeveralBackendRefs,
                ..
            })
        ));
        let timeout = "kind: HTTPRoute\nmetadata: {name: r}\nspec:\n  rules:\n  - backendRefs: [{name: p}]\n    timeouts: {request: 1m30s}\n";
        assert_eq!(
            routes_from_httproutes(timeout).unwrap()[0].timeout,
            Duration::from_secs(90)
        );
        let bare = "kind: HTTPRoute\nmetadata: {name: r}\nspec:\n  rules:\n  - backendRefs: [{name: p}]\n    timeouts: {request: '10'}\n";
        assert!(matches!(
            routes_from_httproutes(bare),
            Err(ConfigError::Timeout { value, .. }) if value == "10"
        ));
    }
}
