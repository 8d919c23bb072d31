//! The binary with no configuration: it starts the scenario, prints where
//! it listens and a working curl command, and stops cleanly on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test]
async fn default_run_serves_the_scenario_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bbr-axum-example"))
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().unwrap();
    // Read the banner on a thread: a blocking read must not stall the runtime.
    let banner = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut banner = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            let done = line.contains("curl ");
            banner.push(line);
            if done {
                break;
            }
        }
        (banner, lines)
    });
    let (banner, rest) = tokio::time::timeout(Duration::from_secs(20), banner)
        .await
        .expect("banner in time")
        .unwrap();
    let first = &banner[0];
    let addr: std::net::SocketAddr = first
        .strip_prefix("bbr gateway listening on http://")
        .unwrap_or_else(|| panic!("unexpected banner {banner:?}"))
        .parse()
        .unwrap();
    assert!(
        banner
            .iter()
            .any(|l| l.contains("pool vllm-llama3-8b-instruct: 127.0.0.1:")),
        "{banner:?}"
    );
    assert_eq!(
        banner
            .iter()
            .find(|l| l.contains("pool vllm-llama3-8b-instruct"))
            .unwrap()
            .matches(", ")
            .count(),
        2
    );
    assert!(
        banner
            .iter()
            .any(|l| l.contains("pool vllm-deepseek-r1: 127.0.0.1:")),
        "{banner:?}"
    );
    assert!(
        banner.iter().any(|l| l
            == "  model rewrite food-review/0: food-review -> food-review-1 (90), food-review-2 (10)"),
        "{banner:?}"
    );

    // The printed curl command's body, sent as printed.
    let curl = banner.last().unwrap();
    assert!(
        curl.contains(&format!("http://{addr}/v1/completions")),
        "{curl}"
    );
    let start = curl.find("-d '").unwrap() + 4;
    let body = &curl[start..curl.len() - 1];
    let answer = common::post(addr, "/v1/completions", body.to_owned()).await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.json()["model"], "food-review-1");
    assert!(
        answer
            .header("x-inference-pod")
            .starts_with("vllm-llama3-8b-instruct-")
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the gateway did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}");
    let tail: Vec<String> = rest.map_while(Result::ok).collect();
    assert!(tail.iter().any(|l| l == "shutting down"), "{tail:?}");
}

/// `--model-rewrites` replaces the scenario's rule (the banner lists the
/// loaded rules), `--model-rewrite-sticky-header` takes a header name, and a
/// name that is not one stops the binary before it starts.
#[tokio::test]
async fn model_rewrite_flags_replace_the_scenario_rule() {
    let dir = std::env::temp_dir().join(format!("bbr-gw-binary-rewrites-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("alias.yaml"),
        "kind: InferenceModelRewrite\nmetadata: {name: alias}\nspec:\n  rules:\n  - matches: [{model: {value: gpt-4o}}]\n    targets: [{modelRewrite: ski-resorts}]\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bbr-axum-example"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--model-rewrite-sticky-header",
            "X-Session-Id",
        ])
        .arg("--model-rewrites")
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().unwrap();
    let banner = tokio::task::spawn_blocking(move || {
        let mut banner = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.contains("curl ");
            banner.push(line);
            if done {
                break;
            }
        }
        banner
    });
    let banner = tokio::time::timeout(Duration::from_secs(20), banner)
        .await
        .expect("banner in time")
        .unwrap();
    let rules: Vec<&String> = banner
        .iter()
        .filter(|l| l.contains("model rewrite "))
        .collect();
    assert_eq!(
        rules,
        ["  model rewrite alias/0: gpt-4o -> ski-resorts (1)"],
        "{banner:?}"
    );
    let addr: std::net::SocketAddr = banner[0]
        .strip_prefix("bbr gateway listening on http://")
        .unwrap()
        .parse()
        .unwrap();
    let answer = common::post(
        addr,
        "/v1/completions",
        r#"{"model":"gpt-4o","prompt":"hi","max_tokens":2}"#,
    )
    .await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.json()["model"], "ski-resorts");
    child.kill().unwrap();
    child.wait().unwrap();

    let refused = Command::new(env!("CARGO_BIN_EXE_bbr-axum-example"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--model-rewrite-sticky-header",
            "two words",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--model-rewrite-sticky-header"));
}
