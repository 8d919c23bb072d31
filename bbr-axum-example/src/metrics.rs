//! Prometheus metrics of the gateway.
//!
//! - `bbr_gateway_requests_total{model,pool,status,body}`: requests
//!   answered, counted when the response headers are sent. `model` is the
//!   routed model name when a route matched on it, `""` when no route
//!   matched (so client-chosen names cannot grow the label set); `pool` is
//!   `""` when the gateway answered itself; `body` is how the routing layer
//!   read the body (its `BodyFormat` extension): `json`, `multipart`,
//!   `compressed` (any `Content-Encoding`, decoded or not, a compressed
//!   form included), or `none` for a request without a body.
//! - `inference_extension_model_rewrite_decisions_total{model_rewrite_name,model_name,target_model}`:
//!   model rewrite decisions, under the upstream endpoint picker's name and
//!   labels (gateway-api-inference-extension's
//!   `RecordInferenceModelRewriteDecision`), as bbr-extproc counts them, so
//!   one dashboard reads both: the rule (`NAMESPACE/NAME/INDEX` of the
//!   `InferenceModelRewrite`), the requested name and the target, once per
//!   request a rule decided (a target equal to the requested name
//!   included; a compressed body or a form field, routed as requested, is
//!   not counted). Counted when the request reaches the gateway's handler,
//!   that is, once the body was accepted. `model_name` comes from the
//!   client (a catch-all rule sees every name): past
//!   [`MAX_REWRITE_MODEL_LABELS`] distinct values, further names count as
//!   [`OVERFLOW_LABEL`].
//! - `bbr_gateway_request_duration_seconds{pool}`: time from the request
//!   to the response headers.
//! - `bbr_gateway_upstream_in_flight{pool}`: requests in flight per pool.

use std::sync::Arc;
use std::time::Duration;

use bbr_core::rewrite::RequestedModelLabels;
use bbr_tower::ModelRewrite;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Distinct `model_name` values of the rewrite counter (the core's
/// default, shared with bbr-extproc).
pub use bbr_core::rewrite::MAX_REQUESTED_MODEL_LABELS as MAX_REWRITE_MODEL_LABELS;

/// The `model_name` of rewrite decisions past [`MAX_REWRITE_MODEL_LABELS`].
pub use bbr_core::rewrite::OVERFLOW_MODEL_LABEL as OVERFLOW_LABEL;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    model: String,
    pool: String,
    status: u16,
    body: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RewriteLabels {
    model_rewrite_name: String,
    model_name: String,
    target_model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~65 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// The gateway's metrics and their registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<PoolLabels, Histogram, fn() -> Histogram>,
    in_flight: Family<PoolLabels, Gauge>,
    rewrite_decisions: Family<RewriteLabels, Counter>,
    rewrite_models: Arc<RequestedModelLabels>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with the gateway's metrics.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<PoolLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let in_flight = Family::<PoolLabels, Gauge>::default();
        let rewrite_decisions = Family::<RewriteLabels, Counter>::default();
        registry.register(
            "inference_extension_model_rewrite_decisions",
            "Model rewrite decisions by rule, requested model and target",
            rewrite_decisions.clone(),
        );
        registry.register(
            "bbr_gateway_requests",
            "Requests answered, by model, pool and status",
            requests.clone(),
        );
        registry.register(
            "bbr_gateway_request_duration_seconds",
            "Time from the request to the response headers, by pool",
            latency.clone(),
        );
        registry.register(
            "bbr_gateway_upstream_in_flight",
            "Requests in flight to a pool",
            in_flight.clone(),
        );
        Self {
            registry: Arc::new(registry),
            requests,
            latency,
            in_flight,
            rewrite_decisions,
            rewrite_models: Arc::default(),
        }
    }

    /// Counts one answered request; `body` is its body label (see the
    /// [module docs](self)).
    pub fn record(
        &self,
        model: &str,
        pool: &str,
        status: u16,
        body: &'static str,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                model: model.to_owned(),
                pool: pool.to_owned(),
                status,
                body,
            })
            .inc();
        if !pool.is_empty() {
            self.latency
                .get_or_create(&PoolLabels {
                    pool: pool.to_owned(),
                })
                .observe(elapsed.as_secs_f64());
        }
    }

    /// Counts one model rewrite decision.
    pub fn record_rewrite(&self, rewrite: &ModelRewrite) {
        self.rewrite_decisions
            .get_or_create(&RewriteLabels {
                model_rewrite_name: rewrite.rule().to_owned(),
                model_name: self.rewrite_models.label(rewrite.requested()),
                target_model: rewrite.target().to_owned(),
            })
            .inc();
    }

    /// The pool's in-flight gauge.
    pub fn pool_in_flight(&self, pool: &str) -> Gauge {
        self.in_flight
            .get_or_create(&PoolLabels {
                pool: pool.to_owned(),
            })
            .clone()
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_show_up_in_the_exposition() {
        let metrics = Metrics::new();
        metrics.record(
            "food-review-1",
            "vllm-llama3-8b-instruct",
            200,
            "json",
            Duration::from_millis(3),
        );
        metrics.record("", "", 404, "none", Duration::from_millis(1));
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"bbr_gateway_requests_total{model="food-review-1",pool="vllm-llama3-8b-instruct",status="200",body="json"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"bbr_gateway_requests_total{model="",pool="",status="404",body="none"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"bbr_gateway_request_duration_seconds_count{pool="vllm-llama3-8b-instruct"} 1"#
        ));
    }

    #[test]
    fn rewrite_decisions_use_the_upstream_name_and_labels() {
        let metrics = Metrics::new();
        let rewrite = ModelRewrite::new("team/food-review/0", "food-review", "food-review-2");
        metrics.record_rewrite(&rewrite);
        metrics.record_rewrite(&rewrite);
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"inference_extension_model_rewrite_decisions_total{model_rewrite_name="team/food-review/0",model_name="food-review",target_model="food-review-2"} 2"#
            ),
            "{text}"
        );
    }

    /// Requested names are client input: at most `MAX_REWRITE_MODEL_LABELS`
    /// of them get a label; one past it is counted as `__other__`, while a
    /// name already labelled keeps its own.
    #[test]
    fn requested_names_are_bounded_at_the_limit_and_one_past_it() {
        let metrics = Metrics::new();
        for i in 0..MAX_REWRITE_MODEL_LABELS {
            metrics.record_rewrite(&ModelRewrite::new("catch-all/0", &format!("m{i}"), "t"));
        }
        let last = format!("m{}", MAX_REWRITE_MODEL_LABELS - 1);
        let text = metrics.encode();
        assert!(
            text.contains(&format!("model_name=\"{last}\"")),
            "the limit itself is labelled"
        );
        assert!(!text.contains(OVERFLOW_LABEL));
        metrics.record_rewrite(&ModelRewrite::new("catch-all/0", "one-past", "t"));
        metrics.record_rewrite(&ModelRewrite::new("catch-all/0", "m0", "t"));
        let text = metrics.encode();
        assert!(!text.contains("one-past"));
        assert!(
            text.contains(
                r#"{model_rewrite_name="catch-all/0",model_name="__other__",target_model="t"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"{model_rewrite_name="catch-all/0",model_name="m0",target_model="t"} 2"#
            )
        );
    }
}
