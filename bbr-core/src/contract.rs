//! The routing contract every adapter shares, written once: the routing
//! header names, the missing-model and client-header policies, and the
//! answer to every refused request (status, OpenAI-shaped JSON body,
//! message).
//!
//! The adapters (the tower layer, the ext_proc server, the example gateway)
//! only wrap these in their own response types; none of them builds an
//! error body or a message of its own.
//!
//! | situation | status | `type` | `code` | `param` |
//! | --- | --- | --- | --- | --- |
//! | not JSON, truncated, top level not an object, too deep | 400 | `invalid_request_error` | `invalid_json` | `model` |
//! | model not a string, empty, control characters, too long, duplicate | 400 | `invalid_request_error` | `invalid_model` | `model` |
//! | no decision within the scan limit, body over the body limit | 413 | `invalid_request_error` | `request_too_large` | `model` |
//! | valid object without `model`, [`MissingModel::Reject`] | 400 | `invalid_request_error` | `missing_model` | `model` |
//! | client-sent routing header, [`ClientHeaders::Reject`] | 400 | `invalid_request_error` | `routing_header_not_allowed` | the header name |
//! | the body stream failed before the decision (client reset, half-closed) | 400 | `invalid_request_error` | `invalid_request_body` | `model` |
//! | no decision within the decision deadline | 408 | `invalid_request_error` | `request_timeout` | `model` |
//! | bytes held across all requests over the global cap | 503 (`Retry-After`) | `server_error` | `overloaded` | — |
//!
//! ```
//! use bbr_core::contract::Refusal;
//! use bbr_core::{ErrorKind, ExtractError};
//!
//! let refusal = Refusal::from(ExtractError::new(ErrorKind::EmptyModel, 9));
//! assert_eq!(refusal.status(), 400);
//! assert_eq!(refusal.code(), "invalid_model");
//! assert_eq!(
//!     String::from_utf8(refusal.json_body()).unwrap(),
//!     r#"{"error":{"message":"model is empty at byte 9","type":"invalid_request_error","param":"model","code":"invalid_model"}}"#
//! );
//! ```

use std::time::Duration;

use crate::{ErrorClass, ExtractError};

/// The header carrying the model name, in the lower case HTTP/2 requires.
pub const MODEL_HEADER: &str = "x-gateway-model-name";

/// The header carrying the base model of an adapter (from the adapter map).
pub const BASE_MODEL_HEADER: &str = "x-gateway-base-model-name";

/// The header carrying the model name the client asked for, when a model
/// rewrite rule may apply (for logs and metrics; routing uses
/// [`MODEL_HEADER`], the rewritten name). Adapters with rewrites configured
/// set it on every request with a model and never pass a client's own
/// value on.
///
/// ```
/// assert_eq!(bbr_core::contract::REQUESTED_MODEL_HEADER, "x-gateway-requested-model-name");
/// ```
pub const REQUESTED_MODEL_HEADER: &str = "x-gateway-requested-model-name";

/// Every header the gateway sets for routing; a client never sets them.
pub const ROUTING_HEADERS: [&str; 2] = [MODEL_HEADER, BASE_MODEL_HEADER];

/// The `content-type` of every error body.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// Default decision deadline of every adapter: the time from the first body
/// byte to the decision (past it: 408 `request_timeout`). A slow upload
/// otherwise holds its connection and its buffered prefix forever.
///
/// ```
/// assert_eq!(bbr_core::contract::DEFAULT_DECISION_DEADLINE.as_secs(), 30);
/// ```
pub const DEFAULT_DECISION_DEADLINE: Duration = Duration::from_secs(30);

/// Default global cap of every adapter on the body bytes held before the
/// decision, summed over all in-flight requests (past it: 503 `overloaded`
/// with `Retry-After`): 512 MiB, sixteen requests each at the default
/// 32 MiB scan limit, and half the chart's default 1 GiB memory limit.
///
/// ```
/// use bbr_core::{Limits, contract::DEFAULT_MAX_HELD_BYTES};
/// assert_eq!(DEFAULT_MAX_HELD_BYTES, 16 * Limits::new().max_scan_bytes() as u64);
/// ```
pub const DEFAULT_MAX_HELD_BYTES: u64 = 512 << 20;

