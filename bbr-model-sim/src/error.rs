//! Errors: [`ConfigError`] and [`Error`] for startup, and the request
//! errors that become the simulator's JSON error answers ([`ApiError`] is
//! the one place that maps them to HTTP).

use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde::Serialize;

use crate::config::FailureType;

/// A configuration value the simulator refuses at startup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `--model` (or a served name) is empty.
    #[error("the model name must not be empty")]
    EmptyModel,
    /// A limit that must be at least 1 is 0.
    #[error("--{0} must be at least 1")]
    Zero(&'static str),
    /// A `--lora-modules` value is neither JSON, `name=path` nor a name.
    #[error("invalid --lora-modules value {value:?}")]
    InvalidLoraModule {
        /// The value as given.
        value: String,
        /// Why JSON parsing failed.
        #[source]
        source: serde_json::Error,
    },
    /// A LoRA module without a name.
    #[error("a --lora-modules entry has an empty name")]
    EmptyLoraName,
    /// A LoRA whose `base_model_name` is not `--model`.
    #[error("LoRA {lora:?} names base model {base:?}, but this server serves {model:?}")]
    LoraBaseMismatch {
        /// The adapter.
        lora: String,
        /// Its declared base.
        base: String,
        /// The served base model.
        model: String,
    },
    /// A LoRA name given twice, or equal to a served name.
    #[error("model name {0:?} is given more than once")]
    DuplicateName(String),
    /// `--mode` is not `echo` or `random`.
    #[error("invalid --mode {0:?} (expected echo or random)")]
    InvalidMode(String),
    /// A latency flag that is not a duration.
    #[error("invalid duration {value:?} (expected e.g. 100ms, 1.5s, or integer milliseconds)")]
    InvalidDuration {
        /// The value as given.
        value: String,
        /// humantime's reason, for a value that is not a bare integer.
        #[source]
        source: Option<humantime::DurationError>,
    },
    /// `--failure-injection-rate` above 100.
    #[error("--failure-injection-rate must be between 0 and 100, got {0}")]
    FailureRate(u8),
    /// An unknown `--failure-types` value.
    #[error("invalid --failure-types value {0:?}")]
    InvalidFailureType(String),
    /// A latency standard deviation above 30 % of its base value.
    #[error("--{0} must be at most 30% of its base latency")]
    StdDevTooLarge(&'static str),
}

/// Why a simulator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The command line could not be parsed.
    #[error(transparent)]
    Args(#[from] clap::Error),
    /// Binding or serving failed.
    #[error("model server i/o error")]
    Io(#[from] std::io::Error),
}

/// What went wrong with one request; rendered by [`ApiError::into_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RequestError {
    /// The body is not JSON of the request type (`detail` = parser message).
    Parse(String),
    /// The body exceeds `max_request_body_bytes`.
    BodyTooLarge { limit: usize },
    /// The body could not be read from the connection.
    BodyRead,
    /// A `Content-Encoding` the simulator does not decode (the reason).
    UnsupportedEncoding(String),
    /// `X-Return-Error` asked for this status.
    Requested(StatusCode),
    /// `X-Return-Error` was not an integer status.
    InvalidRequestedStatus,
    /// Failure injection picked this error (with the requested model).
    Injected(FailureType, String),
    /// `/health/ready` during `--startup-duration`.
    NotReady,
    /// The model is neither a served name nor a known LoRA.
    UnknownModel(String),
    /// `max_tokens` / `max_completion_tokens` ≤ 0.
    NonPositiveMaxTokens,
    /// `ignore_eos` without max tokens.
    IgnoreEosWithoutMaxTokens,
    /// Prompt plus completion exceed the context window.
    ContextLength {
        limit: u32,
        prompt: u64,
        completion: u64,
    },
    /// The waiting queue is full.
    QueueFull,
    /// `/v1/load_lora_adapter` without a name.
    MissingLoraName,
}

/// The simulator's error body: `{"error":{"message","type","param","code"}}`.
#[derive(Debug, Serialize)]
pub(crate) struct ApiError {
    #[serde(skip)]
    status: StatusCode,
    error: ApiErrorBody,
}

#[derive(Debug, Serialize)]
struct ApiErrorBody {
    message: String,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'static str>,
    code: u16,
}

impl ApiError {
    fn new(status: StatusCode, message: String) -> Self {
        Self::with_param(status, message, None)
    }

    fn with_param(status: StatusCode, message: String, param: Option<&'static str>) -> Self {
        Self {
            status,
            error: ApiErrorBody {
                message,
                kind: error_type(status),
                param,
                code: status.as_u16(),
            },
        }
    }

    /// The serialized body.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("error bodies always serialize")
    }
}

/// The simulator's `type` for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "BadRequestError",
        401 => "AuthenticationError",
        403 => "PermissionDeniedError",
        404 => "NotFoundError",
        422 => "UnprocessableEntityError",
        429 => "RateLimitError",
        500.. => "InternalServerError",
        _ => "APIConnectionError",
    }
}

