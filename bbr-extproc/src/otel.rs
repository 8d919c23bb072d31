//! `--tracing` (the `otlp` feature): one OpenTelemetry span per ext_proc
//! stream, exported over OTLP/gRPC as the upstream chart configures it.
//!
//! # Environment
//!
//! | variable | meaning here |
//! | --- | --- |
//! | `OTEL_TRACES_EXPORTER` | `otlp`: export; `none`: no spans; unset: export only when an OTLP endpoint variable is set (nothing listens on the default endpoint unless deployed); anything else (`console`): a warning, no spans |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | the collector (default `http://localhost:4317`); also `OTEL_EXPORTER_OTLP_{TRACES_,}{TIMEOUT,HEADERS,COMPRESSION}` |
//! | `OTEL_TRACES_SAMPLER` | `always_on`, `always_off`, `traceidratio`, `parentbased_always_on`, `parentbased_always_off`, `parentbased_traceidratio` (the default, as upstream); anything else: a warning and the default |
//! | `OTEL_TRACES_SAMPLER_ARG` | the ratio of the `traceidratio` samplers, in `[0, 1]` (default `0.1`, as upstream; unparsable or out of range: a warning and `0.1`) |
//! | `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` | the resource (service name default [`DEFAULT_SERVICE_NAME`], the upstream's) |
//! | `OTEL_BSP_*` | the batch span processor (delay, queue and batch sizes) |
//! | `OTEL_SDK_DISABLED=true` | no spans |
//!
//! # The span
//!
//! `gateway.request`, kind server, from the tracer `bbr-extproc`: a child
//! of the request's W3C `traceparent` (and `tracestate`) when it has one,
//! else a root. Its context goes to the upstream as `traceparent` (and
//! `tracestate`), replacing the client's, so the model server's span is a
//! child of this one; a span the sampler drops still propagates its
//! context, not sampled, as W3C asks. Attributes:
//!
//! | attribute | value |
//! | --- | --- |
//! | `gen_ai.request.model` | the model routed on |
//! | `bbr.base_model` | the `x-gateway-base-model-name` set, if any |
//! | `bbr.outcome` | `found`, `absent`, `no_body`, a refusal code, or `incomplete` (the stream ended undecided) |
//! | `error.type`, `http.response.status_code` | a refusal's code and status |
//! | `bbr.body.bytes_scanned` | body bytes read when the decision was taken |
//! | `bbr.decision.duration` | seconds from the request headers to the decision |
//! | `commit-sha` | the build's commit (the upstream's attribute) |
//!
//! A refusal with a 5xx status (503 overloaded) also sets the span status
//! to error; 4xx refusals are the client's, as the HTTP conventions say.

use std::borrow::Cow;
use std::sync::Arc;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

use crate::proto::envoy::config::core::v3::HeaderMap;
use crate::stream::Verdict;
use crate::stream_trace::{StreamEnd, StreamSpan, StreamTracer};

/// `service.name` when neither `OTEL_SERVICE_NAME` nor
/// `OTEL_RESOURCE_ATTRIBUTES` names one (the upstream binary's).
pub const DEFAULT_SERVICE_NAME: &str = "gateway-api-inference-extension/bbr";

/// The span of each stream.
const SPAN_NAME: &str = "gateway.request";

/// The ratio when `OTEL_TRACES_SAMPLER_ARG` gives none (the upstream's).
const DEFAULT_RATIO: f64 = 0.1;

/// What the `OTEL_*` environment asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TraceEnv {
    /// Export spans at all; `Err` says why not.
    pub(crate) export: Result<(), &'static str>,
    pub(crate) sampler: SamplerChoice,
    /// `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` name none.
    pub(crate) default_service_name: bool,
    /// Settings ignored, each with why, for the log.
    pub(crate) warnings: Vec<String>,
}

/// A sampler by name and ratio (comparable, unlike the SDK's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum SamplerChoice {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedRatio(f64),
}

impl SamplerChoice {
    fn sampler(self) -> Sampler {
        match self {
            SamplerChoice::AlwaysOn => Sampler::AlwaysOn,
            SamplerChoice::AlwaysOff => Sampler::AlwaysOff,
            SamplerChoice::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
            SamplerChoice::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            SamplerChoice::ParentBasedAlwaysOff => {
                Sampler::ParentBased(Box::new(Sampler::AlwaysOff))
            }
            SamplerChoice::ParentBasedRatio(ratio) => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
            }
        }
    }
}

