//! `bbr-extproc`: the Envoy ext_proc server for body-based routing.
//!
//! Exit status: 0 after a clean drain, 2 for flags or a configuration that
//! cannot run (clap's usage errors, bad `--plugin`, `--config-*`), 1 when
//! the server fails to start or serve (a port taken, unreadable TLS files).

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let config = bbr_extproc::Config::parse();
    config.init_logging();
    let server_config = match config.server_config() {
        Ok(server_config) => server_config,
        Err(error) => {
            eprintln!("bbr-extproc: {}", chain(&error));
            return ExitCode::from(2);
        }
    };
    config.log_inert_flags();
    let started = async {
        let server = bbr_extproc::Server::bind(server_config).await?;
        tracing::info!(
            grpc = %server.grpc_addr(),
            health = %server.health_addr(),
            metrics = %server.metrics_addr(),
            secure = config.secure_serving,
            "listening"
        );
        server.serve(bbr_extproc::shutdown_signal()).await
    };
    match started.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bbr-extproc: {}", chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated.
fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}
