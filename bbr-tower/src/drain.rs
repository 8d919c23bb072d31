//! Reading and dropping the rest of a refused upload, within a budget.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Body;

use crate::config::DrainBudget;
use crate::deadline::Deadline;

/// Frames read in one poll before yielding to the executor, so a body that
/// is always ready (in memory, tiny frames) cannot starve other tasks.
pub(crate) const FRAMES_PER_POLL: usize = 256;

/// The rest of a refused upload, read and dropped (never forwarded) so an
/// HTTP/1.1 client still sending it reads the answer instead of a reset
/// connection. Stops at the body's end or error, past the budget's bytes,
/// or when its time is up; then the server may close the connection, as
/// without draining.
#[derive(Debug)]
pub(crate) struct Drain<B> {
    body: B,
    read: u64,
    max_bytes: u64,
    deadline: Deadline,
}

impl<B> Drain<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    /// Starts draining `body` now.
    pub(crate) fn new(body: B, budget: DrainBudget) -> Self {
        Self {
            body,
            read: 0,
            max_bytes: budget.max_bytes,
            deadline: Deadline::after(budget.timeout),
        }
    }

    /// Ready when draining is over (for any reason).
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.body.is_end_stream() {
            return Poll::Ready(());
        }
        for _ in 0..FRAMES_PER_POLL {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending if self.deadline.poll_expired(cx) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    self.read += frame.data_ref().map_or(0, |data| data.len() as u64);
                    if self.read > self.max_bytes || self.body.is_end_stream() {
                        return Poll::Ready(());
                    }
                }
                Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