impl From<RequestError> for ApiError {
    fn from(error: RequestError) -> Self {
        use RequestError as E;
        let (status, message) = match error {
            E::Injected(kind, model) => return injected(kind, &model),
            E::NotReady => (
                StatusCode::SERVICE_UNAVAILABLE,
                "The server is not ready yet.".to_owned(),
            ),
            E::Parse(detail) => (
                StatusCode::BAD_REQUEST,
                format!("Failed to read and parse request body, {detail}"),
            ),
            E::BodyTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body is larger than the limit of {limit} bytes"),
            ),
            E::UnsupportedEncoding(reason) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Unsupported Content-Encoding: {reason}"),
            ),
            E::BodyRead => (
                StatusCode::BAD_REQUEST,
                "Failed to read and parse request body, the body could not be read".to_owned(),
            ),
            E::Requested(status) => (
                status,
                format!(
                    "Simulated error triggered by X-Return-Error header (code {})",
                    status.as_u16()
                ),
            ),
            E::InvalidRequestedStatus => (
                StatusCode::BAD_REQUEST,
                "Invalid X-Return-Error header value, expected an HTTP status code".to_owned(),
            ),
            E::UnknownModel(model) => (
                StatusCode::NOT_FOUND,
                format!("The model `{model}` does not exist."),
            ),
            E::NonPositiveMaxTokens => (
                StatusCode::BAD_REQUEST,
                "Max completion tokens and max tokens should be positive".to_owned(),
            ),
            E::IgnoreEosWithoutMaxTokens => (
                StatusCode::BAD_REQUEST,
                "Ignore_eos is true but max_completion_tokens (or max_tokens) is not set"
                    .to_owned(),
            ),
            E::ContextLength {
                limit,
                prompt,
                completion,
            } => (
                StatusCode::BAD_REQUEST,
                format!(
                    "This model's maximum context length is {limit} tokens. However, you requested {} tokens ({prompt} in the messages, {completion} in the completion). Please reduce the length of the messages or completion",
                    prompt + completion
                ),
            ),
            E::QueueFull => (
                StatusCode::TOO_MANY_REQUESTS,
                "Failed to enqueue request, waiting requests queue is full".to_owned(),
            ),
            E::MissingLoraName => (
                StatusCode::BAD_REQUEST,
                "Failed to read and parse request body, lora_name is required".to_owned(),
            ),
        };
        Self::new(status, message)
    }
}

/// The simulator's injected errors (simulator.md, failure injection table).
fn injected(kind: FailureType, model: &str) -> ApiError {
    match kind {
        FailureType::RateLimit => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Rate limit reached for {model} in organization org-xxx on requests per min (RPM): Limit 3, Used 3, Requested 1."
            ),
        ),
        FailureType::InvalidApiKey => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided.".to_owned(),
        ),
        FailureType::ContextLength => ApiError::with_param(
            StatusCode::BAD_REQUEST,
            "This model's maximum context length is 4096 tokens. However, your messages resulted in 4500 tokens. Please reduce the length of the messages.".to_owned(),
            Some("messages"),
        ),
        FailureType::ServerError => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is overloaded or not ready yet.".to_owned(),
        ),
        FailureType::InvalidRequest => ApiError::with_param(
            StatusCode::BAD_REQUEST,
            "Invalid request: missing required parameter 'model'.".to_owned(),
            Some("model"),
        ),
        FailureType::ModelNotFound => ApiError::with_param(
            StatusCode::NOT_FOUND,
            format!("The model '{model}-nonexistent' does not exist"),
            Some("model"),
        ),
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            self.to_json(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_model_body_is_exactly_the_simulators() {
        let error = ApiError::from(RequestError::UnknownModel("foo".into()));
        assert_eq!(error.status, StatusCode::NOT_FOUND);
        assert_eq!(
            error.to_json(),
            r#"{"error":{"message":"The model `foo` does not exist.","type":"NotFoundError","param":null,"code":404}}"#
        );
    }

    #[test]
    fn error_types_follow_the_status() {
        for (code, kind) in [
            (400, "BadRequestError"),
            (401, "AuthenticationError"),
            (403, "PermissionDeniedError"),
            (404, "NotFoundError"),
            (413, "APIConnectionError"),
            (422, "UnprocessableEntityError"),
            (429, "RateLimitError"),
            (503, "InternalServerError"),
        ] {
            assert_eq!(error_type(StatusCode::from_u16(code).unwrap()), kind);
        }
    }

    #[test]
    fn context_length_message_matches_the_simulator() {
        let error = ApiError::from(RequestError::ContextLength {
            limit: 1024,
            prompt: 30,
            completion: 1000,
        });
        assert_eq!(
            error.error.message,
            "This model's maximum context length is 1024 tokens. However, you requested 1030 tokens (30 in the messages, 1000 in the completion). Please reduce the length of the messages or completion"
        );
    }
}
