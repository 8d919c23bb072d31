//! The router, its state, and starting and stopping the whole gateway.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};

use bbr_core::contract::MODEL_HEADER;
use bbr_tower::{BodyFormat, ModelRewrite};

use crate::config::{Config, ConfigError};
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::models::ModelCatalog;
use crate::proxy::{Outcome, Proxy};
use crate::routing::RouteTable;

/// Everything the handlers share.
#[derive(Debug)]
pub struct AppState {
    config: Config,
    adapters: Option<bbr_adapters::AdapterStore>,
    rewrites: Option<bbr_adapters::rewrite::RewriteStore>,
    routes: RouteTable,
    proxy: Proxy,
    metrics: Metrics,
    models: ModelCatalog,
}

impl AppState {
    /// Builds the state from a config; `endpoints` fills pools that have
    /// none in the config (simulated pools, once started).
    pub fn new(
        config: &Config,
        endpoints: &HashMap<String, Vec<String>>,
    ) -> Result<Self, ConfigError> {
        let routes = RouteTable::new(config, endpoints)?;
        let models = ModelCatalog::new(config, routes.pools());
        Ok(Self {
            config: config.clone(),
            adapters: None,
            rewrites: None,
            proxy: Proxy::new(config.proxy),
            metrics: Metrics::new(),
            models,
            routes,
        })
    }

    /// The route table.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The model rewrite rules in force (reload them with
    /// [`RewriteStore::reload`](bbr_adapters::rewrite::RewriteStore::reload)
    /// instead of waiting for the next poll).
    pub fn model_rewrites(&self) -> Option<&bbr_adapters::rewrite::RewriteStore> {
        self.rewrites.as_ref()
    }
}

/// The gateway's router: the body-based routing layer in front of the
/// gateway's own endpoints and the proxy.
pub fn app(state: Arc<AppState>) -> Router {
    let config = state.config.clone();
    let adapters = state.adapters.clone();
    let rewrites = state.rewrites.clone();
    let router = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(list_models))
        .fallback(forward)
        .with_state(state);
    // Outermost: hop-by-hop headers (and what `Connection` nominates) go
    // before the routing layer sets its headers, never after.
    crate::bbr::apply(router, &config, adapters, rewrites).layer(axum::middleware::map_request(
        crate::proxy::strip_hop_by_hop,
    ))
}

async fn health() -> &'static str {
    "ok"
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut response = state.metrics.encode().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

async fn list_models(State(state): State<Arc<AppState>>) -> Response {
    let mut response = (StatusCode::OK, state.models.list().await.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(bbr_core::contract::JSON_CONTENT_TYPE),
    );
    response
}

async fn forward(State(state): State<Arc<AppState>>, request: Request<Body>) -> Response {
    let started = Instant::now();
    // How the routing layer read the body; a request it did not read has
    // no body.
    let body = request
        .extensions()
        .get::<BodyFormat>()
        .map_or("none", BodyFormat::label);
    if let Some(rewrite) = request.extensions().get::<ModelRewrite>() {
        state.metrics.record_rewrite(rewrite);
    }
    let client_addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let Some((route, label)) = state
        .routes
        .find_labeled(request.uri().path(), request.headers())
    else {
        let model = request
            .headers()
            .get(MODEL_HEADER)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        tracing::debug!(model = %model, path = request.uri().path(), "no route");
        let response = GatewayError::NoRoute { model }.into_response();
        state
            .metrics
            .record("", "", response.status().as_u16(), body, started.elapsed());
        return response;
    };
    let route = Arc::clone(route);
    let label = label.to_owned();
    let pool = route.pool.name().to_owned();
    let gauge = state.metrics.pool_in_flight(&pool);
    let (response, outcome) = state
        .proxy
        .forward(&route, request, client_addr, gauge)
        .await;
    let status = response.status().as_u16();
    state
        .metrics
        .record(&label, &pool, status, body, started.elapsed());
    if outcome == Outcome::Gateway {
        tracing::debug!(route = %route.name, status, "answered by the gateway");
    }
    response
}

/// A configured gateway, not yet listening.
#[derive(Debug)]
pub struct Gateway {
    config: Config,
}

/// A running gateway (and its simulated pools); stop it with
/// [`RunningGateway::shutdown`].
#[derive(Debug)]
pub struct RunningGateway {
    /// Where the gateway listens.
    pub addr: SocketAddr,
    /// Endpoints per pool (including started simulators), in config order.
    pub pools: Vec<(String, Vec<String>)>,
    /// The shared state (routes, metrics).
    pub state: Arc<AppState>,
    sims: crate::simulate::Simulators,
    shutdown: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _adapter_watcher: Option<bbr_adapters::ReloadWatcher>,
    _rewrite_watcher: Option<bbr_adapters::ReloadWatcher>,
}

impl Gateway {
    /// A gateway for this config.
    pub fn new(config: Config) -> Self {
        Self { config }
    }

    /// Starts the simulated pools (if any), binds `listen` and serves.
    pub async fn start(self, listen: SocketAddr) -> Result<RunningGateway, StartError> {
        crate::bbr::check_spool_dir(&self.config)?;
        let adapters = crate::bbr::load_adapters(&self.config)?;
        let rewrites = crate::bbr::load_rewrites(&self.config)?;
        let sims = crate::simulate::Simulators::start(&self.config).await?;
        let endpoints = sims.endpoints();
        let mut state = AppState::new(&self.config, &endpoints)?;
        let adapter_watcher = adapters.map(|(store, watcher)| {
            state.adapters = Some(store);
            watcher
        });
        let rewrite_watcher = rewrites.and_then(|(store, watcher)| {
            state.rewrites = Some(store);
            watcher
        });
        let state = Arc::new(state);
        let router = app(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: listen,
            source,
        })?;
        let (shutdown, mut stop) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|stop| *stop).await;
            })
            .await
        });
        let pools = state
            .routes()
            .pools()
            .iter()
            .map(|p| {
                (
                    p.name().to_owned(),
                    p.endpoints()
                        .iter()
                        .map(|e| e.authority().to_string())
                        .collect(),
                )
            })
            .collect();
        Ok(RunningGateway {
            addr,
            pools,
            state,
            sims,
            shutdown,
            server,
            _adapter_watcher: adapter_watcher,
            _rewrite_watcher: rewrite_watcher,
        })
    }
}

impl RunningGateway {
    /// The simulated model servers (empty without `simulate:` pools).
    pub fn simulators(&self) -> &crate::simulate::Simulators {
        &self.sims
    }

    /// Stops accepting, lets requests in flight finish, then stops the
    /// simulated pools.
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(true);
        let result = match self.server.await {
            Ok(result) => result,
            Err(join) => Err(std::io::Error::other(join)),
        };
        self.sims.shutdown().await;
        result
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A simulated model server could not start.
    #[error(transparent)]
    Simulator(#[from] crate::simulate::SimulatorError),
}
