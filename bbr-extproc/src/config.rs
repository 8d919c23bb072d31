//! Command-line flags: every flag of the upstream BBR binary (GAIE v1.5.0)
//! and of its successor (llm-d's inference payload processor) with its
//! meaning, so their manifests work unchanged, plus bbr's own limits.
//!
//! Booleans take `--flag`, `--flag=true` or `--flag=false`, like Go's.
//! Every duration takes a unit (`250ms`, `5s`, `2m`; humantime syntax) and
//! every byte size takes one too (`512B`, `64KiB`, `32MiB`, `1GB`; bytesize
//! syntax, `KiB` = 1024, `KB` = 1000): a bare number is refused, so no flag
//! guesses a unit.
//!
//! | upstream flag | here |
//! | --- | --- |
//! | `--grpc-port`, `--grpc-health-port`, `--metrics-port` | the same (9004, 9005, 9090); all different |
//! | `--streaming` | `true`: Envoy without `protocol_config` (< 1.33) is assumed to send `FULL_DUPLEX_STREAMED`; `false`: `BUFFERED` (GAIE's unary mode). Newer Envoys announce the mode per stream and every mode is handled either way. Conflicts with a different `--default-body-mode` |
//! | `--secure-serving` (true) | TLS with ALPN h2: `--cert-path`/`--key-path` when given, else a self-signed certificate made at start, as upstream |
//! | `-v`/`--v` (2) | 0–2 `info`, 3 `debug` (one line per request), 4+ `trace` (per message); negative: 2, as upstream |
//! | `--zap-log-level` | overrides `-v`: `debug`, `info`, `warn`, `error` (`dpanic`, `panic`, `fatal` log errors only), or an integer N = `-v N` |
//! | `--zap-encoder` | `console` (text) or `json` (one JSON object per line); default by `--zap-devel` |
//! | `--zap-devel` (true) | the encoder default: `true` console, `false` json (controller-runtime's production default) |
//! | `--zap-time-encoding` | `rfc3339`, `rfc3339nano`, `iso8601` (RFC 3339 timestamps), `epoch` (seconds), `millis`, `nano` |
//! | `--zap-stacktrace-level` | accepted and validated (`info`, `error`, `panic`); no effect: Rust logs have no stack traces |
//! | `--metrics-endpoint-auth` (true) | `/metrics` needs `Authorization: Bearer <token>` matching `--metrics-auth-token-file`; without that file every scrape is refused (401). See `MetricsAuth` |
//! | `--enable-pprof` (true) | accepted; no effect: there is no Go runtime to profile and bbr turns no profiling on (the upstream turns on block and mutex profiling at rate 1). Use `perf` on the process |
//! | `--tracing` (true) | one OpenTelemetry span per request exported over OTLP/gRPC through the `OTEL_*` env the upstream chart sets, a child of the request's `traceparent`, whose context is passed to the upstream (feature `otlp`; see the crate README). Without `OTEL_TRACES_EXPORTER=otlp` or an OTLP endpoint variable nothing is exported (upstream prints spans on stdout there) |
//! | `--plugin type:name[:json]` | parsed for real, see `PluginChain` |
//! | `--config-file`, `--config-text` | the successor's `PayloadProcessorConfig`, the subset covering these plugins; `--config-text` wins when both are set, as upstream; either with `--plugin` is refused |

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use bbr_core::contract::{ClientHeaders, MissingModel};
use bbr_core::encoding::DecodeLimits;
use bbr_core::multipart::PartLimits;
use bbr_core::spool::SpoolConfig;
use bbr_core::{DuplicateKeys, Limits};
use clap::{ArgAction, Parser};

