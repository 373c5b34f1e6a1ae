//! Strict parsing of a compact JWS (RFC 7515 §7.1) before any key is looked at.
//!
//! Kong's jwt_parser.lua is lenient: it pads and translates base64, keeps the last of duplicate
//! JSON keys and lets a fourth segment ride inside the signature. Every leniency is a place where
//! two parsers (ours and the issuer's, or ours and an auditor's) can disagree about what a token
//! says, so this parser accepts exactly one spelling of each token and reports the failure with
//! Kong's reasons (`Bad token; <reason>`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use std::borrow::Cow;
use std::collections::HashSet;

use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

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

/// A JSON member the plugin reads: the key claim, `alg`, `exp`, `nbf`.
#[derive(Debug, Clone, PartialEq)]
pub enum Member {
    Str(String),
    /// Any JSON number, as Lua's `type(x) == "number"`.
    Num(f64),
    /// `true`, `false`, `null`, an array or an object.
    Other,
}

/// A decoded, not yet verified token: only the members the plugin reads are kept, so a request
/// does not build two JSON maps.
#[derive(Debug)]
pub struct Token<'t> {
    /// `alg` from the header; one of Kong's known algorithms.
    pub alg: &'static str,
    /// The key claim (`key_claim_name`): from the claims if they have it, else from the header
    /// (so `kid` works); `None` when neither has it.
    pub key: Option<Member>,
    /// `exp` and `nbf` of the claims, when they are JSON numbers.
    pub exp: Option<f64>,
    pub nbf: Option<f64>,
    /// `base64url(header) "." base64url(claims)`: what the signature covers.
    pub signing_input: &'t str,
    /// The signature segment, still base64url (checked canonical).
    pub signature_b64: &'t str,
    /// The signature's bytes.
    pub signature: Vec<u8>,
}

/// Parses `token` (Kong's `jwt_decoder:new`), refusing every non-canonical form, and keeps
/// `key_claim` (see [`Token::key`]).
pub fn decode<'t>(token: &'t str, key_claim: &str) -> Result<Token<'t>, DecodeError> {
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
    // Header members: alg, crit, the key claim. Claims members: the key claim, exp, nbf.
    let header = segment(h64, ["alg", "crit", key_claim])?;
    let claims = segment(c64, [key_claim, "exp", "nbf"])?;
    let Some([alg, crit, header_key]) = header else {
        return Err(DecodeError::Json);
    };
    let alg = match alg {
        Some(Member::Str(a)) => KNOWN_ALGS
            .iter()
            .find(|k| **k == a)
            .copied()
            .ok_or(DecodeError::Alg)?,
        _ => return Err(DecodeError::Alg),
    };
    let Some([claims_key, exp, nbf]) = claims else {
        return Err(DecodeError::Claims);
    };
    // Unpadded base64url whose unused trailing bits are zero is the only spelling of the bytes
    // it decodes to; the engine refuses padding and stray trailing bits.
    let signature = URL_SAFE_NO_PAD
        .decode(s64)
        .map_err(|_| DecodeError::Signature)?;
    if crit.is_some() {
        return Err(DecodeError::Crit);
    }
    let number = |m: Option<Member>| match m {
        Some(Member::Num(n)) => Some(n),
        _ => None,
    };
    Ok(Token {
        alg,
        key: claims_key.or(header_key),
        exp: number(exp),
        nbf: number(nbf),
        signing_input: &token[..h64.len() + 1 + c64.len()],
        signature_b64: s64,
        signature,
    })
}

/// Decodes a base64url segment holding JSON whose objects (at every depth) carry no duplicate
/// key. `Some` with the members named `names` when it is an object, `None` when it is other
/// valid JSON.
fn segment<const N: usize>(
    segment: &str,
    names: [&str; N],
) -> Result<Option<[Option<Member>; N]>, DecodeError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| DecodeError::Json)?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let top = de
        .deserialize_any(TopVisitor { names: &names })
        .map_err(|_| DecodeError::Json)?;
    de.end().map_err(|_| DecodeError::Json)?;
    Ok(top)
}

/// The top-level value: an object's wanted members, or `None` for any other (checked) value.
struct TopVisitor<'n, const N: usize> {
    names: &'n [&'n str; N],
}

impl<'de, const N: usize> Visitor<'de> for TopVisitor<'_, N> {
    type Value = Option<[Option<Member>; N]>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Checked.visit_seq(seq).map(|_| None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found: [Option<Member>; N] = std::array::from_fn(|_| None);
        let mut seen = Seen::default();
        while let Some(Key(key)) = map.next_key()? {
            match self.names.iter().position(|n| *n == key) {
                Some(first) => {
                    let member: Member = map.next_value_seed(MemberSeed)?;
                    for (i, name) in self.names.iter().enumerate().skip(first + 1) {
                        if *name == key {
                            found[i] = Some(member.clone());
                        }
                    }
                    found[first] = Some(member);
                }
                None => map.next_value_seed(Checked)?,
            }
            if !seen.insert(key) {
                return Err(serde::de::Error::custom("duplicate key"));
            }
        }
        Ok(Some(found))
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        d.deserialize_str(V).map(Key)
    }
}

/// The keys of one object so far. A linear scan while small (JWT objects hold a handful of
/// members); a hash set past that, so a hostile 64 KiB token cannot make the check quadratic.
#[derive(Default)]
struct Seen<'de> {
    few: Vec<Cow<'de, str>>,
    many: Option<HashSet<Cow<'de, str>>>,
}

