//! `model-sim`: one simulated vLLM-compatible model server, with the llm-d
//! inference simulator's flags (`model-sim --help`).

use std::process::ExitCode;

use bbr_model_sim::args::Args;
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let (addr, config) = match Args::parse().into_config() {
        Ok(parsed) => parsed,
        Err(error) => {
            eprintln!("model-sim: {error}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("model-sim: cannot listen on {addr}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    let simulator = match bbr_model_sim::Simulator::new(config, local.port()) {
        Ok(simulator) => simulator,
        Err(error) => {
            eprintln!("model-sim: {error}");
            return ExitCode::from(2);
        }
    };
    let loras: Vec<&str> = simulator
        .config()
        .lora_modules
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    println!(
        "model-sim listening on http://{local} (pod {}, model {}, LoRAs [{}], mode {})",
        simulator.pod_name(),
        simulator.config().display_name(),
        loras.join(", "),
        simulator.config().mode.as_str(),
    );
    match simulator.serve(listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("model-sim: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM (how Kubernetes stops a pod).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
