//! Typed errors, and the one place where gateway errors become HTTP
//! responses ([`GatewayError::into_response`]).

use std::path::PathBuf;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// YAML syntax or an unknown field.
    #[error("invalid YAML")]
    Yaml(#[source] serde_norway::Error),
    /// A route names a pool that the pools table lacks.
    #[error("route `{route}` sends to pool `{pool}`, which is not in the pools table")]
    UnknownPool {
        /// The route.
        route: String,
        /// The missing pool.
        pool: String,
    },
    /// An HTTPRoute feature this gateway does not implement.
    #[error("HTTPRoute rule `{route}`: unsupported {what}")]
    Unsupported {
        /// The rule (`<name>/<index>`).
        route: String,
        /// The feature.
        what: String,
    },
    /// Any other inconsistency, described.
    #[error("{0}")]
    Invalid(String),
    /// The adapter map could not be loaded.
    #[error("adapter map")]
    Adapters(#[source] bbr_adapters::LoadError),
}

/// Why the gateway answered a request itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// No route matches the request's model (or, without a model, its path).
    #[error("no route for model `{model}`")]
    NoRoute {
        /// The `X-Gateway-Model-Name` value, empty when the body had none.
        model: String,
    },
    /// The pool's endpoint could not be reached (connect error, reset
    /// before the response headers).
    #[error("upstream `{pool}` unreachable")]
    UpstreamUnreachable {
        /// The pool.
        pool: String,
        /// Why.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The upstream did not answer within the route's timeout.
    #[error("upstream `{pool}` did not answer within {timeout:?}")]
    UpstreamTimeout {
        /// The pool.
        pool: String,
        /// The route timeout.
        timeout: Duration,
    },
    /// The request body failed while it streamed to the upstream (the
    /// client went away or sent a broken body) and it is not a violation
    /// of the routing contract.
    #[error("request body could not be read")]
    RequestBody(#[source] axum::Error),
}

impl GatewayError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::NoRoute { .. } => StatusCode::NOT_FOUND,
            GatewayError::UpstreamUnreachable { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::RequestBody(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The OpenAI-shaped `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::NoRoute { .. } => "model_not_found",
            GatewayError::UpstreamUnreachable { .. } => "upstream_unreachable",
            GatewayError::UpstreamTimeout { .. } => "upstream_timeout",
            GatewayError::RequestBody(_) => "invalid_request_body",
        }
    }

    fn message(&self) -> String {
        match self {
            GatewayError::NoRoute { model } if model.is_empty() => {
                "The request body names no model and no route serves it.".to_owned()
            }
            GatewayError::NoRoute { model } => {
                format!("The model `{}` does not exist.", excerpt(model))
            }
            GatewayError::UpstreamUnreachable { pool, .. } => {
                format!("The model server pool `{pool}` could not be reached.")
            }
            GatewayError::UpstreamTimeout { pool, timeout } => {
                format!(
                    "The model server pool `{pool}` did not answer within {} ms.",
                    timeout.as_millis()
                )
            }
            GatewayError::RequestBody(_) => "The request body could not be read.".to_owned(),
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let (kind, param) = match self {
            GatewayError::NoRoute { .. } | GatewayError::RequestBody(_) => {
                ("invalid_request_error", "model")
            }
            _ => ("server_error", ""),
        };
        let error = serde_json::json!({
            "message": self.message(),
            "type": kind,
            "param": if param.is_empty() { serde_json::Value::Null } else { param.into() },
            "code": self.code(),
        });
        json_response(self.status(), &serde_json::json!({ "error": error }))
    }
}

/// A JSON response with `content-type: application/json`.
pub(crate) fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut response = (status, value.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// At most 64 characters of `text`, for messages (never the whole input).
fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().take(64).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn no_route_is_openai_shaped_404() {
        let response = GatewayError::NoRoute {
            model: "foo".into(),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = body_json(response).await;
        assert_eq!(
            body,
            serde_json::json!({"error": {
                "message": "The model `foo` does not exist.",
                "type": "invalid_request_error", "param": "model", "code": "model_not_found"}})
        );
    }

    #[tokio::test]
    async fn timeout_is_504_with_null_param() {
        let err = GatewayError::UpstreamTimeout {
            pool: "p".into(),
            timeout: Duration::from_millis(5),
        };
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        let body = body_json(response).await;
        assert_eq!(body["error"]["code"], "upstream_timeout");
        assert_eq!(body["error"]["type"], "server_error");
        assert!(body["error"]["param"].is_null());
    }

    #[test]
    fn long_models_are_cut_in_messages() {
        let long = "x".repeat(300);
        let message = GatewayError::NoRoute { model: long }.message();
        assert!(message.len() < 100, "{message}");
    }
}
