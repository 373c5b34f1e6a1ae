//! request-size-limiting (KONG.md §3.11). Placeholder until the plugin lands: building it fails, so a config using it
//! is refused rather than served without it.

use portico_common::plugins::request_size_limiting::Config;

use super::{BuildEnv, Plugin};

/// The request-size-limiting plugin.
#[derive(Debug)]
pub struct RequestSizeLimiting;

impl Plugin for RequestSizeLimiting {
    const NAME: &'static str = "request-size-limiting";
    type Config = Config;

    fn build(_config: Config, _env: &BuildEnv<'_>) -> Result<Self, String> {
        Err("request-size-limiting is not available in this build yet".into())
    }
}
