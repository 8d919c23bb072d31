//! Base model lookup: the name behind `x-gateway-base-model-name`.

use std::collections::HashMap;

use crate::extension::BaseModelName;

/// Where the layer looks up the base model of a model name (an adapter
/// gives its base model, a base model itself, an unknown name nothing).
///
/// The layer calls it once per routed request with the model name exactly
/// as the core extracted it, and sets the header from the returned value
/// (a clone of a [`BaseModelName`] built in advance: no copy per request).
/// Implementations must not block.
///
/// Implemented for a `HashMap<String, BaseModelName>` (a fixed map), and,
/// with the `adapters` feature, by `AdapterBaseModels`
/// over a reloading `bbr_adapters::AdapterStore`.
///
/// ```
/// use std::collections::HashMap;
/// use bbr_tower::{BaseModelName, BaseModels};
///
/// let base = BaseModelName::new("meta-llama/Llama-3.1-8B-Instruct")?;
/// let map = HashMap::from([
///     ("food-review-1".to_owned(), base.clone()),
///     ("meta-llama/Llama-3.1-8B-Instruct".to_owned(), base),
/// ]);
/// assert_eq!(map.base_model("food-review-1").unwrap().as_str(), "meta-llama/Llama-3.1-8B-Instruct");
/// assert!(map.base_model(" food-review-1").is_none(), "exact names only");
/// # Ok::<(), http::header::InvalidHeaderValue>(())
/// ```
pub trait BaseModels: Send + Sync + 'static {
    /// The base model of `model`, or `None` when the name is unknown.
    fn base_model(&self, model: &str) -> Option<BaseModelName>;
}

impl<S> BaseModels for HashMap<String, BaseModelName, S>
where
    S: std::hash::BuildHasher + Send + Sync + 'static,
{
    fn base_model(&self, model: &str) -> Option<BaseModelName> {
        self.get(model).cloned()
    }
}

#[cfg(feature = "adapters")]
pub use adapters::AdapterBaseModels;

#[cfg(feature = "adapters")]
mod adapters {
    use std::collections::HashMap;
    use std::sync::{Arc, PoisonError, RwLock};

    use bbr_adapters::{AdapterMap, AdapterStore};

    use super::BaseModels;
    use crate::extension::BaseModelName;

    /// [`BaseModels`] over an [`AdapterStore`] (feature `adapters`): the
    /// upstream ConfigMap format, reloaded while requests run.
    ///
    /// The header values are built once per map snapshot, the first time a
    /// request sees a new snapshot after a reload; every lookup after that
    /// clones a ready value. A base model name that cannot be a header value
    /// (the ConfigMap format does not restrict it) sets no header, like an
    /// unknown name.
    ///
    /// ```
    /// use bbr_adapters::{AdapterMap, AdapterStore};
    /// use bbr_tower::{AdapterBaseModels, BaseModels};
    ///
    /// let map = AdapterMap::from_yaml_str("data: {baseModel: base, adapters: '[lora]'}", "inline")?;
    /// let lookup = AdapterBaseModels::new(AdapterStore::from_map(map));
    /// assert_eq!(lookup.base_model("lora").unwrap().as_str(), "base");
    /// assert!(lookup.base_model("unknown").is_none());
    /// # Ok::<(), bbr_adapters::LoadError>(())
    /// ```
    #[derive(Debug)]
    pub struct AdapterBaseModels {
        store: AdapterStore,
        values: RwLock<Values>,
    }

    /// The header values of one snapshot.
    #[derive(Debug)]
    struct Values {
        snapshot: Arc<AdapterMap>,
        by_model: HashMap<Box<str>, BaseModelName>,
    }

    impl Values {
        fn of(snapshot: Arc<AdapterMap>) -> Self {
            let mut bases: HashMap<&str, Option<BaseModelName>> = HashMap::new();
            let mut by_model = HashMap::new();
            for (model, base) in snapshot.iter() {
                // One value per base model, shared by all its adapters.
                let value = bases
                    .entry(base)
                    .or_insert_with(|| BaseModelName::new(base).ok());
                if let Some(value) = value {
                    by_model.insert(model.into(), value.clone());
                }
            }
            drop(bases);
            Self { snapshot, by_model }
        }
    }

    impl AdapterBaseModels {
        /// Looks base models up in `store`'s current map.
        pub fn new(store: AdapterStore) -> Self {
            let values = RwLock::new(Values::of(store.snapshot()));
            Self { store, values }
        }

        /// The store.
        pub fn store(&self) -> &AdapterStore {
            &self.store
        }
    }

    impl BaseModels for AdapterBaseModels {
        fn base_model(&self, model: &str) -> Option<BaseModelName> {
            let current = self.store.snapshot();
            {
                let values = self.values.read().unwrap_or_else(PoisonError::into_inner);
                if Arc::ptr_eq(&values.snapshot, &current) {
                    return values.by_model.get(model).cloned();
                }
            }
            // A reload happened: build this snapshot's values once.
            let mut values = self.values.write().unwrap_or_else(PoisonError::into_inner);
            if !Arc::ptr_eq(&values.snapshot, &current) {
                *values = Values::of(current);
            }
            values.by_model.get(model).cloned()
        }
    }
}
