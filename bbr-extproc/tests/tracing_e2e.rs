//! `--tracing` over the real wire: the `bbr-extproc` binary behind a real
//! Envoy, exporting over OTLP/gRPC to a stand-in collector (the generated
//! `opentelemetry.proto.collector.trace.v1.TraceService` server on a
//! loopback socket), configured only through the `OTEL_*` environment the
//! upstream chart sets. Every "nothing exported" check is taken after the
//! binary drained and exited, which flushes what it queued.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use support::*;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// The client's trace: W3C's example ids, sampled.
const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_PARENT: &str = "b7ad6b7169203331";
const CLIENT_STATE: &str = "vendor=opaque";

fn client_traceparent() -> String {
    format!("00-{CLIENT_TRACE}-{CLIENT_PARENT}-01")
}

// ------------------------------------------------------------- collector

/// One exported span, flattened with its resource.
#[derive(Debug, Clone)]
struct Exported {
    service_name: Option<String>,
    resource: Vec<KeyValue>,
    scope: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: Vec<KeyValue>,
}

impl Exported {
    fn attribute(&self, key: &str) -> Option<&any_value::Value> {
        find(&self.attributes, key)
    }

    fn string(&self, key: &str) -> Option<&str> {
        match self.attribute(key) {
            Some(any_value::Value::StringValue(text)) => Some(text),
            _ => None,
        }
    }

    fn int(&self, key: &str) -> Option<i64> {
        match self.attribute(key) {
            Some(any_value::Value::IntValue(n)) => Some(*n),
            _ => None,
        }
    }
}

fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Exported>>>,
    exports: Arc<Mutex<usize>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        *self.exports.lock().unwrap() += 1;
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default();
            let service_name = match find(&resource, "service.name") {
                Some(any_value::Value::StringValue(name)) => Some(name.clone()),
                _ => None,
            };
            for scope_spans in resource_spans.scope_spans {
                let scope = scope_spans.scope.map(|s| s.name).unwrap_or_default();
                for span in scope_spans.spans {
                    spans.push(Exported {
                        service_name: service_name.clone(),
                        resource: resource.clone(),
                        scope: scope.clone(),
                        name: span.name,
                        kind: span.kind,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        attributes: span.attributes,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    async fn start() -> (Self, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let collector = Collector::default();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        (collector, addr)
    }

    fn spans(&self) -> Vec<Exported> {
        self.spans.lock().unwrap().clone()
    }

    fn exports(&self) -> usize {
        *self.exports.lock().unwrap()
    }

    /// Waits (30 s at most) until `count` spans arrived.
    async fn wait_for(&self, count: usize, binary: &Binary) -> Vec<Exported> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.spans();
            if spans.len() >= count {
                return spans;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {count} spans within 30 s: {spans:?}\n{}",
                spans.len(),
                binary.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// ------------------------------------------------------------- the binary

/// Starts bbr-extproc in plaintext with `args` and the OTEL env `otel`
/// (only that: the test's own environment is not inherited).
fn start_binary(args: &[&str], otel: &[(&str, String)]) -> Binary {
    let fixed = [
        "--secure-serving=false",
        "--drain-delay=0s",
        "--metrics-endpoint-auth=false",
        "--zap-log-level=debug",
    ];
    let args: Vec<&str> = fixed.iter().chain(args).copied().collect();
    Binary::spawn(&args, Some(otel))
}

/// The chart's OTEL env (tracing on), pointed at `collector`, with this
/// sampler; batches leave after 50 ms so the test does not wait 5 s.
fn chart_env(collector: SocketAddr, sampler: &str, arg: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_SERVICE_NAME", "body-based-router".to_owned()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}")),
        ("OTEL_TRACES_EXPORTER", "otlp".to_owned()),
        ("OTEL_TRACES_SAMPLER", sampler.to_owned()),
        ("OTEL_TRACES_SAMPLER_ARG", arg.to_owned()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "k8s.namespace.name=tracing-test,k8s.pod.name=bbr-0".to_owned(),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".to_owned()),
    ]
}

fn adapters_file() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bbr-tracing-adapters-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("adapters.yaml");
    std::fs::write(
        &file,
        "kind: ConfigMap\nmetadata: {name: llama}\ndata:\n  baseModel: meta-llama/Llama-3.1-8B-Instruct\n  adapters: |\n    - food-review-1\n",
    )
    .expect("write adapters");
    file
}

/// `traceparent` parts: (trace id, parent id, flags).
fn parts(traceparent: &str) -> (String, String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    assert_eq!(fields[0], "00", "{traceparent}");
    (fields[1].into(), fields[2].into(), fields[3].into())
}

const FOOD_REVIEW: &str = r#"{"model":"food-review-1","prompt":"Write as if you were a critic: San Francisco","max_tokens":100}"#;

// ------------------------------------------------------------- the tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_span_per_request_child_of_the_client_and_parent_of_the_upstream() {
    let (collector, collector_addr) = Collector::start().await;
    let adapters = adapters_file();
    let adapters_arg = format!("--adapters={}", adapters.display());
    // `--tracing` bare, as the flag's upstream default (true) would be.
    let mut binary = start_binary(
        &["--tracing", "--adapters-from=files", &adapters_arg],
        &chart_env(collector_addr, "parentbased_traceidratio", "1"),
    );
    binary.wait_serving().await;
    let upstreams = Upstreams::start().await;
    let envoy = Envoy::start("bbr-base-model.yaml", Some(binary.addr()), &upstreams).await;
    let client = http1_client();
    let url = envoy.url("/v1/completions");

    // 1. With the client's traceparent and tracestate.
    let traceparent = client_traceparent();
    let answer = send(
        &client,
        post(
            &url,
            FOOD_REVIEW,
            &[("traceparent", &traceparent), ("tracestate", CLIENT_STATE)],
        ),
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.json()["pool"], "pool-llama");
    let spans = collector.wait_for(1, &binary).await;
    let with_parent = &spans[0];
    assert_eq!(with_parent.name, "gateway.request");
    assert_eq!(with_parent.kind, SpanKind::Server as i32);
    assert_eq!(with_parent.scope, "bbr-extproc");
    assert_eq!(with_parent.trace_id, CLIENT_TRACE);
    assert_eq!(with_parent.parent_span_id, CLIENT_PARENT);
    assert_ne!(with_parent.span_id, CLIENT_PARENT);
    assert_eq!(
        with_parent.service_name.as_deref(),
        Some("body-based-router")
    );
    assert!(
        matches!(find(&with_parent.resource, "k8s.namespace.name"),
            Some(any_value::Value::StringValue(ns)) if ns == "tracing-test"),
        "{:?}",
        with_parent.resource
    );
    assert_eq!(
        with_parent.string("gen_ai.request.model"),
        Some("food-review-1")
    );
    assert_eq!(
        with_parent.string("bbr.base_model"),
        Some("meta-llama/Llama-3.1-8B-Instruct")
    );
    assert_eq!(with_parent.string("bbr.outcome"), Some("found"));
    let scanned = with_parent.int("bbr.body.bytes_scanned").expect("bytes");
    assert!(
        scanned > 0 && scanned <= FOOD_REVIEW.len() as i64,
        "{scanned}"
    );
    assert!(
        matches!(with_parent.attribute("bbr.decision.duration"),
            Some(any_value::Value::DoubleValue(seconds)) if *seconds >= 0.0),
        "{:?}",
        with_parent.attributes
    );
    assert!(with_parent.string("commit-sha").is_some());
    // The upstream saw bbr's span as its parent, in the client's trace.
    let received = upstreams.take();
    assert_eq!(received.len(), 1);
    let upstream_parent = received[0].header("traceparent").expect("traceparent");
    assert_eq!(
        parts(upstream_parent),
        (
            CLIENT_TRACE.to_owned(),
            with_parent.span_id.clone(),
            "01".to_owned()
        )
    );
    assert_eq!(received[0].header("tracestate"), Some(CLIENT_STATE));
    assert_eq!(received[0].headers["traceparent"].len(), 1);

    // 2. Without one: a root span, still the upstream's parent.
    let answer = send(&client, post(&url, FOOD_REVIEW, &[])).await;
    assert_eq!(answer.status, 200);
    let spans = collector.wait_for(2, &binary).await;
    let root = &spans[1];
    assert_eq!(root.parent_span_id, "");
    assert_ne!(root.trace_id, CLIENT_TRACE);
    let received = upstreams.take();
    let (trace, parent, flags) = parts(received[0].header("traceparent").expect("traceparent"));
    assert_eq!(
        (trace, parent, flags),
        (root.trace_id.clone(), root.span_id.clone(), "01".to_owned())
    );

    // 3. A refused body: the refusal on the span, nothing upstream.
    let answer = send(
        &client,
        post(&url, r#"{"model": 7}"#, &[("traceparent", &traceparent)]),
    )
    .await;
    assert_eq!(answer.status, 400);
    let spans = collector.wait_for(3, &binary).await;
    let refused = &spans[2];
    assert_eq!(refused.trace_id, CLIENT_TRACE);
    let code = answer.json()["error"]["code"].as_str().map(str::to_owned);
    assert!(code.is_some(), "{:?}", answer.body);
    assert_eq!(refused.string("bbr.outcome"), code.as_deref());
    assert_eq!(refused.string("error.type"), code.as_deref());
    assert_eq!(refused.int("http.response.status_code"), Some(400));
    assert_eq!(refused.string("gen_ai.request.model"), None);
    assert!(upstreams.take().is_empty());

    // One span per request: after the drain flushed, still three.
    binary.drain().await;
    assert_eq!(collector.spans().len(), 3, "{:?}", collector.spans());
    drop(envoy);
    let _ = std::fs::remove_dir_all(adapters.parent().expect("dir"));
}

/// Requests with a sampled client traceparent and without one; the
/// binary drains; what the collector got and what the upstream saw.
async fn run_unsampled(
    args: &[&str],
    otel: Vec<(&'static str, String)>,
) -> (Collector, Vec<Received>) {
    let (collector, collector_addr) = Collector::start().await;
    let otel = otel
        .into_iter()
        .map(|(k, v)| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => (k, format!("http://{collector_addr}")),
            _ => (k, v),
        })
        .collect::<Vec<_>>();
    let mut binary = start_binary(args, &otel);
    binary.wait_serving().await;
    let upstreams = Upstreams::start().await;
    let envoy = Envoy::start("bbr-full-duplex.yaml", Some(binary.addr()), &upstreams).await;
    let client = http1_client();
    let url = envoy.url("/v1/completions");
    let traceparent = client_traceparent();
    for headers in [vec![("traceparent", traceparent.as_str())], vec![]] {
        let answer = send(&client, post(&url, FOOD_REVIEW, &headers)).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }
    binary.drain().await;
    drop(envoy);
    (collector, upstreams.take())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampler_always_off_exports_nothing_and_propagates_unsampled() {
    let placeholder: SocketAddr = ([127, 0, 0, 1], 1).into();
    let (collector, received) = run_unsampled(
        &["--tracing=true"],
        chart_env(placeholder, "always_off", "1"),
    )
    .await;
    assert_eq!(collector.spans().len(), 0, "{:?}", collector.spans());
    assert_eq!(received.len(), 2);
    // The client's trace goes on, marked not sampled, as W3C asks.
    let (trace, _, flags) = parts(received[0].header("traceparent").expect("traceparent"));
    assert_eq!((trace.as_str(), flags.as_str()), (CLIENT_TRACE, "00"));
    let (_, _, flags) = parts(received[1].header("traceparent").expect("traceparent"));
    assert_eq!(flags, "00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampler_traceidratio_zero_exports_nothing_even_under_a_sampled_parent() {
    let placeholder: SocketAddr = ([127, 0, 0, 1], 1).into();
    let (collector, received) =
        run_unsampled(&["--tracing"], chart_env(placeholder, "traceidratio", "0")).await;
    assert_eq!(collector.spans().len(), 0, "{:?}", collector.spans());
    assert_eq!(received.len(), 2);
    let (trace, _, flags) = parts(received[0].header("traceparent").expect("traceparent"));
    assert_eq!((trace.as_str(), flags.as_str()), (CLIENT_TRACE, "00"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_false_exports_nothing_and_leaves_traceparent_alone() {
    let placeholder: SocketAddr = ([127, 0, 0, 1], 1).into();
    let (collector, received) = run_unsampled(
        &["--tracing=false"],
        chart_env(placeholder, "always_on", "1"),
    )
    .await;
    assert_eq!(collector.exports(), 0);
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[0].header("traceparent"),
        Some(client_traceparent().as_str())
    );
    assert_eq!(received[1].header("traceparent"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampler_always_on_exports_every_request_as_a_control() {
    // The same run as the unsampled ones, with a sampler that keeps all:
    // their zero is the sampler's doing, not the drain's.
    let placeholder: SocketAddr = ([127, 0, 0, 1], 1).into();
    let (collector, received) =
        run_unsampled(&["--tracing"], chart_env(placeholder, "always_on", "1")).await;
    let spans = collector.spans();
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert_eq!(spans[0].trace_id, CLIENT_TRACE);
    assert_eq!(received.len(), 2);
    for (span, upstream) in spans.iter().zip(&received) {
        let (trace, parent, flags) = parts(upstream.header("traceparent").expect("traceparent"));
        assert_eq!(
            (trace, parent, flags),
            (span.trace_id.clone(), span.span_id.clone(), "01".to_owned())
        );
    }
}
