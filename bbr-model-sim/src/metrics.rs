//! `/metrics`: the vLLM series the Gateway API Inference Extension's
//! endpoint picker scrapes, with vLLM's names, labels and bucket bounds,
//! encoded by `prometheus-client` (OpenMetrics text).
//!
//! | series | type | labels |
//! | --- | --- | --- |
//! | `vllm:num_requests_running`, `vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc` | gauge | `model_name` |
//! | `vllm:lora_requests_info` (value: last change, Unix seconds) | gauge | `max_lora`, `running_lora_adapters`, `waiting_lora_adapters` |
//! | `vllm:request_success_total` | counter | `model_name`, `finish_reason` |
//! | `vllm:prompt_tokens_total`, `vllm:generation_tokens_total` | counter | `model_name` |
//! | `vllm:time_to_first_token_seconds`, `vllm:e2e_request_latency_seconds` | histogram | `model_name` |
//!
//! The gauges are a snapshot of the scheduler taken at each scrape (like
//! vLLM's), so they are registered fresh in a per-scrape registry; the
//! counters and histograms live as long as the server.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::generate::FinishReason;
use crate::scheduler::AdmissionSnapshot;

/// The content type of [`render`]'s text.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// vLLM's bucket bounds (seconds) for `vllm:time_to_first_token_seconds`.
const TTFT_BUCKETS: [f64; 22] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];

/// vLLM's bucket bounds (seconds) for `vllm:e2e_request_latency_seconds`.
const E2E_BUCKETS: [f64; 21] = [
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FinishLabels {
    finish_reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LoraLabels {
    max_lora: String,
    running_lora_adapters: String,
    waiting_lora_adapters: String,
}

/// Counters of finished requests and their latencies (shared handles:
/// cloning one shares its value).
#[derive(Debug)]
pub(crate) struct Counters {
    success: Family<FinishLabels, Counter>,
    prompt_tokens: Counter,
    generation_tokens: Counter,
    time_to_first_token: Histogram,
    e2e_latency: Histogram,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            success: Family::default(),
            prompt_tokens: Counter::default(),
            generation_tokens: Counter::default(),
            time_to_first_token: Histogram::new(TTFT_BUCKETS),
            e2e_latency: Histogram::new(E2E_BUCKETS),
        }
    }
}

impl Counters {
    /// The first token of a request left, `elapsed` after it arrived.
    pub(crate) fn first_token(&self, elapsed: Duration) {
        self.time_to_first_token.observe(elapsed.as_secs_f64());
    }

    /// A request finished successfully, `elapsed` after it arrived.
    pub(crate) fn finished(
        &self,
        reason: FinishReason,
        prompt_tokens: u64,
        generated: u64,
        elapsed: Duration,
    ) {
        self.e2e_latency.observe(elapsed.as_secs_f64());
        let finish_reason = match reason {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        };
        self.success
            .get_or_create(&FinishLabels { finish_reason })
            .inc();
        self.prompt_tokens.inc_by(prompt_tokens);
        self.generation_tokens.inc_by(generated);
    }
}

