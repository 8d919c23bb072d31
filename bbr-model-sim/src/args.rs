//! Command-line flags of `model-sim`, named after the llm-d inference
//! simulator's so its Kubernetes manifests' `args` work unchanged.
//!
//! ```
//! use std::time::Duration;
//! use bbr_model_sim::{Mode, SimConfig};
//! let config = SimConfig::from_args([
//!     "model-sim", "--model", "deepseek/vllm-deepseek-r1", "--port", "8000", "--max-loras", "2",
//!     "--lora-modules", r#"{"name": "ski-resorts"}"#, r#"{"name": "movie-critique"}"#,
//!     "--mode", "echo", "--inter-token-latency", "20ms", "--time-to-first-token", "100",
//! ]).unwrap();
//! assert_eq!(config.lora_modules.len(), 2);
//! assert_eq!(config.max_loras, 2);
//! assert_eq!(config.mode, Mode::Echo);
//! assert_eq!(config.inter_token_latency, Duration::from_millis(20));
//! assert_eq!(config.time_to_first_token, Duration::from_millis(100));
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;

use crate::config::{FailureType, LoraModule, Mode, SimConfig, parse_duration};
use crate::error::{ConfigError, Error};

fn duration(value: &str) -> Result<Duration, String> {
    parse_duration(value).map_err(|e| e.to_string())
}

fn failure_type(value: &str) -> Result<FailureType, String> {
    FailureType::parse(value).map_err(|e| e.to_string())
}

fn mode(value: &str) -> Result<Mode, String> {
    Mode::parse(value).map_err(|e| e.to_string())
}

/// `model-sim` flags. Flags that take several values (`--lora-modules`,
/// `--served-model-name`) read argv words until the next flag, and may also
/// be repeated.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "model-sim",
    version,
    about = "Simulated OpenAI/vLLM-compatible model server (llm-d inference simulator flags)"
)]
pub struct Args {
    /// The base model this server serves.
    #[arg(long, env = "SIM_MODEL")]
    pub model: String,
    /// Public aliases of the base model (default: --model); answers use the first.
    #[arg(long, num_args = 1.., action = clap::ArgAction::Append)]
    pub served_model_name: Vec<String>,
    /// Port to listen on (0 picks a free port; the chosen one is printed).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Address to listen on (the simulator listens on all addresses; use 0.0.0.0 in a container).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
    /// LoRA adapters: JSON objects ('{"name": "ski-resorts"}'), name=path, or names.
    #[arg(long, num_args = 1.., action = clap::ArgAction::Append)]
    pub lora_modules: Vec<String>,
    /// Distinct LoRAs that may run at once.
    #[arg(long, default_value_t = 1)]
    pub max_loras: usize,
    /// Requests that may run at once; more wait in the queue.
    #[arg(long, alias = "max-num-seq", default_value_t = 5)]
    pub max_num_seqs: usize,
    /// Waiting requests beyond which new ones get 429.
    #[arg(long, default_value_t = 1000)]
    pub max_waiting_queue_length: usize,
    /// Context window in tokens.
    #[arg(long, default_value_t = 1024)]
    pub max_model_len: u32,
    /// Largest request body, in MiB.
    #[arg(long, default_value_t = 4)]
    pub max_request_body_size_mb: usize,
    /// Answer text: echo (the prompt / last user message) or random.
    #[arg(long, default_value = "random", value_parser = mode)]
    pub mode: Mode,
    /// Delay before the first token (100ms, 1s; a bare integer is milliseconds).
    #[arg(long, default_value = "0", value_parser = duration)]
    pub time_to_first_token: Duration,
    /// Standard deviation of the time to first token (at most 30 % of it).
    #[arg(long, default_value = "0", value_parser = duration)]
    pub time_to_first_token_std_dev: Duration,
    /// Delay between tokens (100ms, 1s; a bare integer is milliseconds).
    #[arg(long, default_value = "0", value_parser = duration)]
    pub inter_token_latency: Duration,
    /// Standard deviation of the inter-token latency (at most 30 % of it).
    #[arg(long, default_value = "0", value_parser = duration)]
    pub inter_token_latency_std_dev: Duration,
    /// Random seed (default: the current time).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Replica name for the x-inference-pod header.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Namespace for the x-inference-namespace header.
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
    /// Percentage (0-100) of completion requests answered with an injected error.
    #[arg(long, default_value_t = 0)]
    pub failure_injection_rate: u8,
    /// Injected error types: rate_limit, invalid_api_key, context_length,
    /// server_error, invalid_request, model_not_found (default: all).
    #[arg(long, num_args = 1.., action = clap::ArgAction::Append, value_parser = failure_type)]
    pub failure_types: Vec<FailureType>,
    /// /health/ready answers 503 for this long after start.
    #[arg(long, default_value = "0", value_parser = duration)]
    pub startup_duration: Duration,

