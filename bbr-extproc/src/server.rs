//! The tonic service and the process around it: listeners, TLS, health,
//! metrics, draining.
//!
//! Each ext_proc stream gets a task that reads Envoy's messages, drives a
//! [`StreamState`] and sends its replies on an `mpsc` channel, whose
//! receiver is the response stream. The task ends when Envoy closes its
//! side, when the stream answered with an `ImmediateResponse`, or when the
//! conversation is broken (then with a gRPC error status).
//!
//! The task also owns the stream's decision deadline: a timer armed when
//! the state machine starts [awaiting its decision]
//! (StreamState::awaiting_decision), dropped once it decided, and reported
//! to it with [`StreamState::on_deadline`] when it fires. Every stream of
//! one [`BbrExtProc`] holds its chunks in one [`HeldBudget`].

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bbr_adapters::AdapterStore;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::error::StartError;
use crate::held::HeldBudget;
use crate::metrics::{self, Metrics};
use crate::proto::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use crate::proto::envoy::service::ext_proc::v3::{ProcessingRequest, ProcessingResponse};
use crate::stream::{Settings, StreamState};

/// The gRPC service name reported by health checks.
pub const SERVICE_NAME: &str = "envoy.service.ext_proc.v3.ExternalProcessor";

/// Replies buffered per stream before the task waits for Envoy to read.
const REPLY_BUFFER: usize = 32;

/// The `ExternalProcessor` implementation.
#[derive(Debug, Clone)]
pub struct BbrExtProc {
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    budget: Arc<HeldBudget>,
    decision_timeouts: Arc<AtomicU64>,
}

impl BbrExtProc {
    /// A processor with these settings, recording into `metrics`; its
    /// streams share one [`HeldBudget`] of `settings.max_held_bytes`.
    pub fn new(settings: Arc<Settings>, metrics: Arc<Metrics>) -> Self {
        let budget = Arc::new(HeldBudget::new(settings.max_held_bytes));
        Self {
            settings,
            metrics,
            budget,
            decision_timeouts: Arc::default(),
        }
    }

    /// The budget every stream holds its chunks in: bytes held now (a
    /// gauge) and requests refused over the cap (a counter).
    pub fn held_budget(&self) -> &Arc<HeldBudget> {
        &self.budget
    }

    /// Requests refused because the decision deadline passed (a counter).
    pub fn decision_timeouts(&self) -> u64 {
        self.decision_timeouts.load(Ordering::Relaxed)
    }
}

