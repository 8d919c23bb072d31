//! Model rewrites end to end through a real Envoy, in each body mode: the
//! upstream gets the client's body with only the `model` token replaced,
//! of the length announced (`content-length`, or chunked), routed by the
//! target; weighted splits, sticky picks and a reload under load.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bbr_core::contract::{MODEL_HEADER, REQUESTED_MODEL_HEADER};
use bbr_extproc::{ServerConfig, Tls};
use bytes::Bytes;
use hyper::Request;
use hyper::body::Frame;
use support::*;

const MODES: [&str; 3] = [
    "bbr-full-duplex.yaml",
    "bbr-streamed.yaml",
    "bbr-buffered.yaml",
];

/// `gpt-4o` is an alias of `food-review-1`; `food-review` splits 90/10
/// over `food-review-1` (pool-llama) and `movie-critique` (pool-deepseek).
const RULES: &str = r#"
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata: {name: rollout, namespace: llm}
spec:
  poolRef: {name: vllm-llama3-8b-instruct}
  rules:
  - matches: [{model: {type: Exact, value: gpt-4o}}]
    targets: [{modelRewrite: food-review-1}]
  - matches: [{model: {value: food-review}}]
    targets:
    - {modelRewrite: food-review-1, weight: 90}
    - {modelRewrite: movie-critique, weight: 10}
"#;

/// RULES with other weights for its food-review-1 and movie-critique.
fn weighted(food_review: u32, movie_critique: u32) -> String {
    RULES
        .replace("weight: 90}", &format!("weight: {food_review}}}"))
        .replace("weight: 10}", &format!("weight: {movie_critique}}}"))
}

/// A directory holding `rewrites.yaml`, removed on drop.
struct RulesDir(PathBuf);

impl RulesDir {
    fn new(text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "bbr-rewrites-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("rules dir");
        let rules = Self(dir);
        rules.write(text);
        rules
    }

