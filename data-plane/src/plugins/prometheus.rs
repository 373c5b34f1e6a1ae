//! prometheus (KONG.md §3.14): Portico records its per-request metrics for every request, so
//! the plugin has nothing to do on the request path. Its one effect is `per_consumer`, read
//! once per config when the metrics slots of the routes are built (`metrics.rs`,
//! `RouteSlot::per_consumer`): requests of a route whose chain has it are also counted by
//! consumer.

use portico_common::plugins::prometheus::Config;

use super::{BuildEnv, Plugin};

/// The prometheus plugin.
#[derive(Debug)]
pub struct Prometheus {
    per_consumer: bool,
}

impl Prometheus {
    /// Requests of the routes this config applies to are also counted by consumer.
    pub fn per_consumer(&self) -> bool {
        self.per_consumer
    }
}

impl Plugin for Prometheus {
    const NAME: &'static str = "prometheus";
    type Config = Config;

    fn build(config: Config, _env: &BuildEnv<'_>) -> Result<Self, String> {
        Ok(Prometheus {
            per_consumer: config.per_consumer,
        })
    }
}