#[tonic::async_trait]
impl ExternalProcessor for BbrExtProc {
    type ProcessStream = ReceiverStream<Result<ProcessingResponse, Status>>;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(REPLY_BUFFER);
        let settings = self.settings.clone();
        let metrics = self.metrics.clone();
        let budget = self.budget.clone();
        let decision_timeouts = self.decision_timeouts.clone();
        let active = metrics.stream_started();
        tokio::spawn(async move {
            let _active = active;
            let deadline = settings.decision_deadline;
            let mut state = StreamState::with_budget(settings, budget);
            let mut out = Vec::new();
            let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
            'stream: loop {
                let message = match timer.as_mut() {
                    Some(timer) => tokio::select! {
                        message = inbound.message() => Some(message),
                        () = timer.as_mut() => None,
                    },
                    None => Some(inbound.message().await),
                };
                match message {
                    None => {
                        timer = None;
                        if state.on_deadline(&mut out) {
                            decision_timeouts.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some(Ok(Some(message))) => {
                        if let Err(error) = state.on_request(message, &mut out) {
                            tracing::warn!(%error, "ext_proc conversation broken");
                            // The receiver may be gone already; nothing else to do.
                            let _ = tx.send(Err(error.into())).await;
                            break;
                        }
                    }
                    // Envoy ends side streams with RST_STREAM as often as
                    // with a clean half-close; both are a normal end here.
                    Some(_) => break,
                }
                for reply in out.drain(..) {
                    if tx.send(Ok(reply)).await.is_err() {
                        break 'stream;
                    }
                }
                if state.is_finished() {
                    break;
                }
                if !state.awaiting_decision() {
                    timer = None;
                } else if timer.is_none() {
                    // Armed right after the message with the first body byte.
                    timer = Some(Box::pin(tokio::time::sleep(deadline)));
                }
            }
            let report = state.report();
            if let Some(verdict) = &report.verdict {
                tracing::debug!(outcome = verdict.label(), model = ?report_model(verdict),
                    bytes = report.bytes_before_decision, "request decided");
            }
            metrics.record(report);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn report_model(verdict: &crate::stream::Verdict) -> Option<&str> {
    match verdict {
        crate::stream::Verdict::Found(model) => Some(model.as_str()),
        _ => None,
    }
}

/// How the ext_proc port is secured.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tls {
    /// Plain HTTP/2 (h2c).
    Plaintext,
    /// A self-signed certificate made at startup (the upstream behaviour;
    /// only when no certificate is given).
    SelfSigned,
    /// Certificate and key files (PEM). `cert` may be a directory holding
    /// `tls.crt` and `tls.key`.
    Files {
        /// Certificate file or directory.
        cert: Option<PathBuf>,
        /// Key file (default: `tls.key` beside a directory `cert`).
        key: Option<PathBuf>,
    },
}

/// Everything [`Server::bind`] needs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Address of every listener.
    pub bind_address: IpAddr,
    /// ext_proc port (0: any free port).
    pub grpc_port: u16,
    /// Health port (0: any free port).
    pub health_port: u16,
    /// Metrics port (0: any free port).
    pub metrics_port: u16,
    /// TLS on the ext_proc port.
    pub tls: Tls,
    /// Per-stream policy.
    pub settings: Settings,
    /// Adapter map paths (empty: no base-model header).
    pub adapters: Vec<PathBuf>,
    /// How often the adapter map is re-read.
    pub adapters_reload_interval: Duration,
    /// Largest gRPC message accepted.
    pub max_grpc_message_bytes: usize,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Time NOT_SERVING is reported before the listener closes.
    pub drain_delay: Duration,
    /// Longest wait for in-flight streams after the listener closed.
    pub grace_period: Duration,
}

impl ServerConfig {
    /// Plaintext on 127.0.0.1 with free ports and no drain delay: for tests
    /// and embedding.
    pub fn local(settings: Settings) -> Self {
        Self {
            bind_address: IpAddr::from([127, 0, 0, 1]),
            grpc_port: 0,
            health_port: 0,
            metrics_port: 0,
            tls: Tls::Plaintext,
            settings,
            adapters: Vec::new(),
            adapters_reload_interval: Duration::from_secs(5),
            max_grpc_message_bytes: 129 << 20,
            max_concurrent_streams: 4096,
            drain_delay: Duration::ZERO,
            grace_period: Duration::from_secs(5),
        }
    }
}

/// Bound listeners, ready to serve.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    grpc: TcpListener,
    health: TcpListener,
    metrics_listener: TcpListener,
    metrics: Arc<Metrics>,
    tls: Option<ServerTlsConfig>,
    adapters: Option<AdapterStore>,
}

impl Server {
    /// Binds the three listeners, loads the TLS material and the adapter map.
    pub async fn bind(mut config: ServerConfig) -> Result<Self, StartError> {
        let ports = [config.grpc_port, config.health_port, config.metrics_port];
        for (i, port) in ports.iter().enumerate() {
            if *port != 0 && ports[i + 1..].contains(port) {
                return Err(StartError::PortConflict(*port));
            }
        }
        let tls = tls_config(&config.tls).await?;
        let adapters = if config.adapters.is_empty() {
            None
        } else {
            let store = AdapterStore::load(&config.adapters).map_err(StartError::Adapters)?;
            config.settings.base_models = Some(store.clone());
            Some(store)
        };
        let bind = |what: &'static str, port: u16| {
            let addr = SocketAddr::new(config.bind_address, port);
            async move {
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { what, addr, source })
            }
        };
        let grpc = bind("ext_proc", config.grpc_port).await?;
        let health = bind("health", config.health_port).await?;
        let metrics_listener = bind("metrics", config.metrics_port).await?;
        Ok(Self {
            config,
            grpc,
            health,
            metrics_listener,
            metrics: Arc::new(Metrics::new()),
            tls,
            adapters,
        })
    }

    /// The ext_proc address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The health address.
    pub fn health_addr(&self) -> SocketAddr {
        self.health
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The metrics address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The metrics registry.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Serves until `shutdown` resolves, then drains: health turns
    /// NOT_SERVING, after `drain_delay` the ext_proc listener closes, and
    /// in-flight streams get up to `grace_period` to end.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), StartError> {
        let Server {
            config,
            grpc,
            health,
            metrics_listener,
            metrics,
            tls,
            adapters,
        } = self;
        let _watcher = match &adapters {
            Some(store) => Some(
                store
                    .watch(config.adapters_reload_interval)
                    .map_err(StartError::Watch)?,
            ),
            None => None,
        };
        let (reporter, health_service) = tonic_health::server::health_reporter();
        set_status(&reporter, ServingStatus::NotServing).await;

        let processor = ExternalProcessorServer::new(BbrExtProc::new(
            Arc::new(config.settings.clone()),
            metrics.clone(),
        ))
        .max_decoding_message_size(config.max_grpc_message_bytes)
        .max_encoding_message_size(config.max_grpc_message_bytes);

        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            // An error means the sender is gone: stop too.
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let (stop_all_tx, stop_all_rx) = watch::channel(false);

        let mut builder = tonic::transport::Server::builder()
            .max_concurrent_streams(Some(config.max_concurrent_streams))
            .initial_stream_window_size(Some(1 << 20))
            .initial_connection_window_size(Some(16 << 20));
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).map_err(StartError::Transport)?;
        }
        let grpc_server = builder
            .add_service(processor)
            .add_service(health_service.clone())
            .serve_with_incoming_shutdown(
                // Small replies must leave at once: without TCP_NODELAY,
                // Nagle plus Envoy's delayed ACK stalls a stream for ~40 ms.
                TcpIncoming::from(grpc).with_nodelay(Some(true)),
                stopped(stop_rx),
            );
        let health_server = tonic::transport::Server::builder()
            .add_service(health_service)
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(health),
                stopped(stop_all_rx.clone()),
            );
        let metrics_server =
            metrics::serve(metrics_listener, metrics.clone(), stopped(stop_all_rx));

        let grpc_task = tokio::spawn(grpc_server);
        let health_task = tokio::spawn(health_server);
        let metrics_task = tokio::spawn(metrics_server);
        set_status(&reporter, ServingStatus::Serving).await;
        tracing::info!("serving");

        shutdown.await;
        tracing::info!("draining");
        set_status(&reporter, ServingStatus::NotServing).await;
        tokio::time::sleep(config.drain_delay).await;
        // Closing the listener sends GOAWAY; open streams run to their end.
        let _ = stop_tx.send(true);
        let grpc_result = match tokio::time::timeout(config.grace_period, grpc_task).await {
            Ok(Ok(result)) => result.map_err(StartError::Transport),
            Ok(Err(_)) => Ok(()),
            Err(_) => {
                tracing::warn!(
                    active = metrics.active_streams(),
                    "grace period over; exiting with streams in flight"
                );
                Ok(())
            }
        };
        let _ = stop_all_tx.send(true);
        let _ = health_task.await;
        let _ = metrics_task.await;
        grpc_result
    }
}