impl TraceEnv {
    /// Reads the environment through `var` (`std::env::var` in the binary).
    pub(crate) fn read(var: impl Fn(&str) -> Option<String>) -> Self {
        let set = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        let mut warnings = Vec::new();
        let endpoint_set = set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
        let disabled = set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim() == "true");
        let export = if disabled {
            Err("OTEL_SDK_DISABLED=true")
        } else {
            match set("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
                Some("otlp") => Ok(()),
                Some("none") => Err("OTEL_TRACES_EXPORTER=none"),
                Some(other) => {
                    warnings.push(format!(
                        "OTEL_TRACES_EXPORTER={other}: only `otlp` and `none` are supported"
                    ));
                    Err("OTEL_TRACES_EXPORTER is not otlp")
                }
                None if endpoint_set => Ok(()),
                None => Err("neither OTEL_TRACES_EXPORTER=otlp nor an OTLP endpoint is set"),
            }
        };
        let ratio = || match set("OTEL_TRACES_SAMPLER_ARG") {
            None => DEFAULT_RATIO,
            Some(text) => match text.trim().parse::<f64>() {
                Ok(ratio) if (0.0..=1.0).contains(&ratio) => ratio,
                // Warned about below, once.
                _ => DEFAULT_RATIO,
            },
        };
        let name = set("OTEL_TRACES_SAMPLER");
        let sampler = match name.as_deref().map(str::trim) {
            Some("always_on") => SamplerChoice::AlwaysOn,
            Some("always_off") => SamplerChoice::AlwaysOff,
            Some("traceidratio") => SamplerChoice::Ratio(ratio()),
            Some("parentbased_always_on") => SamplerChoice::ParentBasedAlwaysOn,
            Some("parentbased_always_off") => SamplerChoice::ParentBasedAlwaysOff,
            None | Some("parentbased_traceidratio") => SamplerChoice::ParentBasedRatio(ratio()),
            Some(other) => {
                warnings.push(format!(
                    "OTEL_TRACES_SAMPLER={other} is not supported; using parentbased_traceidratio"
                ));
                SamplerChoice::ParentBasedRatio(ratio())
            }
        };
        let uses_ratio = matches!(
            sampler,
            SamplerChoice::Ratio(_) | SamplerChoice::ParentBasedRatio(_)
        );
        if let Some(text) = set("OTEL_TRACES_SAMPLER_ARG")
            && uses_ratio
            && !matches!(text.trim().parse::<f64>(), Ok(r) if (0.0..=1.0).contains(&r))
        {
            warnings.push(format!(
                "OTEL_TRACES_SAMPLER_ARG={text} is not a ratio in [0, 1]; using {DEFAULT_RATIO}"
            ));
        }
        let default_service_name = set("OTEL_SERVICE_NAME").is_none()
            && !set("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attributes| {
                attributes
                    .split(',')
                    .any(|pair| pair.split('=').next().map(str::trim) == Some("service.name"))
            });
        TraceEnv {
            export,
            sampler,
            default_service_name,
            warnings,
        }
    }
}

