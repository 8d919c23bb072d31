//! `/metrics`: the vLLM series the Gateway API Inference Extension's
//! endpoint picker scrapes, in Prometheus text format 0.0.4.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::generate::FinishReason;
use crate::scheduler::AdmissionSnapshot;

/// Counters of finished requests.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    success_stop: AtomicU64,
    success_length: AtomicU64,
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
}

impl Counters {
    /// A request finished successfully.
    pub(crate) fn finished(&self, reason: FinishReason, prompt_tokens: u64, generated: u64) {
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::LoraInfo;

    #[test]
    fn renders_gauges_lora_info_and_counters() {
        let counters = Counters::default();
        counters.finished(FinishReason::Length, 9, 20);
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
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().expect("value");
            assert!(value.parse::<f64>().is_ok(), "numeric sample value: {line}");
        }
    }
}