use crate::discovery::AdaptersFrom;
use crate::metrics_http::MetricsAuth;
use crate::plugins::{PluginChain, PluginError};
use crate::serve::{ServerConfig, Tls};
use crate::stream::{BodyMode, Settings, UndecidedPrefix};

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

    /// Log verbosity like upstream's: 0–2 info (default 2), 3 debug, 4+
    /// trace. `--zap-log-level`, then `RUST_LOG`, override it.
    #[arg(
        short = 'v',
        long = "v",
        default_value_t = 2,
        allow_negative_numbers = true
    )]
    pub verbosity: i32,
    /// controller-runtime's development mode: the default encoder is
    /// `console` when true (the default), `json` when false.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub zap_devel: bool,
    /// `console` or `json`.
    #[arg(long, value_parser = ["console", "json"])]
    pub zap_encoder: Option<String>,
    /// `debug`, `info`, `warn`, `error`, `dpanic`, `panic`, `fatal`, or an
    /// integer verbosity (like `-v`).
    #[arg(long, value_parser = parse_zap_level)]
    pub zap_log_level: Option<LogLevel>,
    /// Accepted and validated; no effect (no stack traces in Rust logs).
    #[arg(long, value_parser = ["info", "error", "panic"])]
    pub zap_stacktrace_level: Option<String>,
    /// `epoch`, `millis`, `nano`, `iso8601`, `rfc3339` or `rfc3339nano`.
    #[arg(long, value_parser = ["epoch", "millis", "nano", "iso8601", "rfc3339", "rfc3339nano"])]
    pub zap_time_encoding: Option<String>,

    /// Upstream plugin `type:name[:json]`, repeatable; none: the default
    /// chain (model into X-Gateway-Model-Name, then the base model).
    #[arg(long)]
    pub plugin: Vec<String>,
    /// The successor's `PayloadProcessorConfig` file (plugins subset).
    #[arg(long)]
    pub config_file: Option<PathBuf>,
    /// The successor's `PayloadProcessorConfig` inline; wins over `--config-file`.
    #[arg(long)]
    pub config_text: Option<String>,
    /// GAIE's `--streaming`: the body mode assumed when Envoy does not
    /// announce one (`true`: full duplex, `false`: buffered).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub streaming: Option<bool>,
    /// Refuse `/metrics` scrapes without the bearer token of
    /// `--metrics-auth-token-file`.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub metrics_endpoint_auth: bool,
    /// File holding the bearer token `/metrics` scrapes must send (re-read
    /// on each scrape).
    #[arg(long)]
    pub metrics_auth_token_file: Option<PathBuf>,
    /// Accepted for upstream compatibility; no effect (no Go profiler).
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub enable_pprof: bool,
    /// One OpenTelemetry span per request, exported over OTLP through the
    /// `OTEL_*` environment (see the crate README).
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub tracing: bool,

    /// Longest accepted model name, in bytes (a length, not a size: a plain
    /// number).
    #[arg(long, default_value_t = Limits::DEFAULT_MAX_MODEL_LEN)]
    pub max_model_len: usize,
    /// Deepest accepted JSON nesting.
    #[arg(long, default_value_t = Limits::DEFAULT_MAX_DEPTH)]
    pub max_depth: u32,
    /// Most body bytes read (and held) before a decision; past it: 413.
    #[arg(long, default_value = "32MiB", value_parser = parse_size)]
    pub max_scan_bytes: u64,
    /// Longest accepted body; past it: 413.
    #[arg(long, default_value = "128MiB", value_parser = parse_size)]
    pub max_body_bytes: u64,
    /// A second top-level `model`: `reject` (400), `first-wins` or `last-wins`.
    #[arg(long, default_value = "reject")]
    pub duplicate_keys: DuplicateKeys,
    /// A valid body without `model`: `forward` without the header, or
    /// `reject` with 400.
    #[arg(long, default_value = "forward")]
    pub on_missing_model: MissingModel,
    /// Body mode assumed when Envoy sends no `protocol_config` (Envoy < 1.33):
    /// `full-duplex-streamed` (default), `streamed` or `buffered`.
    #[arg(long)]
    pub default_body_mode: Option<BodyMode>,
    /// A client-sent `x-gateway-model-name` / `x-gateway-base-model-name`
    /// (headers or request trailers): `strip` it, or `reject` with 400.
    #[arg(long, default_value = "strip")]
    pub client_headers: ClientHeaders,
    /// A `BUFFERED_PARTIAL` prefix (Envoy's buffer limit reached) that does
    /// not decide the model: `reject` with 413, or `forward` unrouted.
    #[arg(long, default_value = "reject")]
    pub undecided_prefix: UndecidedPrefix,
    /// Longest time from the first body byte to the routing decision;
    /// past it: 408.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub decision_deadline: Duration,
    /// Cap on body bytes held before their decision, across all streams;
    /// past it: 503 with `Retry-After`.
    #[arg(long, default_value = "512MiB", value_parser = parse_size)]
    pub max_held_bytes: u64,
    /// `FULL_DUPLEX_STREAMED`: body bytes of one request held in memory
    /// before its decision; what it holds past them goes to a disk spool
    /// in `--spool-dir`. `off`: everything is held in memory.
    #[arg(long, default_value = "4MiB", value_parser = parse_spool_threshold)]
    pub spool_threshold: SpoolThreshold,
    /// Directory of the spool files (one unlinked file per spooling
    /// request), checked at start: unusable, the start stops. Default:
    /// `$TMPDIR`, else `/tmp` (unusable: a warning, and the spool is off).
    #[arg(long)]
    pub spool_dir: Option<PathBuf>,
    /// Cap on body bytes spooled to disk, across all streams; past it (or
    /// when the spool cannot be written): 503 with `Retry-After`.
    #[arg(long, default_value = "4GiB", value_parser = parse_size)]
    pub max_spooled_bytes: u64,

    // Decoding and form limits (bbr_core::encoding::DecodeLimits,
    // bbr_core::multipart::PartLimits); each default is the core's.
    /// Compressed bodies: most decoded bytes per encoded byte, checked once
    /// more than `--decode-ratio-floor` is decoded; past it: 413.
    #[arg(long, default_value_t = DecodeLimits::DEFAULT_MAX_RATIO)]
    pub max_decode_ratio: u32,
    /// Compressed bodies: decoded bytes before the ratio is checked.
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub decode_ratio_floor: u64,
    /// Compressed bodies: largest decoder window a zstd or brotli stream
    /// may ask for (exactly it is accepted); past it: 413.
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    pub max_decode_window: u64,
    /// `multipart/form-data`: longest header block of one part (CRLFs and
    /// the empty line included); past it: 400.
    #[arg(long, default_value = "8KiB", value_parser = parse_size)]
    pub max_part_header_bytes: u64,
    /// `multipart/form-data`: most header lines in one part (a plain
    /// number); past it: 400.
    #[arg(long, default_value_t = PartLimits::DEFAULT_MAX_HEADERS)]
    pub max_part_headers: usize,
    /// Adapter map (upstream ConfigMap format): files or directories,
    /// repeatable, reloaded when they change.
    #[arg(long)]
    pub adapters: Vec<PathBuf>,
    /// Where the adapter map comes from: `auto`, `files`, `kubernetes` or
    /// `none` (see `AdaptersFrom`).
    #[arg(long, default_value = "auto")]
    pub adapters_from: AdaptersFrom,
    /// How often the adapter map (and `--model-rewrites`) is re-read.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub adapters_reload_interval: Duration,
    /// Model aliases and weighted rewrites: YAML files of
    /// `InferenceModelRewrite` documents, or directories of them (a mounted
    /// ConfigMap), repeatable, reloaded when they change.
    #[arg(long)]
    pub model_rewrites: Vec<PathBuf>,
    /// Picks rewrite targets by a hash of this request header's value (the
    /// same value, the same target) instead of at random; a request without
    /// it is picked at random.
    #[arg(long, value_parser = parse_header_name)]
    pub model_rewrite_sticky_header: Option<String>,
    /// After SIGTERM: time health reports NOT_SERVING before the listener closes.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain_delay: Duration,
    /// After the listener closes: longest wait for in-flight streams.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub grace_period: Duration,
    /// Largest gRPC message accepted from Envoy. Default: the body limit
    /// plus 1 MiB, so a `BUFFERED` body at the limit still arrives.
    #[arg(long, value_parser = parse_size)]
    pub max_grpc_message_bytes: Option<u64>,
    /// HTTP/2 streams per connection (Envoy multiplexes every request over
    /// few connections, one stream each).
    #[arg(long, default_value_t = 4096)]
    pub max_concurrent_streams: u32,
}

