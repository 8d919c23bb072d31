//! Loading the upstream ConfigMap format in every shape it comes in.

mod common;

use bbr_adapters::{AdapterMap, LoadError};
use common::{TempDir, mount_config_map};

const LLAMA: &str = "meta-llama/Llama-3.1-8B-Instruct";
const DEEPSEEK: &str = "deepseek/vllm-deepseek-r1";

/// The reference scenario as two ConfigMaps in one multi-document file.
const SCENARIO: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: llama-adapters
  namespace: default
  labels: {inference.llm-d.ai/ipp-managed: "true"}
data:
  baseModel: meta-llama/Llama-3.1-8B-Instruct
  adapters: |
    - food-review-1
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: deepseek-adapters
data:
  baseModel: "  deepseek/vllm-deepseek-r1  "
  adapters: |
    - ski-resorts
    - " movie-critique "
    - ""
"#;

fn assert_scenario(map: &AdapterMap) {
    assert_eq!(map.lookup("food-review-1"), Some(LLAMA));
    assert_eq!(map.lookup(LLAMA), Some(LLAMA));
    assert_eq!(map.lookup("ski-resorts"), Some(DEEPSEEK));
    assert_eq!(map.lookup("movie-critique"), Some(DEEPSEEK));
    assert_eq!(map.lookup(DEEPSEEK), Some(DEEPSEEK));
    assert_eq!(map.lookup("unknown-model"), None);
    assert_eq!(map.lookup(""), None);
    assert_eq!(map.adapter_count(), 3);
    assert_eq!(map.base_models().collect::<Vec<_>>(), vec![DEEPSEEK, LLAMA]);
}

#[test]
fn multi_document_file_loads_every_config_map() {
    let dir = TempDir::new("multi");
    let file = dir.write("scenario.yaml", SCENARIO);
    assert_scenario(&AdapterMap::from_paths([&file]).unwrap());
}

#[test]
fn entries_are_trimmed_but_lookups_are_exact() {
    let map = AdapterMap::from_yaml_str(SCENARIO, "inline").unwrap();
    // The ConfigMap's padded entries are stored trimmed...
    assert_eq!(map.lookup("movie-critique"), Some(DEEPSEEK));
    assert_eq!(map.lookup(DEEPSEEK), Some(DEEPSEEK));
    assert!(map.is_base_model(DEEPSEEK));
    // ...but a looked-up name is taken as given: the core decides what a
    // model name is, and the model header carries exactly that name.
    for padded in [
        "  movie-critique\t",
        " movie-critique",
        "movie-critique ",
        " deepseek/vllm-deepseek-r1 ",
        "\tfood-review-1",
    ] {
        assert_eq!(map.lookup(padded), None, "{padded:?}");
        assert_eq!(map.lookup_shared(padded), None, "{padded:?}");
    }
    assert!(!map.is_base_model(" deepseek/vllm-deepseek-r1"));
    // Case matters, as upstream.
    assert_eq!(map.lookup("Movie-Critique"), None);
}

#[test]
fn kind_list_is_read_item_by_item() {
    let text = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: llama}
  data: {baseModel: meta-llama/Llama-3.1-8B-Instruct, adapters: "- food-review-1"}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: not-a-config-map}
  spec: {}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: deepseek}
  data:
    baseModel: deepseek/vllm-deepseek-r1
    adapters: "[ski-resorts, movie-critique]"
"#;
    assert_scenario(&AdapterMap::from_yaml_str(text, "list.yaml").unwrap());
}

#[test]
fn several_config_maps_may_share_a_base_model() {
    let text = "kind: ConfigMap\ndata: {baseModel: b, adapters: '[x, y]'}\n---\n\
                kind: ConfigMap\ndata: {baseModel: b, adapters: '[z, x]'}\n";
    let map = AdapterMap::from_yaml_str(text, "split.yaml").unwrap();
    for name in ["x", "y", "z", "b"] {
        assert_eq!(map.lookup(name), Some("b"), "{name}");
    }
    assert_eq!(map.adapter_count(), 3);
    assert_eq!(map.base_models().count(), 1);
}

#[test]
fn scalar_entries_are_read_as_strings_and_blank_entries_skipped() {
    let text = "kind: ConfigMap\ndata:\n  baseModel: base\n  adapters: |\n    - 1\n    - 1.10\n    - true\n    - \"  \"\n    -\n    - ok\n";
    let map = AdapterMap::from_yaml_str(text, "scalars.yaml").unwrap();
    assert_eq!(map.lookup("1"), Some("base"));
    assert_eq!(
        map.lookup("1.10"),
        Some("base"),
        "the literal text, not a float"
    );
    assert_eq!(map.lookup("true"), Some("base"));
    assert_eq!(map.lookup("ok"), Some("base"));
    assert_eq!(map.adapter_count(), 4);
}