    /// Replaces the rules atomically (write, then rename), as a ConfigMap
    /// update swaps its files.
    fn write(&self, text: &str) {
        let tmp = self.0.join(".rewrites.yaml.tmp");
        std::fs::write(&tmp, text).expect("write rules");
        std::fs::rename(&tmp, self.0.join("rewrites.yaml")).expect("swap rules");
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for RulesDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn rewriting_stack(
    file: &str,
    rules: &RulesDir,
    sticky: Option<&str>,
) -> (Upstreams, ExtProc, Envoy) {
    let mut config = ServerConfig::local(test_settings());
    config.tls = Tls::Plaintext;
    config.model_rewrites = vec![rules.path().to_owned()];
    config.model_rewrite_sticky_header = sticky.map(str::to_owned);
    config.adapters_reload_interval = Duration::from_millis(20);
    let upstreams = Upstreams::start().await;
    let extproc = ExtProc::start_with(config).await;
    let envoy = Envoy::start(file, Some(extproc.grpc), &upstreams).await;
    (upstreams, extproc, envoy)
}

/// The body with exactly the model's JSON token replaced by `target`'s.
fn spliced(body: &[u8], target: &str) -> Vec<u8> {
    let outcome = bbr_core::extract_model(&Bytes::copy_from_slice(body), &bbr_core::Limits::new())
        .expect("valid body");
    let span = outcome
        .model()
        .expect("a model")
        .json_span()
        .expect("a span");
    let mut out = body[..span.start as usize].to_vec();
    out.extend_from_slice(&bbr_core::rewrite::json_string_token(target));
    out.extend_from_slice(&body[span.end as usize..]);
    out
}

/// What every rewritten request must show at the upstream: routed by the
/// target, the requested name beside it, the body spliced, its length the
/// announced one (or chunked), equal to the client's once parsed except
/// `model`.
fn assert_rewritten(got: &Received, sent: &[u8], requested: &str, what: &str) -> String {
    let target = got.header(MODEL_HEADER).expect("model header").to_owned();
    assert_eq!(
        got.header(REQUESTED_MODEL_HEADER),
        Some(requested),
        "{what}"
    );
    assert_eq!(&got.body[..], &spliced(sent, &target)[..], "{what}");
    match got.header("content-length") {
        Some(length) => assert_eq!(length, got.body_len.to_string(), "{what}: announced length"),
        None => assert_eq!(got.header("transfer-encoding"), Some("chunked"), "{what}"),
    }
    let mut expected: serde_json::Value = serde_json::from_slice(sent).expect("json");
    expected["model"] = serde_json::Value::String(target.clone());
    let parsed: serde_json::Value = serde_json::from_slice(&got.body).expect("json upstream");
    assert_eq!(parsed, expected, "{what}");
    target
}

fn chat(model: &str, pad: usize) -> String {
    format!(
        r#"{{"messages":[{{"role":"user","content":"caf\u00e9 \"{}\""}}],"model" : "{model}","temperature":0}}"#,
        "x".repeat(pad)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_is_rewritten_in_every_body_mode_with_the_length_announced() {
    let rules = RulesDir::new(RULES);
    for file in MODES {
        let (upstreams, extproc, envoy) = rewriting_stack(file, &rules, None).await;
        let client = http1_client();
        // Model first and last, short and spanning several chunks, an
        // escaped original, and a client that sends its own requested-name
        // header.
        let bodies = [
            chat("gpt-4o", 10).into_bytes(),
            chat("gpt-\\u0034o", 200_000).into_bytes(),
            format!(r#"{{"model":"gpt-4o","prompt":"{}"}}"#, "y".repeat(70_000)).into_bytes(),
        ];
        for body in &bodies {
            let request = post(
                &envoy.url("/v1/chat/completions"),
                body.clone(),
                &[(REQUESTED_MODEL_HEADER, "spoofed")],
            );
            let answer = send(&client, request).await;
            assert_eq!(answer.status, 200, "{file}: {:?}", answer.body);
            assert_eq!(answer.json()["pool"], "pool-llama", "{file}");
            let got = upstreams.take().pop().expect("one request upstream");
            let target = assert_rewritten(&got, body, "gpt-4o", file);
            assert_eq!(target, "food-review-1");
            assert!(
                got.header("content-length").is_some(),
                "{file}: the length is kept"
            );
        }
        // A chunked upload (no content-length): the body arrives spliced.
        let (tx, body) = channel_body();
        let request = Request::post(envoy.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .expect("request");
        let sent = chat("gpt-4o", 5000).into_bytes();
        let feeder = {
            let sent = Bytes::from(sent.clone());
            tokio::spawn(async move {
                for piece in sent.chunks(997) {
                    let frame = Frame::data(Bytes::copy_from_slice(piece));
                    tx.send(frame).await.expect("send");
                }
            })
        };
        let answer = send(&client, request).await;
        feeder.await.expect("feeder");
        assert_eq!(answer.status, 200, "{file}: {:?}", answer.body);
        let got = upstreams.take().pop().expect("one request upstream");
        assert_rewritten(&got, &sent, "gpt-4o", &format!("{file} chunked"));
        // Without a rule: the body and its length are the client's.
        let body = chat("ski-resorts", 10);
        let answer = send(
            &client,
            post(&envoy.url("/v1/completions"), body.clone(), &[]),
        )
        .await;
        assert_eq!(answer.status, 200);
        let got = upstreams.take().pop().expect("one request upstream");
        assert_eq!(&got.body[..], body.as_bytes());
        assert_eq!(
            got.header("content-length"),
            Some(body.len().to_string().as_str())
        );
        assert_eq!(got.header(REQUESTED_MODEL_HEADER), Some("ski-resorts"));
        let metrics = extproc.metrics_text().await;
        assert!(
            metrics.contains(
                r#"inference_extension_model_rewrite_decisions_total{model_rewrite_name="llm/rollout/0",model_name="gpt-4o",target_model="food-review-1"} 4"#
            ),
            "{file}: {metrics}"
        );
    }
}

/// 1,000 requests for `food-review` (90/10): the share of `movie-critique`
/// is 100 ± 9.5 (binomial, n = 1000, p = 0.1); the bound is ±5 standard
/// deviations, 53..=147, which a correct split misses with probability
/// below 1e-6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ninety_ten_split_over_a_thousand_requests_is_within_bounds() {
    let rules = RulesDir::new(RULES);
    let (upstreams, extproc, envoy) = rewriting_stack(MODES[0], &rules, None).await;
    let client = http1_client();
    let counts = run_split(&client, &envoy, 1000, 16, None).await;
    let received = upstreams.take();
    assert_eq!(received.len(), 1000);
    for got in &received {
        let body = chat("food-review", got_index(got));
        let target = assert_rewritten(got, body.as_bytes(), "food-review", "split");
        let pool = if target == "movie-critique" {
            "pool-deepseek"
        } else {
            "pool-llama"
        };
        assert_eq!(got.pool, pool);
    }
    let minority = counts.get("movie-critique").copied().unwrap_or(0);
    assert_eq!(counts.values().sum::<usize>(), 1000);
    assert!(
        (53..=147).contains(&minority),
        "movie-critique {minority} of 1000: {counts:?}"
    );
    let metrics = extproc.metrics_text().await;
    let series = |target: &str| {
        metrics.lines().find_map(|l| {
            l.strip_prefix(&format!(
                r#"inference_extension_model_rewrite_decisions_total{{model_rewrite_name="llm/rollout/1",model_name="food-review",target_model="{target}"}} "#
            ))
            .and_then(|v| v.parse::<usize>().ok())
        })
    };
    assert_eq!(series("movie-critique"), Some(minority), "{metrics}");
    assert_eq!(series("food-review-1"), Some(1000 - minority), "{metrics}");
}

/// The request index a split body carries (its padding length).
fn got_index(got: &Received) -> usize {
    let parsed: serde_json::Value = serde_json::from_slice(&got.body).expect("json");
    let content = parsed["messages"][0]["content"].as_str().expect("content");
    content.len() - "café \"\"".len()
}

/// Sends `total` requests for `food-review` over `concurrency` workers
/// (request `i` padded by `i % 64` bytes, so its body is known); returns
/// the targets the answers name, and checks every answer is a 200.
async fn run_split(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Body,
    >,
    envoy: &Envoy,
    total: usize,
    concurrency: usize,
    session: Option<&str>,
) -> HashMap<String, usize> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, url, next) = (
            client.clone(),
            envoy.url("/v1/chat/completions"),
            next.clone(),
        );
        let session = session.map(str::to_owned);
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return seen;
                }
                let headers: Vec<(&str, &str)> = session
                    .as_deref()
                    .map(|s| ("x-session-id", s))
                    .into_iter()
                    .collect();
                let answer = send(&client, post(&url, chat("food-review", i % 64), &headers)).await;
                assert_eq!(answer.status, 200, "{:?}", answer.body);
                seen.push(answer.json()["model"].as_str().expect("model").to_owned());
            }
        }));
    }
    let mut counts = HashMap::new();
    for worker in workers {
        for target in worker.await.expect("worker") {
            *counts.entry(target).or_default() += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_sessions_keep_their_target_in_every_body_mode() {
    let rules = RulesDir::new(RULES);
    for file in MODES {
        let (upstreams, _extproc, envoy) =
            rewriting_stack(file, &rules, Some("x-session-id")).await;
        let client = http1_client();
        let mut by_target: HashMap<String, usize> = HashMap::new();
        for session in 0..40 {
            let id = format!("session-{session}");
            let counts = run_split(&client, &envoy, 5, 1, Some(&id)).await;
            assert_eq!(
                counts.len(),
                1,
                "{file} {id}: one target for a session: {counts:?}"
            );
            for (target, n) in counts {
                *by_target.entry(target).or_default() += n;
            }
        }
        for got in upstreams.take() {
            let body = chat("food-review", got_index(&got));
            assert_rewritten(&got, body.as_bytes(), "food-review", file);
        }
        // 40 sessions over 90/10: the chance that every one lands on the
        // same target is 0.9^40 + 0.1^40, about 1.5%; the sticky hash is
        // fixed, so these 40 names always give the same (checked) outcome.
        assert_eq!(by_target.len(), 2, "{file}: {by_target:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changing_the_weights_under_load_loses_no_request() {
    let before = weighted(1_000_000, 1);
    let rules = RulesDir::new(&before);
    for file in MODES {
        rules.write(&before);
        let (upstreams, extproc, envoy) = rewriting_stack(file, &rules, None).await;
        let client = http1_client();
        let sent = Arc::new(AtomicUsize::new(0));
        let switched = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        // Bounded by time, not by a request count: a loaded machine may
        // answer thousands of requests before the watcher thread runs.
        let deadline = started + Duration::from_secs(30);
        let mut workers = Vec::new();
        for _ in 0..8 {
            let (client, url) = (client.clone(), envoy.url("/v1/chat/completions"));
            let (sent, switched) = (sent.clone(), switched.clone());
            workers.push(tokio::spawn(async move {
                let mut targets = Vec::new();
                // Stops once the new weights are seen (plus a tail of
                // requests), or at the deadline.
                let mut after_switch = 0;
                while after_switch < 25 && Instant::now() < deadline {
                    sent.fetch_add(1, Ordering::Relaxed);
                    let i = targets.len();
                    let answer = send(&client, post(&url, chat("food-review", i % 64), &[])).await;
                    assert_eq!(answer.status, 200, "{:?}", answer.body);
                    let target = answer.json()["model"].as_str().expect("model").to_owned();
                    if target == "movie-critique" {
                        switched.store(true, Ordering::Relaxed);
                    }
                    if switched.load(Ordering::Relaxed) {
                        after_switch += 1;
                    }
                    targets.push(target);
                }
                targets
            }));
        }
        // Swap the weights while the workers run: every request from now
        // on goes to movie-critique once the watcher has read the file.
        // (A worker that failed stops counting: the deadline ends this too.)
        while sent.load(Ordering::Relaxed) < 100 && Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
        let after = weighted(1, 1_000_000);
        rules.write(&after);
        let written = started.elapsed();
        let mut answered = Vec::new();
        for worker in workers {
            let targets = worker.await.expect("worker");
            // One worker's requests are sequential: once it saw the new
            // weights, the old ones never come back (a stray old pick has
            // probability 1e-6 a request).
            if let Some(first_new) = targets.iter().position(|t| t == "movie-critique") {
                let old = targets[first_new..]
                    .iter()
                    .filter(|t| *t == "food-review-1")
                    .count();
                assert!(
                    old <= 1,
                    "{file}: {old} old picks after the switch: {targets:?}"
                );
            }
            answered.extend(targets);
        }
        if !switched.load(Ordering::Relaxed) {
            panic!(
                "{file}: the new weights were never used in {:?} after the rules were swapped \
                 ({} requests); bbr-extproc's metrics:\n{}",
                started.elapsed() - written,
                answered.len(),
                extproc.metrics_text().await
            );
        }
        let received = upstreams.take();
        assert_eq!(
            received.len(),
            answered.len(),
            "{file}: every request reached an upstream once"
        );
        for got in &received {
            let body = chat("food-review", got_index(got));
            assert_rewritten(got, body.as_bytes(), "food-review", file);
        }
        let metrics = extproc.metrics_text().await;
        assert!(
            metrics.contains("target_model=\"movie-critique\""),
            "{metrics}"
        );
        assert!(has_line(&metrics, REWRITES_RELOADED), "{file}: {metrics}");
    }
}

const REWRITES_RELOADED: &str =
    r#"bbr_config_reloads_total{config="model_rewrites",result="success"} 1"#;
const REWRITES_REFUSED: &str =
    r#"bbr_config_reloads_total{config="model_rewrites",result="failure"} 1"#;
const REWRITES_IN_FORCE: &str = r#"bbr_config_last_reload_successful{config="model_rewrites"} 1"#;
const REWRITES_STALE: &str = r#"bbr_config_last_reload_successful{config="model_rewrites"} 0"#;

/// Whether `metrics` has exactly this line (`... 1` is not `... 10`).
fn has_line(metrics: &str, series: &str) -> bool {
    metrics.lines().any(|line| line == series)
}

/// The metrics once they hold `series`, or a panic naming them after 10 s.
async fn metrics_with(extproc: &ExtProc, series: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = extproc.metrics_text().await;
        if has_line(&metrics, series) {
            return metrics;
        }
        assert!(Instant::now() < deadline, "no {series} in 10 s:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The targets of `n` requests for `food-review` through Envoy.
async fn food_review_targets(envoy: &Envoy, n: usize) -> Vec<String> {
    let client = http1_client();
    let mut targets = Vec::new();
    for i in 0..n {
        let url = envoy.url("/v1/chat/completions");
        let answer = send(&client, post(&url, chat("food-review", i), &[])).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        targets.push(answer.json()["model"].as_str().expect("model").to_owned());
    }
    targets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_is_counted_once_and_the_previous_rules_stay_in_force() {
    let rules = RulesDir::new(&weighted(1_000_000, 1));
    let (_upstreams, extproc, envoy) = rewriting_stack(MODES[0], &rules, None).await;
    let metrics = extproc.metrics_text().await;
    for series in [
        r#"bbr_config_reloads_total{config="model_rewrites",result="success"} 0"#,
        r#"bbr_config_reloads_total{config="model_rewrites",result="failure"} 0"#,
        REWRITES_IN_FORCE,
    ] {
        assert!(has_line(&metrics, series), "{series}:\n{metrics}");
    }
    assert!(
        !metrics.contains("config=\"adapters\""),
        "no adapter map is watched"
    );

    // An edit that does not parse: refused, and the old rules still route.
    rules.write("kind: InferenceModelRewrite\nspec: {rules: [\n");
    let metrics = metrics_with(&extproc, REWRITES_REFUSED).await;
    assert!(has_line(&metrics, REWRITES_STALE), "{metrics}");
    let targets = food_review_targets(&envoy, 8).await;
    assert!(targets.iter().all(|t| t == "food-review-1"), "{targets:?}");
    // Polled every 20 ms since, and still counted once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let metrics = extproc.metrics_text().await;
    assert!(has_line(&metrics, REWRITES_REFUSED), "{metrics}");

    // A good edit is in force again.
    rules.write(&weighted(1, 1_000_000));
    let metrics = metrics_with(&extproc, REWRITES_RELOADED).await;
    assert!(has_line(&metrics, REWRITES_IN_FORCE), "{metrics}");
    assert!(has_line(&metrics, REWRITES_REFUSED), "{metrics}");
    let targets = food_review_targets(&envoy, 8).await;
    assert!(targets.iter().all(|t| t == "movie-critique"), "{targets:?}");
}
