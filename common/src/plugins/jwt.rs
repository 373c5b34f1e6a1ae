//! jwt: a consumer identified by a signed JSON Web Token (KONG.md §3.4;
//! K:kong/plugins/jwt/schema.lua).

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use super::de;
use super::fields::{Fields, LENGTH_MIN};
use crate::error::ConfigIssue;

/// The longest `maximum_expiration` Kong accepts: one year, in seconds.
const MAX_EXPIRATION: i64 = 31_536_000;

/// jwt's config, with Kong's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Query arguments the token may come in.
    pub uri_param_names: Vec<String>,
    /// Cookies the token may come in.
    pub cookie_names: Vec<String>,
    /// Headers the token may come in, as `Bearer <token>`.
    pub header_names: Vec<String>,
    /// The claim (or, failing that, JWT header field) naming the credential's `key`.
    pub key_claim_name: String,
    /// The HS* secrets are base64-encoded.
    #[serde(deserialize_with = "de::boolean")]
    pub secret_is_base64: bool,
    /// Registered claims to check; empty means `exp` is *not* checked.
    pub claims_to_verify: Vec<Claim>,
    /// Longest token lifetime accepted, in seconds; 0 means no limit.
    #[serde(deserialize_with = "de::int_in::<_, u64, 0, MAX_EXPIRATION>")]
    pub maximum_expiration: u64,
    /// Consumer (id or username) to use when authentication fails; `None` answers 401.
    pub anonymous: Option<String>,
    /// Authenticate CORS preflight (`OPTIONS`) requests too.
    #[serde(deserialize_with = "de::boolean")]
    pub run_on_preflight: bool,
    /// Realm in `WWW-Authenticate: Bearer realm="..."`.
    pub realm: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            uri_param_names: vec!["jwt".to_owned()],
            cookie_names: Vec::new(),
            header_names: vec!["authorization".to_owned()],
            key_claim_name: "iss".to_owned(),
            secret_is_base64: false,
            claims_to_verify: Vec::new(),
            maximum_expiration: 0,
            anonymous: None,
            run_on_preflight: true,
            realm: None,
        }
    }
}

/// A registered claim the plugin can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Claim {
    /// Expiration time: refused when `exp <= now`.
    Exp,
    /// Not before: refused when `nbf > now`.
    Nbf,
}

impl<'de> Deserialize<'de> for Claim {
    // By hand for Kong's `one_of` message instead of serde's "unknown variant".
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "exp" => Ok(Claim::Exp),
            "nbf" => Ok(Claim::Nbf),
            _ => Err(D::Error::custom("expected one of: exp, nbf")),
        }
    }
}

pub(super) fn parse(mut f: Fields) -> Result<Config, Vec<ConfigIssue>> {
    let config = f.decode::<Config>();
    if let Some(c) = &config {
        f.non_empty("uri_param_names", &c.uri_param_names);
        f.non_empty("cookie_names", &c.cookie_names);
        // Portico looks these up as HTTP headers, so they must be header names.
        f.header_names("header_names", &c.header_names);
        if c.key_claim_name.is_empty() {
            f.error("key_claim_name", LENGTH_MIN);
        }
        // Kong's conditional entity check: a lifetime limit is measured against `exp`.
        if f.whole() && c.maximum_expiration > 0 && !c.claims_to_verify.contains(&Claim::Exp) {
            f.error("claims_to_verify", "expected to contain: exp");
        }
    }
    f.finish(config)
}
