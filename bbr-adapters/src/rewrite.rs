//! Model aliases and weighted rewrites, in the upstream
//! `InferenceModelRewrite` format, reloaded like the adapter map.
//!
//! # The format
//!
//! ```yaml
//! apiVersion: inference.networking.x-k8s.io/v1alpha2
//! kind: InferenceModelRewrite
//! metadata: {name: food-review-rollout}
//! spec:
//!   poolRef: {name: vllm-llama3-8b-instruct}   # read, not used: one gateway
//!   rules:
//!   - matches:
//!     - model: {type: Exact, value: food-review}
//!     targets:
//!     - {modelRewrite: food-review-1, weight: 90}
//!     - {modelRewrite: food-review-2, weight: 10}
//!   - matches: [{model: {value: gpt-4o}}]        # an alias: one target
//!     targets: [{modelRewrite: llama-3-8b}]
//! ```
//!
//! - `apiVersion` must be `inference.networking.x-k8s.io/v1alpha2` (the
//!   CRD's only version) or absent; `kind` must be `InferenceModelRewrite`
//!   (`List` / `InferenceModelRewriteList` items are read too); documents
//!   of other kinds are skipped, empty documents too.
//! - A match is `model.value`, compared exactly (case-sensitive) with the
//!   requested name as the extractor decided it (trimmed, unescaped);
//!   `model.type` may only be `Exact`, the default. A rule matches when any
//!   of its matches does. A rule without `matches` matches every model (a
//!   catch-all; put it last).
//! - Targets: `modelRewrite` must be a valid model name (the core's
//!   [`validate_model_name`](bbr_core::validate_model_name), without
//!   spaces around it). Weights are 1..=1000000, set on every target or on
//!   none (then equal). A target may be the requested name itself (a
//!   canary that keeps part of the traffic on the original).
//! - Precedence: the first matching rule wins, in load order: paths in the
//!   order given, files in sorted order (see [the crate docs](crate) for
//!   files and mounted directories), documents and rules in file order.
//!
//! # Picking a target
//!
//! [`RewritePicker`] picks a target per request, with probability
//! weight / (sum of the rule's weights): at random by default, or, with
//! [`sticky_by`](RewritePicker::sticky_by), from a hash of a request
//! header's value, so the same value always gets the same target while
//! the weights stay the same (a request without that header is picked at
//! random). The hash is FNV-1a with a fixed mixing step, stable across
//! processes and releases, so every replica picks alike.
//!
//! ```
//! use bbr_adapters::rewrite::{RewritePicker, RewriteRules, RewriteStore};
//!
//! let rules = RewriteRules::from_yaml_str(r#"
//! kind: InferenceModelRewrite
//! spec:
//!   rules:
//!   - matches: [{model: {value: food-review}}]
//!     targets: [{modelRewrite: food-review-1, weight: 90}, {modelRewrite: food-review-2, weight: 10}]
//! "#, "inline")?;
//! let picker = RewritePicker::new(RewriteStore::from_rules(rules)).sticky_by("x-session-id");
//! let decision = picker.pick("food-review", Some(b"user-42")).unwrap();
//! assert!(decision.target().starts_with("food-review-"));
//! // Sticky: the same header value, the same target.
//! assert_eq!(picker.pick("food-review", Some(b"user-42")).unwrap().target(), decision.target());
//! assert_eq!(decision.rule(), "0");
//! assert!(picker.pick("other-model", None).is_none());
//! # Ok::<(), bbr_adapters::LoadError>(())
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::Deserialize;
use serde_norway::Value;

use crate::error::{LoadError, Origin, RewriteProblem, YamlError};
use crate::source::SourceFile;
use crate::store::{Reloading, Snapshot};
use crate::{Reload, ReloadEvent, ReloadWatcher};

/// The `apiVersion` of the upstream CRD.
pub const API_VERSION: &str = "inference.networking.x-k8s.io/v1alpha2";
/// The `kind` of the upstream resource.
pub const KIND: &str = "InferenceModelRewrite";
/// Largest weight the CRD allows.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// One target of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteTarget {
    model: Arc<str>,
    weight: u32,
}

