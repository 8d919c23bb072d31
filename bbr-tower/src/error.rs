//! Typed errors. They become HTTP responses only in [`policy`](crate::policy).

use bbr_core::ExtractError;
use http::HeaderName;

/// The one boxed error type of this crate (the error of
/// [`ReplayBody`](crate::ReplayBody)), as in tower-http.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request was refused before the inner service was called.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The body is not acceptable: invalid JSON, a bad `model`, or over a limit.
    #[error(transparent)]
    Extract(#[from] ExtractError),
    /// The body is a valid object without a top-level `model`, and
    /// [`OnMissing::Reject`](crate::OnMissing::Reject) is configured.
    #[error("the request body has no top-level model")]
    MissingModel,
    /// The client sent a routing header and
    /// [`ClientHeaders::Reject`](crate::ClientHeaders::Reject) is configured.
    #[error("the client may not send the routing header {0}")]
    ClientRoutingHeader(HeaderName),
    /// The request body could not be read (after `offset` bytes).
    #[error("the request body could not be read after byte {offset}")]
    Body {
        /// Bytes read before the error.
        offset: u64,
        /// The body's error.
        #[source]
        source: BoxError,
    },
    /// The model cannot be a header value. The extractor refuses control
    /// characters, so this is not expected to happen.
    #[error("the model is not a valid header value")]
    HeaderValue(#[from] http::header::InvalidHeaderValue),
}

/// The error that ends a forwarded [`ReplayBody`](crate::ReplayBody) when
/// the part of the body that streams through after the routing decision
/// breaks the contract: invalid JSON in the tail, a second top-level
/// `model`, a body over `max_body_bytes`, or a body truncated at its end.
///
/// The inner service sees it as the body's error (a [`BoxError`]); find it
/// with [`BodyViolation::find`], and answer the client with
/// [`BodyViolation::to_response`] if the response has not started yet. A
/// proxy that forwards the body aborts the upstream request instead, so the
/// model server never sees a body the gateway did not approve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request body refused after the routing decision: {error}")]
pub struct BodyViolation {
    error: ExtractError,
}

impl BodyViolation {
    pub(crate) fn new(error: ExtractError) -> Self {
        Self { error }
    }

    /// The extractor's error (kind and absolute byte offset).
    pub fn error(&self) -> &ExtractError {
        &self.error
    }

    /// Finds a `BodyViolation` in `error` or its chain of sources (hyper,
    /// axum and others wrap body errors).
    pub fn find<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyViolation> {
        let mut current = Some(error);
        while let Some(error) = current {
            if let Some(violation) = error.downcast_ref::<BodyViolation>() {
                return Some(violation);
            }
            current = error.source();
        }
        None
    }
}
