//! The `model-sim` binary with the seed manifests' argv.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{client, get, post};
use http::StatusCode;

const BIN: &str = env!("CARGO_BIN_EXE_model-sim");

#[tokio::test]
async fn runs_with_the_seed_manifest_args_and_stops_on_sigterm() {
    let mut child = Command::new(BIN)
        .args([
            "--model",
            "deepseek/vllm-deepseek-r1",
            "--port",
            "0",
            "--host",
            "127.0.0.1",
            "--max-loras",
            "2",
            "--lora-modules",
            r#"{"name": "ski-resorts"}"#,
            r#"{"name": "movie-critique"}"#,
            "--mode",
            "echo",
        ])
        .env("POD_NAME", "vllm-deepseek-r1-0")
        .env_remove("SIM_MODEL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("model-sim starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(common::TIMEOUT, line)
        .await
        .expect("startup line in time")
        .expect("task")
        .expect("reads");
    assert!(line.contains("pod vllm-deepseek-r1-0"), "{line}");
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap_or_else(|| panic!("address printed: {line}"))
        .to_owned();

    let client = client();
    let models = get(&client, &format!("{url}/v1/models")).await.json();
    let ids: Vec<_> = models["data"]
        .as_array()
        .expect("list")
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        ["deepseek/vllm-deepseek-r1", "ski-resorts", "movie-critique"]
    );
    let answer = post(
        &client,
        &format!("{url}/v1/completions"),
        r#"{"model":"movie-critique","prompt":"Tell me about movies","max_tokens":20}"#,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-inference-pod"), "vllm-deepseek-r1-0");
    assert_eq!(answer.json()["choices"][0]["text"], "Tell me about movies");
    drop(client);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + common::TIMEOUT;
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("model-sim did not stop on SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "graceful exit: {exit}");
}

#[test]
fn bad_flags_exit_with_a_message() {
    for (args, needle) in [
        (&["--model", "m", "--mode", "fast"][..], "invalid --mode"),
        (
            &["--model", "m", "--inter-token-latency", "soon"],
            "invalid duration",
        ),
        (
            &["--model", "m", "--lora-modules", r#"{"name": ""}"#],
            "empty name",
        ),
    ] {
        let output = Command::new(BIN)
            .args(args)
            .env_remove("SIM_MODEL")
            .output()
            .expect("runs");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
