//! Field checks shared by several entities, with Kong's messages where Kong has one
//! (K:kong/db/schema/typedefs.lua, K:kong/db/schema/init.lua).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::Value;
use uuid::Uuid;

use crate::error::{field_path, Issues};

/// Kong's message for a missing required field.
pub(crate) const REQUIRED: &str = "required field missing";

/// Largest timeout Kong accepts (`2^31 - 2`, typedefs.timeout).
pub(crate) const MAX_TIMEOUT: i64 = 2_147_483_646;

/// Reports a missing required value; returns it when present.
pub(crate) fn required<'a, T>(
    value: &'a Option<T>,
    path: &str,
    field: &str,
    issues: &mut Issues,
) -> Option<&'a T> {
    if value.is_none() {
        issues.error(&field_path(path, field), REQUIRED);
    }
    value.as_ref()
}

/// An integer with a default and Kong's inclusive range; out of range reports and yields the default.
pub(crate) fn int_in(
    value: Option<i64>,
    default: i64,
    (lo, hi): (i64, i64),
    path: &str,
    field: &str,
    issues: &mut Issues,
) -> i64 {
    match value {
        None => default,
        Some(v) if (lo..=hi).contains(&v) => v,
        Some(_) => {
            issues.error(
                &field_path(path, field),
                format!("value should be between {lo} and {hi}"),
            );
            default
        }
    }
}

/// Checks `value` is one of `allowed` (Kong: "expected one of: a, b").
pub(crate) fn one_of(
    value: &str,
    allowed: &[&str],
    path: &str,
    field: &str,
    issues: &mut Issues,
) -> bool {
    let ok = allowed.contains(&value);
    if !ok {
        issues.error(
            &field_path(path, field),
            format!("expected one of: {}", allowed.join(", ")),
        );
    }
    ok
}

/// An explicit `id` must be a UUID; `None` when absent or invalid.
pub(crate) fn explicit_id(id: &Option<String>, path: &str, issues: &mut Issues) -> Option<Uuid> {
    let raw = id.as_deref()?;
    match Uuid::parse_str(raw) {
        Ok(u) => Some(u),
        Err(_) => {
            issues.error(&field_path(path, "id"), "expected a valid UUID");
            None
        }
    }
}

/// Kong's `utf8_name` typedef: letters and digits of any script, plus `.`, `-`, `_`, `~`.
pub(crate) fn check_name(name: &Option<String>, path: &str, field: &str, issues: &mut Issues) {
    let Some(name) = name else { return };
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '~'));
    if !ok {
        issues.error(
            &field_path(path, field),
            format!(
                "invalid value '{name}': the only accepted ascii characters are alphanumerics or ., -, _, and ~"
            ),
        );
    }
}

/// Kong's tag rule: printable, no `,` or `/` (tags are filter syntax in the admin API).
pub(crate) fn tags(tags: &Option<Vec<String>>, path: &str, issues: &mut Issues) -> Vec<String> {
    let tags = tags.clone().unwrap_or_default();
    for (i, tag) in tags.iter().enumerate() {
        if tag.is_empty() || tag.chars().any(|c| c.is_control() || c == ',' || c == '/') {
            issues.error(
                &format!("{}[{i}]", field_path(path, "tags")),
                format!("invalid tag '{tag}': expected printable characters except ',' and '/'"),
            );
        }
    }
    tags
}

/// A Kong field Portico does not carry yet: accepted only at Kong's default (`null`, or `default`),
/// so a config relying on it is refused rather than silently run without it.
pub(crate) fn unsupported(
    value: &Option<Value>,
    default: &Value,
    path: &str,
    field: &str,
    issues: &mut Issues,
) {
    let Some(v) = value else { return };
    let is_default =
        v == default || matches!(v, Value::Array(a) if a.is_empty() && default.is_null());
    if !is_default {
        issues.error(
            &field_path(path, field),
            format!("'{field}' is not supported by Portico yet"),
        );
    }
}

/// A DNS name (labels of letters, digits, `-`, `_`), an IPv4 address, or an IPv6 address.
pub(crate) fn valid_host(host: &str) -> bool {
    if host.parse::<Ipv4Addr>().is_ok() || host.parse::<Ipv6Addr>().is_ok() {
        return true;
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().is_ok();
    }
    is_hostname(host)
}

