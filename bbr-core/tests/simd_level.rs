//! `BBR_SIMD_LEVEL` caps the vector level of a process, never raises it,
//! and every level finds the same models. The level is chosen once per
//! process, so each setting runs in a child: this test binary again, with
//! the variable set, running only `child_reports_its_level`.

use std::process::Command;

use bbr_core::{ExtractError, Limits, ModelExtractor, Outcome, SIMD_LEVEL_ENV, extract_model};
use bytes::Bytes;

/// Set in a child: it prints its level and its answers, then passes.
const CHILD: &str = "BBR_SIMD_LEVEL_TEST_CHILD";

/// Bodies whose strings take each path of the scan: plain and escaped
/// runs longer than a 64-byte block, raw UTF-8 of every length, an
/// invalid byte, a control byte.
fn bodies() -> Vec<Vec<u8>> {
    let prose = "Grüße, 日本語 \\n \\\"q\\\" \\u00e9 🎉 ".repeat(40);
    vec![
        format!(
            r#"{{"messages":[{{"content":"{prose}"}}],"model":"m-{}"}}"#,
            "a".repeat(200)
        )
        .into_bytes(),
        format!(
            r#"{{"model":"caf\u00e9-{}","x":"{prose}"}}"#,
            "é".repeat(100)
        )
        .into_bytes(),
        [
            &br#"{"x":""#[..],
            &[b'a'; 200],
            &[0xff],
            br#"","model":"m"}"#,
        ]
        .concat(),
        [
            &br#"{"x":""#[..],
            &[b'a'; 130],
            &[0x01],
            br#"","model":"m"}"#,
        ]
        .concat(),
    ]
}

/// One line per body: the model, or the error's kind and offset, whole
/// and fed in 17-byte chunks.
fn answers() -> String {
    let line = |answer: Result<Outcome, ExtractError>| match answer {
        Ok(outcome) => format!("{outcome:?}"),
        Err(err) => format!("{:?} at {}", err.kind(), err.offset()),
    };
    bodies()
        .into_iter()
        .map(|body| {
            let body = Bytes::from(body);
            let whole = extract_model(&body, &Limits::new());
            let mut extractor = ModelExtractor::new(Limits::new());
            let chunked = (0..body.len())
                .step_by(17)
                .try_for_each(|at| {
                    extractor
                        .feed(&body.slice(at..body.len().min(at + 17)))
                        .map(drop)
                })
                .and_then(|()| extractor.finish());
            format!("{} / {}\n", line(whole), line(chunked))
        })
        .collect()
}

#[test]
fn child_reports_its_level() {
    if std::env::var_os(CHILD).is_some() {
        println!("level={}", bbr_core::simd_level());
        print!("{}", answers());
    }
}

/// The child's level and answers under `setting` (`None`: unset).
fn run_child(setting: Option<&str>) -> (String, String) {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args([
            "child_reports_its_level",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1");
    match setting {
        Some(value) => command.env(SIMD_LEVEL_ENV, value),
        None => command.env_remove(SIMD_LEVEL_ENV),
    };
    let output = command.output().expect("run the child");
    assert!(output.status.success(), "child failed: {output:?}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let start = stdout.find("level=").expect("the child's report");
    let report = &stdout[start..];
    let (level, rest) = report.split_once('\n').expect("a level line");
    let answers = rest
        .lines()
        .take(bodies().len())
        .map(|l| format!("{l}\n"))
        .collect();
    (level["level=".len()..].to_owned(), answers)
}

#[test]
fn the_setting_caps_the_level_and_every_level_answers_alike() {
    const ORDER: [&str; 4] = ["portable", "sse2", "avx2", "avx512"];
    let rank = |name: &str| {
        ORDER
            .iter()
            .position(|&n| n == name)
            .expect("a known level")
    };
    let (best, best_answers) = run_child(None);
    assert_eq!(
        best_answers,
        answers(),
        "unset: the same answers as this process"
    );
    assert!(
        best_answers.contains("Found"),
        "the bodies find models: {best_answers}"
    );
    assert_eq!(best_answers.matches("Found").count(), 4, "{best_answers}");
    assert!(best_answers.contains("InvalidUtf8"), "{best_answers}");
    for (setting, cap) in [
        ("portable", "portable"),
        ("SSE2", "sse2"),
        (" avx2 ", "avx2"),
        ("avx512", "avx512"),
    ] {
        let (level, got) = run_child(Some(setting));
        // Architectures without a level's code leave it out; x86_64 has
        // all four, and the CPU may not run the higher ones.
        let expected = if cfg!(target_arch = "x86_64") {
            ORDER[rank(cap).min(rank(&best))]
        } else {
            "portable"
        };
        assert_eq!(level, expected, "{SIMD_LEVEL_ENV}={setting:?}");
        assert_eq!(got, best_answers, "{SIMD_LEVEL_ENV}={setting:?}");
    }
    let (level, _) = run_child(Some("avx-1024"));
    assert_eq!(level, best, "an unknown name leaves the best level");
}
