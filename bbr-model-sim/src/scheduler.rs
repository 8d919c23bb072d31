//! Admission: at most `max_num_seqs` running requests, at most `max_loras`
//! distinct LoRAs among them, a bounded FIFO waiting queue.
//!
//! [`Scheduler`] is the synchronous state machine (unit-tested below);
//! [`Admission`] is the async glue that parks waiting requests on a oneshot
//! and hands out a [`Slot`] that frees its place when dropped (also when a
//! client disconnects mid-answer).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

/// Outcome of [`Scheduler::submit`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Submit {
    /// Running now.
    Admitted,
    /// Waiting with this ticket.
    Queued(u64),
    /// The waiting queue is full.
    Full,
}

#[derive(Debug)]
struct Waiting<W> {
    ticket: u64,
    lora: Option<String>,
    waker: W,
}

/// The admission state machine; `W` is what wakes a waiting request.
#[derive(Debug)]
pub(crate) struct Scheduler<W> {
    max_running: usize,
    max_waiting: usize,
    max_loras: usize,
    running: usize,
    /// Running LoRAs and how many running requests use each.
    running_loras: Vec<(String, usize)>,
    waiting: VecDeque<Waiting<W>>,
    next_ticket: u64,
}

impl<W> Scheduler<W> {
    pub(crate) fn new(max_running: usize, max_waiting: usize, max_loras: usize) -> Self {
        Self {
            max_running,
            max_waiting,
            max_loras,
            running: 0,
            running_loras: Vec::new(),
            waiting: VecDeque::new(),
            next_ticket: 0,
        }
    }

    fn fits(&self, lora: Option<&str>) -> bool {
        self.running < self.max_running
            && lora.is_none_or(|name| {
                self.running_loras.iter().any(|(n, _)| n == name)
                    || self.running_loras.len() < self.max_loras
            })
    }

    fn start(&mut self, lora: Option<&str>) {
        self.running += 1;
        if let Some(name) = lora {
            match self.running_loras.iter_mut().find(|(n, _)| n == name) {
                Some((_, users)) => *users += 1,
                None => self.running_loras.push((name.to_owned(), 1)),
            }
        }
    }

    /// A new request: runs at once when it fits and nobody it could
    /// overtake waits; otherwise queues (or is refused when the queue is full).
    pub(crate) fn submit(&mut self, lora: Option<&str>, waker: W) -> Submit {
        if self.waiting.is_empty() && self.fits(lora) {
            self.start(lora);
            return Submit::Admitted;
        }
        if self.waiting.len() >= self.max_waiting {
            return Submit::Full;
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.waiting.push_back(Waiting {
            ticket,
            lora: lora.map(str::to_owned),
            waker,
        });
        Submit::Queued(ticket)
    }

    /// A running request ended; returns the wakers of the requests that
    /// now run.
    pub(crate) fn finish(&mut self, lora: Option<&str>) -> Vec<W> {
        self.running = self.running.saturating_sub(1);
        if let Some(name) = lora
            && let Some(pos) = self.running_loras.iter().position(|(n, _)| n == name)
        {
            self.running_loras[pos].1 -= 1;
            if self.running_loras[pos].1 == 0 {
                self.running_loras.remove(pos);
            }
        }
        self.admit_waiting()
    }

    /// Removes a waiting request; `false` if it was already admitted (its
    /// owner then holds a running place and must `finish` it).
    pub(crate) fn cancel(&mut self, ticket: u64) -> bool {
        match self.waiting.iter().position(|w| w.ticket == ticket) {
            Some(pos) => {
                self.waiting.remove(pos);
                true
            }
            None => false,
        }
    }

    /// Admits waiting requests in order; a LoRA that cannot get a slot yet
    /// is skipped, as vLLM's scheduler does, so it does not block others.
    fn admit_waiting(&mut self) -> Vec<W> {
        let mut admitted = Vec::new();
        let mut i = 0;
        while i < self.waiting.len() && self.running < self.max_running {
            if self.fits(self.waiting[i].lora.as_deref()) {
                let waiting = self.waiting.remove(i).expect("index checked above");
                self.start(waiting.lora.as_deref());
                admitted.push(waiting.waker);
            } else {
                i += 1;
            }
        }
        admitted
    }

    pub(crate) fn running(&self) -> usize {
        self.running
    }

    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Running LoRA names, sorted, comma-joined.
    pub(crate) fn running_loras(&self) -> String {
        let mut names: Vec<&str> = self.running_loras.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        names.join(",")
    }

    /// Waiting LoRA names, distinct, sorted, comma-joined.
    pub(crate) fn waiting_loras(&self) -> String {
        let mut names: Vec<&str> = self
            .waiting
            .iter()
            .filter_map(|w| w.lora.as_deref())
            .collect();
        names.sort_unstable();
        names.dedup();
        names.join(",")
    }
}

/// One `vllm:lora_requests_info` series: labels and the Unix time of the
/// last change to them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LoraInfo {
    pub(crate) running: String,
    pub(crate) waiting: String,
    pub(crate) updated: f64,
}

