//! A point in time a future waits for, with the timer created only when it
//! is needed.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep, sleep_until};

/// A deadline. The tokio timer is created the first time the owner would
/// wait (a body that is always ready never needs one, so the layer also
/// runs without a tokio timer, in a fuzz harness say).
#[derive(Debug)]
pub(crate) struct Deadline {
    /// `None`: so far ahead that it never comes.
    at: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    /// `after` from now.
    pub(crate) fn after(after: Duration) -> Self {
        Self {
            at: Instant::now().checked_add(after),
            sleep: None,
        }
    }

    /// True once the deadline passed. Otherwise `cx` is woken when it
    /// does: call this only right before returning `Pending`.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(at) = self.at else {
            return false;
        };
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(sleep_until(at)));
        sleep.as_mut().poll(cx).is_ready()
    }
}
