//! `GET /v1/models`: every model of every pool.
//!
//! Pools whose models the config names (`models:` or `simulate:`) are listed
//! from the config: the base model (`parent: null`) and its adapters
//! (`parent` = the base). Other pools are asked: the gateway fetches
//! `/v1/models` from one endpoint of each and merges the `data` arrays
//! (a pool that does not answer is left out and logged).

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::config::{Config, PoolModels};
use crate::pools::Pool;

/// The models known per pool, and how to ask the others.
#[derive(Debug, Clone)]
pub struct ModelCatalog {
    declared: Vec<(String, PoolModels)>,
    to_ask: Vec<Arc<Pool>>,
    client: Client<HttpConnector, Empty<bytes::Bytes>>,
    created: u64,
}

impl ModelCatalog {
    /// From the config; `pools` are the built pools (for those to ask).
    pub fn new(config: &Config, pools: &[Arc<Pool>]) -> Self {
        let mut declared = Vec::new();
        let mut to_ask = Vec::new();
        for pool in &config.pools {
            let models = pool.models.clone().or_else(|| {
                pool.simulate.as_ref().map(|s| PoolModels {
                    base: s.model.clone(),
                    adapters: s.lora_modules.clone(),
                })
            });
            match models {
                Some(models) => declared.push((pool.name.clone(), models)),
                None => {
                    if let Some(built) = pools.iter().find(|p| p.name() == pool.name) {
                        to_ask.push(Arc::clone(built));
                    }
                }
            }
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            declared,
            to_ask,
            client: Client::builder(TokioExecutor::new()).build(connector),
            created,
        }
    }

    /// The OpenAI `list` object.
    pub async fn list(&self) -> Value {
        let mut data = Vec::new();
        for (_pool, models) in &self.declared {
            data.push(self.entry(&models.base, None));
            for adapter in &models.adapters {
                data.push(self.entry(adapter, Some(&models.base)));
            }
        }
        for pool in &self.to_ask {
            match self.ask(pool).await {
                Ok(entries) => data.extend(entries),
                Err(reason) => tracing::warn!(pool = pool.name(), %reason, "cannot list models"),
            }
        }
        json!({"object": "list", "data": data})
    }

    fn entry(&self, id: &str, parent: Option<&str>) -> Value {
        json!({
            "id": id,
            "object": "model",
            "created": self.created,
            "owned_by": "vllm",
            "root": id,
            "parent": parent,
        })
    }

    async fn ask(&self, pool: &Pool) -> Result<Vec<Value>, String> {
        let endpoint = pool.pick();
        let uri = format!("http://{}/v1/models", endpoint.endpoint().authority());
        let request = http::Request::get(uri)
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(Duration::from_secs(5), self.client.request(request))
            .await
            .map_err(|_| "timeout".to_owned())?
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let limited = http_body_util::Limited::new(response.into_body(), 4 << 20);
        let bytes = limited
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        match value.get("data") {
            Some(Value::Array(entries)) => Ok(entries.clone()),
            _ => Err("no `data` array".to_owned()),
        }
    }
}
