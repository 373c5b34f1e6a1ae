//! request-size-limiting: refuse request bodies over a size (KONG.md §3.11;
//! K:kong/plugins/request-size-limiting/schema.lua).
//!
//! Kong's fields and defaults. One difference: Kong takes any integer for
//! `allowed_payload_size`, so `0` or a negative size refuses every body; Portico requires a
//! positive size, since "refuse all bodies" is better said with a size of `1 byte`, explicitly.

use serde::de::{Error, Unexpected};
use serde::{Deserialize, Deserializer, Serialize};

use super::fields::Fields;
use crate::config::de as lenient;
use crate::error::ConfigIssue;

/// request-size-limiting's config, with Kong's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The largest body accepted, in `size_unit`s.
    #[serde(deserialize_with = "positive")]
    pub allowed_payload_size: u64,
    /// The unit of `allowed_payload_size`.
    pub size_unit: SizeUnit,
    /// Refuse (411) requests with neither a Content-Length nor a chunked body.
    #[serde(deserialize_with = "super::de::boolean")]
    pub require_content_length: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            allowed_payload_size: 128,
            size_unit: SizeUnit::Megabytes,
            require_content_length: false,
        }
    }
}

impl Config {
    /// The limit in bytes. Saturates: a size too large to count in bytes is no limit at all.
    pub fn limit_bytes(&self) -> u64 {
        self.allowed_payload_size
            .saturating_mul(self.size_unit.multiplier())
    }
}

/// The unit of `allowed_payload_size`. Kong's multipliers are binary (MB = 2^20 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SizeUnit {
    #[default]
    Megabytes,
    Kilobytes,
    Bytes,
}

impl SizeUnit {
    /// Bytes per unit (K:kong/plugins/request-size-limiting/handler.lua
    /// `unit_multiplication_factor`).
    pub fn multiplier(self) -> u64 {
        match self {
            SizeUnit::Megabytes => 1_048_576,
            SizeUnit::Kilobytes => 1024,
            SizeUnit::Bytes => 1,
        }
    }
}

impl<'de> Deserialize<'de> for SizeUnit {
    // By hand for Kong's `one_of` message instead of serde's "unknown variant".
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "megabytes" => Ok(SizeUnit::Megabytes),
            "kilobytes" => Ok(SizeUnit::Kilobytes),
            "bytes" => Ok(SizeUnit::Bytes),
            _ => Err(D::Error::custom(
                "expected one of: megabytes, kilobytes, bytes",
            )),
        }
    }
}

/// An integer greater than 0, with Kong's `gt = 0` message.
fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v =
        lenient::int(d)?.ok_or_else(|| D::Error::invalid_type(Unexpected::Unit, &"an integer"))?;
    u64::try_from(v)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| D::Error::custom("value must be greater than 0"))
}

pub(super) fn parse(mut f: Fields) -> Result<Config, Vec<ConfigIssue>> {
    let config = f.decode::<Config>();
    f.finish(config)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::plugins::PluginConfig;

    fn parse(v: serde_json::Value) -> Result<super::Config, Vec<String>> {
        match PluginConfig::parse("request-size-limiting", &v) {
            Ok(PluginConfig::RequestSizeLimiting(c)) => Ok(c),
            Ok(other) => panic!("wrong variant {other:?}"),
            Err(e) => Err(e
                .into_iter()
                .map(|i| format!("{}: {}", i.path, i.message))
                .collect()),
        }
    }

    #[test]
    fn defaults_are_kongs_and_units_are_binary() {
        let c = parse(json!({})).unwrap();
        assert_eq!(
            PluginConfig::RequestSizeLimiting(c.clone()).to_value(),
            json!({"allowed_payload_size": 128, "size_unit": "megabytes",
                   "require_content_length": false})
        );
        assert_eq!(c.limit_bytes(), 128 * 1_048_576);
        let kb = parse(json!({"allowed_payload_size": "3", "size_unit": "kilobytes"})).unwrap();
        assert_eq!(kb.limit_bytes(), 3072);
        let b = parse(json!({"allowed_payload_size": 10, "size_unit": "bytes",
                             "require_content_length": "true"}))
        .unwrap();
        assert_eq!((b.limit_bytes(), b.require_content_length), (10, true));
        let huge = parse(json!({"allowed_payload_size": i64::MAX})).unwrap();
        assert_eq!(huge.limit_bytes(), u64::MAX);
    }

    #[test]
    fn bad_fields_are_each_reported() {
        assert_eq!(
            parse(json!({"allowed_payload_size": 0, "size_unit": "gigabytes",
                         "require_content_length": 3, "max": 1})),
            Err(vec![
                "config.allowed_payload_size: value must be greater than 0".to_owned(),
                "config: unknown field 'max'".to_owned(),
                "config.require_content_length: invalid type: integer `3`, expected a boolean"
                    .to_owned(),
                "config.size_unit: expected one of: megabytes, kilobytes, bytes".to_owned(),
            ])
        );
        assert_eq!(
            parse(json!({"allowed_payload_size": -5})),
            Err(vec![
                "config.allowed_payload_size: value must be greater than 0".to_owned()
            ])
        );
    }
}
