//! Simulator configuration: [`SimConfig`] and the small value parsers the
//! command line uses (durations, `--lora-modules` values).

use std::time::Duration;

use crate::error::ConfigError;

/// How the answer text is produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Text built from the simulator's fixed bank of 11 sentences, with a
    /// length drawn from the simulator's histogram (deterministic for a seed).
    #[default]
    Random,
    /// The prompt (text completions) or the last `user` message (chat; the
    /// last message of any role when there is no `user` message), cut to
    /// `max_tokens` tokens.
    Echo,
}

impl Mode {
    /// Parses `echo` or `random` (the simulator's `--mode` values).
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        match value {
            "random" => Ok(Self::Random),
            "echo" => Ok(Self::Echo),
            other => Err(ConfigError::InvalidMode(other.to_owned())),
        }
    }

    /// The flag spelling, `random` or `echo`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::Echo => "echo",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = ConfigError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::parse(value)
    }
}

/// An error the simulator can inject (`--failure-types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureType {
    /// 429 `RateLimitError`.
    RateLimit,
    /// 401 `AuthenticationError`.
    InvalidApiKey,
    /// 400, context length exceeded (`param` `messages`).
    ContextLength,
    /// 503 `InternalServerError`.
    ServerError,
    /// 400, missing `model` (`param` `model`).
    InvalidRequest,
    /// 404, `The model '<model>-nonexistent' does not exist` (`param` `model`).
    ModelNotFound,
}

impl FailureType {
    /// Every type, in the simulator's order.
    pub const ALL: [Self; 6] = [
        Self::RateLimit,
        Self::InvalidApiKey,
        Self::ContextLength,
        Self::ServerError,
        Self::InvalidRequest,
        Self::ModelNotFound,
    ];

    /// Parses a `--failure-types` value (`rate_limit`, `invalid_api_key`,
    /// `context_length`, `server_error`, `invalid_request`, `model_not_found`).
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == value)
            .ok_or_else(|| ConfigError::InvalidFailureType(value.to_owned()))
    }

    /// The flag spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RateLimit => "rate_limit",
            Self::InvalidApiKey => "invalid_api_key",
            Self::ContextLength => "context_length",
            Self::ServerError => "server_error",
            Self::InvalidRequest => "invalid_request",
            Self::ModelNotFound => "model_not_found",
        }
    }
}

/// One LoRA adapter served next to the base model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraModule {
    /// The adapter name clients put in `model`.
    pub name: String,
    /// Where the adapter would be loaded from; reported as `root` in
    /// `/v1/models` (the name is used when absent).
    pub path: Option<String>,
}

impl LoraModule {
    /// An adapter with only a name.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            path: None,
        }
    }

    /// Parses one `--lora-modules` value.
    ///
    /// Accepted forms: a JSON object `{"name": "...", "path": "...",
    /// "base_model_name": "..."}` (only `name` is required; unknown fields
    /// are ignored), vLLM's `name=path`, or a plain name. `base_model_name`,
    /// when given, must equal `base_model`, as the simulator checks at
    /// startup.
    ///
    /// ```
    /// use bbr_model_sim::LoraModule;
    /// let lora = LoraModule::parse(r#"{"name": "ski-resorts"}"#, "deepseek/vllm-deepseek-r1").unwrap();
    /// assert_eq!(lora, LoraModule::new("ski-resorts"));
    /// assert_eq!(LoraModule::parse("food-review-1", "m").unwrap().name, "food-review-1");
    /// assert!(LoraModule::parse(r#"{"name": ""}"#, "m").is_err());
    /// ```
    pub fn parse(value: &str, base_model: &str) -> Result<Self, ConfigError> {
        let trimmed = value.trim();
        let module = if trimmed.starts_with('{') {
            #[derive(serde::Deserialize)]
            struct Json {
                name: Option<String>,
                path: Option<String>,
                base_model_name: Option<String>,
            }
            let json: Json =
                serde_json::from_str(trimmed).map_err(|source| ConfigError::InvalidLoraModule {
                    value: trimmed.to_owned(),
                    source,
                })?;
            if let Some(base) = json.base_model_name.filter(|base| !base.is_empty())
                && base != base_model
            {
                return Err(ConfigError::LoraBaseMismatch {
                    lora: json.name.unwrap_or_default(),
                    base,
                    model: base_model.to_owned(),
                });
            }
            Self {
                name: json.name.unwrap_or_default(),
                path: json.path.filter(|path| !path.is_empty()),
            }
        } else if let Some((name, path)) = trimmed.split_once('=') {
            Self {
                name: name.to_owned(),
                path: Some(path.to_owned()).filter(|path| !path.is_empty()),
            }
        } else {
            Self::new(trimmed)
        };
        if module.name.is_empty() {
            return Err(ConfigError::EmptyLoraName);
        }
        Ok(module)
    }
}

