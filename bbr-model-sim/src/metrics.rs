//! `/metrics`: the vLLM series the Gateway API Inference Extension's
//! endpoint picker scrapes, in Prometheus text format 0.0.4.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::generate::FinishReason;
use crate::scheduler::AdmissionSnapshot;

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

/// A Prometheus histogram with fixed bounds; the sum is kept in
/// microseconds so it fits an atomic integer.
#[derive(Debug)]
pub(crate) struct Histogram {
    bounds: &'static [f64],
    /// Per-bucket (not cumulative) counts; the last slot is `+Inf`.
    buckets: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot = self
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(self.bounds.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str, model: &str) {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} histogram\n");
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = self.bounds.get(i).map_or("+Inf".to_owned(), f64::to_string);
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{le}\",model_name=\"{model}\"}} {cumulative}"
            );
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{model_name=\"{model}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{model_name=\"{model}\"}} {cumulative}");
    }
}

/// Counters of finished requests and their latencies.
#[derive(Debug)]
pub(crate) struct Counters {
    success_stop: AtomicU64,
    success_length: AtomicU64,
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    /// Arrival to first token.
    pub(crate) time_to_first_token: Histogram,
    /// Arrival to last token.
    pub(crate) e2e_latency: Histogram,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            success_stop: AtomicU64::new(0),
            success_length: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            time_to_first_token: Histogram::new(&TTFT_BUCKETS),
            e2e_latency: Histogram::new(&E2E_BUCKETS),
        }
    }
}

impl Counters {
    /// A request finished successfully, `elapsed` after it arrived.
    pub(crate) fn finished(
        &self,
        reason: FinishReason,
        prompt_tokens: u64,
        generated: u64,
        elapsed: Duration,
    ) {
        self.e2e_latency.observe(elapsed);
        match reason {
            FinishReason::Stop => &self.success_stop,
            FinishReason::Length => &self.success_length,
        }
        .fetch_add(1, Ordering::Relaxed);
        self.prompt_tokens
            .fetch_add(prompt_tokens, Ordering::Relaxed);
        self.generation_tokens
            .fetch_add(generated, Ordering::Relaxed);
    }
}

/// Escapes a label value (backslash, quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders the exposition text.
pub(crate) fn render(
    model_name: &str,
    max_loras: usize,
    admission: &AdmissionSnapshot,
    counters: &Counters,
) -> String {
    let model = escape(model_name);
    let mut out = String::with_capacity(2048);
    let mut gauge = |name: &str, help: &str, value: String| {
        // `write!` into a String cannot fail.
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{model_name=\"{model}\"}} {value}\n"
        );
    };
    gauge(
        "vllm:num_requests_running",
        "Number of requests currently running on GPU.",
        admission.running.to_string(),
    );
    gauge(
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        admission.waiting.to_string(),
    );
    gauge(
        "vllm:kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage.",
        "0".to_owned(),
    );
    out.push_str(
        "# HELP vllm:lora_requests_info Running stats on lora requests.\n# TYPE vllm:lora_requests_info gauge\n",
    );
    for info in &admission.lora_info {
        let _ = writeln!(
            out,
            "vllm:lora_requests_info{{max_lora=\"{max_loras}\",running_lora_adapters=\"{}\",waiting_lora_adapters=\"{}\"}} {}",
            escape(&info.running),
            escape(&info.waiting),
            info.updated
        );
    }
    out.push_str(
        "# HELP vllm:request_success_total Count of successfully processed requests.\n# TYPE vllm:request_success_total counter\n",
    );
    for (reason, counter) in [
        ("length", &counters.success_length),
        ("stop", &counters.success_stop),
    ] {
        let _ = writeln!(
            out,
            "vllm:request_success_total{{finish_reason=\"{reason}\",model_name=\"{model}\"}} {}",
            counter.load(Ordering::Relaxed)
        );
    }
    for (name, help, counter) in [
        (
            "vllm:prompt_tokens_total",
            "Number of prefill tokens processed.",
            &counters.prompt_tokens,
        ),
        (
            "vllm:generation_tokens_total",
            "Number of generation tokens processed.",
            &counters.generation_tokens,
        ),
    ] {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{model_name=\"{model}\"}} {}\n",
            counter.load(Ordering::Relaxed)
        );
    }
    counters.time_to_first_token.render(
        &mut out,
        "vllm:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        &model,
    );
    counters.e2e_latency.render(
        &mut out,
        "vllm:e2e_request_latency_seconds",
        "Histogram of end to end request latency in seconds.",
        &model,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::LoraInfo;

    #[test]
    fn renders_gauges_lora_info_and_counters() {
        let counters = Counters::default();
        counters.finished(FinishReason::Length, 9, 20, Duration::from_millis(700));
        counters
            .time_to_first_token
            .observe(Duration::from_millis(50));
        let snapshot = AdmissionSnapshot {
            running: 2,
            waiting: 1,
            lora_info: vec![LoraInfo {
                running: "a,b".into(),
                waiting: "c".into(),
                updated: 1.5e9,
            }],
        };
        let text = render("m\"x", 2, &snapshot, &counters);
        assert!(
            text.contains("vllm:num_requests_running{model_name=\"m\\\"x\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("vllm:num_requests_waiting{model_name=\"m\\\"x\"} 1\n"));
        assert!(text.contains(
            "vllm:lora_requests_info{max_lora=\"2\",running_lora_adapters=\"a,b\",waiting_lora_adapters=\"c\"} 1500000000\n"
        ));
        assert!(text.contains(
            "vllm:request_success_total{finish_reason=\"length\",model_name=\"m\\\"x\"} 1\n"
        ));
        assert!(text.contains("vllm:generation_tokens_total{model_name=\"m\\\"x\"} 20\n"));
        let ttft = "vllm:time_to_first_token_seconds";
        assert!(
            text.contains(&format!(
                "{ttft}_bucket{{le=\"0.04\",model_name=\"m\\\"x\"}} 0\n"
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            "{ttft}_bucket{{le=\"0.06\",model_name=\"m\\\"x\"}} 1\n"
        )));
        assert!(text.contains(&format!(
            "{ttft}_bucket{{le=\"+Inf\",model_name=\"m\\\"x\"}} 1\n"
        )));
        assert!(text.contains(&format!("{ttft}_sum{{model_name=\"m\\\"x\"}} 0.05\n")));
        let e2e = "vllm:e2e_request_latency_seconds";
        assert!(text.contains(&format!(
            "{e2e}_bucket{{le=\"0.5\",model_name=\"m\\\"x\"}} 0\n"
        )));
        assert!(text.contains(&format!(
            "{e2e}_bucket{{le=\"0.8\",model_name=\"m\\\"x\"}} 1\n"
        )));
        assert!(text.contains(&format!("{e2e}_count{{model_name=\"m\\\"x\"}} 1\n")));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().expect("value");
            assert!(value.parse::<f64>().is_ok(), "numeric sample value: {line}");
        }
    }
}
