//! The `bbr-extproc` binary as a Deployment runs it: the upstream chart's
//! container args verbatim (only the ports moved off 9004/9005/9090 so tests
//! can run side by side), serving a real Envoy over TLS with its self-signed
//! certificate; and the start-up refusals, with their exit status and
//! message.

mod support;

use std::process::{Command, Output, Stdio};

use support::*;
use tonic_health::pb::health_check_response::ServingStatus;

/// The `bbr` container args the upstream chart renders with its defaults.
const CHART_ARGS: [&str; 7] = [
    "--streaming",
    "--v",
    "3",
    "--plugin",
    r#"body-field-to-header:model-extractor:{"fieldName":"model","headerName":"X-Gateway-Model-Name"}"#,
    "--plugin",
    "base-model-to-header:base-model-mapper",
];
const CHART_TRACING: &str = "--tracing=false";

fn binary() -> Command {
    Command::new(binary_path())
}

/// The binary with the chart's plugin arguments (`plugins`), the chart's
/// `--tracing=false`, then `extra`.
fn start_with(plugins: &[&str], extra: &[&str]) -> Binary {
    let args: Vec<&str> = plugins
        .iter()
        .copied()
        .chain([CHART_TRACING])
        .chain(extra.iter().copied())
        .collect();
    Binary::spawn(&args, None)
}

