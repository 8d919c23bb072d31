//! Model rewrites through the layer (feature `adapters`): the inner
//! service sees the spliced body, the corrected length and the routing
//! headers of the target.
#![cfg(feature = "adapters")]

mod common;

use bbr_adapters::rewrite::{RewritePicker, RewriteRules, RewriteStore};
use bbr_adapters::{AdapterMap, AdapterStore};
use bbr_core::contract::{BASE_MODEL_HEADER, MODEL_HEADER, REQUESTED_MODEL_HEADER};
use bbr_tower::ModelRoutingLayer;
use bytes::Bytes;
use common::{FramesBody, Recorder, gzip, oneshot, split};
use http::Request;
use http_body_util::Full;
use serde_json::Value;

const RULES: &str = r#"
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata: {name: food-review}
spec:
  poolRef: {name: pool}
  rules:
  - matches: [{model: {value: food-review}}]
    targets:
    - {modelRewrite: food-review-1, weight: 90}
    - {modelRewrite: food-review-2, weight: 10}
  - matches: [{model: {value: gpt-4o}}]
    targets: [{modelRewrite: "llama \"3\""}]
"#;

fn layer(sticky: Option<&str>) -> ModelRoutingLayer {
    let rules = RewriteRules::from_yaml_str(RULES, "rules.yaml").unwrap();
    let mut picker = RewritePicker::new(RewriteStore::from_rules(rules));
    if let Some(header) = sticky {
        picker = picker.sticky_by(header);
    }
    let adapters = AdapterMap::from_yaml_str(
        "kind: ConfigMap\ndata: {baseModel: llama-base, adapters: '[food-review-1, food-review-2]'}",
        "adapters.yaml",
    )
    .unwrap();
    ModelRoutingLayer::new()
        .adapters(AdapterStore::from_map(adapters))
        .model_rewrites(picker)
}