async fn set_status(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(SERVICE_NAME, status).await;
}

async fn tls_config(tls: &Tls) -> Result<Option<ServerTlsConfig>, StartError> {
    let (cert, key) = match tls {
        Tls::Plaintext => return Ok(None),
        Tls::SelfSigned => {
            let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
                .map_err(StartError::SelfSigned)?;
            (
                certified.cert.pem().into_bytes(),
                certified.signing_key.serialize_pem().into_bytes(),
            )
        }
        Tls::Files { cert, key } => {
            let (cert_path, key_path) = match (cert, key) {
                (Some(cert), Some(key)) => (cert.clone(), key.clone()),
                (Some(dir), None) if dir.is_dir() => (dir.join("tls.crt"), dir.join("tls.key")),
                _ => return Err(StartError::HalfTlsConfig),
            };
            let cert_path = if cert_path.is_dir() {
                cert_path.join("tls.crt")
            } else {
                cert_path
            };
            (read(&cert_path).await?, read(&key_path).await?)
        }
    };
    // tonic advertises ALPN h2 on its TLS listener.
    Ok(Some(
        ServerTlsConfig::new().identity(Identity::from_pem(cert, key)),
    ))
}

async fn read(path: &PathBuf) -> Result<Vec<u8>, StartError> {
    std::fs::read(path).map_err(|source| StartError::ReadTls {
        path: path.clone(),
        source,
    })
}

/// Resolves on SIGTERM or Ctrl-C.
pub fn shutdown_signal() -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async {
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                        return;
                    }
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    })
}
