//! The reference scenario's model-server pools (design.md, "The reference
//! scenario"; the seed manifests `sim-deployment.yaml` and
//! `sim-deployment-1.yaml`), ready to start in-process.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), bbr_model_sim::Error> {
//! let pools = bbr_model_sim::scenario::reference_pools();
//! assert_eq!(pools[0].name, "vllm-llama3-8b-instruct");
//! assert_eq!(
//!     pools[0].models(),
//!     ["meta-llama/Llama-3.1-8B-Instruct", "food-review-1", "food-review-2"]
//! );
//! let replicas = pools[1].spawn().await?;
//! assert_eq!(replicas.len(), 1);
//! assert_eq!(replicas[0].pod_name(), "vllm-deepseek-r1-0");
//! # Ok(())
//! # }
//! ```

use crate::config::SimConfig;
use crate::error::Error;
use crate::{SimHandle, spawn};

/// One pool of identical simulated model servers (a Deployment behind an
/// InferencePool).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSpec {
    /// Pool (and Deployment) name, e.g. `vllm-llama3-8b-instruct`.
    pub name: String,
    /// How many replicas.
    pub replicas: usize,
    /// The configuration every replica gets (pod names are set per replica).
    pub config: SimConfig,
}

impl PoolSpec {
    /// Every model name the pool serves: served names, then LoRAs.
    pub fn models(&self) -> Vec<String> {
        let mut models = self.config.served_names();
        models.extend(self.config.lora_modules.iter().map(|l| l.name.clone()));
        models
    }

    /// Starts the replicas on `127.0.0.1` with free ports; replica `i` is
    /// pod `<name>-<i>` (unless the config names the pod already).
    pub async fn spawn(&self) -> Result<Vec<SimHandle>, Error> {
        let mut handles = Vec::with_capacity(self.replicas);
        for i in 0..self.replicas {
            let mut config = self.config.clone();
            if config.pod_name.is_none() {
                config.pod_name = Some(format!("{}-{i}", self.name));
            }
            // Replicas of one seed still differ, as real pods would.
            config.seed = config.seed.wrapping_add(i as u64);
            handles.push(spawn(config).await?);
        }
        Ok(handles)
    }
}

/// The two pools of the reference scenario, with the seed manifests' flags
/// (`--max-loras 2`, random mode, zero latency):
/// - `vllm-llama3-8b-instruct`: 3 replicas of `meta-llama/Llama-3.1-8B-Instruct`
///   with LoRAs `food-review-1` and `food-review-2` (the guide's scenario
///   extended: clients ask for `food-review`, a model rewrite splits it
///   over the two adapters);
/// - `vllm-deepseek-r1`: 1 replica of `deepseek/vllm-deepseek-r1` with LoRAs
///   `ski-resorts` and `movie-critique`.
pub fn reference_pools() -> Vec<PoolSpec> {
    vec![
        PoolSpec {
            name: "vllm-llama3-8b-instruct".to_owned(),
            replicas: 3,
            config: SimConfig::new("meta-llama/Llama-3.1-8B-Instruct")
                .loras(["food-review-1", "food-review-2"])
                .max_loras(2),
        },
        PoolSpec {
            name: "vllm-deepseek-r1".to_owned(),
            replicas: 1,
            config: SimConfig::new("deepseek/vllm-deepseek-r1")
                .loras(["ski-resorts", "movie-critique"])
                .max_loras(2),
        },
    ]
}
