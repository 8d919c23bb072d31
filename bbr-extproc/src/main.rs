//! `bbr-extproc`: the Envoy ext_proc server for body-based routing.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = bbr_extproc::Config::parse();
    config.init_tracing();
    match bbr_extproc::run(config, bbr_extproc::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("bbr-extproc: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
