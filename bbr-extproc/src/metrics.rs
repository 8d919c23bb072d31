//! Prometheus metrics, with the upstream BBR names kept
//! (`bbr_success_total`, `bbr_body_field_not_found_total{field}`,
//! `bbr_body_field_empty_total{field}`), plus outcomes by error code, bytes
//! scanned before the decision and extraction time, and the disk spool's
//! use (`bbr_spooled_requests_total`, `bbr_spooled_bytes_total`). The binary serves them
//! as OpenMetrics text on `GET /metrics` (`metrics_http.rs`, `server`
//! feature); an embedding gateway calls [`Metrics::encode`] itself.
//!
//! Model rewrites are counted under the upstream endpoint picker's name
//! and labels, so its dashboards work unchanged:
//! `inference_extension_model_rewrite_decisions_total{model_rewrite_name,
//! model_name, target_model}`: the rule ([`ModelRewrite::rule`]), the
//! requested name and the target, once per request a rule decided
//! (a target equal to the requested name included; a compressed body or a
//! form field, routed as requested, is not counted). `model_name` comes
//! from the client: past [`MAX_REWRITE_MODEL_LABELS`] distinct values
//! (a catch-all rule sees every name) further ones are counted as
//! [`OVERFLOW_LABEL`].
//!
//! Reloads of the files the server watches (the adapter map, the model
//! rewrite rules) are counted by `bbr_config_reloads_total{config,
//! result}` (`config` is `adapters` or `model_rewrites`, `result`
//! `success` or `failure`, once per change of the files), and
//! `bbr_config_last_reload_successful{config}` is 0 while the latest
//! change was refused and the previous files stay in force, as
//! Prometheus's own `prometheus_config_last_reload_successful`. With
//! `--adapters-from=kubernetes` every update of the adapter ConfigMaps
//! counts as one `adapters` reload (the first list too): `failure` when it
//! newly skips an invalid or conflicting ConfigMap (the rest is in force).
//!
//! [`ModelRewrite::rule`]: crate::ModelRewrite::rule

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use bbr_adapters::WatchedConfig;
use bbr_core::rewrite::RequestedModelLabels;

use crate::stream::{Report, Verdict};

/// Distinct `model_name` values of the rewrite counter (the core's
/// default, shared with the example gateway).
pub use bbr_core::rewrite::MAX_REQUESTED_MODEL_LABELS as MAX_REWRITE_MODEL_LABELS;

/// The `model_name` of rewrite decisions past [`MAX_REWRITE_MODEL_LABELS`].
pub use bbr_core::rewrite::OVERFLOW_MODEL_LABEL as OVERFLOW_LABEL;