/// `--spool-threshold`: a byte size, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpoolThreshold {
    /// No disk spool: held bytes stay in memory (within `--max-held-bytes`).
    Off,
    /// Bytes of one request held in memory before the spool takes over.
    Bytes(u64),
}

/// A log level from `-v` or `--zap-log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogLevel {
    /// `error` (also zap's `dpanic`, `panic`, `fatal`).
    Error,
    /// `warn`.
    Warn,
    /// `info`: start, stop, warnings.
    Info,
    /// `debug`: one line per request.
    Debug,
    /// `trace`: one line per ext_proc message.
    Trace,
}

impl LogLevel {
    /// The level of logr verbosity `v` (upstream's `-v`).
    pub fn from_verbosity(v: i32) -> Self {
        match v {
            // A negative value is reset to the default 2, as upstream.
            ..=2 => LogLevel::Info,
            3 => LogLevel::Debug,
            _ => LogLevel::Trace,
        }
    }

    /// The `tracing` filter directive.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// A configuration that cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The plugin chain is invalid.
    #[error(transparent)]
    Plugins(#[from] PluginError),
    /// `--config-file` cannot be read.
    #[error("--config-file {path}: cannot read")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `--plugin` together with a config.
    #[error("--plugin and --config-file/--config-text configure the same plugins; give one")]
    PluginsTwice,
    /// `--streaming` and `--default-body-mode` disagree.
    #[error(
        "--streaming={streaming} means --default-body-mode={implied}, but --default-body-mode={given} was given"
    )]
    StreamingConflict {
        /// `--streaming`.
        streaming: bool,
        /// What it implies.
        implied: &'static str,
        /// The conflicting mode.
        given: &'static str,
    },
    /// Two listeners on one port.
    #[error(
        "port conflict: --grpc-port, --grpc-health-port and --metrics-port must differ ({0} twice)"
    )]
    PortConflict(u16),
    /// A port of 0.
    #[error("--{0} must be in 1..65535")]
    PortZero(&'static str),
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

    /// The plugin chain from `--plugin`, `--config-text` or `--config-file`.
    pub fn plugins(&self) -> Result<PluginChain, ConfigError> {
        let config = match (&self.config_text, &self.config_file) {
            (Some(text), _) => Some(("--config-text".to_owned(), text.clone())),
            (None, Some(path)) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::ReadConfig {
                        path: path.clone(),
                        source,
                    })?;
                Some((format!("--config-file {}", path.display()), text))
            }
            (None, None) => None,
        };
        match config {
            Some(_) if !self.plugin.is_empty() => Err(ConfigError::PluginsTwice),
            Some((origin, text)) => Ok(PluginChain::from_config_text(&origin, &text)?),
            None => Ok(PluginChain::from_flags(&self.plugin)?),
        }
    }

    /// The body mode assumed without `protocol_config`.
    pub fn body_mode(&self) -> Result<BodyMode, ConfigError> {
        let implied = self.streaming.map(|streaming| {
            let mode = if streaming {
                BodyMode::FullDuplexStreamed
            } else {
                BodyMode::Buffered
            };
            (streaming, mode)
        });
        match (implied, self.default_body_mode) {
            (Some((streaming, implied)), Some(given)) if implied != given => {
                Err(ConfigError::StreamingConflict {
                    streaming,
                    implied: implied.as_str(),
                    given: given.as_str(),
                })
            }
            (_, Some(given)) => Ok(given),
            (Some((_, implied)), None) => Ok(implied),
            (None, None) => Ok(BodyMode::default()),
        }
    }

    /// The per-stream policy (without the adapter map, which the server
    /// loads).
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let plugins = self.plugins()?;
        Ok(Settings::new(self.limits().with_field(plugins.field()))
            .missing_model(self.on_missing_model)
            .client_headers(self.client_headers)
            .default_body_mode(self.body_mode()?)
            .undecided_prefix(self.undecided_prefix)
            .decision_deadline(self.decision_deadline)
            .max_held_bytes(self.max_held_bytes)
            .decode_limits(self.decode_limits())
            .part_limits(self.part_limits())
            .spool(self.spool_config())
            .max_spooled_bytes(self.max_spooled_bytes)
            .routing(plugins.routing().clone()))
    }

    /// The disk spool from `--spool-threshold` and `--spool-dir` (`None`
    /// when the threshold is `off`).
    pub fn spool_config(&self) -> Option<SpoolConfig> {
        let SpoolThreshold::Bytes(threshold) = self.spool_threshold else {
            return None;
        };
        let config = SpoolConfig::new().with_memory_threshold(threshold);
        Some(match &self.spool_dir {
            Some(dir) => config.with_dir(dir),
            None => config,
        })
    }

    /// The bounds on decoding a compressed body, from the flags.
    pub fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits::new()
            .with_max_ratio(self.max_decode_ratio)
            .with_ratio_floor(self.decode_ratio_floor)
            .with_max_window(self.max_decode_window)
    }

    /// The bounds on a form part's headers, from the flags.
    pub fn part_limits(&self) -> PartLimits {
        PartLimits::new()
            .with_max_header_bytes(
                usize::try_from(self.max_part_header_bytes).unwrap_or(usize::MAX),
            )
            .with_max_headers(self.max_part_headers)
    }

    /// Who may scrape `/metrics`.
    pub fn metrics_auth(&self) -> MetricsAuth {
        if self.metrics_endpoint_auth {
            MetricsAuth::BearerToken {
                token_file: self.metrics_auth_token_file.clone(),
            }
        } else {
            MetricsAuth::Open
        }
    }

    /// The server configuration, or why this configuration cannot start.
    pub fn server_config(&self) -> Result<ServerConfig, ConfigError> {
        let ports = [
            ("grpc-port", self.grpc_port),
            ("grpc-health-port", self.grpc_health_port),
            ("metrics-port", self.metrics_port),
        ];
        for (i, (flag, port)) in ports.iter().enumerate() {
            if *port == 0 {
                return Err(ConfigError::PortZero(flag));
            }
            if ports[i + 1..].iter().any(|(_, other)| other == port) {
                return Err(ConfigError::PortConflict(*port));
            }
        }
        let tls = match (&self.secure_serving, &self.cert_path, &self.key_path) {
            (false, _, _) => Tls::Plaintext,
            (true, None, None) => Tls::SelfSigned,
            (true, cert, key) => Tls::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
        };
        let max_message = self
            .max_grpc_message_bytes
            .unwrap_or(self.max_body_bytes.saturating_add(1 << 20));
        let plugins = self.plugins()?;
        let mut config = ServerConfig::local(self.settings()?);
        config.bind_address = self.bind_address;
        config.grpc_port = self.grpc_port;
        config.health_port = self.grpc_health_port;
        config.metrics_port = self.metrics_port;
        config.tls = tls;
        let from_files = matches!(self.adapters_from, AdaptersFrom::Auto | AdaptersFrom::Files);
        if plugins.routing().base_model() && from_files {
            config.adapters = self.adapters.clone();
        } else if !from_files && !self.adapters.is_empty() {
            tracing::warn!(
                adapters_from = %self.adapters_from,
                "--adapters given but ignored: the adapter map does not come from files"
            );
        } else if !self.adapters.is_empty() {
            tracing::warn!(
                "--adapters given but the plugin chain has no base-model-to-header: no base-model header is set"
            );
        }
        config.adapters_reload_interval = self.adapters_reload_interval;
        config.model_rewrites = self.model_rewrites.clone();
        config.model_rewrite_sticky_header = self.model_rewrite_sticky_header.clone();
        if self.model_rewrites.is_empty() && self.model_rewrite_sticky_header.is_some() {
            tracing::warn!(
                "--model-rewrite-sticky-header given without --model-rewrites: no effect"
            );
        }
        config.max_grpc_message_bytes = usize::try_from(max_message).unwrap_or(usize::MAX);
        config.max_concurrent_streams = self.max_concurrent_streams;
        config.drain_delay = self.drain_delay;
        config.grace_period = self.grace_period;
        config.metrics_auth = self.metrics_auth();
        config.metrics = std::sync::Arc::new(crate::metrics::Metrics::for_plugins(plugins.names()));
        Ok(config)
    }

    /// The log level: `--zap-log-level`, else `-v`.
    pub fn log_level(&self) -> LogLevel {
        self.zap_log_level
            .unwrap_or_else(|| LogLevel::from_verbosity(self.verbosity))
    }

    /// True for JSON log lines (`--zap-encoder`, else `--zap-devel`).
    pub fn json_logs(&self) -> bool {
        match self.zap_encoder.as_deref() {
            Some(encoder) => encoder == "json",
            None => !self.zap_devel,
        }
    }

    /// Sets up logging from `--zap-*` and `-v` (`RUST_LOG` overrides the
    /// level).
    pub fn init_logging(&self) {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(self.log_level().as_str()));
        let timer = crate::logging::Timer::from_zap(self.zap_time_encoding.as_deref());
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_timer(timer);
        // A second initialisation (tests) keeps the first subscriber.
        let _ = if self.json_logs() {
            builder.json().try_init()
        } else {
            builder.try_init()
        };
    }

    /// Logs what the accepted-but-inert upstream flags do here.
    pub fn log_inert_flags(&self) {
        if self.enable_pprof {
            tracing::debug!("--enable-pprof: no effect (no Go runtime to profile)");
        }
        if self.zap_stacktrace_level.is_some() {
            tracing::debug!("--zap-stacktrace-level: no effect (no stack traces in logs)");
        }
        if self.metrics_endpoint_auth && self.metrics_auth_token_file.is_none() {
            tracing::warn!(
                "--metrics-endpoint-auth is on (the default) without --metrics-auth-token-file: every /metrics scrape is refused (set the file or --metrics-endpoint-auth=false)"
            );
        }
    }
}

