//! rate-limiting (KONG.md §3.7). Placeholder until the plugin lands: its config has no fields yet.

use serde::{Deserialize, Serialize};

use super::fields::Fields;
use crate::error::ConfigIssue;

/// rate-limiting's config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {}

pub(super) fn parse(mut f: Fields) -> Result<Config, Vec<ConfigIssue>> {
    let config = f.decode::<Config>();
    f.finish(config)
}