async fn scrape(port: u16, token: Option<&str>) -> Answer {
    let mut request = hyper::Request::get(format!("http://127.0.0.1:{port}/metrics"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    send(&http1_client(), request.body(empty()).expect("request")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_chart_args_start_and_serve_envoy_over_tls() {
    let dir = std::env::temp_dir().join(format!("bbr-binary-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let token_file = dir.join("token");
    std::fs::write(&token_file, "scrape-me\n").expect("token");
    let token_arg = format!("--metrics-auth-token-file={}", token_file.display());
    let mut running = start_with(&CHART_ARGS, &[&token_arg]);
    running.wait_serving().await;

    // Health answers for any service name, as upstream.
    for service in [
        "",
        "envoy.service.ext_proc.v3.ExternalProcessor",
        "anything",
    ] {
        let status = health_status(running.health, service).await.expect("check");
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }

    // --secure-serving defaults to true: Envoy reaches it over TLS.
    let upstreams = Upstreams::start().await;
    let extproc = running.addr();
    let envoy = Envoy::start("bbr-full-duplex-tls.yaml", Some(extproc), &upstreams).await;
    reference_requests_reach_their_pools(&envoy, 3, || running.log_text()).await;
    assert_eq!(upstreams.take().len(), 3);

    // --metrics-endpoint-auth is on by default: the token or nothing.
    assert_eq!(scrape(running.metrics, None).await.status, 401);
    assert_eq!(scrape(running.metrics, Some("guess")).await.status, 401);
    let metrics = scrape(running.metrics, Some("scrape-me")).await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("bbr_info{commit="), "{text}");
    assert!(text.contains("bbr_success_total 3"), "{text}");
    assert!(
        text.contains(r#"bbr_plugin_duration_seconds_count{extension_point="request",plugin_type="body-field-to-header",plugin_name="model-extractor"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"plugin_type="base-model-to-header",plugin_name="base-model-mapper"} 3"#),
        "{text}"
    );

    // SIGTERM drains and exits cleanly.
    let status = running.terminate().await;
    assert!(status.success(), "{status}: {}", running.log_text());
    drop(envoy);
    let _ = std::fs::remove_dir_all(&dir);
}

fn run_to_exit(args: &[&str]) -> Output {
    binary()
        .args(args)
        .args(["--grpc-port=1", "--grpc-health-port=2", "--metrics-port=3"])
        .stdin(Stdio::null())
        .output()
        .expect("run bbr-extproc")
}

#[test]
fn bad_plugin_arguments_stop_the_start_naming_the_argument() {
    let cases: [(&[&str], &str); 6] = [
        (
            &["--plugin", "model-to-header:x"],
            r#"--plugin "model-to-header:x": unknown plugin type `model-to-header`"#,
        ),
        (
            &["--plugin", "body-field-to-header:x:{fieldName:model"],
            "bad parameters for body-field-to-header",
        ),
        (
            &["--plugin", "body-field-to-header"],
            "expected type:name[:json]",
        ),
        (
            &[
                "--plugin",
                r#"body-field-to-header:x:{"fieldName":"prompt","headerName":"X-Foo"}"#,
                "--plugin",
                "base-model-to-header:b",
            ],
            "base-model-to-header looks up `model`",
        ),
        (
            &[
                "--plugin",
                r#"body-field-to-header:a:{"fieldName":"model","headerName":"X-A"}"#,
                "--plugin",
                r#"body-field-to-header:b:{"fieldName":"model","headerName":"X-B"}"#,
            ],
            "a second body-field-to-header",
        ),
        (
            &[
                "--config-text",
                "apiVersion: llm-d.ai/v1alpha1\nkind: PayloadProcessorConfig\nplugins: []\nprofiles: []\n",
            ],
            "--config-text: exactly one profile is supported, found 0",
        ),
    ];
    for (args, expected) in cases {
        let output = run_to_exit(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    // The parameters' JSON error reaches the message too.
    let output = run_to_exit(&["--plugin", "body-field-to-header:x:{fieldName:model"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("key must be a string"), "{stderr}");
}

#[test]
fn bare_numbers_for_durations_and_sizes_are_usage_errors() {
    for (arg, expected) in [
        ("--drain-delay=5", "`5` has no unit"),
        ("--max-scan-bytes=1024", "`1024` has no unit"),
    ] {
        let output = run_to_exit(&[arg]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{arg}: {stderr}");
        assert!(stderr.contains(expected), "{arg}: {stderr}");
    }
}

/// `body-field-to-header` on another field: `prompt` into `X-Foo`, routed
/// by an Envoy whose routes match `x-foo`; the client's own `x-foo` never
/// routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_field_to_header_routes_on_another_field_through_envoy() {
    let mut running = start_with(
        &[
            "--plugin",
            r#"body-field-to-header:prompt-extractor:{"fieldName":"prompt","headerName":"X-Foo"}"#,
        ],
        &[],
    );
    running.wait_serving().await;
    let template =
        std::fs::read_to_string(workspace().join("deploy/envoy/bbr-full-duplex-tls.yaml"))
            .expect("envoy config");
    assert!(template.contains("- name: x-gateway-model-name"));
    let config = std::env::temp_dir().join(format!("bbr-binary-x-foo-{}.yaml", std::process::id()));
    std::fs::write(
        &config,
        template.replace("- name: x-gateway-model-name", "- name: x-foo"),
    )
    .expect("write config");
    let upstreams = Upstreams::start().await;
    let extproc = running.addr();
    // An absolute path replaces the deploy/envoy directory.
    let envoy = Envoy::start(
        config.to_str().expect("utf-8 path"),
        Some(extproc),
        &upstreams,
    )
    .await;
    let client = http1_client();
    let cases = [
        (
            r#"{"model":"deepseek/vllm-deepseek-r1","prompt":"food-review-1"}"#,
            &[][..],
            "pool-llama",
            Some("food-review-1"),
        ),
        (
            r#"{"prompt":"ski-resorts","model":"food-review-1"}"#,
            &[][..],
            "pool-deepseek",
            Some("ski-resorts"),
        ),
        (
            r#"{"model":"ski-resorts"}"#,
            &[("x-foo", "movie-critique")][..],
            "default-pool",
            None,
        ),
    ];
    for (body, headers, pool, routed) in cases {
        let answer = send(&client, post(&envoy.url("/v1/completions"), body, headers)).await;
        assert_eq!(
            answer.status,
            200,
            "{body}: {:?} / {}",
            answer.body,
            running.log_text()
        );
        assert_eq!(answer.json()["pool"], pool, "{body}");
        let received = upstreams.take();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].header("x-foo"), routed, "{body}");
        assert_eq!(received[0].header("x-gateway-model-name"), None, "{body}");
    }
    // A prompt that breaks the core's rules is refused like a bad model.
    let answer = send(
        &client,
        post(&envoy.url("/v1/completions"), r#"{"prompt":""}"#, &[]),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["error"]["code"], "invalid_model");
    drop(envoy);
    let _ = std::fs::remove_file(&config);
}
