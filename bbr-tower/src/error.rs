//! The typed error that ends a forwarded body.

use bbr_core::ExtractError;
use bbr_core::contract::Refusal;
use http::{Response, StatusCode};

use crate::error_body::{ErrorBody, refusal_response};

/// The one boxed error type of this crate (the error of
/// [`ReplayBody`](crate::ReplayBody)), as in tower-http.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error that ends a forwarded [`ReplayBody`](crate::ReplayBody) when
/// the part of the body that streams through after the routing decision
/// breaks the contract: invalid JSON in the tail, a second top-level
/// `model`, a body over `max_body_bytes`, a body truncated at its end, or
/// (under [`ClientHeaders::Reject`](bbr_core::contract::ClientHeaders::Reject))
/// a routing header in the request trailers.
///
/// The inner service sees it as the body's error (a [`BoxError`]); find it
/// with [`BodyViolation::find`], and answer the client with
/// [`BodyViolation::to_response`] if the response has not started yet. A
/// proxy that forwards the body aborts the upstream request instead, so the
/// model server never sees a body the gateway did not approve.
///
/// ```
/// # use bbr_tower::BodyViolation;
/// # fn check(error: &(dyn std::error::Error + 'static)) {
/// if let Some(violation) = BodyViolation::find(error) {
///     assert_eq!(violation.to_response().status(), violation.refusal().status());
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request body refused after the routing decision: {refusal}")]
pub struct BodyViolation {
    refusal: Refusal,
}

impl BodyViolation {
    pub(crate) fn new(refusal: Refusal) -> Self {
        Self { refusal }
    }

    /// The contract's refusal (its status, code and message).
    pub fn refusal(&self) -> &Refusal {
        &self.refusal
    }

    /// The extractor's error (kind and absolute byte offset), when the body
    /// itself broke the contract; `None` for a routing header in trailers.
    pub fn error(&self) -> Option<&ExtractError> {
        match &self.refusal {
            Refusal::Extract(error) => Some(error),
            _ => None,
        }
    }

    /// The contract's response for this violation (400 or 413, JSON body),
    /// for an inner service whose response has not started yet.
    pub fn to_response(&self) -> Response<ErrorBody> {
        refusal_response(&self.refusal)
    }

    /// The HTTP status of [`to_response`](Self::to_response).
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.refusal.status()).unwrap_or(StatusCode::BAD_REQUEST)
    }

    /// Finds a `BodyViolation` in `error` or its chain of sources (hyper,
    /// axum and others wrap body errors).
    pub fn find<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyViolation> {
        bbr_core::ErrorChain::find(error)
    }
}
