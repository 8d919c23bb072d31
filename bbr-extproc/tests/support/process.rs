//! The `bbr-extproc` binary as a child process: started on free loopback
//! ports, waited for until health says SERVING, drained with SIGTERM,
//! killed on drop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::free_port;

/// A running `bbr-extproc`, its output in a log file; killed on drop.
pub struct Binary {
    pub child: Child,
    pub grpc: u16,
    pub health: u16,
    pub metrics: u16,
    log: PathBuf,
}

impl Binary {
    /// Starts the binary with `--grpc-port`, `--grpc-health-port` and
    /// `--metrics-port` on free ports, then `args`. With `env`, the test's
    /// environment is not inherited: only those variables are set.
    pub fn spawn(args: &[&str], env: Option<&[(&str, String)]>) -> Self {
        let (grpc, health, metrics) = (free_port(), free_port(), free_port());
        let log =
            std::env::temp_dir().join(format!("bbr-binary-{}-{grpc}.log", std::process::id()));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(binary_path());
        if let Some(env) = env {
            command
                .env_clear()
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let child = command
            .args([
                format!("--grpc-port={grpc}"),
                format!("--grpc-health-port={health}"),
                format!("--metrics-port={metrics}"),
            ])
            .args(args)
            .stdin(Stdio::null())
            // The log lines (stdout) and the start errors (stderr), in one file.
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("start bbr-extproc");
        Self {
            child,
            grpc,
            health,
            metrics,
            log,
        }
    }

    /// The ext_proc address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.grpc))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (30 s at most) until health says SERVING; panics with the log
    /// if the process exits first.
    pub async fn wait_serving(&mut self) {
        if let Err(log) = self.try_wait_serving().await {
            panic!("{log}");
        }
    }

    /// Starts the binary as [`Binary::spawn`] does and waits until it
    /// serves; a port taken between picking and binding it (tests run in
    /// parallel) gives a new try with fresh ports.
    pub async fn spawn_serving(args: &[&str]) -> Self {
        let mut last = String::new();
        for _attempt in 0..5 {
            let mut binary = Self::spawn(args, None);
            match binary.try_wait_serving().await {
                Ok(()) => return binary,
                Err(log) if log.contains("cannot bind") => last = log,
                Err(log) => panic!("{log}"),
            }
        }
        panic!("bbr-extproc did not start after 5 tries: {last}");
    }

    /// Waits (30 s at most) until health says SERVING; the exit status and
    /// log if the process exits first.
    pub async fn try_wait_serving(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "bbr-extproc exited with {status}: {}",
                    self.log_text()
                ));
            }
            // SERVING from this process: it logs `listening` with its ports
            // once it has bound all three (the health port answering could
            // be another test's server that took the port first).
            if let Ok(status) = health_status(self.health, "").await
                && status == ServingStatus::Serving as i32
                && self.log_text().lines().any(|line| {
                    line.contains("listening") && line.contains(&format!(":{}", self.health))
                })
            {
                return Ok(());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not SERVING within 30 s: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then the exit status (30 s at most).
    pub async fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(killed.success());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no exit after SIGTERM: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM and a clean exit (what a drain must end with).
    pub async fn drain(&mut self) {
        let status = self.terminate().await;
        assert!(status.success(), "{status}: {}", self.log_text());
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The built binary (cargo sets the variable for this package's tests).
pub fn binary_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bbr-extproc"))
}

/// `grpc.health.v1` Check for `service` on the health port.
pub async fn health_status(port: u16, service: &str) -> Result<i32, Box<dyn std::error::Error>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect()
        .await?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(reply.into_inner().status)
}
