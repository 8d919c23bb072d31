//! Prometheus metrics of the gateway.
//!
//! - `bbr_gateway_requests_total{model,pool,status}`: requests answered,
//!   counted when the response headers are sent. `model` is the routed
//!   model name when a route matched on it, `""` when no route matched
//!   (so client-chosen names cannot grow the label set); `pool` is `""`
//!   when the gateway answered itself.
//! - `bbr_gateway_request_duration_seconds{pool}`: time from the request
//!   to the response headers.
//! - `bbr_gateway_upstream_in_flight{pool}`: requests in flight per pool.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    model: String,
    pool: String,
    status: u16,
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
        }
    }

    /// Counts one answered request.
    pub fn record(&self, model: &str, pool: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                model: model.to_owned(),
                pool: pool.to_owned(),
                status,
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
            Duration::from_millis(3),
        );
        metrics.record("", "", 404, Duration::from_millis(1));
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"bbr_gateway_requests_total{model="food-review-1",pool="vllm-llama3-8b-instruct",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"bbr_gateway_requests_total{model="",pool="",status="404"} 1"#),
            "{text}"
        );
        assert!(text.contains(
            r#"bbr_gateway_request_duration_seconds_count{pool="vllm-llama3-8b-instruct"} 1"#
        ));
    }
}