    /// Accepted for compatibility; no effect (validated only by the simulator).
    #[arg(long, help_heading = "Accepted for compatibility (no effect)")]
    pub max_cpu_loras: Option<usize>,
    /// Accepted for compatibility; no effect.
    #[arg(long, help_heading = "Accepted for compatibility (no effect)")]
    pub max_lora_rank: Option<u32>,
    /// Accepted for compatibility; no effect.
    #[arg(long, help_heading = "Accepted for compatibility (no effect)")]
    pub tensor_parallel_size: Option<u32>,
    /// Accepted for compatibility; no effect.
    #[arg(long, help_heading = "Accepted for compatibility (no effect)")]
    pub time_factor_under_load: Option<f64>,
    /// Accepted for compatibility; no effect (KV cache is not simulated).
    #[arg(long, help_heading = "Accepted for compatibility (no effect)")]
    pub kv_cache_size: Option<u64>,
    /// Accepted for compatibility; no effect.
    #[arg(long, help_heading = "Accepted for compatibility (no effect)")]
    pub block_size: Option<u32>,
    /// Accepted for compatibility; no effect.
    #[arg(long, help_heading = "Accepted for compatibility (no effect)")]
    pub hash_seed: Option<String>,
    /// Accepted for compatibility; no effect.
    #[arg(long, help_heading = "Accepted for compatibility (no effect)")]
    pub zmq_endpoint: Option<String>,
    /// Accepted for compatibility; no effect.
    #[arg(long, help_heading = "Accepted for compatibility (no effect)")]
    pub event_batch_size: Option<u32>,
    /// Boolean flags accepted for compatibility, with no effect:
    /// --enable-lora, --enforce-eager, --enable-prefix-caching, --enable-kvcache,
    /// --force-dummy-tokenizer, --log-http (each optionally =true/false).
    #[arg(
        long = "enable-lora",
        num_args = 0..=1,
        default_missing_value = "true",
        help_heading = "Accepted for compatibility (no effect)"
    )]
    pub enable_lora: Option<bool>,
    /// Accepted for compatibility; no effect.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", help_heading = "Accepted for compatibility (no effect)")]
    pub enforce_eager: Option<bool>,
    /// Accepted for compatibility; no effect.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", help_heading = "Accepted for compatibility (no effect)")]
    pub enable_prefix_caching: Option<bool>,
    /// Accepted for compatibility; no effect.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", help_heading = "Accepted for compatibility (no effect)")]
    pub enable_kvcache: Option<bool>,
    /// Accepted for compatibility; no effect.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", help_heading = "Accepted for compatibility (no effect)")]
    pub force_dummy_tokenizer: Option<bool>,
    /// Accepted for compatibility; no effect.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", help_heading = "Accepted for compatibility (no effect)")]
    pub log_http: Option<bool>,
}

impl Args {
    /// The listening address and the validated configuration.
    pub fn into_config(self) -> Result<(SocketAddr, SimConfig), ConfigError> {
        let lora_modules = self
            .lora_modules
            .iter()
            .map(|value| LoraModule::parse(value, &self.model))
            .collect::<Result<Vec<_>, _>>()?;
        let seed = self.seed.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        let mut config = SimConfig::new(self.model)
            .served_model_names(self.served_model_name)
            .max_loras(self.max_loras)
            .max_num_seqs(self.max_num_seqs)
            .max_waiting_queue_length(self.max_waiting_queue_length)
            .max_model_len(self.max_model_len)
            .max_request_body_bytes(self.max_request_body_size_mb.saturating_mul(1 << 20))
            .mode(self.mode)
            .time_to_first_token(self.time_to_first_token)
            .inter_token_latency(self.inter_token_latency)
            .seed(seed)
            .failure_injection(self.failure_injection_rate, self.failure_types)
            .startup_duration(self.startup_duration);
        config.lora_modules = lora_modules;
        config.time_to_first_token_std_dev = self.time_to_first_token_std_dev;
        config.inter_token_latency_std_dev = self.inter_token_latency_std_dev;
        config.pod_name = self.pod_name.filter(|name| !name.is_empty());
        config.namespace = self.pod_namespace.filter(|ns| !ns.is_empty());
        config.validate()?;
        Ok((SocketAddr::new(self.host, self.port), config))
    }
}

