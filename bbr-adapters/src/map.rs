//! The immutable adapter map and its builder.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use crate::error::{LoadError, Origin};
use crate::source;

/// An immutable snapshot: model name → base model.
///
/// - an adapter (LoRA) name gives its base model;
/// - a base model gives itself;
/// - an unknown name gives `None`.
///
/// Lookups are exact: the name is looked up as given, byte for byte. What a
/// model name is (surrounding spaces and tabs removed, no control
/// characters) is decided once, by the extractor in `bbr-core`; the map
/// trims only the names it loads from ConfigMaps. Build one with
/// [`AdapterMap::from_paths`], [`AdapterMap::from_yaml_str`] or
/// [`AdapterMapBuilder`]; share it through an
/// [`AdapterStore`](crate::AdapterStore) to reload it.
///
/// ```
/// use bbr_adapters::AdapterMap;
///
/// let map = AdapterMap::from_yaml_str(
///     "
/// apiVersion: v1
/// kind: ConfigMap
/// metadata: {name: llama-adapters}
/// data:
///   baseModel: meta-llama/Llama-3.1-8B-Instruct
///   adapters: |
///     - food-review-1
/// ",
///     "inline",
/// )?;
/// assert_eq!(map.lookup("food-review-1"), Some("meta-llama/Llama-3.1-8B-Instruct"));
/// assert_eq!(map.lookup(" food-review-1"), None);
/// assert_eq!(map.lookup("meta-llama/Llama-3.1-8B-Instruct"), Some("meta-llama/Llama-3.1-8B-Instruct"));
/// assert_eq!(map.lookup("unknown"), None);
/// # Ok::<(), bbr_adapters::LoadError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct AdapterMap {
    /// Every known name (adapters and base models) → its base model.
    names: HashMap<Box<str>, Arc<str>>,
    /// The base models, sorted.
    base_models: BTreeSet<Arc<str>>,
    adapter_count: usize,
}

impl AdapterMap {
    /// An empty map: every lookup gives `None`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads every ConfigMap found at `paths` (files of YAML manifests,
    /// mounted ConfigMap directories, or directories holding either; see the
    /// crate docs for the rules).
    pub fn from_paths<I, P>(paths: I) -> Result<Self, LoadError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<Path>,
    {
        let mut builder = AdapterMapBuilder::new();
        for path in paths {
            builder.add_path(path.as_ref())?;
        }
        builder.build()
    }

    /// Loads the ConfigMaps in one YAML text (one or more documents, `kind:
    /// List` allowed). `origin` names the text in errors.
    pub fn from_yaml_str(text: &str, origin: impl AsRef<Path>) -> Result<Self, LoadError> {
        let mut builder = AdapterMapBuilder::new();
        builder.add_yaml_str(text, origin.as_ref())?;
        builder.build()
    }

    /// The base model for exactly `model` (not trimmed): an adapter's base,
    /// a base model itself, or `None` for an unknown name.
    #[inline]
    pub fn lookup(&self, model: &str) -> Option<&str> {
        self.names.get(model).map(|base| &**base)
    }

    /// Like [`lookup`](Self::lookup), as a shared string (no copy).
    #[inline]
    pub fn lookup_shared(&self, model: &str) -> Option<Arc<str>> {
        self.names.get(model).cloned()
    }

    /// True when exactly `model` is a known base model.
    pub fn is_base_model(&self, model: &str) -> bool {
        self.base_models.contains(model)
    }

    /// Every known name (adapters and base models) with its base model, in
    /// no particular order: for a caller that prepares its own values once
    /// per snapshot (the tower layer builds header values).
    ///
    /// ```
    /// let map = bbr_adapters::AdapterMap::from_yaml_str("data: {baseModel: b, adapters: '[a]'}", "inline")?;
    /// let mut names: Vec<_> = map.iter().collect();
    /// names.sort();
    /// assert_eq!(names, [("a", "b"), ("b", "b")]);
    /// # Ok::<(), bbr_adapters::LoadError>(())
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.names.iter().map(|(name, base)| (&**name, &**base))
    }

    /// The base models, sorted.
    pub fn base_models(&self) -> impl Iterator<Item = &str> {
        self.base_models.iter().map(|base| &**base)
    }

    /// Number of distinct adapter names (a base model is not counted).
    pub fn adapter_count(&self) -> usize {
        self.adapter_count
    }

    /// True when the map knows no name at all.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Builds an [`AdapterMap`] from several sources, checking that no adapter