/// `--zap-log-level`: zap's names, or an integer verbosity.
fn parse_zap_level(text: &str) -> Result<LogLevel, String> {
    match text {
        "debug" => Ok(LogLevel::Debug),
        "info" => Ok(LogLevel::Info),
        "warn" => Ok(LogLevel::Warn),
        "error" | "dpanic" | "panic" | "fatal" => Ok(LogLevel::Error),
        number => match number.parse::<i32>() {
            Ok(v) if v > 0 => Ok(LogLevel::from_verbosity(v)),
            _ => Err(format!(
                "`{text}`: expected debug, info, warn, error, dpanic, panic, fatal or an integer > 0"
            )),
        },
    }
}

/// A duration with its unit (humantime: `250ms`, `5s`, `2m`, `1h 30m`).
/// An HTTP header name (a token), lower case.
fn parse_header_name(text: &str) -> Result<String, String> {
    let is_token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if text.is_empty() || !text.bytes().all(is_token) {
        return Err(format!("`{text}` is not an HTTP header name"));
    }
    Ok(text.to_ascii_lowercase())
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!(
            "`{text}` has no unit: write e.g. {text}s or {text}ms"
        ));
    }
    humantime::parse_duration(text).map_err(|e| format!("`{text}`: {e} (e.g. 500ms, 5s, 2m)"))
}