impl SimConfig {
    /// Parses simulator command-line flags (`args[0]` is the program name)
    /// into a validated configuration; the listening address is dropped
    /// (use [`Args`] to keep it).
    pub fn from_args<I, T>(args: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args = Args::try_parse_from(args)?;
        Ok(args.into_config()?.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<(SocketAddr, SimConfig), String> {
        let mut argv = vec!["model-sim"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .into_config()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn seed_manifest_args_parse() {
        // config/manifests/vllm/sim-deployment-1.yaml of the reference scenario.
        let (addr, config) = parse(&[
            "--model",
            "deepseek/vllm-deepseek-r1",
            "--port",
            "8000",
            "--max-loras",
            "2",
            "--lora-modules",
            r#"{"name": "ski-resorts"}"#,
            r#"{"name": "movie-critique"}"#,
        ])
        .unwrap();
        assert_eq!(addr.port(), 8000);
        assert_eq!(
            config.lora_modules,
            [
                LoraModule::new("ski-resorts"),
                LoraModule::new("movie-critique")
            ]
        );
        assert_eq!(config.max_loras, 2);
        assert_eq!(config.mode, Mode::Random);
        assert_eq!(config.max_num_seqs, 5);
    }

    #[test]
    fn repeated_multi_value_and_equals_forms() {
        let (_, config) = parse(&[
            "--model=m",
            "--lora-modules",
            "a",
            "b=/p",
            "--lora-modules=c",
            "--served-model-name",
            "x",
            "y",
            "--seed=9",
            "--mode=echo",
        ])
        .unwrap();
        let names: Vec<_> = config
            .lora_modules
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(config.served_model_names, ["x", "y"]);
        assert_eq!(config.display_name(), "x");
        assert_eq!(config.seed, 9);
        assert_eq!(config.mode, Mode::Echo);
    }

    #[test]
    fn gpu_manifest_and_ignored_flags_are_accepted() {
        let (_, config) = parse(&[
            "--model",
            "meta-llama/Llama-3.1-8B-Instruct",
            "--enable-lora",
            "--max-loras",
            "2",
            "--max-lora-rank",
            "8",
            "--max-cpu-loras",
            "12",
            "--max-num-seq",
            "1024",
            "--enforce-eager=false",
            "--tensor-parallel-size",
            "1",
        ])
        .unwrap();
        assert_eq!(config.max_num_seqs, 1024);
    }

    #[test]
    fn failure_injection_and_startup_flags() {
        let (_, config) = parse(&[
            "--model",
            "m",
            "--failure-injection-rate",
            "10",
            "--failure-types",
            "rate_limit",
            "server_error",
            "--startup-duration",
            "2s",
        ])
        .unwrap();
        assert_eq!(config.failure_injection_rate, 10);
        assert_eq!(
            config.failure_types,
            [FailureType::RateLimit, FailureType::ServerError]
        );
        assert_eq!(config.startup_duration, Duration::from_secs(2));
    }

    #[test]
    fn durations_and_bad_values() {
        let (_, config) = parse(&[
            "--model",
            "m",
            "--time-to-first-token",
            "1.5s",
            "--inter-token-latency",
            "30",
            "--inter-token-latency-std-dev",
            "9ms",
        ])
        .unwrap();
        assert_eq!(config.time_to_first_token, Duration::from_millis(1500));
        assert_eq!(config.inter_token_latency, Duration::from_millis(30));
        assert_eq!(config.inter_token_latency_std_dev, Duration::from_millis(9));
        for bad in [
            &["--model", "m", "--mode", "fast"][..],
            &["--model", "m", "--inter-token-latency", "fast"],
            &["--model", "m", "--max-loras", "0"],
            &["--model", "m", "--lora-modules", r#"{"name": ""}"#],
            &[
                "--model",
                "m",
                "--lora-modules",
                r#"{"name": "a", "base_model_name": "z"}"#,
            ],
            &[
                "--model",
                "m",
                "--inter-token-latency",
                "10ms",
                "--inter-token-latency-std-dev",
                "4ms",
            ],
            &["--model", "m", "--unknown-flag", "1"],
            &["--model", "m", "--failure-injection-rate", "101"],
            &["--model", "m", "--failure-types", "bogus"],
            &["--port", "1"],
        ] {
            if bad == ["--port", "1"] && std::env::var_os("SIM_MODEL").is_some() {
                continue;
            }
            assert!(parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
