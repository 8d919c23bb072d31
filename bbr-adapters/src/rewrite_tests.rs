//! Rewrite rules: parsing, precedence, weighted and sticky picks, reload.

use std::path::Path;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

const ROLLOUT: &str = r#"
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata: {name: food-review-rollout, namespace: prod}
spec:
  poolRef: {name: pool}
  rules:
  - matches: [{model: {type: Exact, value: food-review}}]
    targets:
    - {modelRewrite: food-review-1, weight: 90}
    - {modelRewrite: food-review-2, weight: 10}
  - matches: [{model: {value: gpt-4o}}, {model: {value: gpt-4}}]
    targets: [{modelRewrite: llama-3-8b}]
---
kind: Deployment
metadata: {name: skipped}
---
"#;

/// A check on the problem a document gives.
type Check = fn(&RewriteProblem) -> bool;

fn problem(result: Result<RewriteRules, LoadError>) -> RewriteProblem {
    match result {
        Err(LoadError::Rewrite { problem, .. }) => problem,
        other => panic!("expected a rewrite problem, got {other:?}"),
    }
}

fn doc(rules: &str) -> String {
    format!("kind: InferenceModelRewrite\nspec:\n  rules: {rules}\n")
}

#[test]
fn parses_the_upstream_format_with_aliases_and_skips_other_kinds() {
    let rules = RewriteRules::from_yaml_str(ROLLOUT, "rollout.yaml").unwrap();
    assert_eq!(rules.rules().len(), 2);
    let rollout = rules.find("food-review").unwrap();
    assert_eq!(rollout.name(), "prod/food-review-rollout/0");
    assert_eq!(rollout.total_weight(), 100);
    assert_eq!(rollout.targets()[1].model(), "food-review-2");
    assert_eq!(rollout.targets()[1].weight(), 10);
    let alias = rules.find("gpt-4").unwrap();
    assert_eq!(alias.name(), "prod/food-review-rollout/1");
    assert_eq!(alias.targets().len(), 1);
    assert_eq!(alias.targets()[0].weight(), 1);
    assert!(rules.find("food-review-1").is_none());
    assert!(rules.find("Food-Review").is_none(), "exact, case-sensitive");
}

#[test]
fn the_first_matching_rule_wins_and_a_catch_all_only_after_named_rules_before_it() {
    let text = doc(
        "[{matches: [{model: {value: a}}], targets: [{modelRewrite: first}]},\
         {targets: [{modelRewrite: everything}]},\
         {matches: [{model: {value: a}}, {model: {value: b}}], targets: [{modelRewrite: second}]}]",
    );
    let rules = RewriteRules::from_yaml_str(&text, "x").unwrap();
    assert_eq!(rules.find("a").unwrap().targets()[0].model(), "first");
    assert_eq!(rules.find("b").unwrap().targets()[0].model(), "everything");
    assert_eq!(
        rules.find("zzz").unwrap().targets()[0].model(),
        "everything"
    );
}

#[test]
fn lists_are_read() {
    let text = format!(
        "kind: List\nitems:\n- {}",
        "{kind: InferenceModelRewrite, spec: {rules: [{targets: [{modelRewrite: t}]}]}}"
    );
    assert_eq!(
        RewriteRules::from_yaml_str(&text, "x")
            .unwrap()
            .rules()
            .len(),
        1
    );
}

