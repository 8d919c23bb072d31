//! Typed errors, and the one place where they become an answer: an Envoy
//! `ImmediateResponse` (what the HTTP client sees) or a gRPC status (what
//! Envoy sees when the conversation itself is broken).

use bbr_core::contract::{JSON_CONTENT_TYPE, Refusal};
use bytes::Bytes;

use crate::proto::envoy::service::ext_proc::v3::{HeaderMutation, ImmediateResponse};
use crate::proto::envoy::r#type::v3::HttpStatus;

/// The `ImmediateResponse` Envoy sends to the client instead of forwarding
/// the request: the refusal's status, `content-type: application/json`,
/// `retry-after` where [`Refusal::retry_after`] asks for one, and the
/// OpenAI-shaped JSON body of [`Refusal::json_body`]. The only place an
/// answer to the client is built.
///
/// ```
/// use bbr_core::contract::Refusal;
/// let answer = bbr_extproc::immediate_response(&Refusal::Overloaded);
/// assert_eq!(answer.status.unwrap().code, 503);
/// let headers = answer.headers.unwrap().set_headers;
/// let names: Vec<&str> = headers.iter().map(|h| h.header.as_ref().unwrap().key.as_str()).collect();
/// assert_eq!(names, ["content-type", "retry-after"]);
/// assert_eq!(&headers[1].header.as_ref().unwrap().raw_value[..], b"1");
/// assert_eq!(answer.body, Refusal::Overloaded.json_body());
/// assert_eq!(answer.details, "bbr_overloaded");
/// ```
pub fn immediate_response(refusal: &Refusal) -> ImmediateResponse {
    let mut set_headers = vec![crate::mutation::set_header(
        "content-type",
        Bytes::from_static(JSON_CONTENT_TYPE.as_bytes()),
    )];
    if let Some(seconds) = refusal.retry_after() {
        set_headers.push(crate::mutation::set_header(
            "retry-after",
            Bytes::from(seconds.to_string()),
        ));
    }
    ImmediateResponse {
        // Envoy's `StatusCode` values are the HTTP status codes themselves.
        status: Some(HttpStatus {
            code: i32::from(refusal.status()),
        }),
        headers: Some(HeaderMutation {
            set_headers,
            remove_headers: Vec::new(),
        }),
        body: Bytes::from(refusal.json_body()),
        grpc_status: None,
        details: format!("bbr_{}", refusal.code()),
    }
}

/// A name given to a `FromStr` of this crate ([`BodyMode`](crate::BodyMode),
/// [`UndecidedPrefix`](crate::UndecidedPrefix)) is not one of its values.
///
/// ```
/// let err = "grpc".parse::<bbr_extproc::BodyMode>().unwrap_err();
/// assert_eq!(err.to_string(), "unknown body mode `grpc` (expected full-duplex-streamed, streamed or buffered)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{given}` (expected {expected})")]
pub struct UnknownValue {
    what: &'static str,
    expected: &'static str,
    given: Box<str>,
}

impl UnknownValue {
    pub(crate) fn new(what: &'static str, expected: &'static str, given: &str) -> Self {
        Self {
            what,
            expected,
            given: given.into(),
        }
    }
}

/// A broken ext_proc conversation: the stream ends with a gRPC error, and
/// Envoy answers the client by its `failure_mode_allow` setting (a 500 by
/// default).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `ProcessingRequest` with no phase set.
    #[error("unknown request type")]
    UnknownRequestType,
    /// A message that cannot come at this point of the conversation (for
    /// example request headers twice, or a body before the headers).
    #[error("unexpected {got} while {state}")]
    UnexpectedMessage {
        /// The phase of the message received.
        got: &'static str,
        /// What the stream was doing.
        state: &'static str,
    },
    /// A body send mode this server does not implement (`GRPC`).
    #[error("unsupported body send mode {0}")]
    UnsupportedBodyMode(i32),
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        match error {
            Error::UnknownRequestType => tonic::Status::unknown(error.to_string()),
            Error::UnexpectedMessage { .. } => {
                tonic::Status::failed_precondition(error.to_string())
            }
            Error::UnsupportedBodyMode(_) => tonic::Status::unimplemented(error.to_string()),
        }
    }
}
