//! The `/metrics` HTTP server of the binary (`server` feature): OpenMetrics
//! text on `GET /metrics`, behind [`MetricsAuth`].
//!
//! A failed `accept` (EMFILE when the process is out of file descriptors,
//! ENOBUFS, ...) is retried after a pause that starts at 10 ms and doubles
//! up to 1 s, and resets after the next accepted connection: the loop never
//! spins on an error that only time can clear.

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Who may scrape `/metrics`.
///
/// The upstream checks the scraper's Kubernetes token with a TokenReview and
/// a SubjectAccessReview. bbr-extproc does not talk to a Kubernetes API, so
/// `--metrics-endpoint-auth` (on by default, as upstream) checks a bearer
/// token instead: the request must carry `Authorization: Bearer <token>`
/// where `<token>` equals the content of `--metrics-auth-token-file`
/// (surrounding whitespace ignored; the file is re-read on every scrape, so
/// a rotated Secret takes effect at once). Without a token file every scrape
/// is refused with 401 and a body saying why.
///
/// ```
/// use bbr_extproc::MetricsAuth;
/// let auth = MetricsAuth::BearerToken { token_file: Some("/var/run/secrets/metrics/token".into()) };
/// assert_ne!(auth, MetricsAuth::Open);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricsAuth {
    /// Anyone may scrape (`--metrics-endpoint-auth=false`).
    Open,
    /// `Authorization: Bearer <token>` with the token of this file; `None`:
    /// no token configured, every scrape refused.
    BearerToken {
        /// The file holding the expected token.
        token_file: Option<PathBuf>,
    },
}

/// Pause after a failed `accept`: 10 ms, doubling up to 1 s, reset by a
/// successful one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AcceptBackoff {
    next: Duration,
}

impl AcceptBackoff {
    pub(crate) const FIRST: Duration = Duration::from_millis(10);
    pub(crate) const MAX: Duration = Duration::from_secs(1);

    pub(crate) fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The pause before the next try, after a failure.
    pub(crate) fn failed(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        pause
    }

    pub(crate) fn succeeded(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Accepts with `accept` until `shutdown`, handing every connection to
/// `handle` and pausing by [`AcceptBackoff`] after each error.
pub(crate) async fn accept_loop<C, A, F>(
    mut accept: A,
    mut handle: impl FnMut(C),
    shutdown: impl Future<Output = ()>,
) where
    A: FnMut() -> F,
    F: Future<Output = std::io::Result<C>>,
{
    tokio::pin!(shutdown);
    let mut backoff = AcceptBackoff::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut shutdown => return,
            accepted = accept() => accepted,
        };
        match accepted {
            Ok(connection) => {
                backoff.succeeded();
                handle(connection);
            }
            Err(error) => {
                let pause = backoff.failed();
                tracing::warn!(%error, ?pause, "metrics accept failed; retrying");
                tokio::select! {
                    biased;
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    auth: MetricsAuth,
    shutdown: impl Future<Output = ()>,
) {
    let auth = Arc::new(auth);
    let handle = |(socket, _peer)| {
        let metrics = metrics.clone();
        let auth = auth.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    let auth = auth.clone();
                    async move { Ok::<_, Infallible>(respond(&request, &metrics, &auth)) }
                });
            let io = hyper_util::rt::TokioIo::new(socket);
            // A scraper that hangs up early is not an error worth reporting.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    };
    accept_loop(|| listener.accept(), handle, shutdown).await;
}

fn respond<B>(
    request: &Request<B>,
    metrics: &Metrics,
    auth: &MetricsAuth,
) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            "not found; metrics are on /metrics\n",
        );
    }
    if let Err(reason) = authorize(request, auth) {
        let mut response = text(StatusCode::UNAUTHORIZED, reason);
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="bbr-extproc metrics""#),
        );
        return response;
    }
    let mut response = Response::new(Full::new(Bytes::from(metrics.encode())));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `Ok` when the scrape may go on; otherwise the reason, for the 401 body.
fn authorize<B>(request: &Request<B>, auth: &MetricsAuth) -> Result<(), &'static str> {
    let token_file = match auth {
        MetricsAuth::Open => return Ok(()),
        MetricsAuth::BearerToken { token_file: None } => {
            return Err(
                "metrics endpoint auth is on (--metrics-endpoint-auth, default true) \
                        but no --metrics-auth-token-file is configured: every scrape is refused\n",
            );
        }
        MetricsAuth::BearerToken {
            token_file: Some(path),
        } => path,
    };
    let Some(given) = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
    else {
        return Err("missing Authorization: Bearer <token>\n");
    };
    let Ok(expected) = std::fs::read(token_file) else {
        tracing::warn!(path = %token_file.display(), "cannot read the metrics token file");
        return Err("the metrics token file cannot be read; every scrape is refused\n");
    };
    let expected = expected.trim_ascii();
    if expected.is_empty() {
        return Err("the metrics token file is empty; every scrape is refused\n");
    }
    if constant_time_eq(given.trim_ascii(), expected) {
        Ok(())
    } else {
        Err("wrong bearer token\n")
    }
}

