//! Model rewrites through the real gateway on real sockets: an alias, the
//! scenario's 90/10 split over 1,000 requests, sticky splitting, a reload
//! under load with no request lost, and the model servers receiving a body
//! of the announced `content-length` with only `model` changed.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bbr_axum_example::{Config, RunningGateway};
use bbr_core::contract::{MODEL_HEADER, REQUESTED_MODEL_HEADER};
use common::{Answer, full, get, post, send, start};
use http::Request;
use serde_json::Value;

const LLAMA: &str = "vllm-llama3-8b-instruct";

/// A fresh directory for this test's rule files.
fn rules_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bbr-gw-rewrites-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One `InferenceModelRewrite` sending `from` to weighted targets.
fn rule(name: &str, from: &str, targets: &[(&str, u32)]) -> String {
    let targets: Vec<String> = targets
        .iter()
        .map(|(model, weight)| format!("    - {{modelRewrite: {model:?}, weight: {weight}}}"))
        .collect();
    format!(
        "apiVersion: inference.networking.x-k8s.io/v1alpha2\nkind: InferenceModelRewrite\n\
         metadata: {{name: {name}, namespace: team}}\nspec:\n  poolRef: {{name: {LLAMA}}}\n  rules:\n\
         \x20 - matches: [{{model: {{value: {from:?}}}}}]\n    targets:\n{}\n",
        targets.join("\n")
    )
}

/// The scenario with the rules of `dir` instead of its own.
async fn scenario_with_rules(dir: &std::path::Path, sticky: Option<&str>) -> RunningGateway {
    let mut config = Config::scenario();
    config.set_model_rewrites(vec![dir.to_owned()]);
    config.model_rewrites.sticky_header = sticky.map(str::to_owned);
    start(config).await
}

fn completion(model: &str) -> String {
    format!(
        r#"{{"model":"{model}","prompt":"Write as if you were a critic: San Francisco","max_tokens":3,"temperature":0}}"#
    )
}

/// The model that answered (the simulator names the model it served).
fn served(answer: &Answer) -> String {
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    answer.json()["model"].as_str().unwrap().to_owned()
}

