//! Simulated pools: `bbr-model-sim` servers on loopback for pools
//! configured with `simulate:`.
//!
//! Each replica is a real HTTP server on `127.0.0.1:0`; its pod name (the
//! `x-inference-pod` header) is `<pool>-<replica index>`, as a Deployment's
//! pods would be named after it.

use std::collections::HashMap;

use bbr_model_sim::{SimConfig, SimHandle};

use crate::config::{Config, SimulateConfig};

/// A simulated model server that could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the simulated pool `{pool}`")]
pub struct SimulatorError {
    /// The pool.
    pub pool: String,
    /// Why.
    #[source]
    pub source: bbr_model_sim::Error,
}

/// The running simulated model servers, per pool.
#[derive(Debug, Default)]
pub struct Simulators {
    pools: Vec<(String, Vec<SimHandle>)>,
}

/// The simulator configuration of one replica of a `simulate:` pool.
pub fn sim_config(pool: &str, replica: usize, spec: &SimulateConfig) -> SimConfig {
    let mut config = SimConfig::new(spec.model.clone())
        .loras(spec.lora_modules.iter().cloned())
        .max_loras(spec.max_loras)
        .time_to_first_token(spec.time_to_first_token)
        .inter_token_latency(spec.inter_token_latency)
        .pod_name(format!("{pool}-{replica}"));
    if let Some(mode) = spec.mode {
        config = config.mode(mode);
    }
    if let Some(n) = spec.max_num_seqs {
        config = config.max_num_seqs(n);
    }
    if let Some(n) = spec.max_model_len {
        config = config.max_model_len(n);
    }
    if let Some(n) = spec.max_request_body_bytes {
        config = config.max_request_body_bytes(usize::try_from(n).unwrap_or(usize::MAX));
    }
    if let Some(seed) = spec.seed {
        // Replicas differ like real pods do.
        config = config.seed(seed.wrapping_add(replica as u64));
    }
    config
}

impl Simulators {
    /// Starts every `simulate:` pool of the config.
    pub async fn start(config: &Config) -> Result<Self, SimulatorError> {
        let mut pools = Vec::new();
        for pool in &config.pools {
            let Some(spec) = &pool.simulate else { continue };
            let mut handles = Vec::with_capacity(spec.replicas);
            for replica in 0..spec.replicas {
                let sim = sim_config(&pool.name, replica, spec);
                let handle = bbr_model_sim::spawn(sim)
                    .await
                    .map_err(|source| SimulatorError {
                        pool: pool.name.clone(),
                        source,
                    })?;
                handles.push(handle);
            }
            pools.push((pool.name.clone(), handles));
        }
        Ok(Self { pools })
    }

    /// Endpoints (`127.0.0.1:port`) per simulated pool.
    pub fn endpoints(&self) -> HashMap<String, Vec<String>> {
        self.pools
            .iter()
            .map(|(pool, handles)| {
                (
                    pool.clone(),
                    handles.iter().map(|h| h.addr().to_string()).collect(),
                )
            })
            .collect()
    }

    /// The running servers of a pool (counters, pod names).
    pub fn pool(&self, name: &str) -> &[SimHandle] {
        self.pools
            .iter()
            .find(|(pool, _)| pool == name)
            .map_or(&[], |(_, handles)| handles.as_slice())
    }

    /// Stops every server, letting requests in flight finish.
    pub async fn shutdown(self) {
        for (_, handles) in self.pools {
            for handle in handles {
                if let Err(error) = handle.shutdown().await {
                    tracing::warn!(%error, "simulated server stopped with an error");
                }
            }
        }
    }
}