/// Configuration of one simulated model server (one "pod").
///
/// Defaults follow the llm-d inference simulator, except where a library
/// user needs determinism: the seed is fixed (`0`) instead of the clock, and
/// the latencies are zero (as in the seed manifests).
///
/// ```
/// use std::time::Duration;
/// use bbr_model_sim::{Mode, SimConfig};
/// let config = SimConfig::new("deepseek/vllm-deepseek-r1")
///     .lora("ski-resorts")
///     .lora("movie-critique")
///     .max_loras(2)
///     .mode(Mode::Echo)
///     .inter_token_latency(Duration::from_millis(5));
/// assert_eq!(config.lora_modules.len(), 2);
/// assert_eq!(config.max_num_seqs, 5);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// The base model (`--model`). Default `meta-llama/Llama-3.1-8B-Instruct`.
    pub model: String,
    /// Public aliases of the base model (`--served-model-name`); empty means
    /// `[model]`. Answers and metric labels use the first alias.
    pub served_model_names: Vec<String>,
    /// LoRA adapters known from the start (`--lora-modules`).
    pub lora_modules: Vec<LoraModule>,
    /// Distinct LoRAs that may run at once (`--max-loras`, default 1, ≥ 1).
    pub max_loras: usize,
    /// Requests that may run at once (`--max-num-seqs`, default 5, ≥ 1);
    /// others wait in the queue.
    pub max_num_seqs: usize,
    /// Waiting requests beyond which new ones get 429
    /// (`--max-waiting-queue-length`, default 1000, ≥ 1).
    pub max_waiting_queue_length: usize,
    /// Context window in tokens (`--max-model-len`, default 1024): prompt
    /// tokens plus `max_tokens` (1 when absent) above it get 400.
    pub max_model_len: u32,
    /// Largest accepted request body in bytes (`--max-request-body-size-mb`,
    /// default 4 MiB as in the simulator); larger bodies get 413.
    pub max_request_body_bytes: usize,
    /// Answer text generation (`--mode`, default random).
    pub mode: Mode,
    /// Delay before the first token (`--time-to-first-token`, default 0).
    pub time_to_first_token: Duration,
    /// Standard deviation of that delay (at most 30 % of it).
    pub time_to_first_token_std_dev: Duration,
    /// Delay between tokens (`--inter-token-latency`, default 0).
    pub inter_token_latency: Duration,
    /// Standard deviation of that delay (at most 30 % of it).
    pub inter_token_latency_std_dev: Duration,
    /// Seed of the random source (`--seed`; the binary defaults to the
    /// clock, the library to 0).
    pub seed: u64,
    /// Replica name for the `x-inference-pod` header (`POD_NAME`); default
    /// derived from the first served name and the port.
    pub pod_name: Option<String>,
    /// Namespace for the `x-inference-namespace` header (`POD_NAMESPACE`);
    /// the header is sent only when set.
    pub namespace: Option<String>,
    /// Percentage (0–100) of completion requests answered with an injected
    /// error (`--failure-injection-rate`, default 0).
    pub failure_injection_rate: u8,
    /// Which errors to inject (`--failure-types`); empty means all.
    pub failure_types: Vec<FailureType>,
    /// `/health/ready` answers 503 for this long after start
    /// (`--startup-duration`, default 0).
    pub startup_duration: Duration,
    /// How many recent requests the [`Observer`](crate::Observer) keeps
    /// (headers and body hash); 0 keeps none (counters still count).
    /// Default 32.
    pub record_capacity: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self::new("meta-llama/Llama-3.1-8B-Instruct")
    }
}

