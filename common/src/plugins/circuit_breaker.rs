//! circuit-breaker (Portico's own; Kong has only the passive health checks of KONG.md §1.5,
//! which take a *target* out of a balancer and do nothing for a service behind one host).
//!
//! Per service: `threshold` failures within `window_size` seconds open the circuit; while
//! open, requests are answered at once with `error_status`/`error_message` instead of
//! reaching the upstream; after `timeout` seconds one probe request goes through, and its
//! outcome closes the circuit or opens it again.

use serde::{Deserialize, Serialize};

use super::de;
use super::fields::{Fields, LENGTH_MIN};
use crate::error::ConfigIssue;

/// circuit-breaker's config, with Portico's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Failures within `window_size` that open the circuit.
    #[serde(deserialize_with = "de::int_in::<_, u32, 1, 100000>")]
    pub threshold: u32,
    /// Seconds a failure is remembered (a sliding window).
    #[serde(deserialize_with = "de::int_in::<_, u32, 1, 86400>")]
    pub window_size: u32,
    /// Seconds an open circuit fails fast before it lets a probe through.
    #[serde(deserialize_with = "de::int_in::<_, u32, 1, 86400>")]
    pub timeout: u32,
    /// Upstream response statuses that count as failures. Connection errors and timeouts
    /// (Portico's own 502/503/504) always count; an empty list counts only those.
    #[serde(deserialize_with = "statuses")]
    pub failure_statuses: Vec<u16>,
    /// Status of the answer while the circuit is open.
    #[serde(deserialize_with = "de::int_in::<_, u16, 100, 599>")]
    pub error_status: u16,
    /// Message of that answer, in Kong's error template (JSON by default, as `Accept` asks).
    pub error_message: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            threshold: 5,
            window_size: 60,
            timeout: 30,
            failure_statuses: vec![500, 502, 503, 504],
            error_status: 503,
            error_message: "Service temporarily unavailable: circuit open".to_owned(),
        }
    }
}

/// A list of HTTP statuses, each within 100..=599.
fn statuses<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    #[derive(Deserialize)]
    struct Status(#[serde(deserialize_with = "de::int_in::<_, u16, 100, 599>")] u16);
    Ok(Vec::<Status>::deserialize(d)?
        .into_iter()
        .map(|s| s.0)
        .collect())
}

pub(super) fn parse(mut f: Fields) -> Result<Config, Vec<ConfigIssue>> {
    let config = f.decode::<Config>();
    if let Some(c) = &config {
        if c.error_message.is_empty() {
            f.error("error_message", LENGTH_MIN);
        }
    }
    f.finish(config)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::plugins::PluginConfig;

    fn parse(v: serde_json::Value) -> Result<super::Config, Vec<String>> {
        match PluginConfig::parse("circuit-breaker", &v) {
            Ok(PluginConfig::CircuitBreaker(c)) => Ok(c),
            Ok(other) => panic!("wrong variant {other:?}"),
            Err(e) => Err(e
                .into_iter()
                .map(|i| format!("{}: {}", i.path, i.message))
                .collect()),
        }
    }

    #[test]
    fn defaults() {
        let c = parse(json!({})).unwrap();
        assert_eq!(
            PluginConfig::CircuitBreaker(c).to_value(),
            json!({"threshold": 5, "window_size": 60, "timeout": 30,
                   "failure_statuses": [500, 502, 503, 504], "error_status": 503,
                   "error_message": "Service temporarily unavailable: circuit open"})
        );
        let c = parse(json!({"threshold": "2", "failure_statuses": [], "timeout": 1})).unwrap();
        assert_eq!(
            (c.threshold, c.timeout, c.failure_statuses.len()),
            (2, 1, 0)
        );
    }

    #[test]
    fn bad_fields_are_each_reported() {
        let errs = parse(json!({"threshold": 0, "window_size": -1, "timeout": 0,
                                "failure_statuses": [500, 99, "x"], "error_status": 600,
                                "error_message": ""}))
        .unwrap_err();
        for expected in [
            "config.threshold: value should be between 1 and 100000",
            "config.window_size: value should be between 1 and 86400",
            "config.timeout: value should be between 1 and 86400",
            "config.failure_statuses[1]: value should be between 100 and 599",
            "config.error_status: value should be between 100 and 599",
            "config.error_message: length must be at least 1",
        ] {
            assert!(
                errs.iter().any(|e| e == expected),
                "{expected} missing from {errs:?}"
            );
        }
        assert!(errs
            .iter()
            .any(|e| e.starts_with("config.failure_statuses[2]")));
    }
}
