//! rate-limiting (KONG.md §3.7). Placeholder until the plugin lands: building it fails, so a config using it
//! is refused rather than served without it.

use portico_common::plugins::rate_limiting::Config;

use super::{BuildEnv, Plugin};

/// The rate-limiting plugin.
#[derive(Debug)]
pub struct RateLimiting;

impl Plugin for RateLimiting {
    const NAME: &'static str = "rate-limiting";
    type Config = Config;

    fn build(_config: Config, _env: &BuildEnv<'_>) -> Result<Self, String> {
        Err("rate-limiting is not available in this build yet".into())
    }
}
