//! The official OpenAI Python client (`openai`, installed into
//! `<workspace>/.venv` by `scripts/install-tools`) uploading audio through
//! the gateway: `client.audio.transcriptions.create(model=..., file=...)`
//! reaches the pool of its model with the file byte for byte.

mod common;

use std::path::PathBuf;
use std::process::Command;

use bbr_model_sim::sha256_hex;
use common::start_yaml;

const CONFIG: &str = r"
pools:
  - name: asr-a
    simulate: {replicas: 1, model: whisper-1}
  - name: asr-b
    simulate: {replicas: 1, model: gpt-4o-transcribe}
routes:
  - {name: a, pool: asr-a, matches: [{model: whisper-1}]}
  - {name: b, pool: asr-b, matches: [{model: gpt-4o-transcribe}]}
";

const SCRIPT: &str = r#"
import sys, openai
base, model, path = sys.argv[1:4]
client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=30)
with open(path, "rb") as audio:
    result = client.audio.transcriptions.create(model=model, file=audio, language="en")
print(result.to_json(indent=None))
"#;

/// `PYTHON` (a Python with `openai`), else `<workspace>/.venv/bin/python`.
fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("PYTHON") {
        return python.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python: set PYTHON, or run `bash scripts/install-tools` (installs openai into <workspace>/.venv)"
    );
    venv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_client_transcription_is_routed_with_the_file_intact() {
    let gateway = start_yaml(CONFIG).await;
    let file: Vec<u8> = (0..300_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let path = std::env::temp_dir().join(format!("bbr-openai-{}.wav", std::process::id()));
    std::fs::write(&path, &file).unwrap();
    for (model, pool, other) in [
        ("whisper-1", "asr-a", "asr-b"),
        ("gpt-4o-transcribe", "asr-b", "asr-a"),
    ] {
        let base = format!("http://{}", gateway.addr);
        let (python, path_arg) = (python(), path.clone());
        let output = tokio::task::spawn_blocking(move || {
            Command::new(python)
                .args(["-c", SCRIPT, &base, model])
                .arg(path_arg)
                .output()
                .expect("python runs")
        })
        .await
        .unwrap();
        assert!(
            output.status.success(),
            "{model}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert!(answer["text"].as_str().unwrap().contains(model), "{answer}");
        assert_eq!(answer["model"], model);
        assert_eq!(answer["file"]["bytes"], file.len());
        assert_eq!(answer["file"]["sha256"], sha256_hex(&file));
        let sims = gateway.simulators();
        let seen = sims.pool(pool)[0]
            .observer()
            .last_request()
            .expect("on its pool");
        assert_eq!(seen.model.as_deref(), Some(model));
        assert_eq!(seen.header("x-gateway-model-name"), Some(model));
        assert!(
            seen.header("content-type")
                .unwrap()
                .starts_with("multipart/form-data")
        );
        assert!(
            sims.pool(other)[0]
                .observer()
                .recent_requests()
                .iter()
                .all(|r| r.model.as_deref() != Some(model)),
            "{model} also reached {other}"
        );
    }
    std::fs::remove_file(&path).unwrap();
}
