//! Blocking work (the spool's file I/O) off the event loop: tokio's
//! blocking pool with the feature `spool`. Without it no spool can be
//! configured, and this runs the work in place, which is never reached.

use std::task::{Context, Poll};

/// A blocking job that is running; its result once it ran.
#[derive(Debug)]
pub(crate) struct Blocking<T> {
    #[cfg(feature = "spool")]
    handle: tokio::task::JoinHandle<T>,
    #[cfg(not(feature = "spool"))]
    done: Option<T>,
}

/// Runs `job` where blocking is allowed. Needs a tokio runtime with the
/// feature `spool` (hyper and axum servers run in one).
pub(crate) fn spawn<T, F>(job: F) -> Blocking<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    #[cfg(feature = "spool")]
    return Blocking {
        handle: tokio::task::spawn_blocking(job),
    };
    #[cfg(not(feature = "spool"))]
    Blocking { done: Some(job()) }
}

impl<T> Blocking<T> {
    /// The job's result; `None` when it could not finish (the runtime shut
    /// down, or it panicked), which callers treat as an I/O failure.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        #[cfg(feature = "spool")]
        return std::pin::Pin::new(&mut self.handle)
            .poll(cx)
            .map(Result::ok);
        #[cfg(not(feature = "spool"))]
        {
            let _ = cx;
            Poll::Ready(self.done.take())
        }
    }
}
