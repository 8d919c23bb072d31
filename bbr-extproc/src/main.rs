//! `bbr-extproc`: the Envoy ext_proc server for body-based routing.
//!
//! Exit status: 0 after a clean drain, 2 for flags or a configuration that
//! cannot run (clap's usage errors, bad `--plugin`, `--config-*`), 1 when
//! the server fails to start or serve (a port taken, unreadable TLS files).

use std::process::ExitCode;

use bbr_core::ErrorChain;
use clap::Parser;

// Request bodies are allocated per request and freed when forwarded; the
// system malloc gives the pages back to the kernel and faults them in
// again for the next body (see the README's "Allocator" decision).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = bbr_extproc::Config::parse();
    config.init_logging();
    config.log_inert_flags();
    // `run` builds the server configuration (flags that cannot run exit 2),
    // starts the adapter source `--adapters-from` names, binds and serves.
    match bbr_extproc::run(config, bbr_extproc::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error @ bbr_extproc::StartError::Config(_)) => {
            eprintln!("bbr-extproc: {}", ErrorChain::new(&error));
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("bbr-extproc: {}", ErrorChain::new(&error));
            ExitCode::FAILURE
        }
    }
}