/// Series kept, newest last; the simulator never deletes old ones, we keep
/// the most recent 32 so memory stays bounded.
const LORA_INFO_SERIES: usize = 32;

#[derive(Debug)]
struct Inner {
    scheduler: Scheduler<oneshot::Sender<()>>,
    lora_info: Vec<LoraInfo>,
}

impl Inner {
    /// Records a new `lora_requests_info` series when the lists changed.
    fn note_lora_change(&mut self) {
        let running = self.scheduler.running_loras();
        let waiting = self.scheduler.waiting_loras();
        let last = self.lora_info.last();
        if last.is_some_and(|l| l.running == running && l.waiting == waiting) {
            return;
        }
        let updated = unix_seconds_f64();
        self.lora_info
            .retain(|l| !(l.running == running && l.waiting == waiting));
        if self.lora_info.len() >= LORA_INFO_SERIES {
            self.lora_info.remove(0);
        }
        self.lora_info.push(LoraInfo {
            running,
            waiting,
            updated,
        });
    }
}

fn unix_seconds_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Shared admission state of one server.
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    inner: Arc<Mutex<Inner>>,
}

/// Snapshot for `/metrics`.
#[derive(Debug, Clone, Default)]
pub(crate) struct AdmissionSnapshot {
    pub(crate) running: usize,
    pub(crate) waiting: usize,
    pub(crate) lora_info: Vec<LoraInfo>,
}

/// The waiting queue is full.
#[derive(Debug)]
pub(crate) struct QueueFull;