fn request(body: &'static [u8]) -> Request<Full<Bytes>> {
    Request::post("/v1/chat/completions")
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

/// The received body is the sent one with only `model` changed.
fn assert_spliced(sent: &[u8], received: &[u8], target: &str) {
    let mut want: Value = serde_json::from_slice(sent).unwrap();
    want["model"] = Value::String(target.to_owned());
    assert_eq!(serde_json::from_slice::<Value>(received).unwrap(), want);
}

#[tokio::test]
async fn an_alias_is_spliced_with_its_escapes_and_the_length_corrected() {
    let sent: &[u8] =
        br#"{"messages":[{"role":"user","content":"h\u00e9"}],"model":"gpt-\u0034o","n":1}"#;
    let recorder = Recorder::keeping_frames();
    let answer = oneshot(&layer(None), &recorder, request(sent)).await;
    assert_eq!(answer.status, 200);
    let seen = recorder.last();
    assert_eq!(seen.header(MODEL_HEADER), Some("llama \"3\""));
    assert_eq!(seen.header(REQUESTED_MODEL_HEADER), Some("gpt-4o"));
    let received = seen.frames.concat();
    assert_eq!(
        seen.header("content-length"),
        Some(received.len().to_string().as_str())
    );
    assert_eq!(seen.len, received.len() as u64);
    let token = br#""llama \"3\"""#;
    let at = sent
        .windows(13)
        .position(|w| w == br#""gpt-\u0034o""#)
        .unwrap();
    assert_eq!(
        received,
        [&sent[..at], &token[..], &sent[at + 13..]].concat()
    );
    assert_spliced(sent, &received, "llama \"3\"");
    assert_eq!(seen.model_extension.as_deref(), Some("llama \"3\""));
}

#[tokio::test]
async fn a_90_10_split_over_1000_requests_with_the_base_model_of_the_target() {
    let layer = layer(None);
    let recorder = Recorder::keeping_frames();
    let mut second = 0;
    for _ in 0..1000 {
        let sent: &[u8] = br#"{"model":"food-review","stream":true}"#;
        oneshot(&layer, &recorder, request(sent)).await;
        let seen = recorder.take().pop().unwrap();
        let target = seen.header(MODEL_HEADER).unwrap().to_owned();
        assert!(target == "food-review-1" || target == "food-review-2");
        assert_eq!(seen.header(BASE_MODEL_HEADER), Some("llama-base"));
        assert_eq!(seen.header(REQUESTED_MODEL_HEADER), Some("food-review"));
        assert_spliced(sent, &seen.frames.concat(), &target);
        second += usize::from(target == "food-review-2");
    }
    // Binomial(1000, 0.1): mean 100, sd 9.5; over six sd either way.
    assert!((40..=160).contains(&second), "{second} of 1000");
}

#[tokio::test]
async fn sticky_by_a_header_keeps_each_value_on_one_target() {
    let layer = layer(Some("x-session-id"));
    let recorder = Recorder::default();
    let mut targets = std::collections::HashSet::new();
    for user in 0..50 {
        let mut first = None;
        for _ in 0..5 {
            let mut req = request(br#"{"model":"food-review"}"#);
            req.headers_mut()
                .insert("x-session-id", format!("user-{user}").parse().unwrap());
            oneshot(&layer, &recorder, req).await;
            let target = recorder.last().header(MODEL_HEADER).unwrap().to_owned();
            assert_eq!(first.get_or_insert(target.clone()), &target);
            targets.insert(target);
        }
    }
    assert_eq!(targets.len(), 2, "50 users land on both targets");
}

#[tokio::test]
async fn one_byte_frames_are_spliced_and_untouched_frames_forwarded_as_they_came() {
    let sent = Bytes::from_static(br#"{"a":"\"","model":" gpt-4o ","b":[1,2]}"#);
    let frames = split(&sent, 1);
    let recorder = Recorder::keeping_frames();
    let req = Request::post("/")
        .body(FramesBody::chunked(frames.clone()))
        .unwrap();
    oneshot(&layer(None), &recorder, req).await;
    let seen = recorder.last();
    assert_eq!(seen.header("content-length"), None, "chunked stays chunked");
    let received = seen.frames.concat();
    assert_spliced(&sent, &received, "llama \"3\"");
    // Bytes before the token: the client's own frames.
    for (got, sent) in seen.frames.iter().zip(&frames).take(15) {
        assert_eq!(got.as_ptr(), sent.as_ptr());
    }
}

#[tokio::test]
async fn no_rule_sets_the_requested_header_to_the_model_and_drops_a_client_value() {
    let recorder = Recorder::keeping_frames();
    let mut req = request(br#"{"model":"ski-resorts"}"#);
    req.headers_mut()
        .insert(REQUESTED_MODEL_HEADER, "spoofed".parse().unwrap());
    oneshot(&layer(None), &recorder, req).await;
    let seen = recorder.last();
    assert_eq!(seen.header(MODEL_HEADER), Some("ski-resorts"));
    assert_eq!(seen.header(REQUESTED_MODEL_HEADER), Some("ski-resorts"));
    assert_eq!(seen.frames.concat(), br#"{"model":"ski-resorts"}"#);
    // Without a model: no requested header at all.
    let mut req = request(br#"{"n":1}"#);
    req.headers_mut()
        .insert(REQUESTED_MODEL_HEADER, "spoofed".parse().unwrap());
    oneshot(&layer(None), &recorder, req).await;
    assert_eq!(recorder.last().header(REQUESTED_MODEL_HEADER), None);
}

#[tokio::test]
async fn a_refused_body_is_never_rewritten_nor_forwarded() {
    let recorder = Recorder::default();
    let answer = oneshot(
        &layer(None),
        &recorder,
        request(br#"{"x":[,],"model":"gpt-4o"}"#),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(recorder.count(), 0);
    // A second model under the default policy, in the same frame: refused.
    let answer = oneshot(
        &layer(None),
        &recorder,
        request(br#"{"model":"gpt-4o","model":"x"}"#),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(recorder.count(), 0);
}

#[tokio::test]
async fn a_compressed_body_is_routed_as_requested_and_forwarded_untouched() {
    let sent = Bytes::from(gzip(br#"{"model":"gpt-4o"}"#));
    let recorder = Recorder::keeping_frames();
    let req = Request::post("/")
        .header("content-encoding", "gzip")
        .header(http::header::CONTENT_LENGTH, sent.len())
        .body(Full::new(sent.clone()))
        .unwrap();
    oneshot(&layer(None), &recorder, req).await;
    let seen = recorder.last();
    assert_eq!(seen.header(MODEL_HEADER), Some("gpt-4o"));
    assert_eq!(seen.header(REQUESTED_MODEL_HEADER), Some("gpt-4o"));
    assert_eq!(seen.frames.concat(), sent);
    assert_eq!(
        seen.header("content-length"),
        Some(sent.len().to_string().as_str())
    );
}

#[tokio::test]
async fn a_reload_changes_the_weights_between_requests_and_none_is_lost() {
    let dir = std::env::temp_dir().join(format!("bbr-tower-rewrite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rules.yaml");
    let rules = |one: u32, two: u32| {
        format!(
            "kind: InferenceModelRewrite\nspec:\n  rules:\n  - matches: [{{model: {{value: food-review}}}}]\n    targets: [{{modelRewrite: food-review-1, weight: {one}}}, {{modelRewrite: food-review-2, weight: {two}}}]\n"
        )
    };
    std::fs::write(&file, rules(1_000_000, 1)).unwrap();
    let store = RewriteStore::load([&file]).unwrap();
    let layer = ModelRoutingLayer::new().model_rewrites(RewritePicker::new(store.clone()));
    let recorder = Recorder::default();
    let service = recorder.service::<Full<Bytes>>(&layer);
    // Requests in flight on their own tasks while the rules change.
    let mut tasks = Vec::new();
    for i in 0..200 {
        if i == 100 {
            std::fs::write(&file, rules(1, 1_000_000)).unwrap();
            store.reload().unwrap();
        }
        let service = service.clone();
        let task = tokio::spawn(async move {
            use tower::ServiceExt;
            let response = service
                .oneshot(request(br#"{"model":"food-review"}"#))
                .await
                .unwrap();
            response.headers()["x-seen-model"]
                .to_str()
                .unwrap()
                .to_owned()
        });
        tasks.push(task);
        tokio::task::yield_now().await;
    }
    let mut targets = Vec::new();
    for task in tasks {
        targets.push(task.await.unwrap());
    }
    assert_eq!(targets.len(), 200);
    assert_eq!(recorder.count(), 200, "every request reached the service");
    // A request decided before the swap may still be in flight; the
    // weights make each side almost certain: one in a million.
    let before = targets[..90]
        .iter()
        .filter(|t| *t == "food-review-1")
        .count();
    let after = targets[110..]
        .iter()
        .filter(|t| *t == "food-review-2")
        .count();
    assert!(before >= 89 && after >= 89, "{before} {after}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// What the inner service reads from the extensions: the rule's decision
/// (also when it keeps the requested name, never for a compressed body or
/// when no rule matched) and how the body was read.
#[tokio::test]
async fn the_decision_and_the_body_format_are_request_extensions() {
    use bbr_tower::{BodyFormat, ModelRewrite, ReplayBody};
    use tower::{Layer, ServiceExt, service_fn};

    let keep = r#"
kind: InferenceModelRewrite
metadata: {name: canary, namespace: team}
spec:
  rules:
  - matches: [{model: {value: same}}]
    targets: [{modelRewrite: same}]
  - matches: [{model: {value: gpt-4o}}]
    targets: [{modelRewrite: llama-3}]
"#;
    let rules = RewriteRules::from_yaml_str(keep, "keep.yaml").unwrap();
    let layer = ModelRoutingLayer::new()
        .model_rewrites(RewritePicker::new(RewriteStore::from_rules(rules)));
    type Seen = (Option<ModelRewrite>, Option<BodyFormat>);
    let seen = |request: Request<Full<Bytes>>| {
        let slot = std::sync::Arc::new(std::sync::Mutex::new(None));
        let service = layer.layer(service_fn({
            let slot = slot.clone();
            move |request: Request<ReplayBody<Full<Bytes>>>| {
                let extensions = request.extensions();
                let seen: Seen = (extensions.get().cloned(), extensions.get().copied());
                *slot.lock().unwrap() = Some(seen);
                async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
                }
            }
        }));
        async move {
            service.oneshot(request).await.unwrap();
            slot.lock()
                .unwrap()
                .take()
                .expect("the inner service was called")
        }
    };

    let (rewrite, format) = seen(request(br#"{"model":"gpt-4o"}"#)).await;
    assert_eq!(
        rewrite,
        Some(ModelRewrite::new("team/canary/1", "gpt-4o", "llama-3"))
    );
    assert_eq!(format.map(|f| f.label()), Some("json"));

    let (rewrite, _) = seen(request(br#"{"model":"same"}"#)).await;
    let rewrite = rewrite.expect("a rule that keeps the name still decided");
    assert_eq!(
        (rewrite.rule(), rewrite.target(), rewrite.rewrote()),
        ("team/canary/0", "same", false)
    );

    let (rewrite, format) = seen(request(br#"{"model":"other"}"#)).await;
    assert_eq!((rewrite, format.map(|f| f.label())), (None, Some("json")));

    let gzipped = Bytes::from(gzip(br#"{"model":"gpt-4o"}"#));
    let compressed = Request::post("/")
        .header("content-encoding", "gzip")
        .body(Full::new(gzipped))
        .unwrap();
    let (rewrite, format) = seen(compressed).await;
    assert_eq!(rewrite, None, "a compressed body is routed as requested");
    assert_eq!(format.map(|f| f.label()), Some("compressed"));

    let form = Request::post("/v1/audio/transcriptions")
        .header("content-type", "multipart/form-data; boundary=b")
        .body(Full::new(Bytes::from_static(
            b"--b\r\ncontent-disposition: form-data; name=model\r\n\r\ngpt-4o\r\n--b--\r\n",
        )))
        .unwrap();
    let (rewrite, format) = seen(form).await;
    assert_eq!(rewrite, None, "a form field is routed as requested");
    assert_eq!(format.map(|f| f.label()), Some("multipart"));

    // No body: not read, no format.
    let get = Request::get("/v1/models")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(seen(get).await, (None, None));
}
