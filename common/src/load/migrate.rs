//! Migration of `_format_version` 1.1 / 2.1 files to 3.0, as Kong does on load
//! (K:kong/db/declarative/migrations/route_path.lua, K:kong/db/migrations/migrate_path_280_300.lua).
//!
//! Before 3.0 Kong guessed whether a route path was a regex; 3.0 requires a `~` prefix. Kong's
//! rule: a path made only of `[a-zA-Z0-9.-_~/%]` is a plain prefix (it is normalized); any
//! other character makes it a regex, which gets `~` and has its `%XX` escapes decoded one last
//! time (reserved characters stay escaped, upper-cased; regex metacharacters are decoded with a
//! backslash so they still match literally). Only route paths change.

use serde_json::Value;

use super::Canonicalize;

/// Rewrites route paths of a pre-3.0 document in place.
pub(crate) fn migrate_route_paths(doc: &mut Value, canonicalize: Canonicalize) {
    if let Some(routes) = doc.get_mut("routes").and_then(Value::as_array_mut) {
        routes
            .iter_mut()
            .for_each(|r| migrate_route(r, canonicalize));
    }
    if let Some(services) = doc.get_mut("services").and_then(Value::as_array_mut) {
        for service in services {
            if let Some(routes) = service.get_mut("routes").and_then(Value::as_array_mut) {
                routes
                    .iter_mut()
                    .for_each(|r| migrate_route(r, canonicalize));
            }
        }
    }
}

fn migrate_route(route: &mut Value, canonicalize: Canonicalize) {
    let Some(paths) = route.get_mut("paths").and_then(Value::as_array_mut) else {
        return;
    };
    for path in paths {
        if let Value::String(p) = path {
            *p = migrate_path(p, canonicalize);
        }
    }
}

/// One path in 2.x form to its 3.0 form.
pub(crate) fn migrate_path(path: &str, canonicalize: Canonicalize) -> String {
    if looks_plain(path) {
        // An invalid plain path is left for validation to report with its location.
        match canonicalize(path) {
            Ok(normalized) => normalized.into_owned(),
            Err(_) => path.to_owned(),
        }
    } else {
        format!("~{}", decode_regex_escapes(path))
    }
}

/// Kong's `is_not_regex`: only unreserved characters, `/` and `%`.
fn looks_plain(path: &str) -> bool {
    path.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b'/' | b'%'))
}

const RESERVED: &[u8] = b"!#$%&'()*+,/:;=?@[]";
const REGEX_META: &[u8] = b".^-{}\\|";

/// Kong's `normalize_regex`: decode `%XX` triplets the 3.0 router no longer decodes.
fn decode_regex_escapes(regex: &str) -> String {
    let bytes = regex.as_bytes();
    let mut out = String::with_capacity(regex.len());
    let mut i = 0;
    while i < bytes.len() {
        let is_triplet = bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit();
        if is_triplet {
            let hex = &regex[i + 1..i + 3];
            if let Ok(byte) = u8::from_str_radix(hex, 16) {
                // Non-ASCII bytes are left escaped: decoding one alone could split a character.
                if RESERVED.contains(&byte) || !byte.is_ascii() {
                    out.push('%');
                    out.push_str(&hex.to_ascii_uppercase());
                } else if REGEX_META.contains(&byte) {
                    out.push('\\');
                    out.push(byte as char);
                } else {
                    out.push(byte as char);
                }
                i += 3;
                continue;
            }
        }
        // `i` only ever advances by whole characters or ASCII triplets: always a boundary.
        let ch = regex[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn identity(p: &str) -> Result<Cow<'_, str>, crate::path::PathError> {
        Ok(Cow::Borrowed(p))
    }

    #[test]
    fn kong_regex_guess() {
        assert_eq!(migrate_path("/users", identity), "/users");
        assert_eq!(migrate_path("/a-b_c.d~e/%20", identity), "/a-b_c.d~e/%20");
        assert_eq!(migrate_path(r"/users/\d+", identity), r"~/users/\d+");
        assert_eq!(migrate_path("/v1/(foo|bar)$", identity), "~/v1/(foo|bar)$");
        assert_eq!(migrate_path("/x*/%2e%41%2f", identity), r"~/x*/\.A%2F");
    }
}