/// is listed under two base models.
///
/// ```
/// use bbr_adapters::{AdapterMapBuilder, Origin};
///
/// let mut builder = AdapterMapBuilder::new();
/// builder.insert("deepseek/vllm-deepseek-r1", ["ski-resorts", "movie-critique"], Origin::new("code"))?;
/// let map = builder.build()?;
/// assert_eq!(map.lookup("ski-resorts"), Some("deepseek/vllm-deepseek-r1"));
/// assert_eq!(map.adapter_count(), 2);
/// # Ok::<(), bbr_adapters::LoadError>(())
/// ```
#[derive(Debug, Default)]
pub struct AdapterMapBuilder {
    /// Base model → where it was first declared.
    base_models: BTreeMap<Arc<str>, Origin>,
    /// Adapter → (base model, where it was first listed).
    adapters: HashMap<Box<str>, (Arc<str>, Origin)>,
}

impl AdapterMapBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one base model and its adapters. Names are trimmed; blank adapter
    /// names are skipped; a blank base model is
    /// [`LoadError::MissingBaseModel`]. Several calls may name the same base
    /// model. An adapter already listed under another base model is
    /// [`LoadError::ConflictingBaseModels`].
    pub fn insert<I, S>(
        &mut self,
        base_model: &str,
        adapters: I,
        origin: Origin,
    ) -> Result<(), LoadError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let base_model = base_model.trim();
        if base_model.is_empty() {
            return Err(LoadError::MissingBaseModel { origin });
        }
        let base: Arc<str> = match self.base_models.get_key_value(base_model) {
            Some((existing, _)) => existing.clone(),
            None => {
                let base: Arc<str> = Arc::from(base_model);
                self.base_models.insert(base.clone(), origin.clone());
                base
            }
        };
        for adapter in adapters {
            let adapter = adapter.as_ref().trim();
            if adapter.is_empty() {
                continue;
            }
            match self.adapters.get(adapter) {
                Some((existing, _)) if **existing == *base => {}
                Some((existing, first_origin)) => {
                    return Err(LoadError::ConflictingBaseModels {
                        adapter: adapter.to_owned(),
                        first_base_model: existing.to_string(),
                        first_origin: first_origin.clone(),
                        second_base_model: base.to_string(),
                        second_origin: origin,
                    });
                }
                None => {
                    self.adapters
                        .insert(adapter.into(), (base.clone(), origin.clone()));
                }
            }
        }
        Ok(())
    }

    /// Adds the ConfigMaps of one YAML text; `origin` names it in errors.
    pub fn add_yaml_str(&mut self, text: &str, origin: &Path) -> Result<(), LoadError> {
        for config in source::parse_manifest(text, origin)? {
            self.insert(&config.base_model, &config.adapters, config.origin)?;
        }
        Ok(())
    }

    /// Adds everything at `path`: a manifest file, a mounted ConfigMap
    /// directory, or a directory holding either.
    pub fn add_path(&mut self, path: &Path) -> Result<(), LoadError> {
        for file in source::collect(path)? {
            self.add_source(&file)?;
        }
        Ok(())
    }

    pub(crate) fn add_source(&mut self, file: &source::SourceFile) -> Result<(), LoadError> {
        for config in source::parse_source(file)? {
            self.insert(&config.base_model, &config.adapters, config.origin)?;
        }
        Ok(())
    }

    /// Checks the whole set (an adapter may not carry the name of another
    /// base model) and freezes it.
    pub fn build(self) -> Result<AdapterMap, LoadError> {
        let mut names: HashMap<Box<str>, Arc<str>> =
            HashMap::with_capacity(self.adapters.len() + self.base_models.len());
        for base in self.base_models.keys() {
            names.insert((**base).into(), base.clone());
        }
        // Sorted so the reported conflict does not depend on hash order.
        let mut adapters: Vec<_> = self.adapters.into_iter().collect();
        adapters.sort_by(|a, b| a.0.cmp(&b.0));
        let adapter_count = adapters.len();
        for (adapter, (base, origin)) in adapters {
            if let Some((other_base, base_origin)) = self.base_models.get_key_value(&*adapter)
                && **other_base != *base
            {
                return Err(LoadError::AdapterIsBaseModel {
                    adapter: adapter.into_string(),
                    base_model: base.to_string(),
                    adapter_origin: origin,
                    base_model_origin: base_origin.clone(),
                });
            }
            names.insert(adapter, base);
        }
        let base_models = self.base_models.into_keys().collect();
        Ok(AdapterMap {
            names,
            base_models,
            adapter_count,
        })
    }
}