/// The routing header that `name` denotes, if any.
///
/// Case-insensitive, and `_` counts as `-`: CGI- and WSGI-style upstreams
/// map `X_Gateway_Model_Name` onto the same variable as
/// `X-Gateway-Model-Name`, so a client must not be able to smuggle the
/// header in with underscores either.
///
/// ```
/// use bbr_core::contract::{routing_header, MODEL_HEADER};
/// assert_eq!(routing_header(b"X-Gateway-Model-Name"), Some(MODEL_HEADER));
/// assert_eq!(routing_header(b"x_gateway_model_name"), Some(MODEL_HEADER));
/// assert_eq!(routing_header(b"x-gateway-model"), None);
/// ```
pub fn routing_header(name: &[u8]) -> Option<&'static str> {
    ROUTING_HEADERS.into_iter().find(|header| {
        header.len() == name.len()
            && header.bytes().zip(name).all(|(want, &got)| {
                let got = got.to_ascii_lowercase();
                got == want || (want == b'-' && got == b'_')
            })
    })
}

/// A policy name given to `FromStr` is not one of the policy's values.
///
/// ```
/// use bbr_core::contract::MissingModel;
/// let err = "drop".parse::<MissingModel>().unwrap_err();
/// assert_eq!(err.to_string(), "unknown missing-model policy `drop` (expected forward or reject)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {policy} policy `{given}` (expected {expected})")]
pub struct UnknownPolicy {
    policy: &'static str,
    expected: &'static str,
    given: Box<str>,
}

impl UnknownPolicy {
    pub(crate) fn new(policy: &'static str, expected: &'static str, given: &str) -> Self {
        Self {
            policy,
            expected,
            given: given.into(),
        }
    }

    /// Which policy was being parsed (`duplicate-key`, `missing-model`, ...).
    ///
    /// ```
    /// let err = "x".parse::<bbr_core::contract::ClientHeaders>().unwrap_err();
    /// assert_eq!(err.policy(), "client-header");
    /// ```
    pub fn policy(&self) -> &'static str {
        self.policy
    }
}

/// What to do with a valid JSON object that has no top-level `model`.
///
/// ```
/// use bbr_core::contract::MissingModel;
/// assert_eq!("reject".parse::<MissingModel>().unwrap(), MissingModel::Reject);
/// assert_eq!(MissingModel::default().as_str(), "forward");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum MissingModel {
    /// Forward the request without the model header (the default, as upstream).
    #[default]
    Forward,
    /// Answer 400 with code `missing_model`.
    Reject,
}

impl MissingModel {
    /// Stable name: `forward` or `reject`.
    ///
    /// ```
    /// assert_eq!(bbr_core::contract::MissingModel::Reject.as_str(), "reject");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            MissingModel::Forward => "forward",
            MissingModel::Reject => "reject",
        }
    }
}

impl std::str::FromStr for MissingModel {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "forward" => Ok(MissingModel::Forward),
            "reject" => Ok(MissingModel::Reject),
            _ => Err(UnknownPolicy::new("missing-model", "forward or reject", s)),
        }
    }
}

impl std::fmt::Display for MissingModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do with a routing header ([`ROUTING_HEADERS`], matched by
/// [`routing_header`]) sent by the client. Either way a client can never
/// pick the route by sending it.
///
/// ```
/// use bbr_core::contract::ClientHeaders;
/// assert_eq!("strip".parse::<ClientHeaders>().unwrap(), ClientHeaders::Strip);
/// assert_eq!(ClientHeaders::Reject.as_str(), "reject");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ClientHeaders {
    /// Remove it before anything else (the default); the gateway sets its own.
    #[default]
    Strip,
    /// Answer 400 with code `routing_header_not_allowed`.
    Reject,
}

impl ClientHeaders {
    /// Stable name: `strip` or `reject`.
    ///
    /// ```
    /// assert_eq!(bbr_core::contract::ClientHeaders::Strip.as_str(), "strip");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            ClientHeaders::Strip => "strip",
            ClientHeaders::Reject => "reject",
        }
    }
}

impl std::str::FromStr for ClientHeaders {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "strip" => Ok(ClientHeaders::Strip),
            "reject" => Ok(ClientHeaders::Reject),
            _ => Err(UnknownPolicy::new("client-header", "strip or reject", s)),
        }
    }
}

impl std::fmt::Display for ClientHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The OpenAI error `type`.
///
/// ```
/// assert_eq!(bbr_core::contract::ErrorType::Server.as_str(), "server_error");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorType {
    /// The client's request is at fault (4xx).
    InvalidRequest,
    /// The gateway or an upstream is at fault (5xx).
    Server,
}

impl ErrorType {
    /// `invalid_request_error` or `server_error`.
    ///
    /// ```
    /// assert_eq!(bbr_core::contract::ErrorType::InvalidRequest.as_str(), "invalid_request_error");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorType::InvalidRequest => "invalid_request_error",
            ErrorType::Server => "server_error",
        }
    }
}

