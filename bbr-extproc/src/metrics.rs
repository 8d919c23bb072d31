//! Prometheus metrics, with the upstream BBR names kept
//! (`bbr_success_total`, `bbr_body_field_not_found_total{field}`,
//! `bbr_body_field_empty_total{field}`), plus outcomes by error code, bytes
//! scanned before the decision and extraction time. The binary serves them
//! as OpenMetrics text on `GET /metrics` (`metrics_http.rs`, `server`
//! feature); an embedding gateway calls [`Metrics::encode`] itself.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::stream::{Report, Verdict};

type Labels = Vec<(&'static str, &'static str)>;

/// The process's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    success: Counter,
    field_not_found: Family<Labels, Counter>,
    field_empty: Family<Labels, Counter>,
    outcomes: Family<Labels, Counter>,
    bytes_before_decision: Histogram,
    extraction_seconds: Histogram,
    active_streams: Gauge,
    unroutable_streams: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("bbr");
        let success = Counter::default();
        registry.register(
            "success",
            "Request bodies processed without error (with or without a model)",
            success.clone(),
        );
        let field_not_found = Family::<Labels, Counter>::default();
        registry.register(
            "body_field_not_found",
            "Request bodies without the field",
            field_not_found.clone(),
        );
        let field_empty = Family::<Labels, Counter>::default();
        registry.register(
            "body_field_empty",
            "Request bodies where the field is an empty string",
            field_empty.clone(),
        );
        let outcomes = Family::<Labels, Counter>::default();
        registry.register(
            "request_outcomes",
            "Requests by outcome: found, absent, no_body, or the error code (invalid_json, invalid_model, request_too_large, missing_model)",
            outcomes.clone(),
        );
        // 64 B .. 64 MiB.
        let bytes_before_decision = Histogram::new(exponential_buckets(64.0, 4.0, 11));
        registry.register(
            "bytes_before_decision",
            "Body bytes read when the routing decision was taken",
            bytes_before_decision.clone(),
        );
        // 1 µs .. ~16 s.
        let extraction_seconds = Histogram::new(exponential_buckets(1e-6, 4.0, 13));
        registry.register(
            "extraction_duration_seconds",
            "Time spent extracting the model from one request body",
            extraction_seconds.clone(),
        );
        let active_streams = Gauge::default();
        registry.register(
            "active_streams",
            "ext_proc streams in flight",
            active_streams.clone(),
        );
        let unroutable_streams = Counter::default();
        registry.register(
            "unroutable_streams",
            "STREAMED requests without send_body_without_waiting_for_header_response (cannot be routed by body)",
            unroutable_streams.clone(),
        );
        // The upstream series exist from the start, at zero.
        let _ = field_not_found.get_or_create(&vec![("field", "model")]);
        let _ = field_empty.get_or_create(&vec![("field", "model")]);
        Self {
            registry,
            success,
            field_not_found,
            field_empty,
            outcomes,
            bytes_before_decision,
            extraction_seconds,
            active_streams,
            unroutable_streams,
        }
    }

    /// Records what one finished stream did.
    pub fn record(&self, report: &Report) {
        let Some(verdict) = &report.verdict else {
            return;
        };
        self.outcomes
            .get_or_create(&vec![("outcome", verdict.label())])
            .inc();
        match verdict {
            Verdict::Found(_) => {
                self.success.inc();
            }
            Verdict::Absent => {
                self.success.inc();
                self.field_not_found
                    .get_or_create(&vec![("field", "model")])
                    .inc();
            }
            _ => {}
        }
        if report.empty_model {
            self.field_empty
                .get_or_create(&vec![("field", "model")])
                .inc();
        }
        if report.unroutable_mode {
            self.unroutable_streams.inc();
        }
        if !matches!(verdict, Verdict::NoBody) {
            self.bytes_before_decision
                .observe(report.bytes_before_decision as f64);
            self.extraction_seconds
                .observe(report.extract_time.as_secs_f64());
        }
    }

    /// Counts a stream as in flight until the guard drops.
    pub(crate) fn stream_started(&self) -> ActiveGuard {
        self.active_streams.inc();
        ActiveGuard(self.active_streams.clone())
    }

    /// Streams in flight.
    pub fn active_streams(&self) -> i64 {
        self.active_streams.get()
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

/// Decrements the active-stream gauge when dropped.
#[derive(Debug)]
pub(crate) struct ActiveGuard(Gauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
