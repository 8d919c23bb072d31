//! The reference scenario end to end over real sockets: the README's eight
//! requests, streaming, `/v1/models`, load sharing, spoofed headers.

mod common;

use std::time::Duration;

use bbr_axum_example::Config;
use bytes::Bytes;
use common::{completions, get, post, send, start, start_yaml};
use http::Request;
use http_body_util::BodyExt;
use serde_json::Value;

const LLAMA: &str = "vllm-llama3-8b-instruct";
const DEEPSEEK: &str = "vllm-deepseek-r1";

/// One `curl` command of the README's scenario section.
#[derive(Debug)]
struct ReadmeCall {
    path: String,
    body: String,
}

/// The curl commands of the README's "The scenario's requests" section:
/// the path after `${IP}:${PORT}` and the exact text inside `-d '...'`.
fn readme_calls() -> Vec<ReadmeCall> {
    let readme = include_str!("../README.md");
    let start = readme
        .find("## The scenario's requests")
        .expect("README has the scenario section");
    let section = &readme[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    let section = &section[..end];
    let mut calls = Vec::new();
    for command in section.split("curl -X POST -i ${IP}:${PORT}").skip(1) {
        let path = command
            .split_whitespace()
            .next()
            .expect("a path")
            .to_owned();
        let data = command.find("-d '").expect("a -d body") + 4;
        let len = command[data..]
            .find('\'')
            .expect("the body's closing quote");
        calls.push(ReadmeCall {
            path,
            body: command[data..data + len].to_owned(),
        });
    }
    calls
}

#[test]
fn readme_holds_the_eight_scenario_calls() {
    let calls = readme_calls();
    let expected = [
        (
            "/v1/chat/completions",
            "meta-llama/Llama-3.1-8B-Instruct",
            "developer",
        ),
        (
            "/v1/chat/completions",
            "deepseek/vllm-deepseek-r1",
            "developer",
        ),
        ("/v1/chat/completions", "food-review-1", "reviewer"),
        ("/v1/chat/completions", "movie-critique", "reviewer"),
        ("/v1/chat/completions", "ski-resorts", "reviewer"),
        ("/v1/completions", "deepseek/vllm-deepseek-r1", ""),
        ("/v1/completions", "ski-resorts", ""),
        ("/v1/completions", "movie-critique", ""),
    ];
    assert_eq!(calls.len(), expected.len());
    for (call, (path, model, role)) in calls.iter().zip(expected) {
        assert_eq!(call.path, path);
        let body: Value = serde_json::from_str(&call.body).expect("README body is JSON");
        assert_eq!(body["model"], model);
        assert_eq!(body["temperature"], 0);
        if role.is_empty() {
            assert_eq!(body["max_tokens"], 20);
            assert!(body["prompt"].is_string());
        } else {
            assert_eq!(body["max_tokens"], 100);
            assert_eq!(body["messages"][0]["role"], role);
            assert_eq!(body["messages"][1]["role"], "user");
        }
    }
    let readme = include_str!("../README.md");
    assert!(readme.contains("IP=127.0.0.1 PORT=8080"));
    assert!(readme.contains("cargo run --release -p bbr-axum-example\n"));
}

#[tokio::test]
async fn readme_calls_land_on_their_pool_and_name_the_model() {
    let gateway = start(Config::scenario()).await;
    // Prompt token counts of the scenario's calls (simulator reference §4.8):
    // they show the body reached the model server unchanged.
    let prompt_tokens = [26, 26, 27, 24, 21, 9, 9, 4];
    let pools = [
        LLAMA, DEEPSEEK, LLAMA, DEEPSEEK, DEEPSEEK, DEEPSEEK, DEEPSEEK, DEEPSEEK,
    ];
    for (i, call) in readme_calls().iter().enumerate() {
        let before = (
            completions(&gateway, LLAMA),
            completions(&gateway, DEEPSEEK),
        );
        let answer = post(gateway.addr, &call.path, call.body.clone()).await;
        assert_eq!(
            answer.status,
            200,
            "call {}: {}",
            i + 1,
            String::from_utf8_lossy(&answer.body)
        );
        let sent: Value = serde_json::from_str(&call.body).unwrap();
        let json = answer.json();
        assert_eq!(json["model"], sent["model"], "call {}", i + 1);
        let chat = call.path == "/v1/chat/completions";
        assert_eq!(
            json["object"],
            if chat {
                "chat.completion"
            } else {
                "text_completion"
            }
        );
        let id = json["id"].as_str().unwrap();
        assert!(
            id.starts_with(if chat { "chatcmpl-" } else { "cmpl-" }),
            "{id}"
        );
        let choice = &json["choices"][0];
        let text = if chat {
            &choice["message"]["content"]
        } else {
            &choice["text"]
        };
        assert!(text.as_str().is_some_and(|t| !t.is_empty()), "{json}");
        let usage = &json["usage"];
        assert_eq!(
            usage["prompt_tokens"],
            prompt_tokens[i],
            "call {}: {json}",
            i + 1
        );
        let generated = usage["completion_tokens"].as_u64().unwrap();
        let max_tokens = sent["max_tokens"].as_u64().unwrap();
        assert!((1..=max_tokens).contains(&generated));
        assert_eq!(
            choice["finish_reason"] == "length",
            generated == max_tokens,
            "{json}"
        );
        assert_eq!(
            usage["total_tokens"].as_u64().unwrap(),
            prompt_tokens[i] + generated
        );
        // The replica that answered belongs to the pool the route names...
        assert!(
            answer.header("x-inference-pod").starts_with(pools[i]),
            "call {}",
            i + 1
        );
        // ...and only that pool's counters moved.
        let after = (
            completions(&gateway, LLAMA),
            completions(&gateway, DEEPSEEK),
        );
        let moved = |b: &Vec<u64>, a: &Vec<u64>| a.iter().sum::<u64>() - b.iter().sum::<u64>();
        let expected = if pools[i] == LLAMA { (1, 0) } else { (0, 1) };
        assert_eq!(
            (moved(&before.0, &after.0), moved(&before.1, &after.1)),
            expected,
            "call {}",
            i + 1
        );
    }
    gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn getting_started_call_reaches_a_llama_replica() {
    let gateway = start(Config::scenario()).await;
    let body = r#"{"model": "food-review-1", "prompt": "Write as if you were a critic: San Francisco", "max_tokens": 100, "temperature": 0}"#;
    let answer = post(gateway.addr, "/v1/completions", body).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["model"], "food-review-1");
    assert_eq!(answer.json()["usage"]["prompt_tokens"], 10);
    assert!(answer.header("x-inference-pod").starts_with(LLAMA));
    let port: u16 = answer.header("x-inference-port").parse().unwrap();
    let endpoints = &gateway.pools.iter().find(|(p, _)| p == LLAMA).unwrap().1;
    assert!(endpoints.iter().any(|e| e.ends_with(&format!(":{port}"))));
    gateway.shutdown().await.unwrap();
}

const STREAMING_CONFIG: &str = r#"
pools:
  - name: slow
    simulate:
      model: deepseek/vllm-deepseek-r1
      lora_modules: [ski-resorts]
      mode: echo
      inter_token_latency: 50ms
routes:
  - pool: slow
    matches: [{model: ski-resorts}]
"#;

#[tokio::test]
async fn streaming_arrives_incrementally() {
    let gateway = start_yaml(STREAMING_CONFIG).await;
    let body = r#"{"model":"ski-resorts","stream":true,"stream_options":{"include_usage":true},"max_tokens":10,
        "messages":[{"role":"user","content":"one two three four five six seven eight nine ten"}]}"#;
    let request = Request::post(format!("http://{}/v1/chat/completions", gateway.addr))
        .header("content-type", "application/json")
        .body(common::full(body))
        .unwrap();
    let response = common::client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let endpoint = &gateway.state.routes().pools()[0].endpoints()[0];
    let mut body = response.into_body();
    let mut text = String::new();
    let mut content_frames = 0;
    // The order of events, not their timing: the first token reaches the
    // client while the upstream is still generating (its request is still
    // in flight at the gateway), and the tokens come frame by frame.
    let mut in_flight_at_first_content = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Some(frame) = tokio::time::timeout_at(deadline, body.frame())
        .await
        .expect("stream ends in time")
    {
        let frame = frame.unwrap();
        if let Some(data) = frame.data_ref() {
            let chunk = std::str::from_utf8(data).unwrap();
            if chunk.contains("\"content\":\"") {
                content_frames += 1;
                in_flight_at_first_content.get_or_insert(endpoint.in_flight());
            }
            text.push_str(chunk);
        }
    }
    assert_eq!(
        in_flight_at_first_content,
        Some(1),
        "the first token arrived before the upstream finished"
    );
    assert!(content_frames >= 2, "{content_frames} frames: {text}");
    assert_eq!(endpoint.in_flight(), 0, "done once the stream ended");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(text.contains("\"usage\":{"), "{text}");
    assert_eq!(
        text.matches("\"model\":\"ski-resorts\"").count(),
        text.matches("data: {").count()
    );
    gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn models_lists_every_model_with_parents() {
    let gateway = start(Config::scenario()).await;
    let answer = get(gateway.addr, "/v1/models").await;
    assert_eq!(answer.status, 200);
    let json = answer.json();
    assert_eq!(json["object"], "list");
    let entries: Vec<(String, Value)> = json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_str().unwrap().to_owned(), e["parent"].clone()))
        .collect();
    let llama = Value::from("meta-llama/Llama-3.1-8B-Instruct");
    let deepseek = Value::from("deepseek/vllm-deepseek-r1");
    assert_eq!(
        entries,
        [
            ("meta-llama/Llama-3.1-8B-Instruct".to_owned(), Value::Null),
            ("food-review-1".to_owned(), llama.clone()),
            ("food-review-2".to_owned(), llama),
            ("deepseek/vllm-deepseek-r1".to_owned(), Value::Null),
            ("ski-resorts".to_owned(), deepseek.clone()),
            ("movie-critique".to_owned(), deepseek),
        ]
    );
    assert!(
        json["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["object"] == "model")
    );
    gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn models_are_asked_from_pools_without_a_model_list() {
    let sim = bbr_model_sim::spawn(bbr_model_sim::SimConfig::new("base-x").lora("lora-x"))
        .await
        .unwrap();
    let yaml = format!(
        "pools: [{{name: x, endpoints: ['{}']}}]\nroutes: [{{pool: x, matches: [{{model: lora-x}}]}}]",
        sim.addr()
    );
    let gateway = start_yaml(&yaml).await;
    let json = get(gateway.addr, "/v1/models").await.json();
    let ids: Vec<_> = json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].clone(), e["parent"].clone()))
        .collect();
    assert_eq!(
        ids,
        [
            (Value::from("base-x"), Value::Null),
            (Value::from("lora-x"), Value::from("base-x"))
        ]
    );
    gateway.shutdown().await.unwrap();
    sim.shutdown().await.unwrap();
}

