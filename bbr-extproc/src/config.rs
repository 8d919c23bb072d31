//! Command-line flags, compatible with the upstream BBR image so its
//! manifests work unchanged.
//!
//! Upstream flags that do not apply here are accepted and ignored (a warning
//! is logged when they are set): `--metrics-endpoint-auth`,
//! `--enable-pprof`, `--tracing`, `--streaming`, `--plugin` (the default
//! chain, model → `x-gateway-model-name` then base model →
//! `x-gateway-base-model-name`, is built in) and the `--zap-*` logging
//! flags. Booleans take `--flag`, `--flag=true` or `--flag=false`, like Go's.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use bbr_core::{DuplicateKeys, Limits};
use clap::{ArgAction, Parser};

use crate::server::{ServerConfig, Tls};
use crate::stream::{BodyMode, OnMissingModel, Settings};

/// `bbr-extproc`: Envoy ext_proc server for body-based routing.
#[derive(Debug, Clone, Parser)]
#[command(name = "bbr-extproc", version, about)]
#[non_exhaustive]
pub struct Config {
    /// ext_proc gRPC port.
    #[arg(long, default_value_t = 9004)]
    pub grpc_port: u16,
    /// grpc.health.v1 port (always plaintext).
    #[arg(long, default_value_t = 9005)]
    pub grpc_health_port: u16,
    /// Prometheus `/metrics` port (plain HTTP).
    #[arg(long, default_value_t = 9090)]
    pub metrics_port: u16,
    /// Address every listener binds.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// Serve ext_proc over TLS (ALPN h2).
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub secure_serving: bool,
    /// PEM certificate file, or a directory holding `tls.crt` and `tls.key`.
    /// Without it a self-signed certificate is made at startup.
    #[arg(long)]
    pub cert_path: Option<PathBuf>,
    /// PEM private key file.
    #[arg(long)]
    pub key_path: Option<PathBuf>,
    /// Log verbosity like upstream's: 0–1 warn, 2 info (default), 3 debug,
    /// 4+ trace. `RUST_LOG` overrides it.
    #[arg(short = 'v', long = "v", default_value_t = 2)]
    pub verbosity: u8,

    /// Longest accepted model name, in bytes.
    #[arg(long, default_value_t = Limits::DEFAULT_MAX_MODEL_LEN)]
    pub max_model_len: usize,
    /// Deepest accepted JSON nesting.
    #[arg(long, default_value_t = Limits::DEFAULT_MAX_DEPTH)]
    pub max_depth: u32,
    /// Most body bytes read (and held) before a decision; past it: 413.
    #[arg(long, default_value_t = Limits::DEFAULT_MAX_SCAN_BYTES)]
    pub max_scan_bytes: u64,
    /// Longest accepted body; past it: 413.
    #[arg(long, default_value_t = Limits::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: u64,
    /// A second top-level `model`: `reject` (400), `first-wins` or `last-wins`.
    #[arg(long, default_value = "reject")]
    pub duplicate_keys: DuplicateKeys,
    /// A valid body without `model`: forward without the header, or 400.
    #[arg(long, value_enum, default_value_t = OnMissingModel::PassThrough)]
    pub on_missing_model: OnMissingModel,
    /// Body mode assumed when Envoy sends no `protocol_config` (Envoy < 1.33).
    #[arg(long, value_enum, default_value_t = BodyMode::FullDuplexStreamed)]
    pub default_body_mode: BodyMode,
    /// Adapter map (upstream ConfigMap format): files or directories,
    /// repeatable, reloaded when they change.
    #[arg(long)]
    pub adapters: Vec<PathBuf>,
    /// Where the adapter map comes from: `auto`, `files`, `kubernetes` or
    /// `none` (see the `discovery` rules in the crate docs).
    #[arg(long, value_enum, default_value_t = crate::AdaptersFrom::Auto)]
    pub adapters_from: crate::AdaptersFrom,
    /// How often the adapter map is re-read.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub adapters_reload_interval: Duration,
    /// After SIGTERM: time health reports NOT_SERVING before the listener closes.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain_delay: Duration,
    /// After the listener closes: longest wait for in-flight streams.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub grace_period: Duration,
    /// Largest gRPC message accepted from Envoy. Default: the body limit
    /// plus 1 MiB, so a `BUFFERED` body at the limit still arrives.
    #[arg(long)]
    pub max_grpc_message_bytes: Option<usize>,
    /// HTTP/2 streams per connection (Envoy multiplexes every request over
    /// few connections, one stream each).
    #[arg(long, default_value_t = 4096)]
    pub max_concurrent_streams: u32,

    /// Accepted for upstream compatibility; ignored (no Kubernetes auth here).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", hide = true)]
    pub metrics_endpoint_auth: Option<bool>,
    /// Accepted for upstream compatibility; ignored.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", hide = true)]
    pub enable_pprof: Option<bool>,
    /// Accepted for upstream compatibility; ignored.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", hide = true)]
    pub tracing: Option<bool>,
    /// Accepted for upstream compatibility (GAIE); ignored: every body mode is
    /// handled, as Envoy announces it.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", hide = true)]
    pub streaming: Option<bool>,
    /// Accepted for upstream compatibility; the default plugin chain is built in.
    #[arg(long, hide = true)]
    pub plugin: Vec<String>,
    /// Accepted for upstream compatibility (controller-runtime logging); ignored.
    #[arg(long, hide = true, action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub zap_devel: Option<String>,
    /// Ignored (see `--zap-devel`).
    #[arg(long, hide = true)]
    pub zap_encoder: Option<String>,
    /// Ignored (see `--zap-devel`).
    #[arg(long, hide = true)]
    pub zap_log_level: Option<String>,
    /// Ignored (see `--zap-devel`).
    #[arg(long, hide = true)]
    pub zap_stacktrace_level: Option<String>,
    /// Ignored (see `--zap-devel`).
    #[arg(long, hide = true)]
    pub zap_time_encoding: Option<String>,
}

