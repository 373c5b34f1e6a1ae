//! correlation-id: an id per request, kept from the client or generated, sent upstream and
//! optionally echoed to the client (KONG.md §3.13; K:kong/plugins/correlation-id/schema.lua).

use serde::{Deserialize, Serialize};

use super::de;
use super::fields::{header_name_error, Fields};
use crate::error::ConfigIssue;

/// How a missing id is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Generator {
    /// A random UUID per request.
    #[serde(rename = "uuid")]
    Uuid,
    /// `<process uuid>#<counter>`: unique per data plane process, cheaper than a random UUID.
    #[serde(rename = "uuid#counter")]
    UuidCounter,
    /// Details of the connection and the time, readable by a human.
    #[serde(rename = "tracker")]
    Tracker,
}

/// correlation-id's config, with Kong's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The header carrying the id, upstream and (with `echo_downstream`) back to the client.
    pub header_name: String,
    /// How a missing id is made.
    pub generator: Generator,
    /// Send the id back to the client in the response.
    #[serde(deserialize_with = "de::boolean")]
    pub echo_downstream: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            header_name: "Kong-Request-ID".to_owned(),
            generator: Generator::UuidCounter,
            echo_downstream: false,
        }
    }
}

pub(super) fn parse(mut f: Fields) -> Result<Config, Vec<ConfigIssue>> {
    let config = f.decode::<Config>();
    if let Some(c) = &config {
        if let Some(msg) = header_name_error(&c.header_name) {
            f.error("header_name", msg);
        }
    }
    f.finish(config)
}