#[test]
fn blank_or_missing_adapters_give_a_base_model_alone() {
    for data in [
        "{baseModel: solo}",
        "{baseModel: solo, adapters: ''}",
        "{baseModel: solo, adapters: \"  \\n \"}",
        "{baseModel: solo, adapters: null}",
    ] {
        let map =
            AdapterMap::from_yaml_str(&format!("kind: ConfigMap\ndata: {data}\n"), "x").unwrap();
        assert_eq!(map.lookup("solo"), Some("solo"), "{data}");
        assert_eq!(map.adapter_count(), 0, "{data}");
    }
}

#[test]
fn adapters_given_as_a_yaml_list_directly_are_accepted() {
    let map = AdapterMap::from_yaml_str("data:\n  baseModel: b\n  adapters: [a, ' c ', 7]\n", "x")
        .unwrap();
    assert_eq!(map.lookup("a"), Some("b"));
    assert_eq!(map.lookup("c"), Some("b"));
    assert_eq!(map.lookup("7"), Some("b"));
}

#[test]
fn empty_documents_and_other_kinds_are_skipped() {
    let text = "---\n---\nkind: Service\nmetadata: {name: svc}\n---\nkind: ConfigMap\ndata: {baseModel: b}\n---\n";
    let map = AdapterMap::from_yaml_str(text, "x").unwrap();
    assert_eq!(map.base_models().collect::<Vec<_>>(), vec!["b"]);
    assert!(AdapterMap::from_yaml_str("", "empty").unwrap().is_empty());
}

#[test]
fn mounted_config_map_directory_is_read_through_the_data_link() {
    let dir = TempDir::new("mounted");
    let mount = dir.path().join("deepseek");
    mount_config_map(
        &mount,
        "2026_11_24_10_00_00.1",
        " deepseek/vllm-deepseek-r1\n",
        Some("- ski-resorts\n- movie-critique\n"),
    );
    let map = AdapterMap::from_paths([&mount]).unwrap();
    assert_eq!(map.lookup("ski-resorts"), Some(DEEPSEEK));
    assert_eq!(map.lookup("movie-critique"), Some(DEEPSEEK));
    assert_eq!(map.lookup(DEEPSEEK), Some(DEEPSEEK));
    assert_eq!(map.adapter_count(), 2);
}

#[test]
fn mounted_config_map_without_adapters_key_is_a_base_model_alone() {
    let dir = TempDir::new("mounted-bare");
    dir.write("m/baseModel", "solo");
    let map = AdapterMap::from_paths([dir.path().join("m")]).unwrap();
    assert_eq!(map.lookup("solo"), Some("solo"));
}

#[test]
fn directory_of_mounts_and_manifests_is_walked_and_dot_entries_ignored() {
    let dir = TempDir::new("tree");
    mount_config_map(
        &dir.path().join("mounts/deepseek"),
        "v1",
        DEEPSEEK,
        Some("[ski-resorts, movie-critique]"),
    );
    dir.write("manifests/llama.yaml", "kind: ConfigMap\ndata: {baseModel: meta-llama/Llama-3.1-8B-Instruct, adapters: '- food-review-1'}\n");
    dir.write("manifests/README.md", "not yaml: [ at all");
    dir.write(
        "manifests/.hidden.yaml",
        "kind: ConfigMap\ndata: {baseModel: hidden}\n",
    );
    dir.write(
        ".git/config.yaml",
        "kind: ConfigMap\ndata: {baseModel: hidden}\n",
    );
    let map = AdapterMap::from_paths([dir.path()]).unwrap();
    assert_scenario(&map);
    assert_eq!(map.lookup("hidden"), None);
}

#[test]
fn several_paths_are_merged() {
    let dir = TempDir::new("paths");
    let a = dir.write("a.yaml", "kind: ConfigMap\ndata: {baseModel: meta-llama/Llama-3.1-8B-Instruct, adapters: '- food-review-1'}\n");
    let b = dir.path().join("mount");
    mount_config_map(&b, "v1", DEEPSEEK, Some("- ski-resorts\n- movie-critique"));
    assert_scenario(&AdapterMap::from_paths([a, b]).unwrap());
}

#[test]
fn missing_base_model_is_an_error_naming_the_config_map() {
    for data in [
        "{adapters: '- a'}",
        "{baseModel: '   '}",
        "{baseModel: null}",
        "{}",
    ] {
        let text =
            format!("kind: ConfigMap\nmetadata: {{name: cm, namespace: ns}}\ndata: {data}\n");
        let error = AdapterMap::from_yaml_str(&text, "bad.yaml").unwrap_err();
        assert!(
            matches!(error, LoadError::MissingBaseModel { .. }),
            "{data}: {error:?}"
        );
        assert_eq!(
            error.to_string(),
            "bad.yaml document 1 (ConfigMap ns/cm): data.baseModel is missing or blank"
        );
    }
    let error = AdapterMap::from_yaml_str("kind: ConfigMap\nmetadata: {name: x}\n", "nodata.yaml")
        .unwrap_err();
    assert!(
        matches!(error, LoadError::MissingBaseModel { .. }),
        "{error:?}"
    );
    let error = AdapterMap::from_yaml_str("data: {baseModel: [a]}", "list-base.yaml").unwrap_err();
    assert!(
        matches!(error, LoadError::BaseModelNotAString { .. }),
        "{error:?}"
    );
}