/// Why bbr answers a request itself instead of routing it. Every adapter
/// turns one of these into its response type with [`status`](Self::status),
/// [`json_body`](Self::json_body) and [`retry_after`](Self::retry_after).
///
/// ```
/// use bbr_core::contract::{Refusal, MODEL_HEADER};
/// let refusal = Refusal::RoutingHeader(MODEL_HEADER);
/// assert_eq!((refusal.status(), refusal.code(), refusal.param()),
///            (400, "routing_header_not_allowed", Some(MODEL_HEADER)));
/// assert_eq!(Refusal::Overloaded.retry_after(), Some(1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The body broke the extraction contract (400 or 413 by [`ErrorClass`]).
    #[error("{0}")]
    Extract(#[from] ExtractError),
    /// A valid object without a top-level `model`, under [`MissingModel::Reject`].
    #[error("request body has no top-level \"model\"")]
    MissingModel,
    /// A client-sent routing header (its canonical name), under [`ClientHeaders::Reject`].
    #[error("header {0} is set by the gateway, not by clients")]
    RoutingHeader(&'static str),
    /// The body stream itself failed before the decision (the client reset
    /// or half-closed the upload); `offset` is how many bytes had arrived.
    #[error("the request body could not be read after byte {offset}")]
    BodyRead {
        /// Bytes received before the failure.
        offset: u64,
    },
    /// No decision within the decision deadline (a slow upload).
    #[error("no routing decision within {} ms of the first body byte", .deadline.as_millis())]
    DecisionTimeout {
        /// The configured deadline.
        deadline: Duration,
    },
    /// The bytes held across all requests are over the global cap.
    #[error("the gateway holds too many request bytes; retry later")]
    Overloaded,
}

impl Refusal {
    /// The HTTP status.
    ///
    /// ```
    /// use bbr_core::contract::Refusal;
    /// use std::time::Duration;
    /// assert_eq!(Refusal::DecisionTimeout { deadline: Duration::from_secs(30) }.status(), 408);
    /// ```
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Extract(error) => error.kind().class().status(),
            Refusal::MissingModel | Refusal::RoutingHeader(_) | Refusal::BodyRead { .. } => 400,
            Refusal::DecisionTimeout { .. } => 408,
            Refusal::Overloaded => 503,
        }
    }

    /// The OpenAI-style error `code`.
    ///
    /// ```
    /// assert_eq!(bbr_core::contract::Refusal::MissingModel.code(), "missing_model");
    /// ```
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Extract(error) => error.kind().class().code(),
            Refusal::MissingModel => "missing_model",
            Refusal::RoutingHeader(_) => "routing_header_not_allowed",
            Refusal::BodyRead { .. } => "invalid_request_body",
            Refusal::DecisionTimeout { .. } => "request_timeout",
            Refusal::Overloaded => "overloaded",
        }
    }

    /// The OpenAI error `type`.
    ///
    /// ```
    /// use bbr_core::contract::{ErrorType, Refusal};
    /// assert_eq!(Refusal::Overloaded.error_type(), ErrorType::Server);
    /// ```
    pub fn error_type(&self) -> ErrorType {
        match self {
            Refusal::Overloaded => ErrorType::Server,
            _ => ErrorType::InvalidRequest,
        }
    }

    /// The OpenAI error `param`: `model`, the header name for a refused
    /// routing header, none for an overload.
    ///
    /// ```
    /// assert_eq!(bbr_core::contract::Refusal::MissingModel.param(), Some("model"));
    /// ```
    pub fn param(&self) -> Option<&'static str> {
        match self {
            Refusal::RoutingHeader(name) => Some(name),
            Refusal::Overloaded => None,
            _ => Some("model"),
        }
    }

    /// Seconds for a `Retry-After` header, where the answer needs one.
    ///
    /// ```
    /// assert_eq!(bbr_core::contract::Refusal::MissingModel.retry_after(), None);
    /// ```
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            Refusal::Overloaded => Some(1),
            _ => None,
        }
    }

    /// This refusal as an [`ApiError`].
    ///
    /// ```
    /// let api = bbr_core::contract::Refusal::MissingModel.api_error();
    /// assert_eq!(api.status(), 400);
    /// ```
    pub fn api_error(&self) -> ApiError {
        ApiError {
            status: self.status(),
            error_type: self.error_type(),
            code: self.code(),
            param: self.param(),
            message: self.to_string(),
        }
    }

    /// The OpenAI-shaped JSON error body (see [`ApiError::json_body`]).
    ///
    /// ```
    /// let body = bbr_core::contract::Refusal::MissingModel.json_body();
    /// assert!(body.starts_with(br#"{"error":{"message":"request body has no top-level \"model\"""#));
    /// ```
    pub fn json_body(&self) -> Vec<u8> {
        self.api_error().json_body()
    }
}