#[test]
fn invalid_documents_are_typed_errors() {
    let bad_version = "apiVersion: inference.networking.x-k8s.io/v1\nkind: InferenceModelRewrite\nspec: {rules: []}";
    assert!(matches!(
        problem(RewriteRules::from_yaml_str(bad_version, "x")),
        RewriteProblem::UnsupportedApiVersion(v) if v == "inference.networking.x-k8s.io/v1"
    ));
    assert!(matches!(
        problem(RewriteRules::from_yaml_str(
            "kind: InferenceModelRewrite\nspec: {}",
            "x"
        )),
        RewriteProblem::Shape(_)
    ));
    let cases: [(&str, Check); 7] = [
        ("[{matches: [{model: {value: a}}]}]", |p| {
            matches!(p, RewriteProblem::NoTargets { rule: 0 })
        }),
        (
            "[{matches: [{model: {type: Prefix, value: a}}], targets: [{modelRewrite: t}]}]",
            |p| matches!(p, RewriteProblem::UnsupportedMatchType { kind, .. } if kind == "Prefix"),
        ),
        (
            "[{matches: [{model: {value: ''}}], targets: [{modelRewrite: t}]}]",
            |p| matches!(p, RewriteProblem::InvalidMatch { .. }),
        ),
        ("[{targets: [{modelRewrite: ' t'}]}]", |p| {
            matches!(p, RewriteProblem::InvalidTarget { .. })
        }),
        (
            "[{targets: [{modelRewrite: a, weight: 1}, {modelRewrite: b}]}]",
            |p| matches!(p, RewriteProblem::PartialWeights { rule: 0 }),
        ),
        ("[{targets: [{modelRewrite: a, weight: 0}]}]", |p| {
            matches!(p, RewriteProblem::WeightOutOfRange { weight: 0, .. })
        }),
        ("[{targets: [{modelRewrite: a, weight: 1000001}]}]", |p| {
            matches!(
                p,
                RewriteProblem::WeightOutOfRange {
                    weight: 1_000_001,
                    ..
                }
            )
        }),
    ];
    for (rules, check) in cases {
        let got = problem(RewriteRules::from_yaml_str(&doc(rules), "x"));
        assert!(check(&got), "{rules}: {got:?}");
    }
    // At the limit.
    let rules = RewriteRules::from_yaml_str(
        &doc("[{targets: [{modelRewrite: a, weight: 1000000}]}]"),
        "x",
    )
    .unwrap();
    assert_eq!(rules.rules()[0].total_weight(), 1_000_000);
    // A 257-byte target is one past the model-name limit.
    let long = "m".repeat(257);
    let text = doc(&format!("[{{targets: [{{modelRewrite: {long}}}]}}]"));
    assert!(matches!(
        problem(RewriteRules::from_yaml_str(&text, "x")),
        RewriteProblem::InvalidTarget { .. }
    ));
    let text = doc(&format!(
        "[{{targets: [{{modelRewrite: {}}}]}}]",
        &long[..256]
    ));
    assert!(RewriteRules::from_yaml_str(&text, "x").is_ok());
}

#[test]
fn a_90_10_split_stays_within_statistical_bounds() {
    let rules = RewriteRules::from_yaml_str(ROLLOUT, "x").unwrap();
    let rule = rules.find("food-review").unwrap();
    // Seeded: the count is fixed, the bound documents what any seed gives.
    let mut rng = StdRng::seed_from_u64(13);
    let picks = 10_000;
    let second = (0..picks)
        .filter(|_| rule.target_random(&mut rng).model() == "food-review-2")
        .count();
    // Binomial(10000, 0.1): mean 1000, sd 30; six sd either way.
    assert!((820..=1180).contains(&second), "{second} of {picks}");
    // Sticky keys spread the same way (the hash is fixed, so is the count).
    let sticky = (0..picks)
        .filter(|i| {
            rule.target_for_key(format!("session-{i}").as_bytes())
                .model()
                == "food-review-2"
        })
        .count();
    assert!((820..=1180).contains(&sticky), "{sticky} of {picks}");
}

#[test]
fn target_at_covers_the_weight_line_exactly() {
    let rules = RewriteRules::from_yaml_str(ROLLOUT, "x").unwrap();
    let rule = rules.find("food-review").unwrap();
    let second = (0..100)
        .filter(|&p| rule.target_at(p).model() == "food-review-2")
        .count();
    assert_eq!(second, 10);
    assert_eq!(rule.target_at(89).model(), "food-review-1");
    assert_eq!(rule.target_at(90).model(), "food-review-2");
    assert_eq!(rule.target_at(99).model(), "food-review-2");
}