/// `--spool-threshold`: `off`, or a byte size with its unit.
fn parse_spool_threshold(text: &str) -> Result<SpoolThreshold, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(SpoolThreshold::Off);
    }
    parse_size(text)
        .map(SpoolThreshold::Bytes)
        .map_err(|error| format!("{error}, or off"))
}

/// A byte size with its unit (bytesize: `512B`, `64KiB`, `32MiB`, `1GB`).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!(
            "`{text}` has no unit: write e.g. {text}B, {text}KiB or {text}MiB"
        ));
    }
    text.parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("`{text}`: {e} (e.g. 512B, 64KiB, 32MiB)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The container args of the upstream chart, verbatim.
    pub(crate) const CHART_ARGS: [&str; 8] = [
        "bbr-extproc",
        "--streaming",
        "--v",
        "3",
        "--plugin",
        r#"body-field-to-header:model-extractor:{"fieldName":"model","headerName":"X-Gateway-Model-Name"}"#,
        "--plugin=base-model-to-header:base-model-mapper",
        "--tracing=false",
    ];

    #[test]
    fn upstream_defaults() {
        let config = Config::try_parse_from(["bbr-extproc"]).expect("defaults");
        assert_eq!(
            (
                config.grpc_port,
                config.grpc_health_port,
                config.metrics_port
            ),
            (9004, 9005, 9090)
        );
        assert!(config.secure_serving && config.metrics_endpoint_auth && config.enable_pprof);
        assert!(config.tracing && config.zap_devel);
        assert_eq!(config.log_level(), LogLevel::Info);
        assert!(!config.json_logs());
        assert_eq!(config.plugins().unwrap(), PluginChain::default());
        assert_eq!(config.body_mode().unwrap(), BodyMode::FullDuplexStreamed);
        assert_eq!(config.limits(), Limits::default());
        let server = config.server_config().unwrap();
        assert_eq!(server.tls, Tls::SelfSigned);
        assert_eq!(
            server.metrics_auth,
            MetricsAuth::BearerToken { token_file: None }
        );
    }

    #[test]
    fn the_upstream_chart_args_parse_to_the_default_chain() {
        let config = Config::try_parse_from(CHART_ARGS).expect("chart args");
        assert_eq!(config.streaming, Some(true));
        assert_eq!(config.log_level(), LogLevel::Debug);
        assert!(!config.tracing);
        let plugins = config.plugins().unwrap();
        assert_eq!(plugins.routing(), PluginChain::default().routing());
        assert_eq!(
            plugins.names().body_field.as_deref(),
            Some("model-extractor")
        );
        assert_eq!(config.body_mode().unwrap(), BodyMode::FullDuplexStreamed);
        assert!(config.server_config().is_ok());
    }

    #[test]
    fn go_style_booleans_and_verbosity() {
        let config = Config::try_parse_from([
            "bbr-extproc",
            "--secure-serving=false",
            "--metrics-endpoint-auth=false",
            "--enable-pprof=false",
            "--zap-devel=false",
            "--streaming=false",
            "-v",
            "-1",
        ])
        .expect("flags");
        assert!(!config.secure_serving && !config.metrics_endpoint_auth && !config.enable_pprof);
        assert_eq!(config.metrics_auth(), MetricsAuth::Open);
        assert!(
            config.json_logs(),
            "zap-devel=false: json, like controller-runtime"
        );
        assert_eq!(
            config.log_level(),
            LogLevel::Info,
            "negative -v is the default"
        );
        assert_eq!(config.body_mode().unwrap(), BodyMode::Buffered);
        assert_eq!(config.server_config().unwrap().tls, Tls::Plaintext);
        for (v, level) in [
            (0, LogLevel::Info),
            (2, LogLevel::Info),
            (3, LogLevel::Debug),
            (4, LogLevel::Trace),
            (5, LogLevel::Trace),
        ] {
            assert_eq!(LogLevel::from_verbosity(v), level);
        }
    }

    #[test]
    fn zap_flags_map_onto_log_levels_and_encoders() {
        for (value, level) in [
            ("debug", LogLevel::Debug),
            ("info", LogLevel::Info),
            ("warn", LogLevel::Warn),
            ("error", LogLevel::Error),
            ("panic", LogLevel::Error),
            ("4", LogLevel::Trace),
        ] {
            let config = Config::try_parse_from([
                "bbr-extproc",
                "--v=4",
                &format!("--zap-log-level={value}"),
            ])
            .unwrap();
            assert_eq!(config.log_level(), level, "{value}");
        }
        for bad in ["verbose", "0", "-3"] {
            assert!(
                Config::try_parse_from(["bbr-extproc", &format!("--zap-log-level={bad}")]).is_err(),
                "{bad}"
            );
        }
        let config = Config::try_parse_from([
            "bbr-extproc",
            "--zap-encoder=json",
            "--zap-time-encoding=millis",
            "--zap-stacktrace-level=error",
        ])
        .unwrap();
        assert!(config.json_logs());
        assert!(Config::try_parse_from(["bbr-extproc", "--zap-encoder=xml"]).is_err());
        assert!(Config::try_parse_from(["bbr-extproc", "--zap-time-encoding=unix"]).is_err());
    }

    #[test]
    fn streaming_conflicting_with_the_default_body_mode_is_refused() {
        let config =
            Config::try_parse_from(["bbr-extproc", "--streaming", "--default-body-mode=buffered"])
                .unwrap();
        let message = config.body_mode().unwrap_err().to_string();
        assert!(
            message.contains("--streaming=true means --default-body-mode=full-duplex-streamed"),
            "{message}"
        );
        let config =
            Config::try_parse_from(["bbr-extproc", "--default-body-mode=streamed"]).unwrap();
        assert_eq!(config.body_mode().unwrap(), BodyMode::Streamed);
        assert!(Config::try_parse_from(["bbr-extproc", "--default-body-mode=grpc"]).is_err());
    }

    #[test]
    fn config_text_wins_over_config_file_and_plugin_flags_conflict() {
        let text = "apiVersion: llm-d.ai/v1alpha1\nkind: PayloadProcessorConfig\nplugins:\n- type: base-model-to-header\nprofiles:\n- name: p\n  plugins:\n    request:\n    - pluginRef: base-model-to-header\n";
        let config = Config::try_parse_from([
            "bbr-extproc",
            "--config-file=/nonexistent/ipp.yaml",
            &format!("--config-text={text}"),
        ])
        .unwrap();
        assert_eq!(config.plugins().unwrap().routing().model(), None);
        let missing =
            Config::try_parse_from(["bbr-extproc", "--config-file=/nonexistent/ipp.yaml"]).unwrap();
        let message = missing.plugins().unwrap_err().to_string();
        assert!(
            message.contains("--config-file /nonexistent/ipp.yaml"),
            "{message}"
        );
        let both = Config::try_parse_from([
            "bbr-extproc",
            &format!("--config-text={text}"),
            "--plugin=base-model-to-header:b",
        ])
        .unwrap();
        assert!(matches!(both.plugins(), Err(ConfigError::PluginsTwice)));
    }

    #[test]
    fn ports_must_differ_and_be_nonzero() {
        let config = Config::try_parse_from(["bbr-extproc", "--metrics-port=9004"]).unwrap();
        assert!(matches!(
            config.server_config(),
            Err(ConfigError::PortConflict(9004))
        ));
        let config = Config::try_parse_from(["bbr-extproc", "--grpc-port=0"]).unwrap();
        assert!(matches!(
            config.server_config(),
            Err(ConfigError::PortZero("grpc-port"))
        ));
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        let bare = parse_duration("7").unwrap_err();
        assert!(bare.contains("`7` has no unit"), "{bare}");
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        let config =
            Config::try_parse_from(["bbr-extproc", "--drain-delay=250ms", "--grace-period=1m"])
                .unwrap();
        assert_eq!(
            (config.drain_delay, config.grace_period),
            (Duration::from_millis(250), Duration::from_secs(60))
        );
        let error = Config::try_parse_from(["bbr-extproc", "--drain-delay=5"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("`5` has no unit"), "{error}");
    }

    #[test]
    fn sizes_need_a_unit() {
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("32MiB"), Ok(32 << 20));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        let bare = parse_size("1024").unwrap_err();
        assert!(bare.contains("`1024` has no unit"), "{bare}");
        assert!(parse_size("12 parsecs").is_err());
        let config = Config::try_parse_from([
            "bbr-extproc",
            "--max-scan-bytes=1KiB",
            "--max-body-bytes=2MiB",
            "--max-grpc-message-bytes=3MiB",
            "--duplicate-keys=last-wins",
            "--on-missing-model=reject",
        ])
        .unwrap();
        assert_eq!(config.limits().max_scan_bytes(), 1024);
        assert_eq!(config.limits().max_body_bytes(), 2 << 20);
        assert_eq!(config.limits().duplicate_keys(), DuplicateKeys::LastWins);
        assert_eq!(config.on_missing_model, MissingModel::Reject);
        assert_eq!(
            config.server_config().unwrap().max_grpc_message_bytes,
            3 << 20
        );
        let default_message =
            Config::try_parse_from(["bbr-extproc", "--max-body-bytes=2MiB"]).unwrap();
        assert_eq!(
            default_message
                .server_config()
                .unwrap()
                .max_grpc_message_bytes,
            3 << 20
        );
        assert!(Config::try_parse_from(["bbr-extproc", "--max-scan-bytes=1024"]).is_err());
        assert!(Config::try_parse_from(["bbr-extproc", "--duplicate-keys=maybe"]).is_err());
    }
    #[test]
    fn stream_policies_default_to_the_library_defaults_and_take_units() {
        let defaults = Config::try_parse_from(["bbr-extproc"]).unwrap();
        let settings = defaults.settings().unwrap();
        assert_eq!(
            settings.decision_deadline,
            Settings::DEFAULT_DECISION_DEADLINE
        );
        assert_eq!(
            settings.max_held_bytes,
            crate::held::HeldBudget::DEFAULT_CAP
        );
        assert_eq!(settings.undecided_prefix, UndecidedPrefix::Reject);
        assert_eq!(settings.client_headers, ClientHeaders::Strip);
        let config = Config::try_parse_from([
            "bbr-extproc",
            "--decision-deadline=250ms",
            "--max-held-bytes=64MiB",
            "--undecided-prefix=forward",
            "--client-headers=reject",
        ])
        .unwrap();
        let settings = config.settings().unwrap();
        assert_eq!(settings.decision_deadline, Duration::from_millis(250));
        assert_eq!(settings.max_held_bytes, 64 << 20);
        assert_eq!(settings.undecided_prefix, UndecidedPrefix::Forward);
        assert_eq!(settings.client_headers, ClientHeaders::Reject);
        for bad in [
            "--decision-deadline=5",
            "--max-held-bytes=1024",
            "--undecided-prefix=maybe",
            "--client-headers=keep",
        ] {
            assert!(
                Config::try_parse_from(["bbr-extproc", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_spool_is_on_by_default_at_the_core_defaults_and_can_be_turned_off() {
        let defaults = Config::try_parse_from(["bbr-extproc"]).unwrap();
        let settings = defaults.settings().unwrap();
        let spool = settings.spool.expect("on by default");
        assert_eq!(
            spool.memory_threshold(),
            bbr_core::spool::DEFAULT_SPOOL_THRESHOLD
        );
        assert_eq!(spool.dir(), std::env::temp_dir());
        assert_eq!(
            settings.max_spooled_bytes,
            bbr_core::spool::DEFAULT_MAX_SPOOLED_BYTES
        );
        let config = Config::try_parse_from([
            "bbr-extproc",
            "--spool-threshold=1MiB",
            "--spool-dir=/var/spool/bbr",
            "--max-spooled-bytes=10GiB",
        ])
        .unwrap();
        let settings = config.settings().unwrap();
        let spool = settings.spool.unwrap();
        assert_eq!(spool.memory_threshold(), 1 << 20);
        assert_eq!(spool.dir(), PathBuf::from("/var/spool/bbr"));
        assert_eq!(settings.max_spooled_bytes, 10 << 30);
        for off in ["off", "OFF"] {
            let config =
                Config::try_parse_from(["bbr-extproc", &format!("--spool-threshold={off}")])
                    .unwrap();
            assert_eq!(config.settings().unwrap().spool, None);
        }
        let zero = Config::try_parse_from(["bbr-extproc", "--spool-threshold=0B"]).unwrap();
        assert_eq!(zero.spool_config().unwrap().memory_threshold(), 0);
        for bad in [
            "--spool-threshold=4096",
            "--spool-threshold=never",
            "--max-spooled-bytes=1024",
        ] {
            let error = Config::try_parse_from(["bbr-extproc", bad]).unwrap_err();
            assert!(
                error.to_string().contains("no unit") || bad.contains("never"),
                "{bad}: {error}"
            );
        }
    }

    /// The verdict of `body` (of `content_type`, `content_encoding`) fed
    /// whole under the flags `args`: the model, or the refusal's status.
    fn verdict(
        args: &[&str],
        content_type: &[u8],
        content_encoding: Option<&[u8]>,
        body: &[u8],
    ) -> Result<Option<String>, u16> {
        let config =
            Config::try_parse_from(std::iter::once("bbr-extproc").chain(args.iter().copied()))
                .unwrap();
        let settings = config.settings().unwrap();
        let mut extractor = bbr_core::BodyExtractor::for_content(
            Some(content_type),
            content_encoding,
            settings.limits,
        )
        .with_decode_limits(settings.decode_limits)
        .with_part_limits(settings.part_limits);
        let refused =
            |error: bbr_core::ExtractError| bbr_core::contract::Refusal::from(error).status();
        extractor
            .feed(&bytes::Bytes::copy_from_slice(body))
            .map_err(refused)?;
        let outcome = extractor.finish().map_err(refused)?;
        Ok(outcome.model().map(|model| model.as_str().to_owned()))
    }

    const FORM: &[u8] = b"multipart/form-data; boundary=b";

    /// A form: a file part with two header lines, then `model`.
    fn form() -> Vec<u8> {
        b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--b--\r\n".to_vec()
    }

    #[test]
    fn decode_and_part_flags_default_to_the_core_defaults() {
        let config = Config::try_parse_from(["bbr-extproc"]).unwrap();
        let settings = config.settings().unwrap();
        assert_eq!(settings.decode_limits, DecodeLimits::new());
        assert_eq!(settings.part_limits, PartLimits::new());
        assert_eq!(
            DecodeLimits::new().ratio_floor(),
            parse_size("1MiB").unwrap()
        );
        assert_eq!(
            DecodeLimits::new().max_window(),
            parse_size("8MiB").unwrap()
        );
        assert_eq!(
            PartLimits::new().max_header_bytes() as u64,
            parse_size("8KiB").unwrap()
        );
        for bad in [
            "--decode-ratio-floor=1024",
            "--max-decode-window=8",
            "--max-part-header-bytes=512",
            "--max-part-headers=two",
            "--max-decode-ratio=-1",
        ] {
            assert!(
                Config::try_parse_from(["bbr-extproc", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn max_part_headers_at_the_limit_and_one_past() {
        let routed = Ok(Some("whisper-1".to_owned()));
        assert_eq!(
            verdict(&["--max-part-headers=2"], FORM, None, &form()),
            routed
        );
        assert_eq!(
            verdict(&["--max-part-headers=1"], FORM, None, &form()),
            Err(400)
        );
    }

    #[test]
    fn max_part_header_bytes_at_the_limit_and_one_past() {
        // The file part's header block: its two lines and the empty line.
        let block = "Content-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n".len();
        let at = format!("--max-part-header-bytes={block}B");
        let past = format!("--max-part-header-bytes={}B", block - 1);
        assert_eq!(
            verdict(&[&at], FORM, None, &form()),
            Ok(Some("whisper-1".to_owned()))
        );
        assert_eq!(verdict(&[&past], FORM, None, &form()), Err(400));
    }

    /// A JSON body with `model` last, highly compressible, gzip-encoded.
    #[cfg(any(feature = "flate2", feature = "zstd"))]
    fn gzip_model_last() -> (Vec<u8>, Vec<u8>) {
        use std::io::Write;
        let mut plain = br#"{"pad":""#.to_vec();
        plain.extend(std::iter::repeat_n(b'a', 64 << 10));
        plain.extend_from_slice(br#"","model":"m"}"#);
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&plain).unwrap();
        (plain, encoder.finish().unwrap())
    }

    #[cfg(feature = "flate2")]
    #[test]
    fn decode_ratio_floor_at_the_limit_and_one_past() {
        // With a ratio of 1, the ratio is checked only past the floor.
        let (plain, gzip) = gzip_model_last();
        let floor = |bytes: usize| format!("--decode-ratio-floor={bytes}B");
        let json = b"application/json";
        let m = Ok(Some("m".to_owned()));
        let at = floor(plain.len());
        let past = floor(plain.len() - 1);
        assert_eq!(
            verdict(&["--max-decode-ratio=1", &at], json, Some(b"gzip"), &gzip),
            m
        );
        assert_eq!(
            verdict(&["--max-decode-ratio=1", &past], json, Some(b"gzip"), &gzip),
            Err(413)
        );
    }

    /// The least value in `lo..=hi` that `accepts`, which must be
    /// monotone (refused below some value, accepted from it on).
    #[cfg(any(feature = "flate2", feature = "zstd"))]
    fn least_accepted(mut lo: u64, mut hi: u64, accepts: impl Fn(u64) -> bool) -> u64 {
        assert!(accepts(hi) && !accepts(lo));
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if accepts(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }

    #[cfg(feature = "flate2")]
    #[test]
    fn max_decode_ratio_at_the_limit_and_one_past() {
        // The highest ratio a body reaches depends on how its decoder
        // consumes input: find the least `--max-decode-ratio` that accepts
        // it; exactly it is accepted and one less refused with 413 (a
        // flag that did not reach the decoder would find no such value).
        let (_, gzip) = gzip_model_last();
        let json = b"application/json";
        let floor = "--decode-ratio-floor=0B";
        let run = |r: u64| {
            verdict(
                &[floor, &format!("--max-decode-ratio={r}")],
                json,
                Some(b"gzip"),
                &gzip,
            )
        };
        let least = least_accepted(1, 1_000_000, |r| run(r).is_ok());
        assert_eq!(run(least), Ok(Some("m".to_owned())));
        assert_eq!(run(least - 1), Err(413));
        assert!(
            least > u64::from(DecodeLimits::DEFAULT_MAX_RATIO),
            "a bomb-like body"
        );
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn max_decode_window_at_the_limit_and_one_past() {
        let (plain, _) = gzip_model_last();
        let zstd = zstd::bulk::compress(&plain, 3).unwrap();
        let json = b"application/json";
        let run = |w: u64| {
            verdict(
                &[&format!("--max-decode-window={w}B")],
                json,
                Some(b"zstd"),
                &zstd,
            )
        };
        let least = least_accepted(1, 8 << 20, |w| run(w).is_ok());
        assert_eq!(run(least), Ok(Some("m".to_owned())));
        assert_eq!(run(least - 1), Err(413));
        // The frame's window covers the body it decodes.
        assert!(least >= plain.len() as u64 / 2, "{least}");
    }

    #[test]
    fn model_rewrites_and_the_sticky_header_reach_the_server_config() {
        let none = Config::try_parse_from(["bbr-extproc"]).unwrap();
        let config = none.server_config().unwrap();
        assert!(config.model_rewrites.is_empty());
        assert_eq!(config.model_rewrite_sticky_header, None);
        let config = Config::try_parse_from([
            "bbr-extproc",
            "--model-rewrites=/etc/bbr/model-rewrites",
            "--model-rewrites",
            "/etc/extra.yaml",
            "--model-rewrite-sticky-header=X-Session-Id",
        ])
        .unwrap()
        .server_config()
        .unwrap();
        assert_eq!(
            config.model_rewrites,
            [
                PathBuf::from("/etc/bbr/model-rewrites"),
                PathBuf::from("/etc/extra.yaml")
            ]
        );
        assert_eq!(
            config.model_rewrite_sticky_header.as_deref(),
            Some("x-session-id")
        );
        for bad in ["x session", "", "x:y"] {
            let arg = format!("--model-rewrite-sticky-header={bad}");
            assert!(
                Config::try_parse_from(["bbr-extproc", arg.as_str()]).is_err(),
                "{bad:?}"
            );
        }
    }
}