type Labels = Vec<(&'static str, &'static str)>;
type PluginLabels = Vec<(&'static str, String)>;

/// The commit the binary was built from: `BBR_COMMIT` at build time (the
/// image build sets it, like the upstream's `-ldflags -X ...CommitSHA`).
pub const COMMIT: &str = match option_env!("BBR_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

/// The build's ref (tag or branch): `BBR_BUILD_REF` at build time, else
/// `v` and the crate version.
pub const BUILD_REF: &str = match option_env!("BBR_BUILD_REF") {
    Some(build_ref) => build_ref,
    None => concat!("v", env!("CARGO_PKG_VERSION")),
};

/// The upstream's buckets for `bbr_plugin_duration_seconds`, 100 µs to 100 ms.
const PLUGIN_BUCKETS: [f64; 10] = [
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1,
];

/// The configured plugin instances, as `bbr_plugin_duration_seconds`
/// labels them (`plugin_name` is the name given in `--plugin type:name` or
/// the config file).
///
/// ```
/// let names = bbr_extproc::PluginNames::default();
/// assert_eq!(names.body_field.as_deref(), Some("body-field-to-header"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginNames {
    /// Name of the `body-field-to-header` instance, if configured.
    pub body_field: Option<String>,
    /// Name of the `base-model-to-header` instance, if configured.
    pub base_model: Option<String>,
    /// The body field routed on: the `field` label of
    /// `bbr_body_field_not_found_total` and `bbr_body_field_empty_total`.
    pub field: String,
}

impl Default for PluginNames {
    /// The upstream default chain, each instance named after its type.
    fn default() -> Self {
        Self {
            body_field: Some("body-field-to-header".to_owned()),
            base_model: Some("base-model-to-header".to_owned()),
            field: "model".to_owned(),
        }
    }
}

/// The process's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    success: Counter,
    field_not_found: Family<PluginLabels, Counter>,
    field_empty: Family<PluginLabels, Counter>,
    field_label: PluginLabels,
    outcomes: Family<Labels, Counter>,
    bytes_before_decision: Histogram,
    extraction_seconds: Histogram,
    active_streams: Gauge,
    unroutable_streams: Counter,
    spooled_requests: Counter,
    spooled_bytes: Counter,
    plugin_seconds: Family<PluginLabels, Histogram>,
    plugins: PluginNames,
    rewrite_decisions: Family<PluginLabels, Counter>,
    rewrite_models: RequestedModelLabels,
    config_reloads: Family<Labels, Counter>,
    config_reload_ok: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered, for the upstream
    /// default plugin chain.
    pub fn new() -> Self {
        Self::for_plugins(PluginNames::default())
    }

    /// A fresh registry for this plugin chain.
    ///
    /// ```
    /// use bbr_extproc::{Metrics, PluginNames};
    /// let metrics = Metrics::for_plugins(PluginNames {
    ///     body_field: Some("model-extractor".into()),
    ///     base_model: None,
    ///     field: "prompt".into(),
    /// });
    /// let text = metrics.encode();
    /// assert!(text.contains(r#"bbr_plugin_duration_seconds_count{extension_point="request",plugin_type="body-field-to-header",plugin_name="model-extractor"} 0"#));
    /// assert!(text.contains("bbr_info{"));
    /// assert!(text.contains(r#"bbr_body_field_not_found_total{field="prompt"} 0"#));
    /// ```
    pub fn for_plugins(plugins: PluginNames) -> Self {
        let mut root = Registry::default();
        let rewrite_decisions = Family::<PluginLabels, Counter>::default();
        root.register(
            "inference_extension_model_rewrite_decisions",
            "Model rewrite decisions by rule, requested model and target",
            rewrite_decisions.clone(),
        );
        let registry = root.sub_registry_with_prefix("bbr");
        let info = Family::<Labels, Gauge>::default();
        registry.register(
            "info",
            "The build: commit and build_ref (always 1)",
            info.clone(),
        );
        info.get_or_create(&vec![("commit", COMMIT), ("build_ref", BUILD_REF)])
            .set(1);
        let plugin_seconds = Family::<PluginLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(PLUGIN_BUCKETS)
        });
        registry.register(
            "plugin_duration_seconds",
            "Time each plugin took per request: body-field-to-header the extraction, base-model-to-header the header building with the adapter lookup",
            plugin_seconds.clone(),
        );
        let success = Counter::default();
        registry.register(
            "success",
            "Request bodies processed without error (with or without a model)",
            success.clone(),
        );
        let field_not_found = Family::<PluginLabels, Counter>::default();
        registry.register(
            "body_field_not_found",
            "Request bodies without the field",
            field_not_found.clone(),
        );
        let field_empty = Family::<PluginLabels, Counter>::default();
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
        let spooled_requests = Counter::default();
        registry.register(
            "spooled_requests",
            "Requests whose held body bytes went to the disk spool (past --spool-threshold)",
            spooled_requests.clone(),
        );
        let spooled_bytes = Counter::default();
        registry.register(
            "spooled_bytes",
            "Body bytes written to the disk spool before their routing decision",
            spooled_bytes.clone(),
        );
        let config_reloads = Family::<Labels, Counter>::default();
        registry.register(
            "config_reloads",
            "Changes of a watched config (adapters, model_rewrites) by result: success (in force) or failure (refused, the previous one stays)",
            config_reloads.clone(),
        );
        let config_reload_ok = Family::<Labels, Gauge>::default();
        registry.register(
            "config_last_reload_successful",
            "1 while a watched config's latest files are in force, 0 while they were refused",
            config_reload_ok.clone(),
        );
        // The upstream series exist from the start, at zero.
        let field_label = vec![("field", plugins.field.clone())];
        let _ = field_not_found.get_or_create(&field_label);
        let _ = field_empty.get_or_create(&field_label);
        for labels in [
            plugin_labels("body-field-to-header", &plugins.body_field),
            plugin_labels("base-model-to-header", &plugins.base_model),
        ]
        .into_iter()
        .flatten()
        {
            let _ = plugin_seconds.get_or_create(&labels);
        }
        Self {
            plugin_seconds,
            plugins,
            registry: root,
            rewrite_decisions,
            rewrite_models: RequestedModelLabels::default(),
            success,
            field_not_found,
            field_empty,
            field_label,
            outcomes,
            bytes_before_decision,
            extraction_seconds,
            active_streams,
            unroutable_streams,
            spooled_requests,
            spooled_bytes,
            config_reloads,
            config_reload_ok,
        }
    }

    /// Starts the reload series of a config the server watches, at zero
    /// and successful (it loaded, or the server would not have started).
    pub fn watching(&self, config: WatchedConfig) {
        for result in ["success", "failure"] {
            let _ = self
                .config_reloads
                .get_or_create(&vec![("config", config.as_str()), ("result", result)]);
        }
        self.config_reload_ok
            .get_or_create(&vec![("config", config.as_str())])
            .set(1);
    }

    /// Counts one change of a watched config's files: in force when
    /// `applied`, else refused (the previous files stay).
    ///
    /// ```
    /// use bbr_extproc::{Metrics, WatchedConfig};
    /// let metrics = Metrics::new();
    /// metrics.watching(WatchedConfig::Adapters);
    /// metrics.config_reloaded(WatchedConfig::Adapters, false);
    /// let text = metrics.encode();
    /// assert!(text.contains(r#"bbr_config_reloads_total{config="adapters",result="failure"} 1"#));
    /// assert!(text.contains(r#"bbr_config_last_reload_successful{config="adapters"} 0"#));
    /// ```
    pub fn config_reloaded(&self, config: WatchedConfig, applied: bool) {
        let result = if applied { "success" } else { "failure" };
        self.config_reloads
            .get_or_create(&vec![("config", config.as_str()), ("result", result)])
            .inc();
        self.config_reload_ok
            .get_or_create(&vec![("config", config.as_str())])
            .set(i64::from(applied));
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
                self.field_not_found.get_or_create(&self.field_label).inc();
            }
            _ => {}
        }
        if report.empty_model {
            self.field_empty.get_or_create(&self.field_label).inc();
        }
        if report.unroutable_mode {
            self.unroutable_streams.inc();
        }
        if report.spooled_bytes > 0 {
            self.spooled_requests.inc();
            self.spooled_bytes.inc_by(report.spooled_bytes);
        }
        if let Some(rewrite) = &report.rewrite {
            let labels = vec![
                ("model_rewrite_name", rewrite.rule().to_owned()),
                ("model_name", self.rewrite_models.label(rewrite.requested())),
                ("target_model", rewrite.target().to_owned()),
            ];
            self.rewrite_decisions.get_or_create(&labels).inc();
        }
        if !matches!(verdict, Verdict::NoBody) {
            self.bytes_before_decision
                .observe(report.bytes_before_decision as f64);
            self.extraction_seconds
                .observe(report.extract_time.as_secs_f64());
            if let Some(labels) = plugin_labels("body-field-to-header", &self.plugins.body_field) {
                self.plugin_seconds
                    .get_or_create(&labels)
                    .observe(report.extract_time.as_secs_f64());
            }
        }
        if matches!(verdict, Verdict::Found(_))
            && let Some(labels) = plugin_labels("base-model-to-header", &self.plugins.base_model)
        {
            self.plugin_seconds
                .get_or_create(&labels)
                .observe(report.header_time.as_secs_f64());
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

fn plugin_labels(plugin_type: &str, name: &Option<String>) -> Option<PluginLabels> {
    name.as_ref().map(|name| {
        vec![
            ("extension_point", "request".to_owned()),
            ("plugin_type", plugin_type.to_owned()),
            ("plugin_name", name.clone()),
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::ModelRewrite;

    fn rewritten(rule: &str, requested: &str, target: &str) -> Report {
        let model = bbr_core::Model::from_name(target, &bbr_core::Limits::new()).expect("name");
        Report {
            verdict: Some(Verdict::Found(model)),
            rewrite: Some(ModelRewrite::new(rule, requested, target)),
            ..Report::default()
        }
    }

    fn series(text: &str, rule: &str, model: &str, target: &str) -> Option<u64> {
        let prefix = format!(
            r#"inference_extension_model_rewrite_decisions_total{{model_rewrite_name="{rule}",model_name="{model}",target_model="{target}"}} "#
        );
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix)?.parse().ok())
    }

    #[test]
    fn rewrite_decisions_are_counted_by_rule_requested_model_and_target() {
        let metrics = Metrics::new();
        for _ in 0..3 {
            metrics.record(&rewritten("ns/rollout/0", "food-review", "food-review-1"));
        }
        metrics.record(&rewritten("ns/rollout/0", "food-review", "food-review-2"));
        metrics.record(&rewritten("ns/canary/0", "canary", "canary"));
        // A request without a rewrite is not a decision.
        let mut plain = rewritten("x", "y", "z");
        plain.rewrite = None;
        metrics.record(&plain);
        let text = metrics.encode();
        assert_eq!(
            series(&text, "ns/rollout/0", "food-review", "food-review-1"),
            Some(3)
        );
        assert_eq!(
            series(&text, "ns/rollout/0", "food-review", "food-review-2"),
            Some(1)
        );
        assert_eq!(series(&text, "ns/canary/0", "canary", "canary"), Some(1));
        assert_eq!(
            text.matches("inference_extension_model_rewrite_decisions_total{")
                .count(),
            3
        );
        // The bbr metrics keep their prefix.
        assert!(text.contains("bbr_success_total 6"), "{text}");
    }

    #[test]
    fn spooled_requests_and_bytes_are_counted() {
        let metrics = Metrics::new();
        let mut report = rewritten("r", "m", "m");
        metrics.record(&report);
        report.spooled_bytes = 5 << 20;
        metrics.record(&report);
        metrics.record(&report);
        let text = metrics.encode();
        assert!(text.contains("bbr_spooled_requests_total 2"), "{text}");
        assert!(
            text.contains(&format!("bbr_spooled_bytes_total {}", 10 << 20)),
            "{text}"
        );
    }

    #[test]
    fn requested_names_past_the_label_cap_are_counted_as_overflow() {
        let metrics = Metrics::new();
        for i in 0..MAX_REWRITE_MODEL_LABELS {
            metrics.record(&rewritten("0", &format!("m{i}"), "t"));
        }
        let text = metrics.encode();
        let last = format!("m{}", MAX_REWRITE_MODEL_LABELS - 1);
        assert_eq!(
            series(&text, "0", &last, "t"),
            Some(1),
            "at the cap: its own label"
        );
        assert_eq!(series(&text, "0", OVERFLOW_LABEL, "t"), None);
        // One past the cap: overflow; a name already labelled keeps its label.
        metrics.record(&rewritten("0", "one-more", "t"));
        metrics.record(&rewritten("0", "m0", "t"));
        let text = metrics.encode();
        assert_eq!(series(&text, "0", OVERFLOW_LABEL, "t"), Some(1));
        assert_eq!(series(&text, "0", "one-more", "t"), None);
        assert_eq!(series(&text, "0", "m0", "t"), Some(2));
    }
}
