//! prometheus: Kong's per-request metrics switches (KONG.md §3.14;
//! K:kong/plugins/prometheus/schema.lua).
//!
//! Kong's fields and defaults, all `false`. Portico records its per-request metrics for every
//! request whether or not the plugin is configured (a documented difference: the data plane's
//! `--metrics` switch is what turns them off), so the plugin only adds what Kong's opt-ins add
//! and Portico does not do by default:
//! - `per_consumer`: a `consumer` label on the by-consumer request and rate-limit families for
//!   the routes whose chain has the plugin (ARCHITECTURE.md, "Metrics").
//!
//! The other switches are accepted so a Kong config loads unchanged: Portico's status-code,
//! latency, bandwidth and upstream-health metrics are always on, and it has no AI or Wasm
//! metrics to turn on.

use serde::{Deserialize, Serialize};

use super::de;
use super::fields::Fields;
use crate::error::ConfigIssue;

/// prometheus's config, with Kong's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Label the by-consumer families with the consumer (username, or id when it has none).
    #[serde(deserialize_with = "de::boolean")]
    pub per_consumer: bool,
    #[serde(deserialize_with = "de::boolean")]
    pub status_code_metrics: bool,
    #[serde(deserialize_with = "de::boolean")]
    pub latency_metrics: bool,
    #[serde(deserialize_with = "de::boolean")]
    pub bandwidth_metrics: bool,
    #[serde(deserialize_with = "de::boolean")]
    pub upstream_health_metrics: bool,
    #[serde(deserialize_with = "de::boolean")]
    pub ai_metrics: bool,
    #[serde(deserialize_with = "de::boolean")]
    pub wasm_metrics: bool,
}

pub(super) fn parse(mut f: Fields) -> Result<Config, Vec<ConfigIssue>> {
    let config = f.decode::<Config>();
    f.finish(config)
}
