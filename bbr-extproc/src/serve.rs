//! The process around the tonic service (the `server` feature): the three
//! listeners, TLS, `grpc.health.v1`, the `/metrics` server, draining on
//! SIGTERM, and [`run`], the binary's entry point.
//!
//! Health answers as the upstream does: `Check` reports the process status
//! for **any** service name (Envoy, GKE and kubelet probes ask with
//! different names), and `Watch` streams it. Unlike the upstream, the status
//! is tied to the process: NOT_SERVING until the listeners are up and the
//! adapter map is loaded, and again while draining.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bbr_adapters::rewrite::{RewritePicker, RewriteStore};
use bbr_adapters::{AdapterStore, ReloadEvent};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, ServerTlsConfig};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::config::Config;
use crate::metrics::{Metrics, WatchedConfig};
use crate::metrics_http::{self, MetricsAuth};
use crate::proto::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer;
use crate::server::BbrExtProc;
use crate::stream::Settings;
use crate::stream_trace::StreamTracer;

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
    /// How often the adapter map (and the rewrite rules) are re-read.
    pub adapters_reload_interval: Duration,
    /// `InferenceModelRewrite` files or directories (empty: no rewrites).
    pub model_rewrites: Vec<PathBuf>,
    /// Sticky rewrite picks by this request header (lower case).
    pub model_rewrite_sticky_header: Option<String>,
    /// Largest gRPC message accepted.
    pub max_grpc_message_bytes: usize,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Time NOT_SERVING is reported before the listener closes.
    pub drain_delay: Duration,
    /// Longest wait for in-flight streams after the listener closed.
    pub grace_period: Duration,
    /// Who may scrape `/metrics`.
    pub metrics_auth: MetricsAuth,
    /// The metrics registry the service records into.
    pub metrics: Arc<Metrics>,
    /// One span per stream (`--tracing`); `None`: no spans.
    pub stream_tracer: Option<Arc<dyn StreamTracer>>,
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
            model_rewrites: Vec::new(),
            model_rewrite_sticky_header: None,
            max_grpc_message_bytes: 129 << 20,
            max_concurrent_streams: 4096,
            drain_delay: Duration::ZERO,
            grace_period: Duration::from_secs(5),
            metrics_auth: MetricsAuth::Open,
            metrics: Arc::new(Metrics::new()),
            stream_tracer: None,
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
    rewrites: Option<RewriteStore>,
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
        let rewrites = if config.model_rewrites.is_empty() {
            None
        } else {
            let store =
                RewriteStore::load(&config.model_rewrites).map_err(StartError::ModelRewrites)?;
            let mut picker = RewritePicker::new(store.clone());
            if let Some(header) = &config.model_rewrite_sticky_header {
                picker = picker.sticky_by(header);
            }
            config.settings.rewrites = Some(picker);
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
            metrics: config.metrics.clone(),
            config,
            grpc,
            health,
            metrics_listener,
            tls,
            adapters,
            rewrites,
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
            rewrites,
        } = self;
        let interval = config.adapters_reload_interval;
        let _watcher = match &adapters {
            Some(store) => Some(
                store
                    .watch_events(interval, reload_reporter(WatchedConfig::Adapters, &metrics))
                    .map_err(StartError::Watch)?,
            ),
            None => None,
        };
        let _rewrites_watcher = match &rewrites {
            Some(store) => Some(
                store
                    .watch_events(
                        interval,
                        reload_reporter(WatchedConfig::ModelRewrites, &metrics),
                    )
                    .map_err(StartError::Watch)?,
            ),
            None => None,
        };
        let (reporter, status) = watch::channel(ServingStatus::NotServing);
        let health_service = HealthServer::new(AnyServiceHealth(status));

        let mut service = BbrExtProc::new(Arc::new(config.settings.clone()), metrics.clone());
        if let Some(tracer) = &config.stream_tracer {
            service = service.with_stream_tracer(tracer.clone());
        }
        let processor = ExternalProcessorServer::new(service)
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
        let metrics_server = metrics_http::serve(
            metrics_listener,
            metrics.clone(),
            config.metrics_auth.clone(),
            stopped(stop_all_rx),
        );

        let grpc_task = tokio::spawn(grpc_server);
        let health_task = tokio::spawn(health_server);
        let metrics_task = tokio::spawn(metrics_server);
        reporter.send_replace(ServingStatus::Serving);
        tracing::info!("serving");

        shutdown.await;
        tracing::info!("draining");
        reporter.send_replace(ServingStatus::NotServing);
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

/// `grpc.health.v1.Health` reporting the process status for any service
/// name, as the upstream does.
#[derive(Debug)]
struct AnyServiceHealth(watch::Receiver<ServingStatus>);

#[tonic::async_trait]
impl Health for AnyServiceHealth {
    async fn check(
        &self,
        _request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        let status = *self.0.borrow();
        Ok(tonic::Response::new(HealthCheckResponse {
            status: status as i32,
        }))
    }

    type WatchStream = ReceiverStream<Result<HealthCheckResponse, tonic::Status>>;

