//! Every endpoint over real sockets: answers, errors, LoRAs, headers,
//! metrics and the observer.

mod common;

use bbr_model_sim::{Mode, SimConfig, SimHandle, sha256_hex};
use common::{client, get, metric, post, post_with};
use http::StatusCode;

const LLAMA: &str = "meta-llama/Llama-3.1-8B-Instruct";
const DEEPSEEK: &str = "deepseek/vllm-deepseek-r1";

async fn llama() -> SimHandle {
    bbr_model_sim::spawn(
        SimConfig::new(LLAMA)
            .lora("food-review-1")
            .max_loras(2)
            .seed(1),
    )
    .await
    .expect("llama sim starts")
}

async fn deepseek(mode: Mode) -> SimHandle {
    bbr_model_sim::spawn(
        SimConfig::new(DEEPSEEK)
            .loras(["ski-resorts", "movie-critique"])
            .max_loras(2)
            .mode(mode)
            .seed(2),
    )
    .await
    .expect("deepseek sim starts")
}

fn chat_body(model: &str, role: &str, user: &str, max_tokens: u32) -> String {
    serde_json::json!({
        "model": model,
        "max_tokens": max_tokens,
        "temperature": 0,
        "messages": [
            {"role": role, "content": "You are a helpful assistant."},
            {"role": "user", "content": user},
        ],
    })
    .to_string()
}

fn text_body(model: &str, prompt: &str, max_tokens: u32) -> String {
    serde_json::json!({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
        .to_string()
}

/// The checks simulator.md's acceptance list asks of every seed answer.
fn assert_answer(
    json: &serde_json::Value,
    object: &str,
    model: &str,
    prompt_tokens: u64,
    max_tokens: u64,
) {
    assert_eq!(json["object"], object);
    assert_eq!(json["model"], model);
    let usage = &json["usage"];
    assert_eq!(usage["prompt_tokens"], prompt_tokens, "{json}");
    let completion = usage["completion_tokens"].as_u64().expect("count");
    assert!((1..=max_tokens).contains(&completion), "{json}");
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(prompt_tokens + completion)
    );
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);
    let choice = &json["choices"][0];
    assert_eq!(choice["index"], 0);
    let finish = choice["finish_reason"].as_str().expect("finish reason");
    assert_eq!(finish == "length", completion == max_tokens, "{json}");
    assert!(finish == "length" || finish == "stop");
    let text = if object == "chat.completion" {
        assert_eq!(choice["message"]["role"], "assistant");
        choice["message"]["content"].as_str()
    } else {
        choice["text"].as_str()
    };
    assert!(!text.expect("text").is_empty());
}

