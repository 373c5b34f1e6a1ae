//! circuit-breaker (Portico's own). Placeholder until the plugin lands: building it fails, so a config using it
//! is refused rather than served without it.

use portico_common::plugins::circuit_breaker::Config;

use super::{BuildEnv, Plugin};

/// The circuit-breaker plugin.
#[derive(Debug)]
pub struct CircuitBreaker;

impl Plugin for CircuitBreaker {
    const NAME: &'static str = "circuit-breaker";
    type Config = Config;

    fn build(_config: Config, _env: &BuildEnv<'_>) -> Result<Self, String> {
        Err("circuit-breaker is not available in this build yet".into())
    }
}
