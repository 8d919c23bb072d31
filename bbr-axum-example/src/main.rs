//! `bbr-axum-example`: the gateway binary. Without `--config` it runs the
//! reference scenario: simulated pools on loopback behind the scenario's
//! HTTPRoutes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bbr_axum_example::config::{parse_duration, parse_header_name, routes_from_httproutes};
use bbr_axum_example::{Config, ConfigError, Gateway};
use clap::Parser;

// Request bodies are allocated per request and freed when forwarded; the
// system malloc gives the pages back to the kernel and faults them in
// again for the next body (see the README's "Allocator" decision).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Body-based routing gateway (OpenAI-compatible) with simulated model servers.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "BBR_LISTEN")]
    listen: Option<SocketAddr>,
    /// YAML config file (pools, routes, layer options, adapter map).
    /// Without it, the embedded reference scenario runs.
    #[arg(long, env = "BBR_CONFIG")]
    config: Option<PathBuf>,
    /// Gateway API HTTPRoute manifests to add as routes (repeatable).
    #[arg(long = "httproutes", value_name = "FILE")]
    httproutes: Vec<PathBuf>,
    /// Model aliases and weighted rewrites: YAML files of
    /// `InferenceModelRewrite` documents, or directories of them (a mounted
    /// ConfigMap), repeatable, reloaded when they change. Replaces the
    /// config's `model_rewrites.paths` (and the scenario's rule).
    #[arg(long = "model-rewrites", value_name = "PATH")]
    model_rewrites: Vec<PathBuf>,
    /// Picks rewrite targets by a hash of this request header's value (the
    /// same value, the same target) instead of at random; a request
    /// without it is picked at random.
    #[arg(long, value_name = "NAME", value_parser = parse_header_name)]
    model_rewrite_sticky_header: Option<String>,
    /// Simulated pools: time to first token (e.g. `100ms`; a unit is required).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    time_to_first_token: Duration,
    /// Simulated pools: time between tokens (e.g. `20ms`; a unit is required).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    inter_token_latency: Duration,
}

#[tokio::main]
async fn main() -> anyhow_free::Result {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::scenario(),
    };
    for file in &args.httproutes {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            path: file.clone(),
            source,
        })?;
        config.add_routes(routes_from_httproutes(&text)?)?;
    }
    config.set_simulated_latency(args.time_to_first_token, args.inter_token_latency);
    config.set_model_rewrites(args.model_rewrites);
    if let Some(header) = args.model_rewrite_sticky_header {
        config.model_rewrites.sticky_header = Some(header);
    }
    if config.model_rewrites.sticky_header.is_some() && config.model_rewrites.is_empty() {
        tracing::warn!("--model-rewrite-sticky-header without model rewrites: no effect");
    }
    let listen = args
        .listen
        .or(config.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));

    let running = Gateway::new(config).start(listen).await?;
    println!("bbr gateway listening on http://{}", running.addr);
    tracing::info!(simd_level = bbr_core::simd_level(), "body scan");
    for (pool, endpoints) in &running.pools {
        println!("  pool {pool}: {}", endpoints.join(", "));
    }
    if let Some(rewrites) = running.state.model_rewrites() {
        for rule in rewrites.snapshot().rules() {
            let targets: Vec<String> = rule
                .targets()
                .iter()
                .map(|t| format!("{} ({})", t.model(), t.weight()))
                .collect();
            let matches: Vec<&str> = rule.matches().collect();
            println!(
                "  model rewrite {}: {} -> {}",
                rule.name(),
                if matches.is_empty() {
                    "*".to_owned()
                } else {
                    matches.join(", ")
                },
                targets.join(", ")
            );
        }
    }
    println!("  GET /v1/models, /health, /metrics");
    println!();
    println!("Try it:");
    println!(
        "  curl -i http://{}/v1/completions -H 'Content-Type: application/json' \
         -d '{{\"model\": \"food-review-1\", \"prompt\": \"Write as if you were a critic: San Francisco\", \
         \"max_tokens\": 100, \"temperature\": 0}}'",
        running.addr
    );
    if running.state.model_rewrites().is_some() {
        println!(
            "  curl -s http://{}/v1/completions -d '{{\"model\": \"food-review\", \"prompt\": \"hi\", \"max_tokens\": 5}}'",
            running.addr
        );
        println!("    (rewritten by the rules above: the answer names the target that served it)");
    }

    shutdown_signal().await;
    println!("shutting down");
    running.shutdown().await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// `main`'s error: any error, printed with its causes.
mod anyhow_free {
    use std::fmt;

    /// The binary's result.
    pub(crate) type Result = std::result::Result<(), Error>;

    /// An error with its chain of causes.
    pub(crate) struct Error(Box<dyn std::error::Error + Send + Sync>);

    impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<E> for Error {
        fn from(error: E) -> Self {
            Self(error.into())
        }
    }

    impl fmt::Debug for Error {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}", bbr_core::ErrorChain::new(&*self.0))
        }
    }
}