impl RewriteTarget {
    /// The model name the request is rewritten to.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Its weight (1 when the rule sets none).
    pub fn weight(&self) -> u32 {
        self.weight
    }
}

/// One rule: what it matches and its weighted targets.
#[derive(Debug, Clone)]
pub struct RewriteRule {
    name: Arc<str>,
    matches: Vec<Arc<str>>,
    targets: Vec<RewriteTarget>,
    /// Running sums of the weights, for picking by a point in `0..total`.
    cumulative: Vec<u64>,
    origin: Origin,
}

impl RewriteRule {
    /// The rule's name for logs and metrics: `NAMESPACE/NAME/INDEX` of the
    /// resource it came from (`INDEX` in `spec.rules`), or the index alone
    /// for a resource without a name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model names it matches (empty: every model).
    pub fn matches(&self) -> impl Iterator<Item = &str> {
        self.matches.iter().map(|m| &**m)
    }

    /// Its targets, in order.
    pub fn targets(&self) -> &[RewriteTarget] {
        &self.targets
    }

    /// Where it was read.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The sum of its weights.
    pub fn total_weight(&self) -> u64 {
        *self.cumulative.last().expect("a rule has targets")
    }

    /// The target at `point` of the weight line, `point` taken modulo
    /// [`total_weight`](Self::total_weight): target `i` owns
    /// `weight[0] + … + weight[i-1] .. weight[0] + … + weight[i]`.
    ///
    /// ```
    /// # use bbr_adapters::rewrite::RewriteRules;
    /// let rules = RewriteRules::from_yaml_str("kind: InferenceModelRewrite\nspec: {rules: [{targets: [{modelRewrite: a, weight: 9}, {modelRewrite: b, weight: 1}]}]}", "inline")?;
    /// let rule = rules.find("anything").unwrap();
    /// assert_eq!(rule.target_at(8).model(), "a");
    /// assert_eq!(rule.target_at(9).model(), "b");
    /// # Ok::<(), bbr_adapters::LoadError>(())
    /// ```
    pub fn target_at(&self, point: u64) -> &RewriteTarget {
        let point = point % self.total_weight();
        let index = self.cumulative.partition_point(|&end| end <= point);
        &self.targets[index]
    }

    /// The target for a sticky key (a request header's value).
    pub fn target_for_key(&self, key: &[u8]) -> &RewriteTarget {
        // Multiply-shift maps the 64-bit hash onto the line without the
        // bias of a plain modulo.
        let point = (u128::from(sticky_hash(key)) * u128::from(self.total_weight())) >> 64;
        self.target_at(point as u64)
    }

    /// A target drawn with `rng`.
    pub fn target_random<R: Rng + ?Sized>(&self, rng: &mut R) -> &RewriteTarget {
        self.target_at(rng.random_range(0..self.total_weight()))
    }
}

