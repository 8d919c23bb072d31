//! Routes as the gateway matches them, whichever file they came from.

use std::fmt;
use std::time::Duration;

/// Default per-route request timeout (as the scenario's HTTPRoutes set it).
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(300);

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

impl RouteMatch {
    /// Matches every request (`/` prefix, no headers).
    pub fn any() -> Self {
        Self {
            path: PathMatch::Prefix("/".to_owned()),
            headers: Vec::new(),
        }
    }
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
    ///
    /// ```
    /// use bbr_axum_example::config::PathMatch;
    /// assert!(PathMatch::Prefix("/v1".into()).matches("/v1/completions"));
    /// assert!(!PathMatch::Prefix("/v1".into()).matches("/v1x"));
    /// ```
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

impl fmt::Display for PathMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathMatch::Prefix(p) => write!(f, "prefix {p}"),
            PathMatch::Exact(p) => write!(f, "exact {p}"),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
