//! Every error row of the contract through the gateway, over real sockets,
//! plus the gateway's own errors (404, 502, 504).

mod common;

use std::time::Duration;

use bbr_axum_example::{Config, RunningGateway};
use common::{chunked, completions, post, send, start, start_yaml, total_completions};
use http::Request;

const DEEPSEEK: &str = "vllm-deepseek-r1";

/// No recorded request on the pool carries a body: a request the gateway
/// aborted may have been seen (its body failed to read) but never complete.
fn assert_no_complete_body(gateway: &RunningGateway, pool: &str) {
    for sim in gateway.simulators().pool(pool) {
        for recorded in sim.observer().recent_requests() {
            assert_eq!(
                recorded.body_len, 0,
                "{pool} received a complete body: {recorded:?}"
            );
        }
    }
}

#[tokio::test]
async fn unknown_model_gets_the_gateways_404() {
    let gateway = start(Config::scenario()).await;
    for path in ["/v1/completions", "/v1/chat/completions"] {
        let answer = post(
            gateway.addr,
            path,
            r#"{"model":"foo","prompt":"hi","messages":[]}"#,
        )
        .await;
        answer.assert_error(404, "model_not_found");
        let json = answer.json();
        assert_eq!(json["error"]["message"], "The model `foo` does not exist.");
        assert_eq!(json["error"]["type"], "invalid_request_error");
        assert_eq!(json["error"]["param"], "model");
    }
    // Exact matches only: case and surrounding spaces matter.
    post(
        gateway.addr,
        "/v1/completions",
        r#"{"model":"Ski-Resorts","prompt":"hi"}"#,
    )
    .await
    .assert_error(404, "model_not_found");
    assert_eq!(total_completions(&gateway), 0);
    gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_bodies_before_the_decision_get_400() {
    let gateway = start(Config::scenario()).await;
    let deep = format!(
        r#"{{"messages":{}{}, "model":"ski-resorts"}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let cases: [(&str, &str); 9] = [
        ("not json", "invalid_json"),
        ("[1,2]", "invalid_json"),
        (r#"{"model": "#, "invalid_json"),
        (&deep, "invalid_json"),
        (r#"{"model": 5}"#, "invalid_model"),
        (r#"{"model": null}"#, "invalid_model"),
        (r#"{"model": ""}"#, "invalid_model"),
        (r#"{"model": "ski\nresorts"}"#, "invalid_model"),
        (r#"{"model": ["ski-resorts"]}"#, "invalid_model"),
    ];
    for (body, code) in cases {
        let answer = post(gateway.addr, "/v1/completions", body.to_owned()).await;
        assert_eq!(
            answer.status,
            400,
            "{body:.40}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        answer.assert_error(400, code);
    }
    // An empty body is no body (forwarded untouched, like a GET): no route.
    post(gateway.addr, "/v1/completions", "")
        .await
        .assert_error(404, "model_not_found");
    assert_eq!(total_completions(&gateway), 0);
    gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn model_length_limit_at_and_past() {
    let gateway = start(Config::scenario()).await;
    let at = format!(r#"{{"model":"{}","prompt":"hi"}}"#, "m".repeat(256));
    let past = format!(r#"{{"model":"{}","prompt":"hi"}}"#, "m".repeat(257));
    // At the limit the model is read; no route serves it.
    post(gateway.addr, "/v1/completions", at)
        .await
        .assert_error(404, "model_not_found");
    post(gateway.addr, "/v1/completions", past)
        .await
        .assert_error(400, "invalid_model");
    gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_tails_after_routing_get_400_and_the_upstream_is_aborted() {
    let gateway = start(Config::scenario()).await;
    // The model comes first, so the route is chosen and the upstream request
    // starts before the rest of the body arrives.
    let cases: [(Vec<&'static str>, &str); 4] = [
        (
            vec![
                r#"{"model":"ski-resorts","#,
                r#""prompt":"hi","model":"movie-critique"}"#,
            ],
            "invalid_model",
        ),
        (
            vec![r#"{"model":"ski-resorts","#, r#""prompt":"hi""#],
            "invalid_json",
        ),
        (
            vec![r#"{"model":"ski-resorts","#, r#""prompt":hi}"#],
            "invalid_json",
        ),
        (
            vec![r#"{"model":"ski-resorts","#, r#""prompt":"hi"} trailing"#],
            "invalid_json",
        ),
    ];
    for (chunks, code) in cases {
        let request = Request::post("/v1/completions")
            .header("content-type", "application/json")
            .body(chunked(chunks, Duration::from_millis(30)))
            .unwrap();
        send(gateway.addr, request).await.assert_error(400, code);
    }
    // Same with a content-length (one chunk).
    post(
        gateway.addr,
        "/v1/completions",
        r#"{"model":"ski-resorts","model":"ski-resorts"}"#,
    )
    .await
    .assert_error(400, "invalid_model");
    assert_no_complete_body(&gateway, DEEPSEEK);
    // The chunked cases reached the model server before the tail failed:
    // it saw requests whose bodies never completed.
    assert!(
        completions(&gateway, DEEPSEEK)[0] >= 4,
        "{:?}",
        completions(&gateway, DEEPSEEK)
    );
    assert_eq!(completions(&gateway, "vllm-llama3-8b-instruct"), [0, 0, 0]);
    gateway.shutdown().await.unwrap();
}

const SMALL_LIMITS: &str = r#"
pools:
  - name: vllm-deepseek-r1
    simulate:
      model: deepseek/vllm-deepseek-r1
      lora_modules: [ski-resorts]
routes:
  - pool: vllm-deepseek-r1
    matches: [{model: ski-resorts}]
bbr:
  max_body_bytes: 1024B
  max_scan_bytes: 512B
"#;

/// A body of exactly `len` bytes: `head`, JSON whitespace, then `}`.
fn padded(head: &str, len: usize) -> String {
    let mut body = head.to_owned();
    body.push_str(&" ".repeat(len - head.len() - 1));
    body.push('}');
    assert_eq!(body.len(), len);
    body
}

#[tokio::test]
async fn body_limit_at_and_past_after_routing() {
    let gateway = start_yaml(SMALL_LIMITS).await;
    let head = r#"{"model":"ski-resorts","prompt":"hi","max_tokens":2"#;
    let at = post(gateway.addr, "/v1/completions", padded(head, 1024)).await;
    assert_eq!(at.status, 200, "{}", String::from_utf8_lossy(&at.body));
    let before = completions(&gateway, DEEPSEEK);
    post(gateway.addr, "/v1/completions", padded(head, 1025))
        .await
        .assert_error(413, "request_too_large");
    // Without a length: the limit trips while the body streams upstream.
    let mut tail: String = " ".repeat(1100);
    tail.push('}');
    let tail: &'static str = Box::leak(tail.into_boxed_str());
    let request = Request::post("/v1/completions")
        .body(chunked(
            vec![r#"{"model":"ski-resorts","prompt":"hi""#, tail],
            Duration::from_millis(30),
        ))
        .unwrap();
    send(gateway.addr, request)
        .await
        .assert_error(413, "request_too_large");
    let recorded = gateway.simulators().pool(DEEPSEEK)[0]
        .observer()
        .recent_requests();
    assert!(
        recorded
            .iter()
            .skip(before[0] as usize)
            .all(|r| r.body_len == 0),
        "{recorded:?}"
    );
    gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn scan_limit_at_and_past() {
    let gateway = start_yaml(SMALL_LIMITS).await;
    // The model's value ends at byte 512 exactly: decided within the limit.
    let filler = |n: usize| format!(r#"{{"prompt":"{}","model":"ski-resorts""#, "a".repeat(n));
    let base = filler(0).len();
    let at = filler(512 - base);
    assert_eq!(at.len(), 512);
    let answer = post(
        gateway.addr,
        "/v1/completions",
        format!("{at},\"max_tokens\":2}}"),
    )
    .await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let past = filler(513 - base);
    post(gateway.addr, "/v1/completions", format!("{past}}}"))
        .await
        .assert_error(413, "request_too_large");
    gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn missing_model_is_forwarded_without_header_or_refused() {
    // Default: forwarded without the header; no route serves it.
    let gateway = start(Config::scenario()).await;
    let answer = post(gateway.addr, "/v1/completions", r#"{"prompt":"hi"}"#).await;
    answer.assert_error(404, "model_not_found");
    assert_eq!(
        answer.json()["error"]["message"],
        "The request body names no model and no route serves it."
    );
    // A form without a `model` field: forwarded without the header.
    let multipart = Request::post("/v1/audio/transcriptions")
        .header("content-type", "multipart/form-data; boundary=x")
        .body(common::full(
            "--x\r\ncontent-disposition: form-data; name=\"language\"\r\n\r\nen\r\n--x--\r\n",
        ))
        .unwrap();
    send(gateway.addr, multipart)
        .await
        .assert_error(404, "model_not_found");
    gateway.shutdown().await.unwrap();

    // Opt-in: refused.
    let yaml = format!("{SMALL_LIMITS}  missing_model: reject\n");
    let gateway = start_yaml(&yaml).await;
    post(gateway.addr, "/v1/completions", r#"{"prompt":"hi"}"#)
        .await
        .assert_error(400, "missing_model");
    gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_default_route_serves_bodies_without_a_model() {
    let yaml = r#"
pools:
  - name: d
    simulate: {model: deepseek/vllm-deepseek-r1}
routes:
  - pool: d
"#;
    let gateway = start_yaml(yaml).await;
    // No model: the route without header matches forwards it, and the
    // model server gives its own 404 for the empty model.
    let answer = post(gateway.addr, "/v1/completions", r#"{"prompt":"hi"}"#).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.json()["error"]["type"], "NotFoundError");
    assert_eq!(completions(&gateway, "d"), [1]);
    // A GET without a body is forwarded untouched.
    let answer = common::get(gateway.addr, "/health/ready").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-inference-pod"), "d-0");
    gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn upstream_down_gives_502() {
    // Bound and never listening: connects are refused, and no other test
    // can take the port while this one runs.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = reserved.local_addr().unwrap();
    let yaml = format!(
        "pools: [{{name: gone, endpoints: ['{closed}']}}]\nroutes: [{{pool: gone, matches: [{{model: m}}]}}]"
    );
    let gateway = start_yaml(&yaml).await;
    let answer = post(
        gateway.addr,
        "/v1/completions",
        r#"{"model":"m","prompt":"hi"}"#,
    )
    .await;
    answer.assert_error(502, "upstream_unreachable");
    assert!(answer.json()["error"]["param"].is_null());
    assert_eq!(answer.json()["error"]["type"], "server_error");
    gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn slow_upstream_gives_504() {
    let yaml = r#"
pools:
  - name: slow
    simulate:
      model: deepseek/vllm-deepseek-r1
      time_to_first_token: 5s
routes:
  - pool: slow
    timeout: 200ms
    matches: [{model: deepseek/vllm-deepseek-r1}]
"#;
    let gateway = start_yaml(yaml).await;
    let answer = post(
        gateway.addr,
        "/v1/completions",
        r#"{"model":"deepseek/vllm-deepseek-r1","prompt":"hi"}"#,
    )
    .await;
    answer.assert_error(504, "upstream_timeout");
    // Events, not durations: the upstream got the request and had not
    // answered (its first token is 5 s away) when the gateway gave up.
    let sim = &gateway.simulators().pool("slow")[0];
    assert_eq!(sim.observer().completions_received(), 1);
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("within 200 ms"),
        "{}",
        answer.json()
    );
    // The request timed out, not the server: the replica is free again.
    assert_eq!(
        gateway.state.routes().pools()[0].endpoints()[0].in_flight(),
        0
    );
    drop(gateway);
}

#[tokio::test]
async fn a_stream_past_the_route_timeout_is_cut() {
    let yaml = r#"
pools:
  - name: slow
    simulate:
      model: deepseek/vllm-deepseek-r1
      mode: echo
      inter_token_latency: 100ms
routes:
  - pool: slow
    timeout: 300ms
    matches: [{model: deepseek/vllm-deepseek-r1}]
"#;
    let gateway = start_yaml(yaml).await;
    let body = r#"{"model":"deepseek/vllm-deepseek-r1","stream":true,"max_tokens":20,
        "prompt":"a b c d e f g h i j k l m n o p q r s t u v"}"#;
    let request = Request::post(format!("http://{}/v1/completions", gateway.addr))
        .body(common::full(body))
        .unwrap();
    let response = common::client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        http_body_util::BodyExt::collect(response.into_body()),
    )
    .await
    .expect("the gateway cuts the stream");
    assert!(
        result.is_err(),
        "the stream must end with an error, not complete"
    );
    drop(gateway);
}

#[tokio::test]
async fn client_routing_headers_can_be_refused() {
    let yaml = format!("{SMALL_LIMITS}  client_headers: reject\n");
    let gateway = start_yaml(&yaml).await;
    let request = Request::post("/v1/completions")
        .header("x-gateway-model-name", "ski-resorts")
        .body(common::full(
            r#"{"model":"ski-resorts","prompt":"hi","max_tokens":2}"#,
        ))
        .unwrap();
    send(gateway.addr, request)
        .await
        .assert_error(400, "routing_header_not_allowed");
    let answer = post(
        gateway.addr,
        "/v1/completions",
        r#"{"model":"ski-resorts","prompt":"hi","max_tokens":2}"#,
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(completions(&gateway, DEEPSEEK), [1]);
    gateway.shutdown().await.unwrap();
}
