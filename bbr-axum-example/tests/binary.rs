//! The binary with no configuration: it starts the scenario, prints where
//! it listens and a working curl command, and stops cleanly on SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test]
async fn default_run_serves_the_scenario_and_stops_on_sigterm() {
    let mut gateway = common::GatewayProcess::start(std::iter::empty::<&str>()).await;
    let (addr, banner) = (gateway.addr, gateway.banner.clone());
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

    let rest = gateway.rest.take().unwrap();
    let child = &mut gateway.child;
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
    let gateway = common::GatewayProcess::start([
        "--model-rewrite-sticky-header".as_ref(),
        "X-Session-Id".as_ref(),
        "--model-rewrites".as_ref(),
        dir.as_os_str(),
    ])
    .await;
    let (addr, banner) = (gateway.addr, &gateway.banner);
    let rules: Vec<&String> = banner
        .iter()
        .filter(|l| l.contains("model rewrite "))
        .collect();
    assert_eq!(
        rules,
        ["  model rewrite alias/0: gpt-4o -> ski-resorts (1)"],
        "{banner:?}"
    );
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
    drop(gateway);

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

/// A spool directory that cannot hold a file stops the start with the
/// config key named, instead of failing the first large upload with 503.
#[test]
fn an_unwritable_spool_dir_stops_the_start() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bbr-gw-binary-spool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("gateway.yaml");
    let pools = "pools:\n  - name: p\n    endpoints: [127.0.0.1:9]\nroutes:\n  - {name: r, pool: p, matches: [{model: m}]}\n";
    let gateway = |bbr: &str| {
        std::fs::write(&config, format!("{pools}bbr: {bbr}\n")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_bbr-axum-example"));
        command
            .args(["--listen", "127.0.0.1:0", "--config"])
            .arg(&config);
        command
    };
    let missing = gateway("{spool_dir: no-such-dir}")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("bbr.spool_dir"), "{stderr}");
    assert!(stderr.contains("no-such-dir"), "{stderr}");
    // With the spool off, the directory is not looked at: the gateway
    // starts and serves.
    let mut off = gateway("{spool: false, spool_dir: no-such-dir}")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(off.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.starts_with("bbr gateway listening on"), "{first}");
    off.kill().unwrap();
    off.wait().unwrap();
}
