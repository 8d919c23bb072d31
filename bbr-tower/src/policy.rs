//! Policies, and the one place where errors become HTTP responses.
//!
//! | situation | status | `code` |
//! | --- | --- | --- |
//! | not JSON, truncated, top-level not an object, too deep | 400 | `invalid_json` |
//! | model not a string, empty, control characters, too long, duplicate | 400 | `invalid_model` |
//! | no decision within the scan limit, body over the body limit | 413 | `request_too_large` |
//! | valid object without `model`, with [`OnMissing::Reject`] | 400 | `missing_model` |
//! | client-sent routing header, with [`ClientHeaders::Reject`] | 400 | `routing_header_not_allowed` |
//! | the body could not be read before the decision | 400 | `invalid_json` |
//!
//! Bodies are OpenAI-shaped JSON with `content-type: application/json`:
//! `{"error":{"message":"...","type":"invalid_request_error","param":"model","code":"..."}}`.
//! Messages say what was wrong and at which byte offset; they never echo the
//! body. For a refused routing header, `param` is the header name.
//!
//! # Example
//!
//! ```
//! use bbr_tower::{Limits, ModelRoutingLayer, ReplayBody};
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let layer = ModelRoutingLayer::new().limits(Limits::new().with_max_scan_bytes(16));
//! let service = layer.layer(service_fn(|_: Request<ReplayBody<Full<Bytes>>>| async {
//!     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::new())))
//! }));
//! let body = r#"{"messages":[{"role":"user","content":"hi"}],"model":"m"}"#;
//! let response = service.oneshot(Request::post("/").body(Full::new(Bytes::from(body)))?).await?;
//! assert_eq!(response.status(), 413);
//! assert_eq!(response.headers()["content-type"], "application/json");
//! let json: serde_json::Value = serde_json::from_slice(&response.into_body().collect().await?.to_bytes())?;
//! assert_eq!(json["error"]["code"], "request_too_large");
//! assert_eq!(json["error"]["param"], "model");
//! # Ok(())
//! # }
//! ```

use bbr_core::{ErrorClass, ExtractError};
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::ErrorBody;
use crate::error::{BodyViolation, Error};

/// What to do with a valid JSON object that has no top-level `model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnMissing {
    /// Forward the request without the model header (the default, as upstream).
    #[default]
    PassThrough,
    /// Answer 400 with code `missing_model`.
    Reject,
}

/// What to do with a routing header (`X-Gateway-Model-Name`,
/// `X-Gateway-Base-Model-Name`) sent by the client. Either way, a client can
/// never pick the route by sending the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ClientHeaders {
    /// Remove it before anything else (the default); the layer sets its own.
    #[default]
    Strip,
    /// Answer 400 with code `routing_header_not_allowed`.
    Reject,
}

/// The HTTP status for `error`.
pub fn status(error: &Error) -> StatusCode {
    match error {
        Error::Extract(error) => extract_status(error),
        Error::MissingModel
        | Error::ClientRoutingHeader(_)
        | Error::Body { .. }
        | Error::HeaderValue(_) => StatusCode::BAD_REQUEST,
    }
}

/// The OpenAI-style error `code` for `error`.
pub fn code(error: &Error) -> &'static str {
    match error {
        Error::Extract(error) => error.kind().class().code(),
        Error::MissingModel => "missing_model",
        Error::ClientRoutingHeader(_) => "routing_header_not_allowed",
        Error::Body { .. } => ErrorClass::InvalidJson.code(),
        Error::HeaderValue(_) => ErrorClass::InvalidModel.code(),
    }
}

fn extract_status(error: &ExtractError) -> StatusCode {
    match error.kind().class() {
        ErrorClass::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The contract's response for `error`: status, OpenAI-shaped JSON body,
/// `content-type: application/json`.
pub fn error_response(error: &Error) -> Response<ErrorBody> {
    let param = match error {
        Error::ClientRoutingHeader(name) => name.as_str(),
        _ => "model",
    };
    let message = match error {
        // The body's own error may say anything; keep only what we know.
        Error::Body { offset, .. } => {
            format!("the request body could not be read after byte {offset}")
        }
        other => other.to_string(),
    };
    json_response(status(error), code(error), param, &message)
}

impl BodyViolation {
    /// The contract's 400 or 413 response for this violation, for an inner
    /// service whose response has not started yet.
    pub fn to_response(&self) -> Response<ErrorBody> {
        error_response(&Error::Extract(self.error().clone()))
    }

    /// The HTTP status of [`to_response`](Self::to_response) (400 or 413).
    pub fn status(&self) -> StatusCode {
        extract_status(self.error())
    }
}

fn json_response(
    status: StatusCode,
    code: &str,
    param: &str,
    message: &str,
) -> Response<ErrorBody> {
    let body = serde_json::json!({
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    });
    let body = Bytes::from(body.to_string());
    let mut response = Response::new(ErrorBody::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