#[test]
fn mounted_blank_base_model_is_an_error() {
    let dir = TempDir::new("mounted-blank");
    dir.write("m/baseModel", " \n");
    let error = AdapterMap::from_paths([dir.path().join("m")]).unwrap_err();
    assert!(
        matches!(error, LoadError::MissingBaseModel { .. }),
        "{error:?}"
    );
}

#[test]
fn adapters_that_are_not_a_list_of_strings_are_an_error() {
    for adapters in [
        "'just-a-string'",
        "'a: b'",
        "'- [nested]'",
        "'- {k: v}'",
        "'[unclosed'",
        "{k: v}",
    ] {
        let text = format!(
            "kind: ConfigMap\nmetadata: {{name: cm}}\ndata: {{baseModel: b, adapters: {adapters}}}\n"
        );
        let error = AdapterMap::from_yaml_str(&text, "bad.yaml").unwrap_err();
        assert!(
            matches!(error, LoadError::AdaptersNotAList { .. }),
            "{adapters}: {error:?}"
        );
        assert!(
            error
                .to_string()
                .starts_with("bad.yaml document 1 (ConfigMap cm): data.adapters"),
            "{error}"
        );
    }
}

#[test]
fn adapter_under_two_base_models_names_both_and_both_sources() {
    let dir = TempDir::new("conflict");
    dir.write("a.yaml", "kind: ConfigMap\nmetadata: {name: llama}\ndata: {baseModel: base-a, adapters: '[shared, only-a]'}\n");
    dir.write("b.yaml", "kind: ConfigMap\nmetadata: {name: deepseek}\ndata: {baseModel: base-b, adapters: '[shared]'}\n");
    let error = AdapterMap::from_paths([dir.path()]).unwrap_err();
    let LoadError::ConflictingBaseModels {
        adapter,
        first_base_model,
        first_origin,
        second_base_model,
        second_origin,
    } = &error
    else {
        panic!("expected a conflict, got {error:?}");
    };
    assert_eq!(adapter, "shared");
    assert_eq!(first_base_model, "base-a");
    assert_eq!(second_base_model, "base-b");
    assert_eq!(first_origin.path(), dir.path().join("a.yaml"));
    assert_eq!(first_origin.name(), Some("llama"));
    assert_eq!(second_origin.path(), dir.path().join("b.yaml"));
    assert_eq!(second_origin.name(), Some("deepseek"));
    let message = error.to_string();
    for needle in [
        "\"shared\"",
        "\"base-a\"",
        "\"base-b\"",
        "a.yaml",
        "b.yaml",
        "llama",
        "deepseek",
    ] {
        assert!(message.contains(needle), "{needle} missing from {message}");
    }
}

#[test]
fn adapter_named_like_another_base_model_is_an_error() {
    let text = "data: {baseModel: base-a, adapters: '[base-b]'}\n---\ndata: {baseModel: base-b}\n";
    let error = AdapterMap::from_yaml_str(text, "x.yaml").unwrap_err();
    assert!(
        matches!(error, LoadError::AdapterIsBaseModel { .. }),
        "{error:?}"
    );
    // An adapter listed under its own name as base is harmless.
    let map =
        AdapterMap::from_yaml_str("data: {baseModel: same, adapters: '[same]'}", "x").unwrap();
    assert_eq!(map.lookup("same"), Some("same"));
}

#[test]
fn invalid_yaml_and_non_objects_are_errors() {
    let error =
        AdapterMap::from_yaml_str("kind: ConfigMap\ndata: [unclosed\n", "broken.yaml").unwrap_err();
    assert!(matches!(error, LoadError::Yaml { .. }), "{error:?}");
    let error = AdapterMap::from_yaml_str("- a\n- b\n", "seq.yaml").unwrap_err();
    assert!(matches!(error, LoadError::NotAnObject { .. }), "{error:?}");
}

#[test]
fn missing_path_is_an_io_error_naming_it() {
    let dir = TempDir::new("missing");
    let path = dir.path().join("nope.yaml");
    let error = AdapterMap::from_paths([&path]).unwrap_err();
    assert!(matches!(error, LoadError::Io { .. }), "{error:?}");
    assert!(error.to_string().contains("nope.yaml"));
}

#[test]
fn file_over_the_size_limit_is_refused_and_at_the_limit_accepted() {
    let dir = TempDir::new("big");
    let head = "kind: ConfigMap\ndata: {baseModel: b}\n";
    let limit = bbr_adapters::MAX_FILE_BYTES as usize;
    let mut text = String::with_capacity(limit + 1);
    text.push_str(head);
    text.push('#');
    text.extend(std::iter::repeat_n('x', limit - text.len()));
    let at_limit = dir.write("at.yaml", &text);
    assert_eq!(
        AdapterMap::from_paths([&at_limit]).unwrap().lookup("b"),
        Some("b")
    );
    text.push('x');
    let over = dir.write("over.yaml", &text);
    let error = AdapterMap::from_paths([&over]).unwrap_err();
    assert!(matches!(error, LoadError::FileTooLarge { .. }), "{error:?}");
}
