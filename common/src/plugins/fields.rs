//! From a plugin's raw `config` object to its typed struct, with every bad field reported at its
//! own path. serde stops at the first error and names no field, so a failing object is decoded
//! again one field at a time, and a failing list one entry at a time, to find each culprit.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ConfigIssue;
use crate::load::checks::REQUIRED;
use crate::load::collect::{kind, tidy};

/// A plugin's `config` on its way to a typed struct, and the issues found so far.
pub(super) struct Fields {
    /// The object without its `null` members: `null` means "the default", as in Kong.
    config: Value,
    issues: Vec<ConfigIssue>,
    /// Some field was dropped while decoding (see [`Fields::whole`]).
    dropped: bool,
}

impl Fields {
    /// Takes the entity's `config`; `null` is an empty object, anything else but an object an error.
    pub fn new(config: &Value) -> Result<Fields, Vec<ConfigIssue>> {
        let map: Map<String, Value> = match config {
            Value::Null => Map::new(),
            Value::Object(m) => m
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            other => {
                return Err(vec![ConfigIssue::new(
                    "config",
                    format!("expected an object, got {}", kind(other)),
                )])
            }
        };
        Ok(Fields {
            config: Value::Object(map),
            issues: Vec::new(),
            dropped: false,
        })
    }

    /// Reports `message` at `config.<field>` (`field` may carry an index: `allow[2]`), or at
    /// `config` itself when `field` is empty.
    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.issues.push(ConfigIssue::new(at(field), message));
    }

    /// Decodes the whole struct. When some fields are bad, reports each (or each bad list entry)
    /// at its path and returns the struct decoded without them, defaults in their place, so the
    /// checks of the other fields still run and a user sees every problem in one pass.
    pub fn decode<T: DeserializeOwned>(&mut self) -> Option<T> {
        let whole = match T::deserialize(&self.config) {
            Ok(t) => return Some(t),
            Err(e) => e.to_string(),
        };
        self.dropped = true;
        let mut found = Vec::new();
        let mut bad = Vec::new();
        if let Value::Object(map) = &self.config {
            for (key, value) in map {
                let Some(msg) = field_error::<T>(key, value.clone()) else {
                    continue;
                };
                if msg.starts_with("unknown field") {
                    found.push(ConfigIssue::new("config", format!("unknown field '{key}'")));
                } else if let Some(entries) = entry_errors::<T>(key, value) {
                    found.extend(entries);
                } else {
                    found.push(ConfigIssue::new(at(key), tidy(&msg)));
                }
                bad.push(key.clone());
            }
        }
        if found.is_empty() {
            // No single field fails on its own: a required field is missing.
            found.push(match missing_field(&whole) {
                Some(field) => ConfigIssue::new(at(field), REQUIRED),
                None => ConfigIssue::new("config", tidy(&whole)),
            });
        }
        self.issues.extend(found);
        if let Value::Object(map) = &mut self.config {
            for key in &bad {
                map.remove(key);
            }
        }
        T::deserialize(&self.config).ok()
    }

    /// Whether [`Fields::decode`] kept every field. Checks across fields run only then: a field
    /// replaced by its default would make them report a problem the user did not write.
    pub fn whole(&self) -> bool {
        !self.dropped
    }

    /// Each name must be a header name by Kong's `header_name` typedef.
    pub fn header_names(&mut self, field: &str, names: &[String]) {
        for (i, name) in names.iter().enumerate() {
            if let Some(msg) = header_name_error(name) {
                self.error(&format!("{field}[{i}]"), msg);
            }
        }
    }

    /// Each entry must be a non-empty string (Kong refuses empty strings unless told otherwise).
    pub fn non_empty(&mut self, field: &str, values: &[String]) {
        for (i, value) in values.iter().enumerate() {
            if value.is_empty() {
                self.error(&format!("{field}[{i}]"), LENGTH_MIN);
            }
        }
    }

    /// The typed config when nothing was reported, else every issue.
    pub fn finish<T>(self, config: Option<T>) -> Result<T, Vec<ConfigIssue>> {
        match config {
            Some(c) if self.issues.is_empty() => Ok(c),
            _ => Err(self.issues),
        }
    }
}

/// Kong's message for an empty string or list.
pub(super) const LENGTH_MIN: &str = "length must be at least 1";

/// Kong's `header_name` typedef (K:kong/tools/utils.lua `validate_header_name`): letters,
/// digits, `-` and `_`. Narrower than RFC 9110's token, and what Kong users already write.
pub(super) fn header_name_error(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some(LENGTH_MIN.to_owned());
    }
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (!ok).then(|| {
        format!("bad header name '{name}', allowed characters are A-Z, a-z, 0-9, '_', and '-'")
    })
}

/// Whether a string is set and not empty (Kong's `is_present` in several plugin schemas).
pub(super) fn is_present(value: &Option<String>) -> bool {
    value.as_deref().is_some_and(|s| !s.is_empty())
}

/// Whether a list is set and not empty (Kong's `is_nonempty` in entity checks).
pub(super) fn is_nonempty<T>(value: &Option<Vec<T>>) -> bool {
    value.as_ref().is_some_and(|v| !v.is_empty())
}

/// `config.<field>`, or `config` for the object itself.
fn at(field: &str) -> String {
    if field.is_empty() {
        "config".to_owned()
    } else {
        format!("config.{field}")
    }
}

/// The error `key: value` alone causes, ignoring required siblings it leaves missing.
fn field_error<T: DeserializeOwned>(key: &str, value: Value) -> Option<String> {
    let single = Value::Object(Map::from_iter([(key.to_owned(), value)]));
    match T::deserialize(&single) {
        Ok(_) => None,
        Err(e) => {
            let msg = e.to_string();
            (!msg.starts_with("missing field")).then_some(msg)
        }
    }
}

/// For a list field, the entries that fail on their own, each at its index; `None` when the
/// value is not a list or no single entry is to blame.
fn entry_errors<T: DeserializeOwned>(key: &str, value: &Value) -> Option<Vec<ConfigIssue>> {
    let Value::Array(items) = value else {
        return None;
    };
    let found: Vec<ConfigIssue> = items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| {
            let msg = field_error::<T>(key, Value::Array(vec![item.clone()]))?;
            Some(ConfigIssue::new(at(&format!("{key}[{i}]")), tidy(&msg)))
        })
        .collect();
    (!found.is_empty()).then_some(found)
}

/// The field serde names in "missing field `url`".
fn missing_field(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("missing field `")?;
    rest.split('`').next()
}