impl SimConfig {
    /// The simulator's defaults for `model`.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            served_model_names: Vec::new(),
            lora_modules: Vec::new(),
            max_loras: 1,
            max_num_seqs: 5,
            max_waiting_queue_length: 1000,
            max_model_len: 1024,
            max_request_body_bytes: 4 << 20,
            mode: Mode::Random,
            time_to_first_token: Duration::ZERO,
            time_to_first_token_std_dev: Duration::ZERO,
            inter_token_latency: Duration::ZERO,
            inter_token_latency_std_dev: Duration::ZERO,
            seed: 0,
            pod_name: None,
            namespace: None,
            failure_injection_rate: 0,
            failure_types: Vec::new(),
            startup_duration: Duration::ZERO,
            record_capacity: 32,
        }
    }

    /// Adds one LoRA adapter by name.
    #[must_use]
    pub fn lora(mut self, name: impl Into<String>) -> Self {
        self.lora_modules.push(LoraModule::new(name));
        self
    }

    /// Adds LoRA adapters by name.
    #[must_use]
    pub fn loras<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.lora_modules
            .extend(names.into_iter().map(LoraModule::new));
        self
    }

    /// Sets the public aliases of the base model.
    #[must_use]
    pub fn served_model_names<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.served_model_names = names.into_iter().map(Into::into).collect();
        self
    }

    /// Sets `max_loras`.
    #[must_use]
    pub const fn max_loras(mut self, max_loras: usize) -> Self {
        self.max_loras = max_loras;
        self
    }

    /// Sets `max_num_seqs`.
    #[must_use]
    pub const fn max_num_seqs(mut self, max_num_seqs: usize) -> Self {
        self.max_num_seqs = max_num_seqs;
        self
    }

    /// Sets `max_waiting_queue_length`.
    #[must_use]
    pub const fn max_waiting_queue_length(mut self, length: usize) -> Self {
        self.max_waiting_queue_length = length;
        self
    }

    /// Sets `max_model_len`.
    #[must_use]
    pub const fn max_model_len(mut self, tokens: u32) -> Self {
        self.max_model_len = tokens;
        self
    }

    /// Sets `max_request_body_bytes`.
    #[must_use]
    pub const fn max_request_body_bytes(mut self, bytes: usize) -> Self {
        self.max_request_body_bytes = bytes;
        self
    }

    /// Sets the generation mode.
    #[must_use]
    pub const fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the time to first token.
    #[must_use]
    pub const fn time_to_first_token(mut self, delay: Duration) -> Self {
        self.time_to_first_token = delay;
        self
    }

    /// Sets the inter-token latency.
    #[must_use]
    pub const fn inter_token_latency(mut self, delay: Duration) -> Self {
        self.inter_token_latency = delay;
        self
    }

    /// Sets the seed.
    #[must_use]
    pub const fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the replica name sent as `x-inference-pod`.
    #[must_use]
    pub fn pod_name(mut self, name: impl Into<String>) -> Self {
        self.pod_name = Some(name.into());
        self
    }

    /// Sets the namespace sent as `x-inference-namespace`.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Injects errors into `rate` percent of completion requests, of the
    /// given types (all when empty).
    #[must_use]
    pub fn failure_injection(
        mut self,
        rate: u8,
        types: impl IntoIterator<Item = FailureType>,
    ) -> Self {
        self.failure_injection_rate = rate;
        self.failure_types = types.into_iter().collect();
        self
    }

    /// Sets how long `/health/ready` answers 503 after start.
    #[must_use]
    pub const fn startup_duration(mut self, duration: Duration) -> Self {
        self.startup_duration = duration;
        self
    }

    /// Sets how many recent requests the observer keeps.
    #[must_use]
    pub const fn record_capacity(mut self, capacity: usize) -> Self {
        self.record_capacity = capacity;
        self
    }

    /// The first served name: the `model` of base-model answers and the
    /// `model_name` metric label.
    pub fn display_name(&self) -> &str {
        self.served_model_names
            .first()
            .map_or(self.model.as_str(), String::as_str)
    }

    /// Checks the same constraints the simulator checks at startup.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.model.is_empty() {
            return Err(ConfigError::EmptyModel);
        }
        if self.served_model_names.iter().any(String::is_empty) {
            return Err(ConfigError::EmptyModel);
        }
        for (field, value) in [
            ("max-loras", self.max_loras),
            ("max-num-seqs", self.max_num_seqs),
            ("max-waiting-queue-length", self.max_waiting_queue_length),
            ("max-model-len", self.max_model_len as usize),
            ("max-request-body-size", self.max_request_body_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(field));
            }
        }
        if self.failure_injection_rate > 100 {
            return Err(ConfigError::FailureRate(self.failure_injection_rate));
        }
        for (i, lora) in self.lora_modules.iter().enumerate() {
            if lora.name.is_empty() {
                return Err(ConfigError::EmptyLoraName);
            }
            if self.lora_modules[..i].iter().any(|l| l.name == lora.name)
                || self.is_served_name(&lora.name)
            {
                return Err(ConfigError::DuplicateName(lora.name.clone()));
            }
        }
        for (field, base, std_dev) in [
            (
                "time-to-first-token-std-dev",
                self.time_to_first_token,
                self.time_to_first_token_std_dev,
            ),
            (
                "inter-token-latency-std-dev",
                self.inter_token_latency,
                self.inter_token_latency_std_dev,
            ),
        ] {
            if std_dev.as_nanos() * 10 > base.as_nanos() * 3 {
                return Err(ConfigError::StdDevTooLarge(field));
            }
        }
        Ok(())
    }

    /// Whether `name` is one of the base model's served names.
    pub(crate) fn is_served_name(&self, name: &str) -> bool {
        if self.served_model_names.is_empty() {
            name == self.model
        } else {
            self.served_model_names.iter().any(|n| n == name)
        }
    }

    /// The served names (aliases), at least one.
    pub(crate) fn served_names(&self) -> Vec<String> {
        if self.served_model_names.is_empty() {
            vec![self.model.clone()]
        } else {
            self.served_model_names.clone()
        }
    }
}

