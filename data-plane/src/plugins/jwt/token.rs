//! Strict parsing of a compact JWS (RFC 7515 §7.1) before any key is looked at.
//!
//! Kong's jwt_parser.lua is lenient: it pads and translates base64, keeps the last of duplicate
//! JSON keys and lets a fourth segment ride inside the signature. Every leniency is a place where
//! two parsers (ours and the issuer's, or ours and an auditor's) can disagree about what a token
//! says, so this parser accepts exactly one spelling of each token and reports the failure with
//! Kong's reasons (`Bad token; <reason>`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

/// Tokens longer than this are refused before decoding: an unauthenticated client controls the
/// size, and no real JWT comes close (nginx in front of Kong stops at an 8 KiB header line).
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// The algorithms Kong's parser knows (K:kong/plugins/jwt/jwt_parser.lua `alg_verify`); any
/// other `alg`, `none` in every spelling included, is "invalid alg".
const KNOWN_ALGS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256",
    "PS384", "PS512", "EdDSA",
];

/// Why a token could not be decoded: the `<reason>` of Kong's `Bad token; <reason>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Not three segments, bad base64url, or a header/claims segment that is not one JSON
    /// object without duplicate keys.
    Json,
    /// `alg` missing, not a string, or not an algorithm Kong knows.
    Alg,
    /// The claims are valid JSON but not an object.
    Claims,
    /// The signature segment is not canonical base64url.
    Signature,
    /// A `crit` header: this gateway understands no extension, so RFC 7515 §4.1.11 says refuse.
    Crit,
    /// Longer than [`MAX_TOKEN_LEN`].
    TooLarge,
}

impl DecodeError {
    /// The reason as Kong words it (the last two are Portico's own cases).
    pub fn reason(self) -> &'static str {
        match self {
            DecodeError::Json => "invalid JSON",
            DecodeError::Alg => "invalid alg",
            DecodeError::Claims => "invalid claims",
            DecodeError::Signature => "invalid signature",
            DecodeError::Crit => "unsupported crit",
            DecodeError::TooLarge => "too large",
        }
    }
}

/// A decoded, not yet verified token.
#[derive(Debug)]
pub struct Token<'t> {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    /// `alg` from the header; one of Kong's known algorithms.
    pub alg: String,
    /// `base64url(header) "." base64url(claims)`: what the signature covers.
    pub signing_input: &'t str,
    /// The signature segment, still base64url (checked canonical).
    pub signature: &'t str,
}

/// Parses `token` (Kong's `jwt_decoder:new`), refusing every non-canonical form.
pub fn decode(token: &str) -> Result<Token<'_>, DecodeError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(DecodeError::TooLarge);
    }
    // JSON serialisation (`{"payload":...}`) and anything with fewer than three segments fail
    // here; a fourth segment is caught below as a non-base64url signature, as in Kong (its
    // tokenizer leaves "c.d" in the signature slot).
    let mut parts = token.splitn(3, '.');
    let (Some(h64), Some(c64), Some(s64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(DecodeError::Json);
    };
    let header = segment_json(h64)?;
    let claims = segment_json(c64)?;
    let Value::Object(header) = header else {
        return Err(DecodeError::Json);
    };
    let alg = match header.get("alg") {
        Some(Value::String(a)) if KNOWN_ALGS.contains(&a.as_str()) => a.clone(),
        _ => return Err(DecodeError::Alg),
    };
    let Value::Object(claims) = claims else {
        return Err(DecodeError::Claims);
    };
    if !canonical_b64url(s64) {
        return Err(DecodeError::Signature);
    }
    if header.contains_key("crit") {
        return Err(DecodeError::Crit);
    }
    Ok(Token {
        header,
        claims,
        alg,
        signing_input: &token[..h64.len() + 1 + c64.len()],
        signature: s64,
    })
}

/// Decodes a base64url segment into JSON whose objects carry no duplicate key.
fn segment_json(segment: &str) -> Result<Value, DecodeError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| DecodeError::Json)?;
    let strict: Strict = serde_json::from_slice(&bytes).map_err(|_| DecodeError::Json)?;
    Ok(strict.0)
}

/// Whether `s` is unpadded base64url whose unused trailing bits are zero: the only spelling
/// of the bytes it decodes to. (The `base64` engine refuses padding and stray trailing bits.)
fn canonical_b64url(s: &str) -> bool {
    URL_SAFE_NO_PAD.decode(s).is_ok()
}

/// A JSON value whose objects (at every depth) have unique keys. serde_json keeps the last
/// duplicate silently; `{"alg":"HS256","alg":"none"}` must not mean what one reader thinks.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
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

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
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

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom("duplicate key"));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn tok(h: &str, c: &str, s: &str) -> String {
        format!("{}.{}.{s}", b64(h), b64(c))
    }

    #[test]
    fn accepts_a_plain_token() {
        let t = tok(r#"{"alg":"HS256"}"#, r#"{"iss":"a"}"#, "AAAA");
        let d = decode(&t).unwrap();
        assert_eq!(d.alg, "HS256");
        assert_eq!(d.claims["iss"], "a");
        assert_eq!(d.signature, "AAAA");
        assert!(t.starts_with(d.signing_input) && t[d.signing_input.len()..].starts_with('.'));
    }

    #[test]
    fn refuses_non_canonical_spellings() {
        let h = b64(r#"{"alg":"HS256"}"#);
        let c = b64(r#"{"iss":"a"}"#);
        let cases = [
            (format!("{h}.{c}"), DecodeError::Json),
            (format!("{h}.{c}.AAAA.AAAA"), DecodeError::Signature),
            (format!("{h}=.{c}.AAAA"), DecodeError::Json),
            (format!("{h}.{c}.AAA="), DecodeError::Signature),
            // "AB" decodes with non-zero unused bits; "AA" is the canonical spelling.
            (format!("{h}.{c}.AB"), DecodeError::Signature),
            (format!("{h}.{c}.AA+/"), DecodeError::Signature),
            (
                r#"{"payload":"x","signatures":[]}"#.to_owned(),
                DecodeError::Json,
            ),
            (
                tok(r#"{"alg":"HS256","alg":"none"}"#, "{}", ""),
                DecodeError::Json,
            ),
            (
                tok(r#"{"alg":"HS256"}"#, r#"{"iss":"a","iss":"b"}"#, ""),
                DecodeError::Json,
            ),
            (tok(r#"{"alg":"none"}"#, "{}", ""), DecodeError::Alg),
            (tok(r#"{"alg":"NONE"}"#, "{}", ""), DecodeError::Alg),
            (tok(r#"{"alg":["HS256"]}"#, "{}", ""), DecodeError::Alg),
            (tok(r#"{"alg":"HS256"}"#, "null", ""), DecodeError::Claims),
            (tok(r#"{"alg":"HS256"}"#, "[1]", ""), DecodeError::Claims),
            (tok("[]", "{}", ""), DecodeError::Json),
            (
                tok(r#"{"alg":"HS256","crit":["exp"]}"#, "{}", ""),
                DecodeError::Crit,
            ),
            ("x".repeat(MAX_TOKEN_LEN + 1), DecodeError::TooLarge),
        ];
        for (t, want) in cases {
            assert_eq!(decode(&t).err(), Some(want), "{t}");
        }
    }
}
