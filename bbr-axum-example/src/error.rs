//! The gateway's own errors, and the one place where an error becomes an
//! HTTP response. Every body and message comes from `bbr_core::contract`:
//! [`Refusal`] for the routing layer's refusals, [`ApiError`] for the
//! gateway's own answers (no route, upstream unreachable or late); this
//! module only wraps them into axum responses.

use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bbr_core::contract::{ApiError, ErrorType, JSON_CONTENT_TYPE, Refusal};
use http::{HeaderValue, StatusCode, header};

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
    /// The request was refused under the routing contract: by the layer
    /// before routing, or while the body streamed to the upstream (an
    /// invalid tail, a duplicate `model`, the body limit, a failed upload).
    #[error(transparent)]
    Refused(#[from] Refusal),
}

impl GatewayError {
    /// The contract's error answer for this error.
    ///
    /// ```
    /// use bbr_axum_example::GatewayError;
    /// let api = GatewayError::NoRoute { model: "foo".into() }.api_error();
    /// assert_eq!((api.status(), api.code(), api.param()), (404, "model_not_found", Some("model")));
    /// ```
    pub fn api_error(&self) -> ApiError {
        match self {
            GatewayError::NoRoute { model } if model.is_empty() => ApiError::new(
                404,
                ErrorType::InvalidRequest,
                "model_not_found",
                "The request body names no model and no route serves it.",
            )
            .with_param("model"),
            GatewayError::NoRoute { model } => ApiError::new(
                404,
                ErrorType::InvalidRequest,
                "model_not_found",
                format!("The model `{}` does not exist.", excerpt(model)),
            )
            .with_param("model"),
            GatewayError::UpstreamUnreachable { pool, .. } => ApiError::new(
                502,
                ErrorType::Server,
                "upstream_unreachable",
                format!("The model server pool `{pool}` could not be reached."),
            ),
            GatewayError::UpstreamTimeout { pool, timeout } => ApiError::new(
                504,
                ErrorType::Server,
                "upstream_timeout",
                format!(
                    "The model server pool `{pool}` did not answer within {} ms.",
                    timeout.as_millis()
                ),
            ),
            GatewayError::Refused(refusal) => refusal.api_error(),
        }
    }

    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        status(self.api_error().status())
    }

    fn retry_after(&self) -> Option<u32> {
        match self {
            GatewayError::Refused(refusal) => refusal.retry_after(),
            _ => None,
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        api_response(&self.api_error(), self.retry_after())
    }
}

/// `error` as a response: its status, `content-type: application/json`,
/// its JSON body, and `Retry-After` when given.
pub fn api_response(error: &ApiError, retry_after: Option<u32>) -> Response {
    let mut response = Response::new(Body::from(error.json_body()));
    *response.status_mut() = status(error.status());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(JSON_CONTENT_TYPE),
    );
    if let Some(seconds) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
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

    async fn body_bytes(response: Response) -> bytes::Bytes {
        axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn no_route_is_openai_shaped_404() {
        let response = GatewayError::NoRoute {
            model: "foo".into(),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body: serde_json::Value = serde_json::from_slice(&body_bytes(response).await).unwrap();
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
        let body: serde_json::Value = serde_json::from_slice(&body_bytes(response).await).unwrap();
        assert_eq!(body["error"]["code"], "upstream_timeout");
        assert_eq!(body["error"]["type"], "server_error");
        assert!(body["error"]["param"].is_null());
    }

    #[tokio::test]
    async fn refusals_answer_the_contract_bytes() {
        for refusal in [
            Refusal::BodyRead { offset: 7 },
            Refusal::Overloaded,
            Refusal::MissingModel,
        ] {
            let response = GatewayError::from(refusal.clone()).into_response();
            assert_eq!(response.status().as_u16(), refusal.status());
            assert_eq!(
                response.headers().get(header::RETRY_AFTER).map(|v| v
                    .to_str()
                    .unwrap()
                    .parse::<u32>()
                    .unwrap()),
                refusal.retry_after()
            );
            assert_eq!(body_bytes(response).await, refusal.json_body());
        }
    }

    #[test]
    fn long_models_are_cut_in_messages() {
        let long = "x".repeat(300);
        let api = GatewayError::NoRoute { model: long }.api_error();
        assert!(api.message().len() < 100, "{}", api.message());
    }
}