/// Parses a duration as the llm-d inference simulator's duration flags
/// take it (`--time-to-first-token`, `--inter-token-latency`, their
/// `-std-dev`s, `--startup-duration`): a duration with a unit, read by
/// [`humantime`] (`100ms`, `1.5s`, `1m30s`, `250us`, `250µs`), or a bare
/// integer meaning **milliseconds** — the simulator's older integer form
/// (v0.6.1 takes only that; later versions still accept it), kept so that
/// manifests with `--time-to-first-token=2000` mean what they meant there.
///
/// This is the only place in the workspace where a bare number is a
/// duration; the example gateway's config and flags require a unit.
///
/// ```
/// use std::time::Duration;
/// use bbr_model_sim::parse_duration;
/// assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
/// assert_eq!(parse_duration("2000").unwrap(), Duration::from_secs(2));
/// assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
/// assert!(parse_duration("-1s").is_err());
/// ```
pub fn parse_duration(value: &str) -> Result<Duration, ConfigError> {
    let text = value.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<u64>().map(Duration::from_millis).map_err(|_| {
            ConfigError::InvalidDuration {
                value: value.to_owned(),
                source: None,
            }
        });
    }
    humantime::parse_duration(text).map_err(|source| ConfigError::InvalidDuration {
        value: value.to_owned(),
        source: Some(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_go_forms_and_bare_milliseconds() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("100ms").unwrap(), ms(100));
        assert_eq!(parse_duration("1s").unwrap(), ms(1000));
        assert_eq!(parse_duration("1.5s").unwrap(), ms(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("250µs").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("10ns").unwrap(), Duration::from_nanos(10));
        assert_eq!(parse_duration("42").unwrap(), ms(42));
        assert_eq!(parse_duration(" 7 ").unwrap(), ms(7));
    }

    #[test]
    fn durations_reject_garbage() {
        for bad in ["", "ms", "1x", "-1s", "1.2.3s", "s1", "1e3", "abc"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn lora_modules_parse_json_pairs_and_names() {
        let base = "deepseek/vllm-deepseek-r1";
        assert_eq!(
            LoraModule::parse(r#"{"name": "ski-resorts"}"#, base).unwrap(),
            LoraModule::new("ski-resorts")
        );
        let with_path = LoraModule::parse(
            r#"{"name":"a","path":"/x","base_model_name":"deepseek/vllm-deepseek-r1","extra":1}"#,
            base,
        )
        .unwrap();
        assert_eq!(with_path.path.as_deref(), Some("/x"));
        assert_eq!(
            LoraModule::parse("a=/adapters/a", base)
                .unwrap()
                .path
                .as_deref(),
            Some("/adapters/a")
        );
        assert_eq!(LoraModule::parse("plain", base).unwrap().name, "plain");
    }

    #[test]
    fn lora_modules_reject_bad_values() {
        let base = "m";
        assert!(matches!(
            LoraModule::parse(r#"{"name": ""}"#, base),
            Err(ConfigError::EmptyLoraName)
        ));
        assert!(matches!(
            LoraModule::parse(r#"{"path": "x"}"#, base),
            Err(ConfigError::EmptyLoraName)
        ));
        assert!(matches!(
            LoraModule::parse(r#"{"name": "a""#, base),
            Err(ConfigError::InvalidLoraModule { .. })
        ));
        assert!(matches!(
            LoraModule::parse(r#"{"name": "a", "base_model_name": "other"}"#, base),
            Err(ConfigError::LoraBaseMismatch { .. })
        ));
        assert!(matches!(
            LoraModule::parse("", base),
            Err(ConfigError::EmptyLoraName)
        ));
    }

    #[test]
    fn validate_checks_limits_names_and_std_devs() {
        assert!(SimConfig::default().validate().is_ok());
        assert!(SimConfig::default().max_loras(0).validate().is_err());
        assert!(SimConfig::default().max_num_seqs(0).validate().is_err());
        assert!(SimConfig::default().lora("a").lora("a").validate().is_err());
        assert!(
            SimConfig::new("m").lora("m").validate().is_err(),
            "a LoRA may not shadow the base model"
        );
        let mut config = SimConfig::default().inter_token_latency(Duration::from_millis(100));
        config.inter_token_latency_std_dev = Duration::from_millis(30);
        assert!(config.validate().is_ok(), "30 % is the limit");
        config.inter_token_latency_std_dev = Duration::from_millis(31);
        assert!(config.validate().is_err(), "one past the limit");
    }

    #[test]
    fn display_name_is_the_first_alias() {
        assert_eq!(SimConfig::new("m").display_name(), "m");
        let config = SimConfig::new("m").served_model_names(["a", "b"]);
        assert_eq!(config.display_name(), "a");
        assert!(config.is_served_name("b"));
        assert!(!config.is_served_name("m"));
    }
}