/// A DNS name only (no IP literal).
pub(crate) fn is_hostname(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A TLS server name as Kong's `wildcard_host` takes it (already lowercased): a hostname with at
/// most one `*`, as the leftmost or rightmost label, no port and no IP address; `*` alone too.
pub(crate) fn sni_name(name: &str) -> Result<(), String> {
    if name == "*" {
        return Ok(());
    }
    let stars = name.matches('*').count();
    if stars > 1 {
        return Err("invalid wildcard: must have at most one wildcard".to_owned());
    }
    let bare = if stars == 1 {
        name.strip_prefix("*.")
            .or_else(|| name.strip_suffix(".*"))
            .ok_or_else(|| {
                "invalid wildcard: must be placed at leftmost or rightmost label".to_owned()
            })?
    } else {
        name
    };
    if name.contains(':') {
        return Err(format!("invalid value '{name}': a server name has no port"));
    }
    if bare.parse::<Ipv4Addr>().is_ok() {
        return Err(format!(
            "invalid value '{name}': a server name cannot be an IP address"
        ));
    }
    if is_hostname(bare) {
        Ok(())
    } else {
        Err(format!("invalid hostname: {name}"))
    }
}

/// Splits `host[:port]` / `[v6][:port]` / bare IPv6. Port `None` when absent; `Err` when malformed.
pub(crate) fn split_host_port(s: &str) -> Result<(String, Option<u16>), ()> {
    if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or(())?;
        v6.parse::<Ipv6Addr>().map_err(|_| ())?;
        let port = match after {
            "" => None,
            p => Some(parse_port(p.strip_prefix(':').ok_or(())?)?),
        };
        return Ok((v6.to_owned(), port));
    }
    if s.parse::<Ipv6Addr>().is_ok() {
        return Ok((s.to_owned(), None));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_owned(), Some(parse_port(p)?))),
        None => Ok((s.to_owned(), None)),
    }
}

fn parse_port(p: &str) -> Result<u16, ()> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(()),
        Ok(n) => Ok(n),
    }
}

/// Kong's `path` typedef for service paths: starts with `/`, no empty segments.
pub(crate) fn check_upstream_path(p: &str, path: &str, issues: &mut Issues) -> bool {
    if !p.starts_with('/') {
        issues.error(path, "should start with: /");
        return false;
    }
    if p.contains("//") {
        issues.error(path, "must not have empty segments");
        return false;
    }
    true
}

/// First-declared place of each unique value, for "uniqueness violation" errors.
#[derive(Default)]
pub(crate) struct Unique {
    /// (entity, field, value) to the place that declared it first.
    seen: HashMap<(&'static str, &'static str, String), String>,
}

impl Unique {
    /// Kong's message: "uniqueness violation: '<entity>' entity with <field> set to '<v>' already declared".
    pub fn check(
        &mut self,
        entity: &'static str,
        field: &'static str,
        value: &str,
        path: &str,
        issues: &mut Issues,
    ) -> bool {
        self.check_scoped(entity, field, value, "", path, issues)
    }

    /// As [`Unique::check`], for values unique only within `scope` (e.g. targets of one upstream).
    pub fn check_scoped(
        &mut self,
        entity: &'static str,
        field: &'static str,
        value: &str,
        scope: &str,
        path: &str,
        issues: &mut Issues,
    ) -> bool {
        let mut scoped = String::with_capacity(scope.len() + 1 + value.len());
        scoped.push_str(scope);
        scoped.push('\u{0}');
        scoped.push_str(value);
        let key = (entity, field, scoped);
        match self.seen.entry(key) {
            Entry::Occupied(_) => {
                issues.error(
                    path,
                    format!("uniqueness violation: '{entity}' entity with {field} set to '{value}' already declared"),
                );
                false
            }
            Entry::Vacant(slot) => {
                slot.insert(path.to_owned());
                true
            }
        }
    }

    /// As [`Unique::check`] for secret values: the message names where the first one is
    /// instead of echoing the secret into logs.
    pub fn check_secret(
        &mut self,
        entity: &'static str,
        field: &'static str,
        value: &str,
        path: &str,
        issues: &mut Issues,
    ) -> bool {
        let key = (entity, field, value.to_owned());
        if let Some(first) = self.seen.get(&key) {
            issues.error(
                path,
                format!(
                    "uniqueness violation: '{entity}' entity with {field} set to '<redacted>' already declared (first at {first})"
                ),
            );
            return false;
        }
        self.seen.insert(key, path.to_owned());
        true
    }
}