/// The exporter could not be built (an endpoint that is not a URI).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the OTLP span exporter")]
pub struct TracingError(#[source] opentelemetry_otlp::ExporterBuildError);

/// The running export: the [`StreamTracer`] for the server and the
/// provider to flush at exit.
#[derive(Debug)]
pub(crate) struct Tracing {
    provider: SdkTracerProvider,
    pub(crate) tracer: Arc<OtelTracer>,
}

impl Tracing {
    /// Starts the batch export the environment asks for; `None` (logged)
    /// when it asks for none. Call inside the tokio runtime.
    pub(crate) fn start(env: &TraceEnv) -> Result<Option<Self>, TracingError> {
        for warning in &env.warnings {
            tracing::warn!("--tracing: {warning}");
        }
        if let Err(why) = env.export {
            tracing::info!("--tracing: no spans exported ({why})");
            return Ok(None);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(TracingError)?;
        let mut resource = Resource::builder();
        if env.default_service_name {
            resource = resource.with_service_name(DEFAULT_SERVICE_NAME);
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(env.sampler.sampler())
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer_with_scope(
            InstrumentationScope::builder("bbr-extproc")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        tracing::info!(sampler = ?env.sampler, "--tracing: exporting spans over OTLP");
        Ok(Some(Self {
            provider,
            tracer: Arc::new(OtelTracer { tracer }),
        }))
    }

    /// Exports what is still queued and stops (blocking: off the runtime's
    /// workers).
    pub(crate) async fn shutdown(self) {
        let provider = self.provider;
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "--tracing: flushing spans at exit failed"),
            Err(error) => tracing::warn!(%error, "--tracing: flushing spans at exit failed"),
        }
    }
}

/// [`StreamTracer`] over an OpenTelemetry tracer.
#[derive(Debug)]
pub(crate) struct OtelTracer {
    tracer: SdkTracer,
}

impl StreamTracer for OtelTracer {
    fn start(&self, request_headers: &HeaderMap) -> Box<dyn StreamSpan> {
        let propagator = TraceContextPropagator::new();
        let parent = propagator.extract(&EnvoyHeaders(request_headers));
        let span = self
            .tracer
            .span_builder(SPAN_NAME)
            .with_kind(SpanKind::Server)
            .with_attributes([KeyValue::new("commit-sha", crate::COMMIT)])
            .start_with_context(&self.tracer, &parent);
        Box::new(OtelSpan { span })
    }
}

struct OtelSpan {
    span: opentelemetry_sdk::trace::Span,
}

impl StreamSpan for OtelSpan {
    fn propagation(&self) -> Vec<(String, String)> {
        let context = Context::new().with_remote_span_context(self.span.span_context().clone());
        let mut headers = Headers(Vec::new());
        TraceContextPropagator::new().inject_context(&context, &mut headers);
        headers.0
    }

    fn end(mut self: Box<Self>, end: &StreamEnd<'_>) {
        let span = &mut self.span;
        if span.is_recording() {
            for attribute in attributes(end) {
                span.set_attribute(attribute);
            }
            if let Some(Verdict::Rejected(refusal)) = &end.report.verdict
                && refusal.status() >= 500
            {
                span.set_status(Status::error(Cow::Borrowed(refusal.code())));
            }
        }
        span.end();
    }
}

/// The span's attributes from what the stream did.
fn attributes(end: &StreamEnd<'_>) -> Vec<KeyValue> {
    let report = end.report;
    let outcome = report.verdict.as_ref().map_or("incomplete", Verdict::label);
    let mut attributes = vec![
        KeyValue::new("bbr.outcome", outcome),
        KeyValue::new(
            "bbr.body.bytes_scanned",
            i64::try_from(report.bytes_before_decision).unwrap_or(i64::MAX),
        ),
    ];
    match &report.verdict {
        Some(Verdict::Found(model)) => attributes.push(KeyValue::new(
            "gen_ai.request.model",
            model.as_str().to_owned(),
        )),
        Some(Verdict::Rejected(refusal)) => {
            attributes.push(KeyValue::new("error.type", refusal.code()));
            attributes.push(KeyValue::new(
                "http.response.status_code",
                i64::from(refusal.status()),
            ));
        }
        _ => {}
    }
    if let Some(base_model) = end.base_model {
        attributes.push(KeyValue::new("bbr.base_model", base_model.to_owned()));
    }
    if let Some(latency) = end.decision_latency {
        attributes.push(KeyValue::new(
            "bbr.decision.duration",
            latency.as_secs_f64(),
        ));
    }
    attributes
}

/// Envoy's request headers for the propagator (names are lower case).
struct EnvoyHeaders<'a>(&'a HeaderMap);

impl Extractor for EnvoyHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .headers
            .iter()
            .find(|header| header.key.eq_ignore_ascii_case(key))
            .and_then(|header| std::str::from_utf8(crate::stream::header_value(header)).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.headers.iter().map(|h| h.key.as_str()).collect()
    }
}

/// The headers the propagator writes.
struct Headers(Vec<(String, String)>);

impl Injector for Headers {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::proto::envoy::config::core::v3::HeaderValue;

    fn env(pairs: &[(&str, &str)]) -> TraceEnv {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TraceEnv::read(|name| map.get(name).cloned())
    }

