//! In-process observation of what a simulated server received: a test and
//! debugging aid for gateways in front of it (did the request arrive, with
//! which routing headers, with exactly the bytes the client sent?).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::{HeaderMap, Method};
use sha2::{Digest, Sha256};

/// One request as the server received it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// Arrival order on this server, from 1.
    pub sequence: u64,
    /// The method.
    pub method: Method,
    /// The path (without query).
    pub path: String,
    /// All request headers as received (e.g. `x-gateway-model-name`).
    pub headers: HeaderMap,
    /// The `model` of the body, when it parsed as a request of its kind.
    pub model: Option<String>,
    /// Body length in bytes.
    pub body_len: usize,
    /// Lowercase hex SHA-256 of the body (compare with [`sha256_hex`]).
    pub body_sha256: String,
}

impl RecordedRequest {
    /// A header's value, when present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Lowercase hex SHA-256 of `bytes`, as in [`RecordedRequest::body_sha256`].
///
/// ```
/// assert_eq!(
///     bbr_model_sim::sha256_hex(b""),
///     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
/// );
/// ```
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of a digest.
pub(crate) fn hex(digest: &[u8]) -> String {
    let mut hex = String::with_capacity(2 * digest.len());
    for byte in digest {
        write!(hex, "{byte:02x}").expect("writing to a String cannot fail");
    }
    hex
}

#[derive(Debug)]
struct Inner {
    capacity: usize,
    received: AtomicU64,
    completions: AtomicU64,
    recent: Mutex<VecDeque<RecordedRequest>>,
    /// `model` fields of forms read so far (sent when each is complete,
    /// before the rest of its form is read).
    form_models: tokio::sync::watch::Sender<u64>,
}

/// Counters and the most recent requests of one server (cheap to clone;
/// all clones see the same server).
///
/// Counted: every request to `/v1/*` paths (`requests_received`), and of
/// those the chat and text completion requests (`completions_received`),
/// whatever their outcome. Probes (`/health`, `/metrics`) are not counted.
/// The last `record_capacity` requests are kept with headers and body hash.
#[derive(Debug, Clone)]
pub struct Observer {
    inner: Arc<Inner>,
}

impl Observer {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                capacity,
                received: AtomicU64::new(0),
                completions: AtomicU64::new(0),
                recent: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
                form_models: tokio::sync::watch::Sender::new(0),
            }),
        }
    }

    /// Records one request; returns its sequence number.
    pub(crate) fn record(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
        model: Option<String>,
        completion: bool,
    ) -> u64 {
        if completion {
            self.inner.completions.fetch_add(1, Ordering::Relaxed);
        }
        let digest = (self.inner.capacity > 0).then(|| sha256_hex(body));
        self.keep(method, path, headers, body.len() as u64, digest, model)
    }

    /// Records one upload whose body was hashed as it streamed.
    pub(crate) fn record_digest(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body_len: u64,
        body_sha256: String,
        model: Option<String>,
    ) -> u64 {
        self.keep(method, path, headers, body_len, Some(body_sha256), model)
    }

    /// A form's `model` field was read (the rest of the form may still be
    /// arriving).
    pub(crate) fn form_model_seen(&self) {
        self.inner.form_models.send_modify(|count| *count += 1);
    }

    /// Counts the `model` fields of forms read so far, the moment each is
    /// complete, before the rest of its form (the file) is read: a test can
    /// wait for it while its upload is still going.
    pub fn form_models_seen(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.form_models.subscribe()
    }

    fn keep(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body_len: u64,
        body_sha256: Option<String>,
        model: Option<String>,
    ) -> u64 {
        let sequence = self.inner.received.fetch_add(1, Ordering::Relaxed) + 1;
        if self.inner.capacity > 0
            && let Some(body_sha256) = body_sha256
        {
            let record = RecordedRequest {
                sequence,
                method: method.clone(),
                path: path.to_owned(),
                headers: headers.clone(),
                model,
                body_len: body_len as usize,
                body_sha256,
            };
            let mut recent = self
                .inner
                .recent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if recent.len() >= self.inner.capacity {
                recent.pop_front();
            }
            recent.push_back(record);
        }
        sequence
    }

    /// Requests received on `/v1/*` paths.
    pub fn requests_received(&self) -> u64 {
        self.inner.received.load(Ordering::Relaxed)
    }

    /// Chat and text completion requests received (any outcome).
    pub fn completions_received(&self) -> u64 {
        self.inner.completions.load(Ordering::Relaxed)
    }

    /// The most recent request, if any was kept.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.lock_recent().back().cloned()
    }

    /// The kept requests, oldest first.
    pub fn recent_requests(&self) -> Vec<RecordedRequest> {
        self.lock_recent().iter().cloned().collect()
    }

    fn lock_recent(&self) -> std::sync::MutexGuard<'_, VecDeque<RecordedRequest>> {
        self.inner
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_capacity_requests_and_counts_all() {
        let observer = Observer::new(2);
        let headers = HeaderMap::new();
        for i in 0..3u8 {
            observer.record(
                &Method::POST,
                "/v1/completions",
                &headers,
                &[i],
                None,
                i != 0,
            );
        }
        assert_eq!(observer.requests_received(), 3);
        assert_eq!(observer.completions_received(), 2);
        let recent = observer.recent_requests();
        assert_eq!(
            recent.iter().map(|r| r.sequence).collect::<Vec<_>>(),
            [2, 3]
        );
        assert_eq!(recent[1].body_sha256, sha256_hex(&[2]));
    }

    #[test]
    fn capacity_zero_keeps_nothing_but_counts() {
        let observer = Observer::new(0);
        observer.record(
            &Method::GET,
            "/v1/models",
            &HeaderMap::new(),
            b"",
            None,
            false,
        );
        assert_eq!(observer.requests_received(), 1);
        assert!(observer.last_request().is_none());
    }
}