const TWO_REPLICAS: &str = r#"
pools:
  - name: pair
    simulate:
      replicas: 2
      model: deepseek/vllm-deepseek-r1
      lora_modules: [ski-resorts]
      time_to_first_token: 300ms
routes:
  - pool: pair
    matches: [{model: ski-resorts}]
"#;

#[tokio::test]
async fn a_pool_of_two_shares_the_load() {
    let gateway = start_yaml(TWO_REPLICAS).await;
    let body = r#"{"model":"ski-resorts","prompt":"Tell me about ski deals","max_tokens":2}"#;
    // Concurrent: the busy replica is avoided while its requests are in flight.
    let requests = (0..4).map(|_| post(gateway.addr, "/v1/completions", body));
    let answers = futures_util::future::join_all(requests).await;
    assert!(answers.iter().all(|a| a.status == 200));
    assert_eq!(completions(&gateway, "pair"), [2, 2]);
    // Sequential: ties go round-robin.
    for _ in 0..2 {
        assert_eq!(
            post(gateway.addr, "/v1/completions", body).await.status,
            200
        );
    }
    assert_eq!(completions(&gateway, "pair"), [3, 3]);
    let pods: std::collections::HashSet<String> = answers
        .iter()
        .map(|a| a.header("x-inference-pod").to_owned())
        .collect();
    assert_eq!(pods.len(), 2);
    gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_spoofed_routing_header_cannot_pick_the_route() {
    let gateway = start(Config::scenario()).await;
    // The body says ski-resorts; the client's header says food-review-1.
    let request = Request::post("/v1/completions")
        .header("x-gateway-model-name", "food-review-1")
        .header(
            "x-gateway-base-model-name",
            "meta-llama/Llama-3.1-8B-Instruct",
        )
        .body(common::full(
            r#"{"model":"ski-resorts","prompt":"hi","max_tokens":3}"#,
        ))
        .unwrap();
    let answer = send(gateway.addr, request).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["model"], "ski-resorts");
    assert!(answer.header("x-inference-pod").starts_with(DEEPSEEK));
    // Without a model in the body, the header alone routes nowhere.
    let request = Request::post("/v1/completions")
        .header("x-gateway-model-name", "food-review-1")
        .body(common::full(r#"{"prompt":"hi"}"#))
        .unwrap();
    send(gateway.addr, request)
        .await
        .assert_error(404, "model_not_found");
    assert_eq!(completions(&gateway, LLAMA).iter().sum::<u64>(), 0);
    gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_and_metrics() {
    let gateway = start(Config::scenario()).await;
    assert_eq!(get(gateway.addr, "/health").await.status, 200);
    post(
        gateway.addr,
        "/v1/completions",
        r#"{"model":"ski-resorts","prompt":"hi","max_tokens":2}"#,
    )
    .await;
    post(
        gateway.addr,
        "/v1/completions",
        r#"{"model":"foo","prompt":"hi"}"#,
    )
    .await;
    let metrics = get(gateway.addr, "/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    assert!(
        text.contains(r#"bbr_gateway_requests_total{model="ski-resorts",pool="vllm-deepseek-r1",status="200",body="json"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"bbr_gateway_requests_total{model="",pool="",status="404",body="json"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"bbr_gateway_request_duration_seconds_count{pool="vllm-deepseek-r1"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"bbr_gateway_upstream_in_flight{pool="vllm-deepseek-r1"} 0"#),
        "{text}"
    );
    gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn request_bytes_reach_the_model_server_unchanged() {
    let gateway = start(Config::scenario()).await;
    let body = Bytes::from_static(br#"{"model":"movie-critique","prompt":"Tell me about movies","max_tokens":20,"temperature":0,"x":"\u00e9"}"#);
    let answer = post(gateway.addr, "/v1/completions", body.clone()).await;
    assert_eq!(answer.status, 200);
    let recorded = gateway.simulators().pool(DEEPSEEK)[0]
        .observer()
        .last_request()
        .expect("recorded");
    assert_eq!(recorded.body_sha256, bbr_model_sim::sha256_hex(&body));
    assert_eq!(
        recorded.header("x-gateway-model-name"),
        Some("movie-critique")
    );
    assert!(recorded.header("x-forwarded-for").is_some());
    gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn base_model_routes_with_an_adapter_map() {
    // One route per pool on the base model alone, as the Gateway API's
    // 128-match limit suggests; the adapter map names each LoRA's base.
    let dir = std::env::temp_dir().join(format!("bbr-axum-adapters-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("deepseek.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deepseek-adapters}\ndata:\n  baseModel: deepseek/vllm-deepseek-r1\n  adapters: |\n    - ski-resorts\n    - movie-critique\n",
    )
    .unwrap();
    let yaml = format!(
        r#"
pools:
  - name: {DEEPSEEK}
    simulate: {{model: deepseek/vllm-deepseek-r1, lora_modules: [ski-resorts, movie-critique]}}
routes:
  - pool: {DEEPSEEK}
    matches: [{{base_model: deepseek/vllm-deepseek-r1}}]
adapters:
  paths: ['{}']
"#,
        dir.display()
    );
    let gateway = start_yaml(&yaml).await;
    for model in ["movie-critique", "ski-resorts", "deepseek/vllm-deepseek-r1"] {
        let body = format!(r#"{{"model":"{model}","prompt":"hi","max_tokens":2}}"#);
        let answer = post(gateway.addr, "/v1/completions", body).await;
        assert_eq!(answer.status, 200, "{model}");
        assert_eq!(answer.json()["model"], model);
        let recorded = gateway.simulators().pool(DEEPSEEK)[0]
            .observer()
            .last_request()
            .unwrap();
        assert_eq!(
            recorded.header("x-gateway-base-model-name"),
            Some("deepseek/vllm-deepseek-r1")
        );
        assert_eq!(recorded.header("x-gateway-model-name"), Some(model));
    }
    // Not in the map: no base header, no route.
    post(
        gateway.addr,
        "/v1/completions",
        r#"{"model":"food-review-1","prompt":"hi"}"#,
    )
    .await
    .assert_error(404, "model_not_found");
    gateway.shutdown().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn httproutes_and_a_pool_table_route_like_the_cluster() {
    // The cluster's manifests as they are, with endpoints for the pools.
    let llama = bbr_model_sim::spawn(
        bbr_model_sim::SimConfig::new("meta-llama/Llama-3.1-8B-Instruct").lora("food-review-1"),
    )
    .await
    .unwrap();
    let deepseek = bbr_model_sim::spawn(
        bbr_model_sim::SimConfig::new("deepseek/vllm-deepseek-r1")
            .loras(["ski-resorts", "movie-critique"]),
    )
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("bbr-axum-httproutes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("routes.yaml"),
        bbr_axum_example::config::SCENARIO_HTTPROUTES_YAML,
    )
    .unwrap();
    let yaml = format!(
        "pools:\n  - {{name: {LLAMA}, endpoints: ['{}']}}\n  - {{name: {DEEPSEEK}, endpoints: ['http://{}']}}\nhttproutes: [routes.yaml]\n",
        llama.addr(),
        deepseek.addr()
    );
    std::fs::write(dir.join("gateway.yaml"), yaml).unwrap();
    let config = Config::from_file(&dir.join("gateway.yaml")).unwrap();
    let gateway = start(config).await;
    for (model, sim) in [("food-review-1", &llama), ("movie-critique", &deepseek)] {
        let body = format!(r#"{{"model":"{model}","prompt":"hi","max_tokens":2}}"#);
        let answer = post(gateway.addr, "/v1/completions", body).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("x-inference-pod"), sim.pod_name());
    }
    assert_eq!(
        (
            llama.observer().completions_received(),
            deepseek.observer().completions_received()
        ),
        (1, 1)
    );
    gateway.shutdown().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