/// Every request the Llama pool's replicas still remember (the last 32
/// each): the announced length is the length received, and the body is the
/// one sent with only `model` changed.
fn assert_llama_bodies_match_their_length(gateway: &RunningGateway) -> usize {
    let mut checked = 0;
    for replica in gateway.simulators().pool(LLAMA) {
        for seen in replica.observer().recent_requests() {
            let announced: usize = seen.header("content-length").unwrap().parse().unwrap();
            assert_eq!(announced, seen.body_len, "{}", seen.path);
            assert_eq!(seen.model.as_deref(), seen.header(MODEL_HEADER));
            checked += 1;
        }
    }
    checked
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn an_alias_reaches_the_model_server_with_only_model_changed() {
    let dir = rules_dir("alias");
    let alias = rule("gpt", "gpt-4o", &[("meta-llama/Llama-3.1-8B-Instruct", 1)]);
    std::fs::write(dir.join("alias.yaml"), alias).unwrap();
    let gateway = scenario_with_rules(&dir, None).await;

    // Escapes in the requested name and around it; the target is longer.
    let sent = r#"{"messages":[{"role":"user","content":"caf\u00e9 \"x\""}],"model":"gpt-\u0034o","max_tokens":2,"stream":false}"#;
    let answer = post(gateway.addr, "/v1/chat/completions", sent).await;
    assert_eq!(served(&answer), "meta-llama/Llama-3.1-8B-Instruct");
    assert!(answer.header("x-inference-pod").starts_with(LLAMA));

    let seen = gateway
        .simulators()
        .pool(LLAMA)
        .iter()
        .find_map(|replica| replica.observer().last_request())
        .expect("a Llama replica got it");
    assert_eq!(
        seen.header(MODEL_HEADER),
        Some("meta-llama/Llama-3.1-8B-Instruct")
    );
    assert_eq!(seen.header(REQUESTED_MODEL_HEADER), Some("gpt-4o"));
    let spliced = sent.replace(r#""gpt-\u0034o""#, r#""meta-llama/Llama-3.1-8B-Instruct""#);
    assert_eq!(seen.body_len, spliced.len());
    assert_eq!(
        seen.body_sha256,
        bbr_model_sim::sha256_hex(spliced.as_bytes())
    );
    let mut want: Value = serde_json::from_str(sent).unwrap();
    want["model"] = "meta-llama/Llama-3.1-8B-Instruct".into();
    assert_eq!(serde_json::from_str::<Value>(&spliced).unwrap(), want);
    assert_eq!(assert_llama_bodies_match_their_length(&gateway), 1);

    // A name no rule matches is routed as sent.
    assert_eq!(
        served(&post(gateway.addr, "/v1/completions", completion("food-review-1")).await),
        "food-review-1"
    );
    // The scenario's own rule is replaced by `--model-rewrites`.
    let unknown = post(gateway.addr, "/v1/completions", completion("food-review")).await;
    unknown.assert_error(404, "model_not_found");

    let metrics = get(gateway.addr, "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    let series = r#"inference_extension_model_rewrite_decisions_total{model_rewrite_name="team/gpt/0",model_name="gpt-4o",target_model="meta-llama/Llama-3.1-8B-Instruct"}"#;
    assert_eq!(metric(&text, series), 1, "{text}");
    gateway.shutdown().await.unwrap();
}

/// The embedded scenario: `food-review` split 90/10 over 1,000 requests.
/// With p = 0.1 the count of `food-review-2` has mean 100 and standard
/// deviation sqrt(1000 · 0.1 · 0.9) ≈ 9.5; the test accepts 100 ± 5 σ
/// (53..=147): a correct split fails it about once in two million runs, a
/// split of 80/20 or 95/5 passes it with probability below 10⁻⁶.
#[tokio::test]
async fn the_scenario_splits_food_review_90_10_over_1000_requests() {
    let gateway = start(Config::scenario()).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let addr = gateway.addr;
    for worker in 0..8 {
        tasks.spawn(async move {
            let mut served_by = Vec::new();
            for i in 0..125 {
                // Alternate the two endpoints and bodies of both kinds.
                let answer = if (worker + i) % 2 == 0 {
                    post(addr, "/v1/completions", completion("food-review")).await
                } else {
                    let chat = r#"{"model":"food-review","messages":[{"role":"reviewer","content":"Review the best restaurants"}],"max_tokens":2}"#;
                    post(addr, "/v1/chat/completions", chat).await
                };
                served_by.push(served(&answer));
            }
            served_by
        });
    }
    while let Some(served_by) = tasks.join_next().await {
        for model in served_by.unwrap() {
            *counts.entry(model).or_default() += 1;
        }
    }
    println!("food-review over 1000 requests: {counts:?}");
    let first = counts.get("food-review-1").copied().unwrap_or(0);
    let second = counts.get("food-review-2").copied().unwrap_or(0);
    assert_eq!(first + second, 1000, "{counts:?}");
    assert!(
        (53..=147).contains(&second),
        "food-review-2 got {second} of 1000: {counts:?}"
    );

    // Every request reached the Llama pool, and the bodies they still hold
    // have the announced length and name the routed target.
    let llama: u64 = common::completions(&gateway, LLAMA).iter().sum();
    assert_eq!(llama, 1000);
    // Each replica keeps its last 32 requests.
    let kept: u64 = common::completions(&gateway, LLAMA)
        .iter()
        .map(|&c| c.min(32))
        .sum();
    assert_eq!(
        assert_llama_bodies_match_their_length(&gateway) as u64,
        kept
    );

    let metrics = get(gateway.addr, "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    let decisions = |target: &str| {
        metric(
            &text,
            &format!(
                r#"inference_extension_model_rewrite_decisions_total{{model_rewrite_name="food-review/0",model_name="food-review",target_model="{target}"}}"#
            ),
        )
    };
    assert_eq!(decisions("food-review-1"), first as u64, "{text}");
    assert_eq!(decisions("food-review-2"), second as u64, "{text}");
    let routed = metric(
        &text,
        r#"bbr_gateway_requests_total{model="food-review-2",pool="vllm-llama3-8b-instruct",status="200",body="json"}"#,
    );
    assert_eq!(
        routed, second as u64,
        "the request metric is labelled by the target"
    );
    gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn sticky_by_a_header_keeps_each_session_on_one_target() {
    let dir = rules_dir("sticky");
    let split = rule(
        "rollout",
        "food-review",
        &[("food-review-1", 50), ("food-review-2", 50)],
    );
    std::fs::write(dir.join("rollout.yaml"), split).unwrap();
    let gateway = scenario_with_rules(&dir, Some("X-Session-Id")).await;
    let mut by_session: HashMap<String, String> = HashMap::new();
    for round in 0..3 {
        for session in 0..60 {
            let request = Request::post("/v1/completions")
                .header("content-type", "application/json")
                .header("x-session-id", format!("user-{session}"))
                .body(full(completion("food-review")))
                .unwrap();
            let model = served(&send(gateway.addr, request).await);
            match by_session.get(&format!("user-{session}")) {
                Some(first) => assert_eq!(first, &model, "session {session}, round {round}"),
                None => {
                    by_session.insert(format!("user-{session}"), model);
                }
            }
        }
    }
    let second = by_session
        .values()
        .filter(|m| *m == "food-review-2")
        .count();
    // The hash is fixed: these 60 sessions split this way on every run.
    assert!(
        (15..=45).contains(&second),
        "{second} of 60 sessions on food-review-2"
    );
    // Without the header, the pick is random (both targets show up).
    let mut seen = std::collections::HashSet::new();
    for _ in 0..64 {
        seen.insert(served(
            &post(gateway.addr, "/v1/completions", completion("food-review")).await,
        ));
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    gateway.shutdown().await.unwrap();
}

/// Eight clients send without pause while the rules change from "all to
/// food-review-1" to "all to food-review-2". Every request is answered 200
/// and reaches a model server; requests that finished before the reload
/// began went to the old target, requests that began after it finished
/// went to the new one (the ones in between may go either way).
#[tokio::test]
async fn a_reload_under_load_changes_the_weights_and_loses_no_request() {
    let dir = rules_dir("reload");
    let file = dir.join("rollout.yaml");
    std::fs::write(
        &file,
        rule("rollout", "food-review", &[("food-review-1", 1)]),
    )
    .unwrap();
    let gateway = scenario_with_rules(&dir, None).await;
    let store = gateway
        .state
        .model_rewrites()
        .expect("rules loaded")
        .clone();

    // 0: before the reload began, 1: during it, 2: after it returned.
    let phase = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (phase, stop, answered, addr) =
            (phase.clone(), stop.clone(), answered.clone(), gateway.addr);
        clients.spawn(async move {
            let mut log = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let began = phase.load(Ordering::SeqCst);
                let answer = post(addr, "/v1/completions", completion("food-review")).await;
                let ended = phase.load(Ordering::SeqCst);
                log.push((began, ended, served(&answer)));
                answered.fetch_add(1, Ordering::SeqCst);
            }
            log
        });
    }
    let wait_for = |count: usize| {
        let answered = answered.clone();
        async move {
            while answered.load(Ordering::SeqCst) < count {
                tokio::task::yield_now().await;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
    };
    tokio::time::timeout(common::REQUEST_DEADLINE, wait_for(200))
        .await
        .unwrap();
    phase.store(1, Ordering::SeqCst);
    std::fs::write(
        &file,
        rule("rollout", "food-review", &[("food-review-2", 1)]),
    )
    .unwrap();
    // The 10 s watcher may have picked the file up first; either way the new
    // rules are in force when this returns.
    store.reload().expect("the new rules load");
    let rules = store.snapshot();
    assert_eq!(
        rules.find("food-review").unwrap().targets()[0].model(),
        "food-review-2"
    );
    phase.store(2, Ordering::SeqCst);
    let at_reload = answered.load(Ordering::SeqCst);
    tokio::time::timeout(common::REQUEST_DEADLINE, wait_for(at_reload + 200))
        .await
        .unwrap();
    stop.store(true, Ordering::SeqCst);

    let mut total = 0;
    let (mut before, mut after) = (0, 0);
    while let Some(log) = clients.join_next().await {
        for (began, ended, model) in log.unwrap() {
            total += 1;
            if ended == 0 {
                assert_eq!(model, "food-review-1");
                before += 1;
            }
            if began == 2 {
                assert_eq!(model, "food-review-2");
                after += 1;
            }
        }
    }
    assert!(
        before >= 200 - 8 && after >= 200 - 8,
        "{before} before, {after} after"
    );
    assert_eq!(total, answered.load(Ordering::SeqCst));
    // None lost: every answered request reached a model server, once.
    let llama: u64 = common::completions(&gateway, LLAMA).iter().sum();
    assert_eq!(llama, total as u64);
    assert_llama_bodies_match_their_length(&gateway);
    gateway.shutdown().await.unwrap();
}

/// The body label of the request metric: a plain body, a compressed one,
/// and a request without a body.
#[tokio::test]
async fn the_request_metric_says_how_the_body_was_read() {
    use std::io::Write;
    let gateway = start(Config::scenario()).await;
    served(&post(gateway.addr, "/v1/completions", completion("food-review-1")).await);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(completion("food-review-1").as_bytes())
        .unwrap();
    let compressed = Request::post("/v1/completions")
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(full(gz.finish().unwrap()))
        .unwrap();
    // The model server decodes it itself: the gateway forwards it as sent.
    assert_eq!(
        served(&send(gateway.addr, compressed).await),
        "food-review-1"
    );
    let no_body = get(gateway.addr, "/v1/unrouted").await;
    no_body.assert_error(404, "model_not_found");
    let metrics = get(gateway.addr, "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    let series = |body: &str| {
        format!(
            r#"bbr_gateway_requests_total{{model="food-review-1",pool="vllm-llama3-8b-instruct",status="200",body="{body}"}}"#
        )
    };
    assert_eq!(metric(&text, &series("json")), 1, "{text}");
    assert_eq!(metric(&text, &series("compressed")), 1, "{text}");
    assert_eq!(
        metric(
            &text,
            r#"bbr_gateway_requests_total{model="",pool="",status="404",body="none"}"#
        ),
        1,
        "{text}"
    );
    gateway.shutdown().await.unwrap();
}
