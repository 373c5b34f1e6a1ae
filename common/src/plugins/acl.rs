//! acl: allow or deny consumers by group (KONG.md §3.6; K:kong/plugins/acl/schema.lua).

use serde::{Deserialize, Serialize};

use super::de;
use super::fields::{is_nonempty, Fields};
use crate::error::ConfigIssue;

/// acl's config, with Kong's defaults. Exactly one of `allow` and `deny` is set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Groups allowed in; every other consumer is refused.
    pub allow: Option<Vec<String>>,
    /// Groups refused; every other consumer is let in.
    pub deny: Option<Vec<String>>,
    /// Do not send `X-Consumer-Groups` upstream.
    #[serde(deserialize_with = "de::boolean")]
    pub hide_groups_header: bool,
    /// Use the groups an auth plugin authenticated (e.g. LDAP) even when a consumer is known.
    #[serde(deserialize_with = "de::boolean")]
    pub always_use_authenticated_groups: bool,
}

/// The fields of Kong's `only_one_of` and `at_least_one_of` entity checks, as Kong quotes them.
const EITHER: &str = "'config.allow', 'config.deny'";

pub(super) fn parse(mut f: Fields) -> Result<Config, Vec<ConfigIssue>> {
    let config = f.decode::<Config>();
    if let Some(c) = &config {
        for (field, groups) in [("allow", &c.allow), ("deny", &c.deny)] {
            f.non_empty(field, groups.as_deref().unwrap_or_default());
        }
        match (is_nonempty(&c.allow), is_nonempty(&c.deny)) {
            _ if !f.whole() => {}
            (true, true) => f.error(
                "",
                format!("only one of these fields must be non-empty: {EITHER}"),
            ),
            (false, false) => f.error(
                "",
                format!("at least one of these fields must be non-empty: {EITHER}"),
            ),
            _ => {}
        }
    }
    f.finish(config)
}