#[test]
fn sticky_picks_are_stable_and_random_picks_without_the_header() {
    let store = RewriteStore::from_rules(RewriteRules::from_yaml_str(ROLLOUT, "x").unwrap());
    let picker = RewritePicker::new(store).sticky_by("X-Session-Id");
    assert_eq!(picker.sticky_header(), Some("x-session-id"));
    for i in 0..200 {
        let key = format!("user-{i}");
        let first = picker.pick("food-review", Some(key.as_bytes())).unwrap();
        for _ in 0..5 {
            assert_eq!(
                picker.pick("food-review", Some(key.as_bytes())).unwrap(),
                first
            );
        }
    }
    // The hash is part of the contract: every replica, every release.
    assert_eq!(sticky_hash(b""), sticky_hash(b""));
    assert_ne!(sticky_hash(b"a"), sticky_hash(b"b"));
    // Without the header value: both targets show up.
    let seen: std::collections::HashSet<_> = (0..2000)
        .map(|_| picker.pick("food-review", None).unwrap().target_shared())
        .collect();
    assert_eq!(seen.len(), 2);
}

fn write_mount(dir: &Path, version: &str, text: &str) {
    let data = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("rules.yaml"), text).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    // Atomic swap, as the kubelet does.
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join("rules.yaml");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/rules.yaml", &link).unwrap();
    }
}

#[test]
fn a_mounted_config_map_reloads_through_its_data_link_and_a_bad_update_keeps_the_rules() {
    let dir = std::env::temp_dir().join(format!("bbr-rewrite-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let rules = |weights: (u32, u32)| {
        doc(&format!(
            "[{{matches: [{{model: {{value: food-review}}}}], targets: [{{modelRewrite: food-review-1, weight: {}}}, {{modelRewrite: food-review-2, weight: {}}}]}}]",
            weights.0, weights.1
        ))
    };
    write_mount(&dir, "v1", &rules((90, 10)));
    let store = RewriteStore::load([&dir]).unwrap();
    let weights = |store: &RewriteStore| {
        let rules = store.snapshot();
        let rule = rules.find("food-review").unwrap();
        (rule.targets()[0].weight(), rule.targets()[1].weight())
    };
    assert_eq!(weights(&store), (90, 10));
    assert_eq!(store.reload().unwrap(), Reload::Unchanged);

    write_mount(&dir, "v2", &rules((50, 50)));
    assert_eq!(store.reload().unwrap(), Reload::Swapped);
    assert_eq!(weights(&store), (50, 50));
    assert_eq!(store.reload_count(), 1);

    // An invalid update: the rules stay, the error is kept and counted once.
    write_mount(&dir, "v3", &doc("[{targets: []}]"));
    assert!(store.reload().is_err());
    assert!(store.reload().is_err());
    assert_eq!(store.failed_reload_count(), 1);
    assert_eq!(weights(&store), (50, 50));
    assert!(store.last_error().is_some());

    write_mount(&dir, "v4", &rules((1, 99)));
    assert_eq!(store.reload().unwrap(), Reload::Swapped);
    assert_eq!(weights(&store), (1, 99));
    assert!(store.last_error().is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_of_several_documents_keeps_their_order() {
    let text = format!(
        "{}---\n{}",
        doc("[{matches: [{model: {value: a}}], targets: [{modelRewrite: one}]}]"),
        doc(
            "[{matches: [{model: {value: a}}], targets: [{modelRewrite: two}]}, {matches: [{model: {value: b}}], targets: [{modelRewrite: three}]}]"
        )
    );
    let rules = RewriteRules::from_yaml_str(&text, "x").unwrap();
    assert_eq!(rules.find("a").unwrap().targets()[0].model(), "one");
    assert_eq!(rules.find("b").unwrap().targets()[0].model(), "three");
    assert_eq!(rules.find("b").unwrap().name(), "1");
}
