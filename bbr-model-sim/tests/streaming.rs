//! SSE streaming over real sockets: the event sequence, incremental
//! delivery, and the running/waiting accounting while streams are open.

mod common;

use std::time::Duration;

use bbr_model_sim::{Mode, SimConfig};
use common::{TIMEOUT, client, collect, eventually, get, metric, send, sse_events};
use http::{Method, StatusCode};
use http_body_util::BodyExt;

fn parse(event: &str) -> serde_json::Value {
    serde_json::from_str(event).unwrap_or_else(|e| panic!("event JSON ({e}): {event}"))
}

async fn stream(url: &str, body: serde_json::Value) -> (common::Answer, Vec<String>) {
    let client = client();
    let answer = collect(
        send(
            &client,
            Method::POST,
            url,
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.header("content-type"), "text/event-stream");
    let events = sse_events(answer.text());
    (answer, events)
}

#[tokio::test]
async fn chat_stream_sends_role_tokens_finish_usage_done() {
    let sim = bbr_model_sim::spawn(SimConfig::new("base").lora("ski-resorts").mode(Mode::Echo))
        .await
        .expect("starts");
    let (answer, events) = stream(
        &format!("{}/v1/chat/completions", sim.url()),
        serde_json::json!({
            "model": "ski-resorts", "stream": true, "stream_options": {"include_usage": true},
            "max_tokens": 4, "messages": [{"role": "user", "content": "Tell mne about ski deals"}],
        }),
    )
    .await;
    assert_eq!(answer.header("x-inference-pod"), sim.pod_name());
    // role, 4 tokens, finish, usage, [DONE]
    assert_eq!(events.len(), 8, "{events:#?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<_> = events[..7].iter().map(|e| parse(e)).collect();
    let id = chunks[0]["id"].as_str().expect("id");
    assert!(id.starts_with("chatcmpl-"));
    for chunk in &chunks {
        assert_eq!(chunk["id"], id, "one id per stream");
        assert_eq!(
            chunk["created"], chunks[0]["created"],
            "one created per stream"
        );
        assert_eq!(chunk["model"], "ski-resorts");
        assert_eq!(chunk["object"], "chat.completion.chunk");
    }
    assert!(
        events[0].starts_with(r#"{"id":"chatcmpl-"#),
        "field order: {}",
        events[0]
    );
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        serde_json::json!({"role": "assistant"})
    );
    assert_eq!(chunks[0]["usage"], serde_json::Value::Null);
    let content: String = chunks[1..5]
        .iter()
        .map(|c| {
            assert_eq!(c["choices"][0]["finish_reason"], serde_json::Value::Null);
            assert_eq!(c["usage"], serde_json::Value::Null);
            c["choices"][0]["delta"]["content"]
                .as_str()
                .expect("content")
                .to_owned()
        })
        .collect();
    assert_eq!(content, "Tell mne about ski ");
    assert_eq!(chunks[5]["choices"][0]["delta"], serde_json::json!({}));
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks[6]["choices"], serde_json::json!([]));
    assert_eq!(
        chunks[6]["usage"]["prompt_tokens"], 10,
        "# # # user : + 5 words"
    );
    assert_eq!(chunks[6]["usage"]["completion_tokens"], 4);
    assert_eq!(chunks[6]["usage"]["total_tokens"], 14);
}

#[tokio::test]
async fn text_stream_has_no_role_chunk_and_usage_only_on_request() {
    let sim = bbr_model_sim::spawn(SimConfig::new("base").mode(Mode::Echo))
        .await
        .expect("starts");
    let url = format!("{}/v1/completions", sim.url());
    let (_, events) = stream(
        &url,
        serde_json::json!({"model": "base", "prompt": "a b", "stream": true}),
    )
    .await;
    // 2 tokens, finish, [DONE]; no usage chunk without include_usage.
    assert_eq!(events.len(), 4, "{events:#?}");
    let chunks: Vec<_> = events[..3].iter().map(|e| parse(e)).collect();
    assert!(chunks[0]["id"].as_str().expect("id").starts_with("cmpl-"));
    assert_eq!(chunks[0]["object"], "text_completion");
    assert_eq!(chunks[0]["choices"][0]["text"], "a ");
    assert_eq!(chunks[1]["choices"][0]["text"], "b");
    assert_eq!(chunks[2]["choices"][0]["text"], "");
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(events[3], "[DONE]");

    let (_, events) = stream(
        &url,
        serde_json::json!({"model": "base", "prompt": "a b", "stream": true, "stream_options": {"include_usage": false}}),
    )
    .await;
    assert_eq!(events.len(), 4);
    let (_, events) = stream(
        &url,
        serde_json::json!({"model": "base", "prompt": "a b", "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(parse(&events[3])["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn stream_errors_before_the_first_token_keep_their_status() {
    let sim = bbr_model_sim::spawn(SimConfig::new("base"))
        .await
        .expect("starts");
    let client = client();
    let answer = collect(
        send(
            &client,
            Method::POST,
            &format!("{}/v1/completions", sim.url()),
            &[],
            r#"{"model":"other","prompt":"x","stream":true}"#,
        )
        .await,
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.header("content-type"), "application/json");
}

/// The first token must reach the client long before the last one is
/// generated: with a 30 s inter-token latency the last of 3 tokens would
/// come after 60 s, and we read the first within the test timeout.
#[tokio::test]
async fn streams_are_incremental_and_free_their_place_when_dropped() {
    let sim = bbr_model_sim::spawn(
        SimConfig::new("base")
            .lora("ski-resorts")
            .max_loras(1)
            .mode(Mode::Echo)
            .inter_token_latency(Duration::from_secs(30)),
    )
    .await
    .expect("starts");
    let client = client();
    let response = send(
        &client,
        Method::POST,
        &format!("{}/v1/chat/completions", sim.url()),
        &[],
        serde_json::json!({"model": "ski-resorts", "stream": true, "max_tokens": 3,
                           "messages": [{"role": "user", "content": "one two three"}]})
        .to_string(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = String::new();
    while !received.contains(r#""content":"one ""#) {
        let frame = tokio::time::timeout(TIMEOUT, body.frame())
            .await
            .expect("the first token arrives without waiting for the rest")
            .expect("stream open")
            .expect("frame reads");
        if let Ok(data) = frame.into_data() {
            received.push_str(std::str::from_utf8(&data).expect("utf-8"));
        }
    }
    assert!(
        !received.contains("two"),
        "only the first token so far: {received}"
    );
    assert!(!received.contains("[DONE]"));

    let metrics_url = format!("{}/metrics", sim.url());
    let text = get(&client, &metrics_url).await;
    assert_eq!(
        metric(
            text.text(),
            r#"vllm:num_requests_running{model_name="base"}"#
        ),
        1.0
    );
    assert!(
        text.text()
            .contains(r#"running_lora_adapters="ski-resorts",waiting_lora_adapters="""#)
    );

    // The client goes away: the running place is freed.
    drop(body);
    eventually("the dropped stream to free its place", || {
        let (client, url) = (client.clone(), metrics_url.clone());
        async move {
            let text = get(&client, &url).await;
            metric(
                text.text(),
                r#"vllm:num_requests_running{model_name="base"}"#,
            ) == 0.0
        }
    })
    .await;
}

#[tokio::test]
async fn max_num_seqs_queues_then_refuses_and_lora_slots_make_loras_wait() {
    let sim = bbr_model_sim::spawn(
        SimConfig::new("base")
            .loras(["a", "b"])
            .max_loras(1)
            .max_num_seqs(2)
            .max_waiting_queue_length(1)
            .mode(Mode::Echo)
            .inter_token_latency(Duration::from_secs(30)),
    )
    .await
    .expect("starts");
    let client = client();
    let chat = format!("{}/v1/chat/completions", sim.url());
    let open_stream = |model: &'static str| {
        let (client, chat) = (client.clone(), chat.clone());
        async move {
            send(
                &client,
                Method::POST,
                &chat,
                &[],
                serde_json::json!({"model": model, "stream": true, "max_tokens": 2,
                                   "messages": [{"role": "user", "content": "x y"}]})
                .to_string(),
            )
            .await
        }
    };
    // LoRA `a` runs; LoRA `b` cannot get a slot (max_loras 1) and waits.
    let running_a = open_stream("a").await;
    assert_eq!(running_a.status(), StatusCode::OK);
    let waiting_b = tokio::spawn(open_stream("b"));
    let metrics_url = format!("{}/metrics", sim.url());
    let scrape = || {
        let (client, url) = (client.clone(), metrics_url.clone());
        async move { get(&client, &url).await.text().to_owned() }
    };
    eventually("b to wait", || async {
        let text = scrape().await;
        metric(&text, r#"vllm:num_requests_waiting{model_name="base"}"#) == 1.0
    })
    .await;
    let text = scrape().await;
    assert_eq!(
        metric(&text, r#"vllm:num_requests_running{model_name="base"}"#),
        1.0
    );
    assert!(
        text.contains(r#"running_lora_adapters="a",waiting_lora_adapters="b""#),
        "{text}"
    );

    // The queue (length 1) is full: the next request is refused with 429.
    let answer = common::post(
        &client,
        &format!("{}/v1/completions", sim.url()),
        r#"{"model":"base","prompt":"x","max_tokens":1}"#,
    )
    .await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.json()["error"]["type"], "RateLimitError");
    assert_eq!(
        answer.json()["error"]["message"],
        "Failed to enqueue request, waiting requests queue is full"
    );

    // `a` ends (client gone): `b` gets the slot and starts streaming.
    drop(running_a);
    let response_b = tokio::time::timeout(TIMEOUT, waiting_b)
        .await
        .expect("b admitted")
        .expect("task");
    assert_eq!(response_b.status(), StatusCode::OK);
    let text = scrape().await;
    assert!(
        text.contains(r#"running_lora_adapters="b",waiting_lora_adapters="""#),
        "{text}"
    );
}

#[tokio::test]
async fn max_num_seqs_runs_that_many_and_queues_one_more() {
    let sim = bbr_model_sim::spawn(
        SimConfig::new("base")
            .max_num_seqs(2)
            .mode(Mode::Echo)
            .inter_token_latency(Duration::from_secs(30)),
    )
    .await
    .expect("starts");
    let client = client();
    let url = format!("{}/v1/completions", sim.url());
    let body = r#"{"model":"base","prompt":"x y","stream":true}"#;
    // At the limit: two streams run.
    let first = send(&client, Method::POST, &url, &[], body).await;
    let second = send(&client, Method::POST, &url, &[], body).await;
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    // One past it: the third waits.
    let third = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move { send(&client, Method::POST, &url, &[], body).await.status() }
    });
    let metrics_url = format!("{}/metrics", sim.url());
    eventually("the third request to wait", || {
        let (client, url) = (client.clone(), metrics_url.clone());
        async move {
            let text = get(&client, &url).await;
            metric(
                text.text(),
                r#"vllm:num_requests_waiting{model_name="base"}"#,
            ) == 1.0
        }
    })
    .await;
    let text = get(&client, &metrics_url).await;
    assert_eq!(
        metric(
            text.text(),
            r#"vllm:num_requests_running{model_name="base"}"#
        ),
        2.0
    );
    assert!(!third.is_finished());
    drop(first);
    let status = tokio::time::timeout(TIMEOUT, third)
        .await
        .expect("admitted")
        .expect("task");
    assert_eq!(status, StatusCode::OK);
    drop(second);
}