/// Compares without an early exit, so the time taken does not tell how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::time::Instant;

    #[test]
    fn backoff_doubles_from_10ms_to_1s_and_resets() {
        let mut backoff = AcceptBackoff::new();
        let pauses: Vec<u64> = (0..9)
            .map(|_| backoff.failed().as_millis() as u64)
            .collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        backoff.succeeded();
        assert_eq!(backoff.failed(), AcceptBackoff::FIRST);
    }

    /// An acceptor that fails like a process out of file descriptors: each
    /// try is timestamped on tokio's paused clock, so the pauses between
    /// tries are exact and no real time passes.
    #[tokio::test(start_paused = true)]
    async fn accept_errors_pause_instead_of_spinning() {
        let tries = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let script = Arc::new(Mutex::new(vec![
            Err(std::io::Error::from_raw_os_error(24)), // EMFILE
            Err(std::io::Error::from_raw_os_error(24)),
            Err(std::io::Error::from_raw_os_error(24)),
            Ok(1),
            Err(std::io::Error::from_raw_os_error(24)),
            Ok(2),
        ]));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stop = Mutex::new(Some(stop));
        let accept = || {
            let tries = tries.clone();
            let script = script.clone();
            async move {
                tries.lock().unwrap().push(start.elapsed());
                let next = script.lock().unwrap().drain(..1).next();
                match next {
                    Some(result) => result,
                    None => std::future::pending().await,
                }
            }
        };
        let handle = |connection: u32| {
            accepted.lock().unwrap().push(connection);
            if connection == 2 {
                let _ = stop.lock().unwrap().take().map(|stop| stop.send(()));
            }
        };
        accept_loop(accept, handle, async {
            let _ = stopped.await;
        })
        .await;
        let ms: Vec<u128> = tries
            .lock()
            .unwrap()
            .iter()
            .map(|t| t.as_millis())
            .collect();
        // 10, 20, 40 ms after the three failures; reset by the success, so
        // 10 ms again after the fourth failure.
        assert_eq!(ms, [0, 10, 30, 70, 70, 80]);
        assert_eq!(*accepted.lock().unwrap(), [1, 2]);
    }

    fn get(path: &str, authorization: Option<&str>) -> Request<()> {
        let mut request = Request::get(path);
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        request.body(()).unwrap()
    }

    #[test]
    fn bearer_token_auth_refuses_everything_but_the_token() {
        let dir = std::env::temp_dir().join(format!("bbr-metrics-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        let auth = MetricsAuth::BearerToken {
            token_file: Some(file.clone()),
        };
        assert_eq!(
            authorize(&get("/metrics", Some("Bearer s3cret")), &auth),
            Ok(())
        );
        for refused in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("Basic s3cret"),
        ] {
            assert!(
                authorize(&get("/metrics", refused), &auth).is_err(),
                "{refused:?}"
            );
        }
        // Rotation: the file is read per scrape.
        std::fs::write(&file, "rotated").unwrap();
        assert!(authorize(&get("/metrics", Some("Bearer s3cret")), &auth).is_err());
        assert_eq!(
            authorize(&get("/metrics", Some("Bearer rotated")), &auth),
            Ok(())
        );
        std::fs::write(&file, "  \n").unwrap();
        assert!(authorize(&get("/metrics", Some("Bearer ")), &auth).is_err());
        std::fs::remove_dir_all(&dir).unwrap();

        let no_token = MetricsAuth::BearerToken { token_file: None };
        let reason = authorize(&get("/metrics", Some("Bearer x")), &no_token).unwrap_err();
        assert!(reason.contains("--metrics-auth-token-file"), "{reason}");
        assert_eq!(
            authorize(&get("/metrics", None), &MetricsAuth::Open),
            Ok(())
        );
    }

    #[test]
    fn refused_scrapes_get_401_with_a_challenge_and_other_paths_404() {
        let metrics = Metrics::new();
        let auth = MetricsAuth::BearerToken { token_file: None };
        let response = respond(&get("/metrics", None), &metrics, &auth);
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().contains_key(WWW_AUTHENTICATE));
        let open = respond(&get("/metrics", None), &metrics, &MetricsAuth::Open);
        assert_eq!(open.status(), StatusCode::OK);
        let other = respond(
            &get("/debug/pprof/heap", None),
            &metrics,
            &MetricsAuth::Open,
        );
        assert_eq!(other.status(), StatusCode::NOT_FOUND);
    }
}
