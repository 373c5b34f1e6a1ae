//! basic-auth: a consumer identified by username and password (KONG.md §3.5;
//! K:kong/plugins/basic-auth/schema.lua).

use serde::{Deserialize, Serialize};

use super::de;
use super::fields::{Fields, LENGTH_MIN};
use crate::error::ConfigIssue;

/// basic-auth's config, with Kong's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Consumer (id or username) to use when authentication fails; `None` answers 401.
    pub anonymous: Option<String>,
    /// Strip the credential header before the request goes upstream.
    #[serde(deserialize_with = "de::boolean")]
    pub hide_credentials: bool,
    /// Realm in `WWW-Authenticate: Basic realm="..."`.
    pub realm: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            anonymous: None,
            hide_credentials: false,
            realm: "service".to_owned(),
        }
    }
}

pub(super) fn parse(mut f: Fields) -> Result<Config, Vec<ConfigIssue>> {
    let config = f.decode::<Config>();
    if let Some(c) = &config {
        if c.realm.is_empty() {
            f.error("realm", LENGTH_MIN);
        }
    }
    f.finish(config)
}