impl<'de> Seen<'de> {
    const FEW: usize = 16;

    /// Adds `key`; false when the object already had it.
    fn insert(&mut self, key: Cow<'de, str>) -> bool {
        if let Some(many) = &mut self.many {
            return many.insert(key);
        }
        if self.few.contains(&key) {
            return false;
        }
        self.few.push(key);
        if self.few.len() > Self::FEW {
            self.many = Some(self.few.drain(..).collect());
        }
        true
    }
}

/// A wanted member's value: strings and numbers kept, anything else checked and dropped.
struct MemberSeed;

impl<'de> DeserializeSeed<'de> for MemberSeed {
    type Value = Member;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Member, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MemberSeed {
    type Value = Member;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Member, E> {
        Ok(Member::Other)
    }

    fn visit_i64<E>(self, v: i64) -> Result<Member, E> {
        Ok(Member::Num(v as f64))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Member, E> {
        Ok(Member::Num(v as f64))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Member, E> {
        Ok(Member::Num(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Member, E> {
        Ok(Member::Str(v.to_owned()))
    }

    fn visit_unit<E>(self) -> Result<Member, E> {
        Ok(Member::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Member, A::Error> {
        Checked.visit_seq(seq).map(|()| Member::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Member, A::Error> {
        Checked.visit_map(map).map(|()| Member::Other)
    }
}

/// Any JSON value, dropped once it is known to hold no object with a duplicate key.
/// serde_json keeps the last duplicate silently; `{"alg":"HS256","alg":"none"}` must not mean
/// what one reader thinks.
#[derive(Clone, Copy)]
struct Checked;

impl<'de> DeserializeSeed<'de> for Checked {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Checked)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = Seen::default();
        while let Some(Key(key)) = map.next_key()? {
            map.next_value_seed(Checked)?;
            if !seen.insert(key) {
                return Err(serde::de::Error::custom("duplicate key"));
            }
        }
        Ok(())
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
        let d = decode(&t, "iss").unwrap();
        assert_eq!(d.alg, "HS256");
        assert_eq!(d.key, Some(Member::Str("a".into())));
        assert_eq!(d.signature_b64, "AAAA");
        assert_eq!(d.signature, [0, 0, 0]);
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
            assert_eq!(decode(&t, "iss").err(), Some(want), "{t}");
        }
    }

    #[test]
    fn keeps_the_members_the_plugin_reads() {
        let h = r#"{"alg":"HS256","kid":"from-header","typ":"JWT"}"#;
        // The key claim in the claims wins over the header's.
        let t = tok(h, r#"{"kid":"from-claims","exp":1.5e9,"nbf":7}"#, "");
        let d = decode(&t, "kid").unwrap();
        assert_eq!(d.key, Some(Member::Str("from-claims".into())));
        assert_eq!((d.exp, d.nbf), (Some(1.5e9), Some(7.0)));
        // Absent from the claims: the header's. Strings are not numbers.
        let t = tok(h, r#"{"exp":"9999999999"}"#, "");
        let d = decode(&t, "kid").unwrap();
        assert_eq!(d.key, Some(Member::Str("from-header".into())));
        assert_eq!((d.exp, d.nbf), (None, None));
        // Present in the claims but not a string: kept as such, no fallback to the header.
        let t = tok(h, r#"{"kid":{"a":[1,2]}}"#, "");
        let d = decode(&t, "kid").unwrap();
        assert_eq!(d.key, Some(Member::Other));
        // Escapes are decoded, in values and in names.
        let t = tok(h, r#"{"\u006bid":"a\"b"}"#, "");
        let d = decode(&t, "kid").unwrap();
        assert_eq!(d.key, Some(Member::Str("a\"b".into())));
        // The key claim may be a name the plugin also reads for itself.
        let t = tok(h, r#"{"exp":5}"#, "");
        let d = decode(&t, "exp").unwrap();
        assert_eq!((d.key, d.exp), (Some(Member::Num(5.0)), Some(5.0)));
        let t = tok(h, "{}", "");
        assert_eq!(decode(&t, "iss").unwrap().key, None);
    }

    #[test]
    fn refuses_duplicate_keys_at_any_depth_and_spelling() {
        let h = r#"{"alg":"HS256"}"#;
        let many: String = (0..40).map(|i| format!(r#""k{i}":{i},"#)).collect();
        let cases = [
            tok(r#"{"alg":"HS256","\u0061lg":"none"}"#, "{}", ""),
            tok(h, r#"{"a":{"b":1,"b":2}}"#, ""),
            tok(h, r#"{"a":[{"b":1},{"c":1,"c":1}]}"#, ""),
            tok(h, &format!("{{{many}\"k39\":0}}"), ""),
            tok(h, &format!(r#"{{"a":{{{many}"k3":0}}}}"#), ""),
            // Trailing bytes after the JSON value.
            tok(h, "{} x", ""),
        ];
        for t in cases {
            assert_eq!(decode(&t, "iss").err(), Some(DecodeError::Json), "{t}");
        }
        // Many distinct keys are fine.
        let t = tok(h, &format!("{{{many}\"iss\":\"x\"}}"), "");
        assert_eq!(
            decode(&t, "iss").unwrap().key,
            Some(Member::Str("x".into()))
        );
    }
}