impl Config {
    /// The extraction limits.
    pub fn limits(&self) -> Limits {
        Limits::new()
            .with_max_model_len(self.max_model_len)
            .with_max_depth(self.max_depth)
            .with_max_scan_bytes(self.max_scan_bytes)
            .with_max_body_bytes(self.max_body_bytes)
            .with_duplicate_keys(self.duplicate_keys)
    }

    /// The per-stream policy (without the adapter map, which
    /// [`crate::run`] loads).
    pub fn settings(&self) -> Settings {
        Settings::new(self.limits())
            .on_missing(self.on_missing_model)
            .default_body_mode(self.default_body_mode)
    }

    /// The server configuration.
    pub fn server_config(&self) -> ServerConfig {
        let tls = match (&self.secure_serving, &self.cert_path, &self.key_path) {
            (false, _, _) => Tls::Plaintext,
            (true, None, None) => Tls::SelfSigned,
            (true, cert, key) => Tls::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
        };
        let default_message = usize::try_from(self.max_body_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(1 << 20);
        ServerConfig {
            bind_address: self.bind_address,
            grpc_port: self.grpc_port,
            health_port: self.grpc_health_port,
            metrics_port: self.metrics_port,
            tls,
            settings: self.settings(),
            // `--adapters-from` other than files/auto ignores the paths.
            adapters: match self.adapters_from {
                crate::AdaptersFrom::Auto | crate::AdaptersFrom::Files => self.adapters.clone(),
                _ => Vec::new(),
            },
            adapters_reload_interval: self.adapters_reload_interval,
            max_grpc_message_bytes: self.max_grpc_message_bytes.unwrap_or(default_message),
            max_concurrent_streams: self.max_concurrent_streams,
            drain_delay: self.drain_delay,
            grace_period: self.grace_period,
        }
    }

    /// Names of upstream flags that were set but have no effect here.
    pub fn ignored_flags(&self) -> Vec<&'static str> {
        let mut ignored = Vec::new();
        let set = [
            (
                "--metrics-endpoint-auth",
                self.metrics_endpoint_auth.is_some(),
            ),
            ("--enable-pprof", self.enable_pprof.is_some()),
            ("--tracing", self.tracing.is_some()),
            ("--streaming", self.streaming.is_some()),
            ("--plugin", !self.plugin.is_empty()),
            (
                "--zap-*",
                self.zap_devel.is_some()
                    || self.zap_encoder.is_some()
                    || self.zap_log_level.is_some()
                    || self.zap_stacktrace_level.is_some()
                    || self.zap_time_encoding.is_some(),
            ),
        ];
        for (name, was_set) in set {
            if was_set {
                ignored.push(name);
            }
        }
        ignored
    }

    /// Sets up logging from `-v` (or `RUST_LOG`).
    pub fn init_tracing(&self) {
        let level = match self.verbosity {
            0 | 1 => "warn",
            2 => "info",
            3 => "debug",
            _ => "trace",
        };
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
        // A second initialisation (tests) keeps the first subscriber.
        let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
    }
}

/// Parses `250ms`, `5s`, `2m` or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (e.g. 500ms, 5s, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("invalid duration unit in {text:?} (ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_defaults_and_flag_spellings_are_accepted() {
        let config = Config::try_parse_from(["bbr-extproc"]).expect("defaults");
        assert_eq!(
            (
                config.grpc_port,
                config.grpc_health_port,
                config.metrics_port
            ),
            (9004, 9005, 9090)
        );
        assert!(config.secure_serving);
        assert_eq!(config.verbosity, 2);
        let config = Config::try_parse_from([
            "bbr-extproc",
            "--secure-serving=false",
            "--v=3",
            "--grpc-port=9100",
            "--metrics-endpoint-auth=false",
            "--enable-pprof=false",
            "--tracing=false",
            "--plugin",
            r#"body-field-to-header:model-extractor:{"fieldName":"model","headerName":"X-Gateway-Model-Name"}"#,
            "--plugin",
            "base-model-to-header:base-model-mapper",
            "--streaming",
        ])
        .expect("upstream chart flags");
        assert!(!config.secure_serving);
        assert_eq!(config.verbosity, 3);
        assert_eq!(config.grpc_port, 9100);
        assert_eq!(
            config.ignored_flags(),
            vec![
                "--metrics-endpoint-auth",
                "--enable-pprof",
                "--tracing",
                "--streaming",
                "--plugin"
            ]
        );
        let config = Config::try_parse_from(["bbr-extproc", "-v", "4", "--secure-serving"])
            .expect("short -v");
        assert_eq!(config.verbosity, 4);
        assert!(config.secure_serving);
    }

    #[test]
    fn limits_and_policies_parse() {
        let config = Config::try_parse_from([
            "bbr-extproc",
            "--max-scan-bytes=1024",
            "--duplicate-keys=last-wins",
            "--on-missing-model=reject",
            "--default-body-mode=buffered",
            "--drain-delay=250ms",
        ])
        .expect("flags");
        assert_eq!(config.limits().max_scan_bytes(), 1024);
        assert_eq!(config.limits().duplicate_keys(), DuplicateKeys::LastWins);
        assert_eq!(config.on_missing_model, OnMissingModel::Reject);
        assert_eq!(config.default_body_mode, BodyMode::Buffered);
        assert_eq!(config.drain_delay, Duration::from_millis(250));
        assert!(Config::try_parse_from(["bbr-extproc", "--duplicate-keys=maybe"]).is_err());
        assert!(parse_duration("5x").is_err());
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
    }
}
