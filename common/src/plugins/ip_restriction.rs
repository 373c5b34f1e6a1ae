//! ip-restriction: allow or deny clients by address (KONG.md §3.12;
//! K:kong/plugins/ip-restriction/schema.lua).

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::de;
use super::fields::{is_nonempty, Fields};
use crate::error::ConfigIssue;

/// ip-restriction's config. At least one of `allow` and `deny` is set; `deny` is checked first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Networks let in; with a list, every other address is refused.
    #[serde(with = "de::ip_list")]
    pub allow: Option<Vec<IpNet>>,
    /// Networks refused, whatever `allow` says.
    #[serde(with = "de::ip_list")]
    pub deny: Option<Vec<IpNet>>,
    /// Status of the refusal; `None` is Kong's 403.
    #[serde(deserialize_with = "de::opt_int_in::<_, u16, 100, 599>")]
    pub status: Option<u16>,
    /// Message of the refusal; `None` is Kong's "IP address not allowed: <addr>".
    pub message: Option<String>,
}

pub(super) fn parse(mut f: Fields) -> Result<Config, Vec<ConfigIssue>> {
    let config = f.decode::<Config>();
    if let Some(c) = &config {
        if f.whole() && !is_nonempty(&c.allow) && !is_nonempty(&c.deny) {
            f.error(
                "",
                "at least one of these fields must be non-empty: 'config.allow', 'config.deny'",
            );
        }
    }
    f.finish(config)
}