impl ErrorClass {
    /// The HTTP status for this class: 400, or 413 for [`ErrorClass::TooLarge`].
    ///
    /// ```
    /// assert_eq!(bbr_core::ErrorClass::TooLarge.status(), 413);
    /// ```
    pub const fn status(self) -> u16 {
        match self {
            ErrorClass::TooLarge => 413,
            _ => 400,
        }
    }
}

/// An OpenAI-shaped error answer: `{"error":{"message","type","param","code"}}`.
///
/// [`Refusal`] builds these for bbr's own refusals; a gateway builds them
/// for its own errors (no route, upstream unreachable) so that every error
/// a client sees has one shape and one escaping.
///
/// ```
/// use bbr_core::contract::{ApiError, ErrorType};
/// let error = ApiError::new(404, ErrorType::InvalidRequest, "model_not_found", "The model `x\"` does not exist.")
///     .with_param("model");
/// assert_eq!(
///     String::from_utf8(error.json_body()).unwrap(),
///     r#"{"error":{"message":"The model `x\"` does not exist.","type":"invalid_request_error","param":"model","code":"model_not_found"}}"#
/// );
/// let no_param = ApiError::new(504, ErrorType::Server, "upstream_timeout", "late");
/// assert!(no_param.json_body().ends_with(br#""param":null,"code":"upstream_timeout"}}"#));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: u16,
    error_type: ErrorType,
    code: &'static str,
    param: Option<&'static str>,
    message: String,
}