/// FNV-1a over `key`, then the SplitMix64 finaliser (FNV alone leaves the
/// high bits poorly mixed for short keys).
fn sticky_hash(key: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// Every rule, in precedence order.
#[derive(Debug, Clone, Default)]
pub struct RewriteRules {
    rules: Vec<RewriteRule>,
    /// The first rule matching each name.
    by_model: HashMap<Arc<str>, usize>,
    /// The first rule without matches, if it comes before a name's rule.
    catch_all: Option<usize>,
}

impl RewriteRules {
    /// No rules: nothing is rewritten.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses one YAML text (one or more documents); `origin` names it in
    /// errors.
    pub fn from_yaml_str(text: &str, origin: impl AsRef<Path>) -> Result<Self, LoadError> {
        let mut rules = Vec::new();
        parse_manifest(text, origin.as_ref(), &mut rules)?;
        Ok(Self::from_rules(rules))
    }

    /// Loads rules from files or directories, as [`RewriteStore::load`].
    pub fn from_paths<I, P>(paths: I) -> Result<Self, LoadError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<Path>,
    {
        let mut files = Vec::new();
        for path in paths {
            files.extend(crate::source::collect(path.as_ref())?);
        }
        Self::build(&files)
    }

    fn from_rules(rules: Vec<RewriteRule>) -> Self {
        let mut by_model = HashMap::new();
        let mut catch_all = None;
        for (index, rule) in rules.iter().enumerate() {
            if rule.matches.is_empty() {
                catch_all.get_or_insert(index);
            }
            for name in &rule.matches {
                by_model.entry(name.clone()).or_insert(index);
            }
        }
        Self {
            rules,
            by_model,
            catch_all,
        }
    }

    /// The first rule matching `model`.
    pub fn find(&self, model: &str) -> Option<&RewriteRule> {
        let named = self.by_model.get(model).copied();
        let index = match (named, self.catch_all) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(&self.rules[index])
    }

    /// Every rule, in precedence order.
    pub fn rules(&self) -> &[RewriteRule] {
        &self.rules
    }

    /// No rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

impl Snapshot for RewriteRules {
    fn build(files: &[SourceFile]) -> Result<Self, LoadError> {
        let mut rules = Vec::new();
        for file in files {
            // A mounted adapter ConfigMap (`baseModel` key) is not a rewrite
            // source; only manifests are.
            if let SourceFile::Manifest { path, text } = file {
                let text = std::str::from_utf8(text).map_err(|_| LoadError::Yaml {
                    origin: Origin::new(path),
                    source: YamlError(<serde_norway::Error as serde::de::Error>::custom(
                        "file is not utf-8",
                    )),
                })?;
                parse_manifest(text, path, &mut rules)?;
            }
        }
        Ok(Self::from_rules(rules))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecDoc {
    rules: Vec<RuleDoc>,
}

#[derive(Debug, Deserialize)]
struct RuleDoc {
    #[serde(default)]
    matches: Vec<MatchDoc>,
    #[serde(default)]
    targets: Vec<TargetDoc>,
}

#[derive(Debug, Deserialize)]
struct MatchDoc {
    model: ModelMatchDoc,
}

#[derive(Debug, Deserialize)]
struct ModelMatchDoc {
    #[serde(rename = "type")]
    kind: Option<String>,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TargetDoc {
    model_rewrite: String,
    weight: Option<i64>,
}

fn parse_manifest(text: &str, path: &Path, out: &mut Vec<RewriteRule>) -> Result<(), LoadError> {
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let origin = Origin::new(path).with_document(index + 1);
        let value = Value::deserialize(document).map_err(|source| LoadError::Yaml {
            origin: origin.clone(),
            source: YamlError(source),
        })?;
        visit(&value, &origin, true, out)?;
    }
    Ok(())
}

fn visit(
    value: &Value,
    origin: &Origin,
    top: bool,
    out: &mut Vec<RewriteRule>,
) -> Result<(), LoadError> {
    match value {
        Value::Null => return Ok(()),
        Value::Mapping(_) => {}
        _ => {
            return Err(LoadError::NotAnObject {
                origin: origin.clone(),
            });
        }
    }
    match value.get("kind").and_then(Value::as_str) {
        Some("List" | "InferenceModelRewriteList") if top => {
            if let Some(Value::Sequence(items)) = value.get("items") {
                for item in items {
                    visit(item, origin, false, out)?;
                }
            }
            Ok(())
        }
        Some(KIND) => parse_resource(value, origin, out),
        // Other objects in the same manifests.
        Some(_) => Ok(()),
        None => Err(LoadError::NotAnObject {
            origin: origin.clone(),
        }),
    }
}

fn parse_resource(
    object: &Value,
    origin: &Origin,
    out: &mut Vec<RewriteRule>,
) -> Result<(), LoadError> {
    let metadata = object.get("metadata");
    let field = |key| {
        metadata
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let name = match (field("namespace"), field("name")) {
        (Some(namespace), Some(name)) => Some(format!("{namespace}/{name}")),
        (None, name) => name,
        (Some(_), None) => None,
    };
    let origin = origin.clone().with_name(name.clone());
    let fail = |problem| LoadError::Rewrite {
        origin: origin.clone(),
        problem,
    };
    match object.get("apiVersion").and_then(Value::as_str) {
        None | Some(API_VERSION) => {}
        Some(other) => {
            return Err(fail(RewriteProblem::UnsupportedApiVersion(
                other.to_owned(),
            )));
        }
    }
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
    let spec = SpecDoc::deserialize(spec)
        .map_err(|source| fail(RewriteProblem::Shape(YamlError(source))))?;
    let limits = bbr_core::Limits::new();
    let valid =
        |name: &str| bbr_core::validate_model_name(name.as_bytes(), &limits).ok() == Some(name);
    for (index, rule) in spec.rules.into_iter().enumerate() {
        let mut matches = Vec::with_capacity(rule.matches.len());
        for m in rule.matches {
            if let Some(kind) = m.model.kind.filter(|kind| kind != "Exact") {
                return Err(fail(RewriteProblem::UnsupportedMatchType {
                    rule: index,
                    kind,
                }));
            }
            if !valid(&m.model.value) {
                return Err(fail(RewriteProblem::InvalidMatch {
                    rule: index,
                    value: m.model.value,
                }));
            }
            matches.push(Arc::from(m.model.value));
        }
        if rule.targets.is_empty() {
            return Err(fail(RewriteProblem::NoTargets { rule: index }));
        }
        let weighted = rule.targets.iter().filter(|t| t.weight.is_some()).count();
        if weighted != 0 && weighted != rule.targets.len() {
            return Err(fail(RewriteProblem::PartialWeights { rule: index }));
        }
        let mut targets = Vec::with_capacity(rule.targets.len());
        let mut cumulative = Vec::with_capacity(rule.targets.len());
        let mut total = 0u64;
        for target in rule.targets {
            if !valid(&target.model_rewrite) {
                return Err(fail(RewriteProblem::InvalidTarget {
                    rule: index,
                    target: target.model_rewrite,
                }));
            }
            let weight = match target.weight {
                None => 1,
                Some(w) if (1..=i64::from(MAX_WEIGHT)).contains(&w) => w as u32,
                Some(weight) => {
                    return Err(fail(RewriteProblem::WeightOutOfRange {
                        rule: index,
                        weight,
                    }));
                }
            };
            total += u64::from(weight);
            cumulative.push(total);
            targets.push(RewriteTarget {
                model: Arc::from(target.model_rewrite),
                weight,
            });
        }
        out.push(RewriteRule {
            name: Arc::from(match &name {
                Some(name) => format!("{name}/{index}"),
                None => index.to_string(),
            }),
            matches,
            targets,
            cumulative,
            origin: origin.clone(),
        });
    }
    Ok(())
}

/// The current [`RewriteRules`], reloaded from their paths by the same
/// machinery as [`AdapterStore`](crate::AdapterStore) (polling, byte
/// comparison, the `..data` link of a mounted ConfigMap resolved once per
/// read, a new set swapped in only when everything loads cleanly).
/// Lookups are lock-free. Cloning is cheap; clones share the rules.
#[derive(Debug, Clone)]
pub struct RewriteStore {
    inner: Reloading<RewriteRules>,
}

impl RewriteStore {
    /// Loads `paths` (files of YAML documents, or directories of them) once;
    /// the first load must succeed.
    pub fn load<I, P>(paths: I) -> Result<Self, LoadError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<Path>,
    {
        Ok(Self {
            inner: Reloading::load(paths)?,
        })
    }

    /// A store holding fixed rules (never reloaded).
    pub fn from_rules(rules: RewriteRules) -> Self {
        Self {
            inner: Reloading::fixed(rules),
        }
    }

    /// The current rules.
    pub fn snapshot(&self) -> Arc<RewriteRules> {
        self.inner.snapshot()
    }

    /// The configured paths.
    pub fn paths(&self) -> &[PathBuf] {
        self.inner.paths()
    }

    /// Re-reads the paths now (see [`AdapterStore::reload`](crate::AdapterStore::reload)).
    pub fn reload(&self) -> Result<Reload, Arc<LoadError>> {
        self.inner.reload()
    }

    /// Successful reloads that swapped in new rules.
    pub fn reload_count(&self) -> u64 {
        self.inner.reload_count()
    }

    /// Reloads that failed (each distinct failing content counted once).
    pub fn failed_reload_count(&self) -> u64 {
        self.inner.failed_reload_count()
    }

    /// The error of the latest reload attempt, if it failed.
    pub fn last_error(&self) -> Option<Arc<LoadError>> {
        self.inner.last_error()
    }

    /// Polls the paths every `interval` on a std thread (see
    /// [`AdapterStore::watch`](crate::AdapterStore::watch)).
    pub fn watch(&self, interval: Duration) -> std::io::Result<ReloadWatcher> {
        self.inner.watch_with(interval, |_| {})
    }

    /// Like [`watch`](Self::watch), calling `on_poll` with every poll's outcome.
    pub fn watch_with<F>(&self, interval: Duration, on_poll: F) -> std::io::Result<ReloadWatcher>
    where
        F: FnMut(&Result<Reload, Arc<LoadError>>) + Send + 'static,
    {
        self.inner.watch_with(interval, on_poll)
    }

    /// Like [`watch`](Self::watch), calling `on_event` once per change of
    /// the files (see [`AdapterStore::watch_events`](crate::AdapterStore::watch_events)).
    pub fn watch_events<F>(&self, interval: Duration, on_event: F) -> std::io::Result<ReloadWatcher>
    where
        F: FnMut(ReloadEvent) + Send + 'static,
    {
        self.inner.watch_events(interval, on_event)
    }
}

/// What the picker decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteDecision {
    rule: Arc<str>,
    target: Arc<str>,
}

impl RewriteDecision {
    /// The rule that matched ([`RewriteRule::name`]).
    pub fn rule(&self) -> &str {
        &self.rule
    }

    /// The model to send instead.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The target, shared.
    pub fn target_shared(&self) -> Arc<str> {
        self.target.clone()
    }

    /// The rule's name, shared.
    pub fn rule_shared(&self) -> Arc<str> {
        self.rule.clone()
    }
}

/// Picks a target per request from the current rules: at random, or
/// sticky by a named header (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct RewritePicker {
    store: RewriteStore,
    sticky_header: Option<Arc<str>>,
}

impl RewritePicker {
    /// Random picks from `store`'s rules.
    pub fn new(store: RewriteStore) -> Self {
        Self {
            store,
            sticky_header: None,
        }
    }

    /// Picks by a hash of this request header's value instead (names are
    /// case-insensitive; the adapter passes the value).
    #[must_use]
    pub fn sticky_by(mut self, header: &str) -> Self {
        self.sticky_header = Some(Arc::from(header.to_ascii_lowercase()));
        self
    }

    /// The sticky header, lowercase, when set.
    pub fn sticky_header(&self) -> Option<&str> {
        self.sticky_header.as_deref()
    }

    /// The store the rules come from.
    pub fn store(&self) -> &RewriteStore {
        &self.store
    }

    /// The decision for a request for `model`, whose sticky header (when
    /// one is configured) has `sticky_value`; `None` when no rule matches.
    /// Without a sticky header, or without its value, the pick is random.
    pub fn pick(&self, model: &str, sticky_value: Option<&[u8]>) -> Option<RewriteDecision> {
        let rules = self.store.inner.current();
        let rule = rules.find(model)?;
        let target = match (self.sticky_header.is_some(), sticky_value) {
            (true, Some(value)) => rule.target_for_key(value),
            _ => rule.target_random(&mut rand::rng()),
        };
        Some(RewriteDecision {
            rule: rule.name.clone(),
            target: target.model.clone(),
        })
    }
}

#[cfg(test)]
#[path = "rewrite_tests.rs"]
mod tests;
