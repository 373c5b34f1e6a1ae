//! key-auth: a consumer identified by an API key (KONG.md §3.3; K:kong/plugins/key-auth/schema.lua).

use serde::{Deserialize, Serialize};

use super::de;
use super::fields::{Fields, LENGTH_MIN};
use crate::error::ConfigIssue;

/// key-auth's config, with Kong's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Names the key is looked up under, in order (each in header, then query, then body).
    pub key_names: Vec<String>,
    /// Strip the key from the request before it goes upstream.
    #[serde(deserialize_with = "de::boolean")]
    pub hide_credentials: bool,
    /// Consumer (id or username) to use when authentication fails; `None` answers 401.
    pub anonymous: Option<String>,
    /// Look for the key in request headers.
    #[serde(deserialize_with = "de::boolean")]
    pub key_in_header: bool,
    /// Look for the key in query arguments.
    #[serde(deserialize_with = "de::boolean")]
    pub key_in_query: bool,
    /// Look for the key in the request body (form, JSON or multipart).
    #[serde(deserialize_with = "de::boolean")]
    pub key_in_body: bool,
    /// Authenticate CORS preflight (`OPTIONS`) requests too.
    #[serde(deserialize_with = "de::boolean")]
    pub run_on_preflight: bool,
    /// Realm in `WWW-Authenticate: Key realm="..."`; `None` sends a bare `Key`.
    pub realm: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            key_names: vec!["apikey".to_owned()],
            hide_credentials: false,
            anonymous: None,
            key_in_header: true,
            key_in_query: true,
            key_in_body: false,
            run_on_preflight: true,
            realm: None,
        }
    }
}

pub(super) fn parse(mut f: Fields) -> Result<Config, Vec<ConfigIssue>> {
    let config = f.decode::<Config>();
    if let Some(c) = &config {
        // An empty list would make every request "No API key found": surely a mistake.
        if c.key_names.is_empty() {
            f.error("key_names", LENGTH_MIN);
        }
        f.header_names("key_names", &c.key_names);
    }
    f.finish(config)
}