impl Admission {
    pub(crate) fn new(max_running: usize, max_waiting: usize, max_loras: usize) -> Self {
        let mut inner = Inner {
            scheduler: Scheduler::new(max_running, max_waiting, max_loras),
            lora_info: Vec::new(),
        };
        inner.note_lora_change();
        Self {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the counters half
        // updated (every update is a few integer steps), so keep going.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for a running place; the returned [`Slot`] frees it on drop.
    pub(crate) async fn acquire(&self, lora: Option<String>) -> Result<Slot, QueueFull> {
        let (tx, rx) = oneshot::channel();
        let submitted = {
            let mut inner = self.lock();
            let submitted = inner.scheduler.submit(lora.as_deref(), tx);
            inner.note_lora_change();
            submitted
        };
        let ticket = match submitted {
            Submit::Admitted => return Ok(self.slot(lora)),
            Submit::Full => return Err(QueueFull),
            Submit::Queued(ticket) => ticket,
        };
        let mut guard = WaitGuard {
            admission: self.clone(),
            ticket,
            lora,
            armed: true,
        };
        // The sender lives in the queue until admission, and the queue lives
        // as long as `self`, so the only outcome is admission.
        let _admitted = rx.await;
        guard.armed = false;
        Ok(self.slot(guard.lora.take()))
    }

    fn slot(&self, lora: Option<String>) -> Slot {
        Slot {
            admission: self.clone(),
            lora,
        }
    }

    fn release(&self, lora: Option<&str>) {
        let wakers = {
            let mut inner = self.lock();
            let wakers = inner.scheduler.finish(lora);
            inner.note_lora_change();
            wakers
        };
        for waker in wakers {
            // A receiver that is gone belongs to a request whose WaitGuard
            // will find its ticket admitted and release the place.
            let _ = waker.send(());
        }
    }

    pub(crate) fn snapshot(&self) -> AdmissionSnapshot {
        let inner = self.lock();
        AdmissionSnapshot {
            running: inner.scheduler.running(),
            waiting: inner.scheduler.waiting(),
            lora_info: inner.lora_info.clone(),
        }
    }
}

/// A running place; dropping it lets the next waiting request run.
#[derive(Debug)]
pub(crate) struct Slot {
    admission: Admission,
    lora: Option<String>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.release(self.lora.as_deref());
    }
}

/// Leaves the queue when a waiting request is dropped (client gone).
#[derive(Debug)]
struct WaitGuard {
    admission: Admission,
    ticket: u64,
    lora: Option<String>,
    armed: bool,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let cancelled = {
            let mut inner = self.admission.lock();
            let cancelled = inner.scheduler.cancel(self.ticket);
            inner.note_lora_change();
            cancelled
        };
        if !cancelled {
            // Admitted between the wake-up and the drop: free the place.
            self.admission.release(self.lora.as_deref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_max_running_then_queues_then_refuses() {
        let mut s = Scheduler::new(2, 1, 1);
        assert_eq!(s.submit(None, 'a'), Submit::Admitted);
        assert_eq!(s.submit(None, 'b'), Submit::Admitted);
        assert_eq!(s.submit(None, 'c'), Submit::Queued(0));
        assert_eq!(s.submit(None, 'd'), Submit::Full, "queue of 1 is full");
        assert_eq!((s.running(), s.waiting()), (2, 1));
        assert_eq!(s.finish(None), vec!['c']);
        assert_eq!((s.running(), s.waiting()), (2, 0));
        assert!(s.finish(None).is_empty());
        assert!(s.finish(None).is_empty());
        assert_eq!(s.running(), 0);
    }

    #[test]
    fn lora_slots_limit_distinct_adapters_not_requests() {
        let mut s = Scheduler::new(10, 10, 1);
        assert_eq!(s.submit(Some("a"), 1), Submit::Admitted);
        assert_eq!(
            s.submit(Some("a"), 2),
            Submit::Admitted,
            "same LoRA shares the slot"
        );
        assert_eq!(s.submit(None, 3), Submit::Admitted, "base needs no slot");
        assert_eq!(s.submit(Some("b"), 4), Submit::Queued(0));
        assert_eq!(s.running_loras(), "a");
        assert_eq!(s.waiting_loras(), "b");
        assert!(s.finish(Some("a")).is_empty(), "a still running");
        assert_eq!(s.finish(Some("a")), vec![4], "slot free: b runs");
        assert_eq!(s.running_loras(), "b");
        assert_eq!(s.waiting_loras(), "");
    }

    #[test]
    fn a_blocked_lora_does_not_block_others_behind_it() {
        let mut s = Scheduler::new(2, 10, 1);
        assert_eq!(s.submit(Some("a"), 1), Submit::Admitted);
        assert_eq!(s.submit(None, 2), Submit::Admitted);
        assert_eq!(s.submit(Some("b"), 3), Submit::Queued(0));
        assert_eq!(
            s.submit(None, 4),
            Submit::Queued(1),
            "FIFO: no overtaking on submit"
        );
        assert_eq!(s.finish(None), vec![4], "b cannot load yet, base can run");
        assert_eq!(s.finish(Some("a")), vec![3]);
    }

    #[test]
    fn cancel_removes_only_waiting_tickets() {
        let mut s = Scheduler::new(1, 5, 1);
        assert_eq!(s.submit(None, 1), Submit::Admitted);
        assert_eq!(s.submit(None, 2), Submit::Queued(0));
        assert_eq!(s.submit(None, 3), Submit::Queued(1));
        assert!(s.cancel(0));
        assert!(!s.cancel(0));
        assert_eq!(s.finish(None), vec![3]);
        assert!(!s.cancel(1), "already admitted");
    }

    #[test]
    fn lora_info_keeps_the_newest_series_up_to_the_bound() {
        let mut inner = Inner {
            scheduler: Scheduler::new(100, 100, 100),
            lora_info: Vec::new(),
        };
        inner.note_lora_change();
        assert_eq!(inner.lora_info.len(), 1, "the idle series at start");
        inner.note_lora_change();
        assert_eq!(inner.lora_info.len(), 1, "no change, no new series");
        let mut names = Vec::new();
        for i in 0..LORA_INFO_SERIES {
            names.push(format!("l{i:02}"));
            let (waker, _) = oneshot::channel();
            let submitted = inner
                .scheduler
                .submit(names.last().map(String::as_str), waker);
            assert_eq!(submitted, Submit::Admitted);
            inner.note_lora_change();
            assert_eq!(inner.lora_info.len(), (i + 2).min(LORA_INFO_SERIES));
        }
        assert_eq!(
            inner.lora_info.len(),
            LORA_INFO_SERIES,
            "at the bound, the oldest went"
        );
        assert_eq!(inner.lora_info[0].running, "l00");
        assert_eq!(
            inner.lora_info.last().expect("newest").running,
            names.join(",")
        );
    }

    #[tokio::test]
    async fn slots_free_their_place_and_wake_the_next() {
        let admission = Admission::new(1, 4, 1);
        let first = admission.acquire(Some("x".into())).await.expect("admitted");
        let waiter = {
            let admission = admission.clone();
            tokio::spawn(async move { admission.acquire(Some("y".into())).await.map(|_slot| ()) })
        };
        while admission.snapshot().waiting == 0 {
            tokio::task::yield_now().await;
        }
        let info = admission.snapshot().lora_info;
        let last = info.last().expect("series exist");
        assert_eq!((last.running.as_str(), last.waiting.as_str()), ("x", "y"));
        drop(first);
        waiter.await.expect("task").expect("admitted after release");
        let snapshot = admission.snapshot();
        assert_eq!((snapshot.running, snapshot.waiting), (0, 0));
    }

    #[tokio::test]
    async fn a_dropped_waiter_leaves_the_queue() {
        let admission = Admission::new(1, 4, 1);
        let _running = admission.acquire(None).await.expect("admitted");
        let pending = admission.acquire(None);
        let timed_out = tokio::time::timeout(std::time::Duration::from_millis(20), pending).await;
        assert!(timed_out.is_err(), "must wait while the place is taken");
        assert_eq!(
            admission.snapshot().waiting,
            0,
            "the dropped waiter left the queue"
        );
    }
}
