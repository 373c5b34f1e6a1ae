//! Text to a generic JSON value: JSON when the text starts with `{`, YAML otherwise.
//!
//! Everything downstream works on `serde_json::Value` so secrets, migration and validation are
//! written once for both syntaxes. YAML merge keys (`<<: *defaults`) are applied here, since
//! Kong users share settings between services that way.
//!
//! YAML takes a fast path first: straight from the YAML events into a `serde_json::Value`
//! ([`Direct`]), without the intermediate `serde_yaml::Value`. It accepts only documents whose
//! result is certain to equal the general path's: string and integer keys, no duplicate keys,
//! no `<<` key, no tags, no integer wider than 64 bits. Anything else (and every syntax error)
//! goes through the general path (`serde_yaml::Value`, merge keys, conversion), which then
//! gives exactly the result and error message it always gave.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::ConfigErrors;

/// Parses the whole document; syntax errors are a single file-level issue.
pub(crate) fn parse_document(text: &str) -> Result<Value, ConfigErrors> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('{') {
        return serde_json::from_str(trimmed)
            .map_err(|e| ConfigErrors::single("", format!("invalid JSON: {e}")));
    }
    if let Ok(Direct(value)) = serde_yaml::from_str::<Direct>(trimmed) {
        return Ok(value);
    }
    let mut yaml: serde_yaml::Value = serde_yaml::from_str(trimmed)
        .map_err(|e| ConfigErrors::single("", format!("invalid YAML: {e}")))?;
    yaml.apply_merge()
        .map_err(|e| ConfigErrors::single("", format!("invalid YAML: {e}")))?;
    serde_json::to_value(yaml).map_err(|e| {
        ConfigErrors::single(
            "",
            format!("invalid YAML: {e} (map keys must be strings or numbers)"),
        )
    })
}

/// The document of `text` as compact JSON, for a client to send instead of the text itself
/// (see [`crate::load::transport_text`]); `None` when the text should travel as it is: it is
/// JSON already, it does not parse, its top level is not an object, or it holds a float that
/// would not come back bit for bit from its JSON text (`serde_json` parses floats with a fast
/// algorithm that may be one ULP off).
pub(crate) fn transport_json(text: &str) -> Option<String> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('{') {
        return None;
    }
    let doc = parse_document(text).ok()?;
    if !doc.is_object() || !floats_round_trip(&doc) {
        return None;
    }
    serde_json::to_string(&doc).ok()
}

/// Whether every float in `v` parses back from its JSON text to the same value.
fn floats_round_trip(v: &Value) -> bool {
    match v {
        Value::Number(n) if n.is_f64() => {
            serde_json::from_str::<Value>(&n.to_string()).is_ok_and(|back| back == *v)
        }
        Value::Array(items) => items.iter().all(floats_round_trip),
        Value::Object(map) => map.values().all(floats_round_trip),
        _ => true,
    }
}

/// A YAML document decoded directly into a JSON value; fails (so the caller takes the general
/// path) on everything the general path would treat differently.
struct Direct(Value);

impl<'de> Deserialize<'de> for Direct {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DirectVisitor).map(Direct)
    }
}

struct DirectVisitor;

impl<'de> Visitor<'de> for DirectVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a plain YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    /// Non-finite floats become `null`, as the general path's conversion does.
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(Direct(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(DirectKey(key)) = map.next_key()? {
            if key == "<<" {
                return Err(de::Error::custom("merge key"));
            }
            let Direct(value) = map.next_value()?;
            if out.insert(key, value).is_some() {
                return Err(de::Error::custom("duplicate key"));
            }
        }
        Ok(Value::Object(out))
    }
}

/// A mapping key: a string, or an integer written the way the general path's conversion
/// writes it. Other keys (floats, booleans, null, collections, tagged) are refused.
struct DirectKey(String);

impl<'de> Deserialize<'de> for DirectKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KeyVisitor).map(DirectKey)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or integer key")
    }

    fn visit_i64<E>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_str<E>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The general path alone, as it was before the fast path existed.
    fn general(text: &str) -> Result<Value, String> {
        let mut yaml: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        yaml.apply_merge().map_err(|e| e.to_string())?;
        serde_json::to_value(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn fast_path_agrees_with_the_general_path() {
        let docs = [
            "a: 1\nb: -2\nc: 1.5\nd: 3.0\ne: [x, 'y', \"z\"]\nf: ~\ng: null\nh: true\ni: 0x10\n",
            "1: one\n-3: minus\n'q': quoted\nnested: {k: [1, {m: n}]}\n",
            "big: 18446744073709551615\nneg: -9223372036854775808\nnan: .nan\ninf: -.inf\n",
            "anchors:\n  base: &b {x: 1}\n  copy: *b\n",
            "empty_list: []\nempty_map: {}\nblock: |\n  line one\n  line two\n",
            "s: !!str 3.0\n",
        ];
        for doc in docs {
            let fast = serde_yaml::from_str::<Direct>(doc)
                .map(|d| d.0)
                .map_err(|e| e.to_string());
            assert_eq!(fast, general(doc), "{doc}");
            assert!(fast.is_ok(), "{doc}");
            assert_eq!(parse_document(doc).ok(), fast.ok(), "{doc}");
        }
    }

    #[test]
    fn fast_path_declines_what_the_general_path_treats_differently() {
        let docs = [
            // merge keys, applied by the general path
            "base: &b {x: 1}\nsvc:\n  <<: *b\n  y: 2\n",
            // duplicate keys: an error there
            "a: 1\na: 2\n",
            // keys the conversion writes its own way, or refuses
            "1.5: x\n",
            "true: x\n",
            "~: x\n",
            "[a]: x\n",
            // tags
            "a: !custom x\n",
            // wider than 64 bits
            "a: 123456789012345678901234567890\n",
        ];
        for doc in docs {
            assert!(serde_yaml::from_str::<Direct>(doc).is_err(), "{doc}");
            let expected = general(doc).map_err(|e| format!("invalid YAML: {e}"));
            let got = parse_document(doc).map_err(|e| e.errors[0].message.clone());
            match (&expected, &got) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{doc}"),
                (Err(a), Err(b)) => assert!(b.starts_with(a.as_str()), "{doc}: {b} vs {a}"),
                _ => panic!("{doc}: {expected:?} vs {got:?}"),
            }
        }
    }
}