/// Renders the exposition text for one scrape.
pub(crate) fn render(
    model_name: &str,
    max_loras: usize,
    admission: &AdmissionSnapshot,
    counters: &Counters,
) -> String {
    let mut registry = Registry::default();
    let lora_info = Family::<LoraLabels, Gauge<f64, AtomicU64>>::default();
    for info in &admission.lora_info {
        lora_info
            .get_or_create(&LoraLabels {
                max_lora: max_loras.to_string(),
                running_lora_adapters: info.running.clone(),
                waiting_lora_adapters: info.waiting.clone(),
            })
            .set(info.updated);
    }
    registry.register(
        "vllm:lora_requests_info",
        "Running stats on lora requests",
        lora_info,
    );

    let model = registry.sub_registry_with_label((
        Cow::Borrowed("model_name"),
        Cow::Owned(model_name.to_owned()),
    ));
    for (name, help, value) in [
        (
            "vllm:num_requests_running",
            "Number of requests currently running on GPU",
            admission.running,
        ),
        (
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed",
            admission.waiting,
        ),
    ] {
        let gauge = Gauge::<i64>::default();
        gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        model.register(name, help, gauge);
    }
    // No KV cache is simulated: always 0, as the simulator reports it off.
    model.register(
        "vllm:kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage",
        Gauge::<f64, AtomicU64>::default(),
    );
    model.register(
        "vllm:request_success",
        "Count of successfully processed requests",
        counters.success.clone(),
    );
    model.register(
        "vllm:prompt_tokens",
        "Number of prefill tokens processed",
        counters.prompt_tokens.clone(),
    );
    model.register(
        "vllm:generation_tokens",
        "Number of generation tokens processed",
        counters.generation_tokens.clone(),
    );
    model.register(
        "vllm:time_to_first_token_seconds",
        "Histogram of time to first token in seconds",
        counters.time_to_first_token.clone(),
    );
    model.register(
        "vllm:e2e_request_latency_seconds",
        "Histogram of end to end request latency in seconds",
        counters.e2e_latency.clone(),
    );

    let mut out = String::with_capacity(4096);
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::scheduler::LoraInfo;

    /// One sample line: name, labels, value.
    fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("a value");
                let value: f64 = value.parse().expect("numeric sample value");
                let (name, labels) = match series.split_once('{') {
                    Some((name, labels)) => (name, labels.trim_end_matches('}')),
                    None => (series, ""),
                };
                let mut map = BTreeMap::new();
                // Label values in these tests contain no `",`.
                for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                    let (key, value) = pair.split_once("=\"").expect("key=\"value\"");
                    map.insert(key.to_owned(), value.trim_end_matches('"').to_owned());
                }
                (name.to_owned(), map, value)
            })
            .collect()
    }

    fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let found: Vec<f64> = samples(text)
            .into_iter()
            .filter(|(n, l, _)| n == name && *l == want)
            .map(|(_, _, v)| v)
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?} in\n{text}");
        found[0]
    }

    #[test]
    fn renders_vllm_names_labels_and_values() {
        let counters = Counters::default();
        counters.finished(FinishReason::Length, 9, 20, Duration::from_millis(700));
        counters.first_token(Duration::from_millis(50));
        let snapshot = AdmissionSnapshot {
            running: 2,
            waiting: 1,
            lora_info: vec![LoraInfo {
                running: "a,b".into(),
                waiting: "c".into(),
                updated: 1.5e9,
            }],
        };
        let text = render("m", 2, &snapshot, &counters);
        let m = [("model_name", "m")];
        assert_eq!(value(&text, "vllm:num_requests_running", &m), 2.0);
        assert_eq!(value(&text, "vllm:num_requests_waiting", &m), 1.0);
        assert_eq!(value(&text, "vllm:kv_cache_usage_perc", &m), 0.0);
        assert_eq!(
            value(
                &text,
                "vllm:lora_requests_info",
                &[
                    ("max_lora", "2"),
                    ("running_lora_adapters", "a,b"),
                    ("waiting_lora_adapters", "c")
                ]
            ),
            1.5e9
        );
        assert_eq!(
            value(
                &text,
                "vllm:request_success_total",
                &[("model_name", "m"), ("finish_reason", "length")]
            ),
            1.0
        );
        assert_eq!(value(&text, "vllm:prompt_tokens_total", &m), 9.0);
        assert_eq!(value(&text, "vllm:generation_tokens_total", &m), 20.0);
        let ttft = "vllm:time_to_first_token_seconds_bucket";
        assert_eq!(
            value(&text, ttft, &[("model_name", "m"), ("le", "0.04")]),
            0.0
        );
        assert_eq!(
            value(&text, ttft, &[("model_name", "m"), ("le", "0.06")]),
            1.0
        );
        assert_eq!(
            value(&text, ttft, &[("model_name", "m"), ("le", "+Inf")]),
            1.0
        );
        assert!((value(&text, "vllm:time_to_first_token_seconds_sum", &m) - 0.05).abs() < 1e-9);
        let e2e = "vllm:e2e_request_latency_seconds_bucket";
        assert_eq!(
            value(&text, e2e, &[("model_name", "m"), ("le", "0.5")]),
            0.0
        );
        assert_eq!(
            value(&text, e2e, &[("model_name", "m"), ("le", "0.8")]),
            1.0
        );
        assert_eq!(
            value(&text, "vllm:e2e_request_latency_seconds_count", &m),
            1.0
        );
        for name in [
            "vllm:request_success",
            "vllm:time_to_first_token_seconds",
            "vllm:num_requests_waiting",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let text = render(
            "m\"x\\",
            1,
            &AdmissionSnapshot::default(),
            &Counters::default(),
        );
        assert!(
            text.contains(r#"vllm:num_requests_running{model_name="m\"x\\"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn counters_accumulate_across_scrapes() {
        let counters = Counters::default();
        let snapshot = AdmissionSnapshot::default();
        counters.finished(FinishReason::Stop, 1, 2, Duration::from_millis(1));
        let first = render("m", 1, &snapshot, &counters);
        counters.finished(FinishReason::Stop, 1, 2, Duration::from_millis(1));
        let second = render("m", 1, &snapshot, &counters);
        let stop = [("model_name", "m"), ("finish_reason", "stop")];
        assert_eq!(value(&first, "vllm:request_success_total", &stop), 1.0);
        assert_eq!(value(&second, "vllm:request_success_total", &stop), 2.0);
        assert_eq!(
            value(
                &second,
                "vllm:generation_tokens_total",
                &[("model_name", "m")]
            ),
            4.0
        );
    }
}