    #[test]
    fn the_upstream_chart_env_exports_with_its_sampler() {
        let read = env(&[
            ("OTEL_SERVICE_NAME", "body-based-router"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "k8s.namespace.name=ns,k8s.pod.name=p",
            ),
        ]);
        assert_eq!(read.export, Ok(()));
        assert_eq!(read.sampler, SamplerChoice::ParentBasedRatio(0.1));
        assert!(!read.default_service_name);
        assert!(read.warnings.is_empty(), "{:?}", read.warnings);
    }

    #[test]
    fn exporter_choice() {
        assert!(env(&[]).export.is_err());
        assert_eq!(env(&[("OTEL_TRACES_EXPORTER", "otlp")]).export, Ok(()));
        assert_eq!(
            env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317")]).export,
            Ok(())
        );
        let none = env(&[
            ("OTEL_TRACES_EXPORTER", "none"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
        ]);
        assert!(none.export.is_err() && none.warnings.is_empty());
        let console = env(&[("OTEL_TRACES_EXPORTER", "console")]);
        assert!(console.export.is_err());
        assert_eq!(console.warnings.len(), 1);
        let disabled = env(&[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert!(disabled.export.is_err());
    }

    #[test]
    fn samplers_by_name_and_ratio_at_and_past_its_bounds() {
        let sampler = |name: &str, arg: &str| {
            let read = env(&[
                ("OTEL_TRACES_SAMPLER", name),
                ("OTEL_TRACES_SAMPLER_ARG", arg),
            ]);
            (read.sampler, read.warnings.len())
        };
        assert_eq!(env(&[]).sampler, SamplerChoice::ParentBasedRatio(0.1));
        assert_eq!(sampler("always_on", ""), (SamplerChoice::AlwaysOn, 0));
        assert_eq!(sampler("always_off", ""), (SamplerChoice::AlwaysOff, 0));
        assert_eq!(sampler("traceidratio", "0"), (SamplerChoice::Ratio(0.0), 0));
        assert_eq!(sampler("traceidratio", "1"), (SamplerChoice::Ratio(1.0), 0));
        assert_eq!(
            sampler("traceidratio", "1.01"),
            (SamplerChoice::Ratio(0.1), 1)
        );
        assert_eq!(
            sampler("traceidratio", "-0.01"),
            (SamplerChoice::Ratio(0.1), 1)
        );
        assert_eq!(
            sampler("traceidratio", "half"),
            (SamplerChoice::Ratio(0.1), 1)
        );
        assert_eq!(
            sampler("parentbased_always_on", ""),
            (SamplerChoice::ParentBasedAlwaysOn, 0)
        );
        assert_eq!(
            sampler("parentbased_always_off", ""),
            (SamplerChoice::ParentBasedAlwaysOff, 0)
        );
        assert_eq!(
            sampler("jaeger_remote", "0.5"),
            (SamplerChoice::ParentBasedRatio(0.5), 1)
        );
    }

    #[test]
    fn service_name_default_only_when_none_is_named() {
        assert!(env(&[]).default_service_name);
        assert!(!env(&[("OTEL_SERVICE_NAME", "bbr")]).default_service_name);
        assert!(
            !env(&[("OTEL_RESOURCE_ATTRIBUTES", "a=b, service.name=bbr")]).default_service_name
        );
        assert!(env(&[("OTEL_RESOURCE_ATTRIBUTES", "service.namespace=x")]).default_service_name);
    }

    #[test]
    fn traceparent_is_read_from_raw_or_string_values() {
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        for (value, raw) in [("", parent), (parent, "")] {
            let headers = HeaderMap {
                headers: vec![HeaderValue {
                    key: "traceparent".into(),
                    value: value.into(),
                    raw_value: raw.to_owned().into(),
                }],
            };
            let context = TraceContextPropagator::new().extract(&EnvoyHeaders(&headers));
            let span = context.span();
            let span_context = span.span_context();
            assert_eq!(
                span_context.trace_id().to_string(),
                "0af7651916cd43dd8448eb211c80319c"
            );
            assert_eq!(span_context.span_id().to_string(), "b7ad6b7169203331");
            assert!(span_context.is_remote() && span_context.is_sampled());
        }
    }
}