#[tokio::test]
async fn the_seed_scenario_calls_answer_like_the_simulator() {
    let (llama, deepseek) = (llama().await, deepseek(Mode::Random).await);
    let client = client();
    let chat = |sim: &SimHandle| format!("{}/v1/chat/completions", sim.url());
    let text = |sim: &SimHandle| format!("{}/v1/completions", sim.url());
    let linux = "Linux is said to be an open source kernel because ";
    let calls = [
        // (url, body, object, model, prompt tokens, max tokens)  — simulator.md §3.5 calls 1–8 and 0.
        (
            chat(&llama),
            chat_body(LLAMA, "developer", linux, 100),
            "chat.completion",
            LLAMA,
            26,
            100,
        ),
        (
            chat(&deepseek),
            chat_body(DEEPSEEK, "developer", linux, 100),
            "chat.completion",
            DEEPSEEK,
            26,
            100,
        ),
        (
            chat(&llama),
            chat_body(
                "food-review-1",
                "reviewer",
                "Write a review of the best restaurans in San-Francisco",
                100,
            ),
            "chat.completion",
            "food-review-1",
            27,
            100,
        ),
        (
            chat(&deepseek),
            chat_body(
                "movie-critique",
                "reviewer",
                "What are the best movies of 2025?",
                100,
            ),
            "chat.completion",
            "movie-critique",
            24,
            100,
        ),
        (
            chat(&deepseek),
            chat_body("ski-resorts", "reviewer", "Tell mne about ski deals", 100),
            "chat.completion",
            "ski-resorts",
            21,
            100,
        ),
        (
            text(&deepseek),
            text_body(DEEPSEEK, "What is the best ski resort in Austria?", 20),
            "text_completion",
            DEEPSEEK,
            9,
            20,
        ),
        (
            text(&deepseek),
            text_body("ski-resorts", "What is the best ski resort in Austria?", 20),
            "text_completion",
            "ski-resorts",
            9,
            20,
        ),
        (
            text(&deepseek),
            text_body("movie-critique", "Tell me about movies", 20),
            "text_completion",
            "movie-critique",
            4,
            20,
        ),
        (
            text(&llama),
            text_body(
                "food-review-1",
                "Write as if you were a critic: San Francisco",
                100,
            ),
            "text_completion",
            "food-review-1",
            10,
            100,
        ),
    ];
    for (url, body, object, model, prompt_tokens, max_tokens) in calls {
        let answer = post(&client, &url, &body).await;
        assert_eq!(answer.status, StatusCode::OK, "{url}: {}", answer.text());
        assert_eq!(answer.header("content-type"), "application/json");
        let prefix = if object == "chat.completion" {
            "chatcmpl-"
        } else {
            "cmpl-"
        };
        assert!(
            answer.text().starts_with(&format!(r#"{{"id":"{prefix}"#)),
            "{}",
            answer.text()
        );
        assert!(
            answer.text().contains(r#","model":"#)
                && answer.text().find("\"usage\"") < answer.text().find("\"choices\""),
            "field order id, model, object, created, usage, choices: {}",
            answer.text()
        );
        assert_answer(&answer.json(), object, model, prompt_tokens, max_tokens);
    }
    assert_eq!(llama.observer().completions_received(), 3);
    assert_eq!(deepseek.observer().completions_received(), 6);
}

#[tokio::test]
async fn replica_headers_name_the_pod_and_port() {
    let named = bbr_model_sim::spawn(
        SimConfig::new(LLAMA)
            .pod_name("vllm-llama3-8b-instruct-0")
            .namespace("default"),
    )
    .await
    .expect("starts");
    let derived = bbr_model_sim::spawn(SimConfig::new(LLAMA))
        .await
        .expect("starts");
    let client = client();
    let answer = post(
        &client,
        &format!("{}/v1/completions", named.url()),
        &text_body(LLAMA, "hi", 5),
    )
    .await;
    assert_eq!(
        answer.header("x-inference-pod"),
        "vllm-llama3-8b-instruct-0"
    );
    assert_eq!(answer.header("x-inference-port"), named.port().to_string());
    assert_eq!(answer.header("x-inference-namespace"), "default");
    let answer = post(
        &client,
        &format!("{}/v1/completions", derived.url()),
        &text_body("nope", "hi", 5),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let expected = format!("meta-llama-llama-3-1-8b-instruct-{}", derived.port());
    assert_eq!(
        answer.header("x-inference-pod"),
        expected,
        "errors name the replica too"
    );
    assert_eq!(derived.pod_name(), expected);
    assert!(answer.headers.get("x-inference-namespace").is_none());
}

#[tokio::test]
async fn unknown_models_get_the_simulators_404() {
    let (llama, deepseek) = (llama().await, deepseek(Mode::Echo).await);
    let client = client();
    for (url, body, name) in [
        (
            format!("{}/v1/completions", llama.url()),
            text_body("foo", "x", 5),
            "foo",
        ),
        (
            format!("{}/v1/chat/completions", llama.url()),
            chat_body("foo", "user", "x", 5),
            "foo",
        ),
        // A LoRA of the other pool is just unknown here.
        (
            format!("{}/v1/chat/completions", llama.url()),
            chat_body("ski-resorts", "user", "x", 5),
            "ski-resorts",
        ),
        (
            format!("{}/v1/completions", deepseek.url()),
            text_body("food-review-1", "x", 5),
            "food-review-1",
        ),
        (
            format!("{}/v1/completions", deepseek.url()),
            r#"{"prompt":"no model"}"#.to_owned(),
            "",
        ),
    ] {
        let answer = post(&client, &url, &body).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        assert_eq!(answer.header("content-type"), "application/json");
        assert_eq!(
            answer.text(),
            format!(
                r#"{{"error":{{"message":"The model `{name}` does not exist.","type":"NotFoundError","param":null,"code":404}}}}"#
            )
        );
    }
}

#[tokio::test]
async fn bad_requests_get_errors_in_the_simulators_order() {
    let sim = bbr_model_sim::spawn(
        SimConfig::new("m")
            .max_model_len(16)
            .max_request_body_bytes(1024),
    )
    .await
    .expect("starts");
    let client = client();
    let url = format!("{}/v1/completions", sim.url());
    let error = |answer: &common::Answer| {
        let json = answer.json();
        assert_eq!(json["error"]["code"], answer.status.as_u16(), "{json}");
        assert_eq!(json["error"]["param"], serde_json::Value::Null);
        (
            json["error"]["type"].as_str().unwrap().to_owned(),
            json["error"]["message"].as_str().unwrap().to_owned(),
        )
    };

    // Parse errors come first, even for an unknown model.
    for body in [
        r#"{"model":"zz","#,
        "not json",
        r#"{"model": 5}"#,
        r#"["model"]"#,
        r#"{"model":"m","prompt":["a"]}"#,
    ] {
        let answer = post(&client, &url, body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        let (kind, message) = error(&answer);
        assert_eq!(kind, "BadRequestError");
        assert!(
            message.starts_with("Failed to read and parse request body, "),
            "{message}"
        );
    }
    // Then X-Return-Error, before the model check.
    let answer = post_with(
        &client,
        &url,
        &[("x-return-error", "503")],
        &text_body("zz", "x", 1),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error(&answer).0, "InternalServerError");
    let answer = post_with(
        &client,
        &url,
        &[("x-return-error", "abc")],
        &text_body("m", "x", 1),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    // Then the model (404), then max tokens.
    let answer = post(&client, &url, &text_body("zz", "x", 0)).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    for body in [
        r#"{"model":"m","prompt":"x","max_tokens":0}"#,
        r#"{"model":"m","prompt":"x","max_tokens":-3}"#,
    ] {
        let answer = post(&client, &url, body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            error(&answer).1,
            "Max completion tokens and max tokens should be positive"
        );
    }
    let chat_url = format!("{}/v1/chat/completions", sim.url());
    let answer = post(
        &client,
        &chat_url,
        r#"{"model":"m","messages":[],"max_tokens":4,"max_completion_tokens":0}"#,
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::BAD_REQUEST,
        "max_completion_tokens wins"
    );
    let answer = post(
        &client,
        &url,
        r#"{"model":"m","prompt":"x","ignore_eos":true}"#,
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);

    // Context window: prompt + max_tokens <= 16, at the limit and one past it.
    let prompt = "a b c d e f"; // 6 tokens
    let answer = post(&client, &url, &text_body("m", prompt, 10)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let answer = post(&client, &url, &text_body("m", prompt, 11)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error(&answer).1,
        "This model's maximum context length is 16 tokens. However, you requested 17 tokens (6 in the messages, 11 in the completion). Please reduce the length of the messages or completion"
    );

    // Body limit 1024 bytes: at the limit and one past it.
    let padded = |len: usize| {
        let head = r#"{"model":"m","prompt":"x","max_tokens":1,"pad":""#;
        let tail = r#""}"#;
        format!("{head}{}{tail}", "p".repeat(len - head.len() - tail.len()))
    };
    let answer = post(&client, &url, &padded(1024)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let answer = post(&client, &url, &padded(1025)).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error(&answer).1.contains("1024 bytes"));

    // Wrong method / unknown path: not routed.
    assert_eq!(
        get(&client, &url).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        get(&client, &format!("{}/v2/nothing", sim.url()))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn echo_mode_returns_the_prompt_and_honours_max_tokens() {
    let sim = deepseek(Mode::Echo).await;
    let client = client();
    let url = format!("{}/v1/completions", sim.url());
    let answer = post(
        &client,
        &url,
        &text_body("ski-resorts", "What is the best ski resort in Austria?", 20),
    )
    .await
    .json();
    assert_eq!(
        answer["choices"][0]["text"],
        "What is the best ski resort in Austria?"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(answer["usage"]["completion_tokens"], 9);

    let answer = post(
        &client,
        &url,
        &text_body(DEEPSEEK, "one two three four five", 3),
    )
    .await
    .json();
    assert_eq!(answer["choices"][0]["text"], "one two three ");
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    assert_eq!(answer["usage"]["completion_tokens"], 3);

    // Chat: the last user message, whatever roles come around it.
    let body = serde_json::json!({
        "model": "movie-critique",
        "max_completion_tokens": 50,
        "messages": [
            {"role": "reviewer", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What are the best movies of 2025?"},
            {"role": "assistant", "content": "Let me think."},
        ],
    });
    let answer = post(
        &client,
        &format!("{}/v1/chat/completions", sim.url()),
        &body.to_string(),
    )
    .await
    .json();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "What are the best movies of 2025?"
    );
    assert_eq!(answer["model"], "movie-critique");
}

#[tokio::test]
async fn random_mode_is_deterministic_for_a_seed() {
    let config = SimConfig::new("m").seed(42);
    let (a, b) = (
        bbr_model_sim::spawn(config.clone()).await.expect("starts"),
        bbr_model_sim::spawn(config).await.expect("starts"),
    );
    let client = client();
    let mut texts = Vec::new();
    for sim in [&a, &b] {
        let mut answers = Vec::new();
        for _ in 0..3 {
            let json = post(
                &client,
                &format!("{}/v1/completions", sim.url()),
                &text_body("m", "x", 50),
            )
            .await
            .json();
            answers.push(
                json["choices"][0]["text"]
                    .as_str()
                    .expect("text")
                    .to_owned(),
            );
        }
        texts.push(answers);
    }
    assert_eq!(texts[0], texts[1], "same seed, same answers in order");
    assert!(
        texts[0][0] != texts[0][1] || texts[0][1] != texts[0][2],
        "answers vary between requests"
    );
}

#[tokio::test]
async fn models_lists_base_and_loras_with_parent_and_follows_load_unload() {
    let sim = bbr_model_sim::spawn(
        SimConfig::new(DEEPSEEK)
            .served_model_names(["deepseek", "ds"])
            .loras(["ski-resorts", "movie-critique"]),
    )
    .await
    .expect("starts");
    let client = client();
    let answer = get(&client, &format!("{}/v1/models", sim.url())).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), "application/json");
    let json = answer.json();
    assert_eq!(json["object"], "list");
    let data = json["data"].as_array().expect("data");
    let ids: Vec<_> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["deepseek", "ds", "ski-resorts", "movie-critique"]);
    for entry in data {
        assert_eq!(entry["object"], "model");
        assert_eq!(entry["owned_by"], "vllm");
        assert_eq!(entry["max_model_len"], 1024);
        assert!(entry["created"].as_u64().is_some());
    }
    assert_eq!(data[0]["parent"], serde_json::Value::Null);
    assert_eq!(data[0]["root"], DEEPSEEK);
    assert_eq!(data[2]["parent"], "deepseek");
    assert_eq!(data[2]["root"], "ski-resorts");

    // Aliases answer with the first alias; the --model name is not served.
    let url = format!("{}/v1/completions", sim.url());
    assert_eq!(
        post(&client, &url, &text_body("ds", "x", 3)).await.json()["model"],
        "deepseek"
    );
    assert_eq!(
        post(&client, &url, &text_body(DEEPSEEK, "x", 3))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Dynamic LoRAs.
    let load = format!("{}/v1/load_lora_adapter", sim.url());
    let unload = format!("{}/v1/unload_lora_adapter", sim.url());
    assert_eq!(
        post(&client, &url, &text_body("new-one", "x", 3))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let answer = post(
        &client,
        &load,
        r#"{"lora_name":"new-one","lora_path":"/adapters/new"}"#,
    )
    .await;
    assert_eq!((answer.status, answer.body.len()), (StatusCode::OK, 0));
    assert_eq!(
        post(&client, &url, &text_body("new-one", "x", 3))
            .await
            .json()["model"],
        "new-one"
    );
    let listed = get(&client, &format!("{}/v1/models", sim.url()))
        .await
        .json();
    let new_one = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "new-one")
        .cloned()
        .expect("listed");
    assert_eq!(new_one["root"], "/adapters/new");
    assert_eq!(
        post(&client, &unload, r#"{"lora_name":"new-one"}"#)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        post(&client, &url, &text_body("new-one", "x", 3))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post(&client, &load, "{").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post(&client, &load, "{}").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn health_ready_and_metrics_answer() {
    let sim = llama().await;
    let client = client();
    for path in ["/health", "/health/ready", "/ready"] {
        let answer = get(&client, &format!("{}{path}", sim.url())).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert!(answer.body.is_empty());
    }
    post(
        &client,
        &format!("{}/v1/completions", sim.url()),
        &text_body(LLAMA, "a b c", 2),
    )
    .await;
    let answer = get(&client, &format!("{}/metrics", sim.url())).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer
            .header("content-type")
            .starts_with("application/openmetrics-text; version=1.0.0")
    );
    let text = answer.text();
    let label = format!("{{model_name=\"{LLAMA}\"}}");
    assert_eq!(
        metric(text, &format!("vllm:num_requests_running{label}")),
        0.0
    );
    assert_eq!(
        metric(text, &format!("vllm:num_requests_waiting{label}")),
        0.0
    );
    assert_eq!(
        metric(text, &format!("vllm:kv_cache_usage_perc{label}")),
        0.0
    );
    let info = metric(
        text,
        r#"vllm:lora_requests_info{max_lora="2",running_lora_adapters="",waiting_lora_adapters=""}"#,
    );
    assert!(info > 1.6e9, "value is the Unix time of the last change");
    assert_eq!(
        metric(
            text,
            &format!(
                "vllm:request_success_total{{model_name=\"{LLAMA}\",finish_reason=\"length\"}}"
            )
        ),
        1.0
    );
    assert_eq!(
        metric(text, &format!("vllm:prompt_tokens_total{label}")),
        3.0
    );
    assert_eq!(
        metric(text, &format!("vllm:generation_tokens_total{label}")),
        2.0
    );
    assert_eq!(
        sim.observer().requests_received(),
        1,
        "probes are not counted"
    );
}

#[tokio::test]
async fn the_observer_sees_routing_headers_and_exact_bodies() {
    let sim = llama().await;
    let client = client();
    let body = chat_body("food-review-1", "reviewer", "hello", 5);
    let answer = post_with(
        &client,
        &format!("{}/v1/chat/completions", sim.url()),
        &[
            ("x-gateway-model-name", "food-review-1"),
            ("x-gateway-base-model-name", LLAMA),
        ],
        &body,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    get(&client, &format!("{}/v1/models", sim.url())).await;
    let observer = sim.observer();
    assert_eq!(
        (
            observer.requests_received(),
            observer.completions_received()
        ),
        (2, 1)
    );
    let recent = observer.recent_requests();
    assert_eq!(recent.len(), 2);
    let chat = &recent[0];
    assert_eq!(chat.sequence, 1);
    assert_eq!(chat.path, "/v1/chat/completions");
    assert_eq!(chat.header("x-gateway-model-name"), Some("food-review-1"));
    assert_eq!(chat.header("x-gateway-base-model-name"), Some(LLAMA));
    assert_eq!(chat.model.as_deref(), Some("food-review-1"));
    assert_eq!(chat.body_len, body.len());
    assert_eq!(chat.body_sha256, sha256_hex(body.as_bytes()));
    assert_eq!(observer.last_request().expect("kept").path, "/v1/models");
}

#[tokio::test]
async fn latency_applies_to_non_streaming_answers() {
    let ttft = std::time::Duration::from_millis(60);
    let itl = std::time::Duration::from_millis(15);
    let sim = bbr_model_sim::spawn(
        SimConfig::new("m")
            .mode(Mode::Echo)
            .time_to_first_token(ttft)
            .inter_token_latency(itl),
    )
    .await
    .expect("starts");
    let client = client();
    let started = std::time::Instant::now();
    let answer = post(
        &client,
        &format!("{}/v1/completions", sim.url()),
        &text_body("m", "a b c d e", 10),
    )
    .await;
    assert_eq!(answer.json()["usage"]["completion_tokens"], 5);
    assert!(
        started.elapsed() >= ttft + 4 * itl,
        "TTFT + (n-1) x ITL at least: {:?}",
        started.elapsed()
    );
    let text = get(&client, &format!("{}/metrics", sim.url())).await;
    let text = text.text();
    let ttft_series = |le: &str| {
        format!(r#"vllm:time_to_first_token_seconds_bucket{{model_name="m",le="{le}"}}"#)
    };
    assert_eq!(
        metric(text, &ttft_series("0.04")),
        0.0,
        "the first token came after 60 ms"
    );
    assert_eq!(metric(text, &ttft_series("+Inf")), 1.0);
    assert_eq!(
        metric(
            text,
            r#"vllm:e2e_request_latency_seconds_count{model_name="m"}"#
        ),
        1.0
    );
    assert!(
        metric(
            text,
            r#"vllm:e2e_request_latency_seconds_sum{model_name="m"}"#
        ) >= 0.12
    );
}

#[tokio::test]
async fn failure_injection_answers_with_the_simulators_errors() {
    use bbr_model_sim::FailureType;
    let client = client();
    let cases = [
        (
            FailureType::ModelNotFound,
            404,
            "NotFoundError",
            "The model 'm-nonexistent' does not exist",
            Some("model"),
        ),
        (
            FailureType::RateLimit,
            429,
            "RateLimitError",
            "Rate limit reached for m in organization org-xxx on requests per min (RPM): Limit 3, Used 3, Requested 1.",
            None,
        ),
        (
            FailureType::InvalidApiKey,
            401,
            "AuthenticationError",
            "Incorrect API key provided.",
            None,
        ),
        (
            FailureType::ServerError,
            503,
            "InternalServerError",
            "The server is overloaded or not ready yet.",
            None,
        ),
        (
            FailureType::InvalidRequest,
            400,
            "BadRequestError",
            "Invalid request: missing required parameter 'model'.",
            Some("model"),
        ),
    ];
    for (kind, status, error_type, message, param) in cases {
        let sim = bbr_model_sim::spawn(SimConfig::new("m").failure_injection(100, [kind]))
            .await
            .expect("starts");
        let answer = post(
            &client,
            &format!("{}/v1/completions", sim.url()),
            &text_body("m", "x", 3),
        )
        .await;
        assert_eq!(answer.status.as_u16(), status, "{kind:?}");
        let json = answer.json();
        assert_eq!(json["error"]["type"], error_type);
        assert_eq!(json["error"]["message"], message);
        assert_eq!(json["error"]["code"], status);
        assert_eq!(json["error"]["param"].as_str(), param);
    }
    let context = bbr_model_sim::spawn(
        SimConfig::new("m").failure_injection(100, [FailureType::ContextLength]),
    )
    .await
    .expect("starts");
    let answer = post(
        &client,
        &format!("{}/v1/chat/completions", context.url()),
        &chat_body("m", "user", "x", 3),
    )
    .await;
    assert_eq!(
        (answer.status, answer.json()["error"]["param"].clone()),
        (StatusCode::BAD_REQUEST, "messages".into())
    );

    // 50 %: both outcomes occur, deterministically for the seed.
    let half = bbr_model_sim::spawn(SimConfig::new("m").seed(5).failure_injection(50, []))
        .await
        .expect("starts");
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(
            post(
                &client,
                &format!("{}/v1/completions", half.url()),
                &text_body("m", "x", 3),
            )
            .await
            .status,
        );
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert!((5..=35).contains(&ok), "about half succeed: {ok}/40");
}

#[tokio::test]
async fn ready_waits_for_the_startup_duration() {
    let sim = bbr_model_sim::spawn(
        SimConfig::new("m").startup_duration(std::time::Duration::from_millis(300)),
    )
    .await
    .expect("starts");
    let client = client();
    let answer = get(&client, &format!("{}/health/ready", sim.url())).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.json()["error"]["code"], 503);
    assert_eq!(
        get(&client, &format!("{}/health", sim.url())).await.status,
        StatusCode::OK,
        "alive while starting"
    );
    common::eventually("ready after the startup duration", || {
        let (client, url) = (client.clone(), format!("{}/ready", sim.url()));
        async move { get(&client, &url).await.status == StatusCode::OK }
    })
    .await;
}

/// Envoy clusters configured with `http2_protocol_options` speak HTTP/2
/// with prior knowledge (h2c) to their upstreams.
#[tokio::test]
async fn serves_http2_with_prior_knowledge() {
    use http_body_util::{BodyExt, Full};
    let sim = deepseek(Mode::Echo).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<bytes::Bytes>>();
    let request = http::Request::post(format!("{}/v1/completions", sim.url()))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(text_body(
            "ski-resorts",
            "a b c",
            5,
        ))))
        .expect("request");
    let response = tokio::time::timeout(common::TIMEOUT, client.request(request))
        .await
        .expect("in time")
        .expect("h2c response");
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(json["choices"][0]["text"], "a b c");
}