impl ApiError {
    /// An error without `param` (it serialises as `null`).
    ///
    /// ```
    /// # use bbr_core::contract::{ApiError, ErrorType};
    /// assert_eq!(ApiError::new(502, ErrorType::Server, "upstream_unreachable", "down").code(), "upstream_unreachable");
    /// ```
    pub fn new(
        status: u16,
        error_type: ErrorType,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error_type,
            code,
            param: None,
            message: message.into(),
        }
    }

    /// Sets `param`.
    ///
    /// ```
    /// # use bbr_core::contract::{ApiError, ErrorType};
    /// assert_eq!(ApiError::new(400, ErrorType::InvalidRequest, "c", "m").with_param("model").param(), Some("model"));
    /// ```
    pub fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    /// The HTTP status.
    ///
    /// ```
    /// # use bbr_core::contract::{ApiError, ErrorType};
    /// assert_eq!(ApiError::new(404, ErrorType::InvalidRequest, "c", "m").status(), 404);
    /// ```
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The `code`.
    ///
    /// ```
    /// # use bbr_core::contract::{ApiError, ErrorType};
    /// assert_eq!(ApiError::new(404, ErrorType::InvalidRequest, "c", "m").code(), "c");
    /// ```
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The `type`.
    ///
    /// ```
    /// # use bbr_core::contract::{ApiError, ErrorType};
    /// assert_eq!(ApiError::new(404, ErrorType::InvalidRequest, "c", "m").error_type(), ErrorType::InvalidRequest);
    /// ```
    pub fn error_type(&self) -> ErrorType {
        self.error_type
    }

    /// The `param`.
    ///
    /// ```
    /// # use bbr_core::contract::{ApiError, ErrorType};
    /// assert_eq!(ApiError::new(404, ErrorType::InvalidRequest, "c", "m").param(), None);
    /// ```
    pub fn param(&self) -> Option<&'static str> {
        self.param
    }

    /// The `message`.
    ///
    /// ```
    /// # use bbr_core::contract::{ApiError, ErrorType};
    /// assert_eq!(ApiError::new(404, ErrorType::InvalidRequest, "c", "m").message(), "m");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The JSON body, escaped by hand (no serializer needed): `"`, `\` and
    /// control characters are escaped, everything else is written as is.
    ///
    /// ```
    /// # use bbr_core::contract::{ApiError, ErrorType};
    /// let body = ApiError::new(400, ErrorType::InvalidRequest, "c", "a\nb\u{1}é").json_body();
    /// assert_eq!(body, br#"{"error":{"message":"a\nb\u0001"#.iter().copied().chain("é\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"c\"}}".bytes()).collect::<Vec<u8>>());
    /// ```
    pub fn json_body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96 + self.message.len());
        out.extend_from_slice(br#"{"error":{"message":"#);
        push_json_string(&mut out, &self.message);
        out.extend_from_slice(br#","type":"#);
        push_json_string(&mut out, self.error_type.as_str());
        out.extend_from_slice(br#","param":"#);
        match self.param {
            Some(param) => push_json_string(&mut out, param),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(br#","code":"#);
        push_json_string(&mut out, self.code);
        out.extend_from_slice(b"}}");
        out
    }
}

fn push_json_string(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &byte in text.as_bytes() {
        match byte {
            b'"' => out.extend_from_slice(br#"\""#),
            b'\\' => out.extend_from_slice(br"\\"),
            b'\n' => out.extend_from_slice(br"\n"),
            b'\r' => out.extend_from_slice(br"\r"),
            b'\t' => out.extend_from_slice(br"\t"),
            0..0x20 | 0x7f => {
                out.extend_from_slice(br"\u00");
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 0xf)]);
            }
            _ => out.push(byte),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn parse(body: &[u8]) -> serde_json::Value {
        serde_json::from_slice(body).expect("error bodies are JSON")
    }

    #[test]
    fn every_refusal_is_openai_shaped_json() {
        let refusals = [
            Refusal::Extract(ExtractError::new(ErrorKind::InvalidJson, 3)),
            Refusal::Extract(ExtractError::new(ErrorKind::ModelControlChar, 12)),
            Refusal::Extract(ExtractError::new(ErrorKind::ScanLimit { limit: 16 }, 16)),
            Refusal::MissingModel,
            Refusal::RoutingHeader(BASE_MODEL_HEADER),
            Refusal::BodyRead { offset: 7 },
            Refusal::DecisionTimeout {
                deadline: Duration::from_millis(1500),
            },
            Refusal::Overloaded,
        ];
        let expected = [
            (400, "invalid_json", "invalid json at byte 3"),
            (
                400,
                "invalid_model",
                "model contains a control character at byte 12",
            ),
            (
                413,
                "request_too_large",
                "no decision within 16 bytes at byte 16",
            ),
            (
                400,
                "missing_model",
                "request body has no top-level \"model\"",
            ),
            (
                400,
                "routing_header_not_allowed",
                "header x-gateway-base-model-name is set by the gateway, not by clients",
            ),
            (
                400,
                "invalid_request_body",
                "the request body could not be read after byte 7",
            ),
            (
                408,
                "request_timeout",
                "no routing decision within 1500 ms of the first body byte",
            ),
            (
                503,
                "overloaded",
                "the gateway holds too many request bytes; retry later",
            ),
        ];
        for (refusal, (status, code, message)) in refusals.iter().zip(expected) {
            let json = parse(&refusal.json_body());
            assert_eq!(refusal.status(), status, "{refusal:?}");
            assert_eq!(json["error"]["code"], code);
            assert_eq!(json["error"]["message"], message);
            assert_eq!(json["error"]["type"], refusal.error_type().as_str());
            match refusal.param() {
                Some(param) => assert_eq!(json["error"]["param"], param),
                None => assert!(json["error"]["param"].is_null()),
            }
            assert_eq!(json.as_object().unwrap().len(), 1);
            assert_eq!(json["error"].as_object().unwrap().len(), 4);
        }
    }

    #[test]
    fn messages_with_every_special_byte_stay_valid_json() {
        let text: String = (0u8..=0x7f)
            .map(char::from)
            .chain("é漢😀".chars())
            .collect();
        let body = ApiError::new(404, ErrorType::InvalidRequest, "c", text.clone()).json_body();
        assert_eq!(parse(&body)["error"]["message"], text.as_str());
    }

    #[test]
    fn routing_header_matches_case_and_underscores_only() {
        for name in [
            "x-gateway-model-name",
            "X-GATEWAY-MODEL-NAME",
            "X_Gateway_Model_Name",
            "x-gateway_model-name",
        ] {
            assert_eq!(
                routing_header(name.as_bytes()),
                Some(MODEL_HEADER),
                "{name}"
            );
        }
        assert_eq!(
            routing_header(b"X-Gateway-Base-Model-Name"),
            Some(BASE_MODEL_HEADER)
        );
        for name in [
            "x-gateway-model-names",
            "x-gateway-model-nam",
            "x-gateway-model-name ",
            "xxgateway-model-name",
            "",
        ] {
            assert_eq!(routing_header(name.as_bytes()), None, "{name}");
        }
    }

    #[test]
    fn policies_round_trip() {
        for policy in [MissingModel::Forward, MissingModel::Reject] {
            assert_eq!(policy.as_str().parse::<MissingModel>(), Ok(policy));
        }
        for policy in [ClientHeaders::Strip, ClientHeaders::Reject] {
            assert_eq!(policy.as_str().parse::<ClientHeaders>(), Ok(policy));
        }
        assert!("Forward".parse::<MissingModel>().is_err());
    }
}
