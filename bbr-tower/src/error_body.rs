//! The layer's own answers: a [`Refusal`] of the core's contract as an
//! HTTP response. The status, body and message all come from
//! [`bbr_core::contract`]; nothing here builds an error of its own.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bbr_core::contract::{JSON_CONTENT_TYPE, Refusal};
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};

/// The contract's response for `refusal`: its status, its OpenAI-shaped
/// JSON body, `content-type: application/json`, and `Retry-After` where the
/// contract gives one (503 overloaded).
pub(crate) fn refusal_response(refusal: &Refusal) -> Response<ErrorBody> {
    let mut response = Response::new(ErrorBody::new(Bytes::from(refusal.json_body())));
    *response.status_mut() =
        StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(JSON_CONTENT_TYPE),
    );
    if let Some(seconds) = refusal.retry_after() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The body of the layer's own error responses: one JSON chunk.
#[derive(Debug, Clone, Default)]
pub struct ErrorBody {
    pub(crate) bytes: Option<Bytes>,
}

impl ErrorBody {
    pub(crate) fn new(bytes: Bytes) -> Self {
        Self { bytes: Some(bytes) }
    }

    /// The JSON text (empty once the body was polled).
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.as_deref().unwrap_or_default()
    }
}

impl Body for ErrorBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(
            self.get_mut()
                .bytes
                .take()
                .map(|bytes| Ok(Frame::data(bytes))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.bytes.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.bytes.as_ref().map_or(0, |bytes| bytes.len() as u64))
    }
}
