//! Typed errors, and the one place where they become an answer: an Envoy
//! `ImmediateResponse` (what the HTTP client sees) or a gRPC status (what
//! Envoy sees when the conversation itself is broken).

use bbr_core::{ErrorClass, ExtractError};
use bytes::Bytes;

use crate::proto::envoy::service::ext_proc::v3::{HeaderMutation, ImmediateResponse};
use crate::proto::envoy::r#type::v3::{HttpStatus, StatusCode};

/// Why a request is refused with an HTTP error instead of being routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The body could not be read (see [`ExtractError`]).
    #[error("{0}")]
    Extract(#[from] ExtractError),
    /// The body is a valid object without a top-level `model`, and the
    /// missing-model policy refuses such requests.
    #[error("request body has no top-level \"model\"")]
    MissingModel,
}

impl Rejection {
    /// The HTTP status the client receives.
    pub fn http_status(&self) -> u16 {
        match self {
            Rejection::Extract(e) => match e.kind().class() {
                ErrorClass::TooLarge => 413,
                _ => 400,
            },
            Rejection::MissingModel => 400,
        }
    }

    /// The OpenAI-style error `code`: `invalid_json`, `invalid_model`,
    /// `request_too_large` or `missing_model`.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Extract(e) => e.kind().class().code(),
            Rejection::MissingModel => "missing_model",
        }
    }

    /// The OpenAI-shaped JSON error body.
    ///
    /// ```
    /// use bbr_extproc::Rejection;
    /// let body: serde_json::Value = serde_json::from_slice(&Rejection::MissingModel.json_body()).unwrap();
    /// assert_eq!(body["error"]["code"], "missing_model");
    /// assert_eq!(body["error"]["param"], "model");
    /// ```
    pub fn json_body(&self) -> Bytes {
        let message = match self {
            Rejection::Extract(e) => format!("invalid request body: {e}"),
            Rejection::MissingModel => self.to_string(),
        };
        let body = serde_json::json!({
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": "model",
                "code": self.code(),
            }
        });
        Bytes::from(body.to_string())
    }

    /// The `ImmediateResponse` Envoy sends to the client instead of
    /// forwarding the request: status, `content-type: application/json` and
    /// the JSON body.
    pub fn immediate_response(&self) -> ImmediateResponse {
        let status = match self.http_status() {
            413 => StatusCode::PayloadTooLarge,
            _ => StatusCode::BadRequest,
        };
        ImmediateResponse {
            status: Some(HttpStatus {
                code: status as i32,
            }),
            headers: Some(HeaderMutation {
                set_headers: vec![crate::mutation::set_header(
                    "content-type",
                    Bytes::from_static(b"application/json"),
                )],
                remove_headers: Vec::new(),
            }),
            body: self.json_body(),
            grpc_status: None,
            details: format!("bbr_{}", self.code()),
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

/// Errors while starting the server (binding ports, TLS material).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot bind {what} on {addr}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key file could not be read.
    #[error("cannot read {path}")]
    ReadTls {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Only one of `--cert-path` and `--key-path` was given.
    #[error("--cert-path and --key-path must be given together")]
    HalfTlsConfig,
    /// The self-signed certificate could not be generated.
    #[error("cannot generate a self-signed certificate")]
    SelfSigned(#[source] rcgen::Error),
    /// The gRPC server failed.
    #[error("grpc server failed")]
    Transport(#[source] tonic::transport::Error),
    /// The adapter map could not be loaded.
    #[error("cannot load the adapter map")]
    Adapters(#[source] bbr_adapters::LoadError),
    /// The adapter map reload thread could not start.
    #[error("cannot start the adapter map reload")]
    Watch(#[source] std::io::Error),
    /// Two listeners share a port.
    #[error("port conflict: {0}")]
    PortConflict(u16),
    /// `--adapters-from=kubernetes` found no Kubernetes configuration.
    #[cfg(feature = "kube")]
    #[error("no Kubernetes API configuration (in-cluster, KUBECONFIG or ~/.kube/config)")]
    Kubernetes(#[source] kube::Error),
}