    async fn watch(
        &self,
        _request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        let mut status = self.0.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let current = *status.borrow_and_update();
                let reply = HealthCheckResponse {
                    status: current as i32,
                };
                // Ends when the watcher hangs up or the server is gone.
                if tx.send(Ok(reply)).await.is_err() || status.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }
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

/// Runs the server as the binary does: builds the server configuration,
/// binds, serves until `shutdown`, drains.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartError> {
    let mut server_config = config.server_config()?;
    check_spool_dir(&mut server_config.settings, config.spool_dir.is_some())?;
    // Held for as long as the server runs: it keeps the watch going.
    #[cfg(feature = "kube")]
    let _discovery = if config
        .adapters_from
        .uses_kubernetes(&config.adapters, config.plugins()?.routing().base_model())
    {
        Some(
            crate::discovery::start_kubernetes(&mut server_config.settings, &server_config.metrics)
                .await?,
        )
    } else {
        None
    };
    #[cfg(not(feature = "kube"))]
    if config.adapters_from == crate::AdaptersFrom::Kubernetes {
        tracing::warn!(
            "--adapters-from=kubernetes: built without the `kube` feature; no adapter map"
        );
    }
    #[cfg(feature = "otlp")]
    let tracing_export = if config.tracing {
        let env = crate::otel::TraceEnv::read(|name| std::env::var(name).ok());
        crate::otel::Tracing::start(&env)?
    } else {
        None
    };
    #[cfg(feature = "otlp")]
    if let Some(export) = &tracing_export {
        server_config.stream_tracer = Some(export.tracer.clone());
    }
    #[cfg(not(feature = "otlp"))]
    if config.tracing {
        tracing::warn!(
            "--tracing: built without the `otlp` feature; this build exports no spans (pass --tracing=false to silence this)"
        );
    }
    let server = Server::bind(server_config).await?;
    tracing::info!(
        grpc = %server.grpc_addr(),
        health = %server.health_addr(),
        metrics = %server.metrics_addr(),
        secure = config.secure_serving,
        simd_level = bbr_core::simd_level(),
        "listening"
    );
    let served = server.serve(shutdown).await;
    // The spans of the last requests leave before the process does.
    #[cfg(feature = "otlp")]
    if let Some(export) = tracing_export {
        export.shutdown().await;
    }
    served
}

/// Checks at start that a spool file can be created where the spool
/// writes, not at the first large request. `--spool-dir` given and unusable:
/// the start stops. The default (`$TMPDIR`) unusable (a read-only root
/// filesystem): a warning, and the spool is off, so a drop-in deployment
/// keeps working as before (held bytes in memory).
fn check_spool_dir(settings: &mut Settings, explicit: bool) -> Result<(), StartError> {
    let Some(spool) = &settings.spool else {
        return Ok(());
    };
    match spool.check_dir() {
        Ok(()) => Ok(()),
        Err(error) if explicit => Err(StartError::SpoolDir(error)),
        Err(error) => {
            let source = error.cause().to_string();
            tracing::warn!(%error, source = source.as_str(),
                "the disk spool is off: the temp dir is not writable (set --spool-dir to a writable directory, or --spool-threshold=off)");
            settings.spool = None;
            Ok(())
        }
    }
}

/// Logs and counts each change of a watched config's files: a refused
/// edit is a warning (the previous files stay in force), not silence.
fn reload_reporter(
    config: WatchedConfig,
    metrics: &Arc<Metrics>,
) -> impl FnMut(ReloadEvent) + Send + 'static {
    metrics.watching(config);
    let metrics = metrics.clone();
    move |event| {
        metrics.config_reloaded(config, event.applied());
        event.log(config);
    }
}

/// Errors while starting the server (binding ports, TLS material).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot bind {what} on {addr}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key file could not be read.
    #[error("cannot read {path}")]
    ReadTls {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Only one of `--cert-path` and `--key-path` was given.
    #[error("--cert-path and --key-path must be given together")]
    HalfTlsConfig,
    /// The self-signed certificate could not be generated.
    #[error("cannot generate a self-signed certificate")]
    SelfSigned(#[source] rcgen::Error),
    /// The gRPC server failed.
    #[error("grpc server failed")]
    Transport(#[source] tonic::transport::Error),
    /// The adapter map could not be loaded.
    #[error("cannot load the adapter map")]
    Adapters(#[source] bbr_adapters::LoadError),
    /// The model rewrite rules could not be loaded.
    #[error("cannot load the model rewrites")]
    ModelRewrites(#[source] bbr_adapters::LoadError),
    /// A reload thread (adapter map or rewrite rules) could not start.
    #[error("cannot start the adapter map reload")]
    Watch(#[source] std::io::Error),
    /// Two listeners share a port.
    #[error("port conflict: {0}")]
    PortConflict(u16),
    /// `--adapters-from=kubernetes` found no Kubernetes configuration.
    #[cfg(feature = "kube")]
    #[error("no Kubernetes API configuration (in-cluster, KUBECONFIG or ~/.kube/config)")]
    Kubernetes(#[source] kube::Error),
    /// `--tracing`: the OTLP exporter could not be built.
    #[cfg(feature = "otlp")]
    #[error("--tracing")]
    Tracing(#[from] crate::otel::TracingError),
    /// `--spool-dir` cannot hold spool files.
    #[error("--spool-dir")]
    SpoolDir(#[source] bbr_core::spool::SpoolError),
    /// The flags or config cannot run.
    #[error("invalid configuration")]
    Config(#[from] crate::config::ConfigError),
}
