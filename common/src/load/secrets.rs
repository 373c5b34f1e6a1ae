//! Secret resolution on the parsed document, before typed decoding, so every error names the
//! place where the secret is used.
//!
//! Two forms, in every string scalar of the document:
//! - `${VAR}` and `${VAR:-default}` anywhere inside a string (shell-like: an empty variable
//!   takes the default too); `$${` writes a literal `${`. Portico's extension: Kong itself
//!   never substitutes inside `kong.yml`.
//! - Kong's env vault reference as the whole value: `{vault://env/<name>[/<json-key>]}`. The
//!   name is upper-cased with `-` turned into `_` (K:kong/vaults/env/init.lua); a `/key`
//!   selects one string from a JSON object held in the variable.
//!
//! An unresolvable value becomes `null` and its place is settled: it has one error ("not
//! set"), not a second one from validation ("required field missing").
//! `_comment` and `_ignore` are skipped: they are ignored content, and a variable mentioned in
//! a comment must not be required.

use std::fmt::Write as _;

use serde_json::Value;

use crate::error::Issues;

/// Resolves secrets in place throughout `doc`.
pub(crate) fn resolve(doc: &mut Value, env: &dyn Fn(&str) -> Option<String>, issues: &mut Issues) {
    walk(doc, &mut String::new(), env, issues);
}

/// `path` is the place of `value` (`services[0].host`); it is extended and truncated back as
/// the walk descends, so a document without secrets costs no allocation per node.
fn walk(
    value: &mut Value,
    path: &mut String,
    env: &dyn Fn(&str) -> Option<String>,
    issues: &mut Issues,
) {
    let len = path.len();
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if k == "_comment" || k == "_ignore" {
                    continue;
                }
                if len > 0 {
                    path.push('.');
                }
                path.push_str(k);
                walk(v, path, env, issues);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                // Same text as `index_path`; no allocation.
                let _ = write!(path, "[{i}]");
                walk(v, path, env, issues);
                path.truncate(len);
            }
        }
        Value::String(s) => {
            if !s.contains('$') && !s.starts_with("{vault://") {
                return;
            }
            match resolve_string(s, env) {
                Ok(resolved) => *s = resolved,
                Err(msg) => {
                    issues.error_settle(path, msg);
                    *value = Value::Null;
                }
            }
        }
        _ => {}
    }
}

/// Substitutes `${..}` in `s`, then resolves a vault reference if the result is one.
pub(crate) fn resolve_string(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let substituted = substitute(s, env)?;
    match substituted
        .strip_prefix("{vault://")
        .and_then(|r| r.strip_suffix('}'))
    {
        Some(reference) => vault(reference, env),
        None => Ok(substituted),
    }
}

/// Expands `${VAR}`, `${VAR:-default}` and the `$${` escape.
fn substitute(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after.find('}').ok_or_else(|| {
                format!("unterminated '${{' in '{s}' (write '$${{' for a literal '${{')")
            })?;
            let inner = &after[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if !valid_var_name(name) {
                return Err(format!(
                    "invalid variable name '{name}' in '${{{inner}}}' (write '$${{' for a literal '${{')"
                ));
            }
            match (
                env(name).filter(|v| !v.is_empty() || default.is_none()),
                default,
            ) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(format!("environment variable {name} is not set")),
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn valid_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Resolves `env/<name>[/<key>]` (the text between `{vault://` and `}`).
fn vault(reference: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let whole = format!("{{vault://{reference}}}");
    let Some(rest) = reference.strip_prefix("env/") else {
        let vault_name = reference.split('/').next().unwrap_or_default();
        return Err(format!(
            "{whole}: vault '{vault_name}' is not supported (only 'env')"
        ));
    };
    if rest.contains(['?', '#']) {
        return Err(format!(
            "{whole}: vault options and versions are not supported"
        ));
    }
    let (resource, key) = match rest.split_once('/') {
        Some((r, k)) => (r, Some(k)),
        None => (rest, None),
    };
    if resource.is_empty() || key == Some("") {
        return Err(format!("{whole}: invalid vault reference"));
    }
    let var = resource.to_ascii_uppercase().replace('-', "_");
    let value =
        env(&var).ok_or_else(|| format!("{whole}: environment variable {var} is not set"))?;
    let Some(key) = key else {
        return Ok(value);
    };
    let json: Value = serde_json::from_str(&value)
        .map_err(|_| format!("{whole}: environment variable {var} does not hold a JSON object"))?;
    match json.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::Bool(b)) => Ok(b.to_string()),
        Some(_) => Err(format!("{whole}: key '{key}' in {var} is not a string")),
        None if json.is_object() => Err(format!("{whole}: key '{key}' not found in {var}")),
        None => Err(format!(
            "{whole}: environment variable {var} does not hold a JSON object"
        )),
    }
}
