//! Upstreams and their targets (KONG.md §1.5; K:kong/db/schema/entities/upstreams.lua,
//! targets.lua). `healthchecks` is kept as Kong's JSON object, user values merged over Kong's
//! defaults, with every key and value checked against the defaults' shape.

use serde_json::{json, Value};

use super::checks::{self, explicit_id, int_in, one_of};
use super::collect::{kind, Item};
use super::{ids, Ctx, Index};
use crate::config;
use crate::error::{field_path, Issues};
use crate::snapshot::{HashInputs, Target, Upstream};

const ALGORITHMS: &[&str] = &[
    "consistent-hashing",
    "least-connections",
    "round-robin",
    "latency",
];
const HASH_ON: &[&str] = &[
    "none",
    "consumer",
    "ip",
    "header",
    "cookie",
    "path",
    "query_arg",
    "uri_capture",
];
/// Hash inputs the data plane cannot read yet (route regex captures are not kept per request).
const HASH_ON_UNSUPPORTED: &[&str] = &["uri_capture"];

/// Validates upstreams, then attaches each target (nested or top-level) to its upstream.
pub(crate) fn build(
    items: &[Item<config::Upstream>],
    targets: &[Item<config::Target>],
    ctx: &mut Ctx,
) -> Vec<Upstream> {
    let mut out: Vec<Upstream> = items.iter().map(|item| upstream(item, ctx)).collect();
    let mut index = Index::default();
    for (i, u) in out.iter().enumerate() {
        index.add(Some(&u.name), u.id, i);
    }
    for item in targets {
        let parent = index.parent(
            item.parent,
            &item.cfg.upstream,
            "upstreams",
            &item.path,
            "upstream",
            true,
            &mut ctx.issues,
        );
        let upstream_id = parent.map(|i| out[i].id);
        let t = target(item, upstream_id, ctx);
        if let (Some(i), Some(t)) = (parent, t) {
            out[i].targets.push(t);
        }
    }
    out
}

fn upstream(item: &Item<config::Upstream>, ctx: &mut Ctx) -> Upstream {
    let (cfg, path) = (&item.cfg, item.path.as_str());
    let issues = &mut ctx.issues;
    let explicit = explicit_id(&cfg.id, path, issues);

    let name = cfg.name.clone().unwrap_or_default();
    match &cfg.name {
        None => issues.error(&field_path(path, "name"), checks::REQUIRED),
        Some(n) => {
            let npath = field_path(path, "name");
            let is_ip = n.parse::<std::net::IpAddr>().is_ok()
                || checks::split_host_port(n)
                    .is_ok_and(|(h, _)| h.parse::<std::net::IpAddr>().is_ok());
            if is_ip {
                issues.error(
                    &npath,
                    format!("Invalid name ('{n}'); no ip addresses allowed"),
                );
            } else if checks::split_host_port(n).is_ok_and(|(_, port)| port.is_some()) {
                issues.error(&npath, format!("Invalid name ('{n}'); no port allowed"));
            } else if !checks::is_hostname(n) {
                issues.error(
                    &npath,
                    format!("Invalid name ('{n}'); must be a valid hostname"),
                );
            }
        }
    }
    let (id, from) = ids::assign("upstreams", explicit, cfg.name.as_deref(), &item.content);

    let hash_on = hash_field(&cfg.hash_on, path, "hash_on", issues);
    let hash_fallback = hash_field(&cfg.hash_fallback, path, "hash_fallback", issues);
    let fallback_path = field_path(path, "hash_fallback");
    if hash_on == "none" && hash_fallback != "none" {
        issues.error(&fallback_path, "must be 'none' when 'hash_on' is 'none'");
    } else if hash_on == "cookie" && hash_fallback != "none" {
        // The cookie is set when missing, so there is never anything to fall back from.
        issues.error(&fallback_path, "must be 'none' when 'hash_on' is 'cookie'");
    } else if hash_fallback != "none"
        && hash_fallback == hash_on
        && !["header", "query_arg"].contains(&hash_on.as_str())
    {
        issues.error(&fallback_path, "must differ from 'hash_on'");
    }
    let hash_inputs = hash_inputs(cfg, &hash_on, &hash_fallback, path, issues);
    // Kong switches to consistent-hashing when a hash input is set and no algorithm was chosen.
    let algorithm = match &cfg.algorithm {
        Some(a) => {
            if one_of(a, ALGORITHMS, path, "algorithm", issues) && a == "latency" {
                issues.error(
                    &field_path(path, "algorithm"),
                    "'latency' is not supported by Portico yet",
                );
            }
            a.clone()
        }
        None if hash_on != "none" => "consistent-hashing".to_owned(),
        None => "round-robin".to_owned(),
    };
    let slots = int_in(cfg.slots, 10000, (10, 65536), path, "slots", issues);
    if let Some(h) = &cfg.host_header {
        if !checks::valid_host(h) {
            issues.error(
                &field_path(path, "host_header"),
                format!("invalid hostname: '{h}'"),
            );
        }
    }

    let mut healthchecks = healthcheck_defaults();
    if let Some(user) = &cfg.healthchecks {
        merge(
            &mut healthchecks,
            user,
            "",
            &field_path(path, "healthchecks"),
            issues,
        );
    }

    for (field, value) in [
        ("hash_on_uri_capture", &cfg.hash_on_uri_capture),
        ("hash_fallback_uri_capture", &cfg.hash_fallback_uri_capture),
        ("client_certificate", &cfg.client_certificate),
    ] {
        checks::unsupported(value, &Value::Null, path, field, issues);
    }
    checks::unsupported(
        &cfg.use_srv_name,
        &json!(false),
        path,
        "use_srv_name",
        issues,
    );
    let tags = checks::tags(&cfg.tags, path, issues);

    let fresh = cfg.name.as_ref().is_none_or(|n| {
        ctx.unique
            .check("upstreams", "name", n, path, &mut ctx.issues)
    });
    if fresh {
        ctx.claim_id("upstreams", id, from, path);
    }

    Upstream {
        id,
        name,
        algorithm,
        hash_on,
        hash_fallback,
        slots: slots as u32,
        host_header: cfg.host_header.clone(),
        hash_inputs,
        healthchecks,
        targets: Vec::new(),
        tags,
    }
}

fn hash_field(value: &Option<String>, path: &str, field: &str, issues: &mut Issues) -> String {
    let Some(v) = value else {
        return "none".to_owned();
    };
    if !one_of(v, HASH_ON, path, field, issues) {
        return "none".to_owned();
    }
    if HASH_ON_UNSUPPORTED.contains(&v.as_str()) {
        issues.error(
            &field_path(path, field),
            format!("'{v}' is not supported by Portico yet"),
        );
    }
    v.clone()
}

/// The companion fields of `hash_on`/`hash_fallback`, required where used (Kong's entity
/// checks); fields for an input not in use are accepted and not kept.
fn hash_inputs(
    cfg: &config::Upstream,
    hash_on: &str,
    hash_fallback: &str,
    path: &str,
    issues: &mut Issues,
) -> HashInputs {
    let uses = |input: &str| hash_on == input || hash_fallback == input;
    let mut out = HashInputs::default();
    let need = |value: &Option<Value>, field: &str, used: bool, issues: &mut Issues| {
        let v = string_field(value, path, field, issues);
        if used && v.is_none() && !has_error(value) {
            issues.error(&field_path(path, field), checks::REQUIRED);
        }
        v.filter(|_| used)
    };
    out.on_header = need(
        &cfg.hash_on_header,
        "hash_on_header",
        hash_on == "header",
        issues,
    )
    .and_then(|h| header_name(h, path, "hash_on_header", issues));
    out.fallback_header = need(
        &cfg.hash_fallback_header,
        "hash_fallback_header",
        hash_fallback == "header",
        issues,
    )
    .and_then(|h| header_name(h, path, "hash_fallback_header", issues));
    if out.on_header.is_some() && out.on_header == out.fallback_header {
        issues.error(
            &field_path(path, "hash_fallback_header"),
            "must differ from 'hash_on_header'",
        );
    }
    out.cookie = need(
        &cfg.hash_on_cookie,
        "hash_on_cookie",
        uses("cookie"),
        issues,
    )
    .filter(|c| {
        let ok = !c.is_empty() && c.bytes().all(is_token_byte);
        if !ok {
            issues.error(
                &field_path(path, "hash_on_cookie"),
                format!("invalid cookie name: '{c}'"),
            );
        }
        ok
    });
    let cookie_path = string_field(
        &cfg.hash_on_cookie_path,
        path,
        "hash_on_cookie_path",
        issues,
    )
    .filter(|p| checks::check_upstream_path(p, &field_path(path, "hash_on_cookie_path"), issues));
    if uses("cookie") {
        out.cookie_path = Some(cookie_path.unwrap_or_else(|| "/".to_owned()));
    }
    out.on_query_arg = need(
        &cfg.hash_on_query_arg,
        "hash_on_query_arg",
        hash_on == "query_arg",
        issues,
    );
    out.fallback_query_arg = need(
        &cfg.hash_fallback_query_arg,
        "hash_fallback_query_arg",
        hash_fallback == "query_arg",
        issues,
    );
    for (field, v) in [
        ("hash_on_query_arg", &out.on_query_arg),
        ("hash_fallback_query_arg", &out.fallback_query_arg),
    ] {
        if v.as_deref() == Some("") {
            issues.error(&field_path(path, field), "length must be at least 1");
        }
    }
    if out.on_query_arg.is_some() && out.on_query_arg == out.fallback_query_arg {
        issues.error(
            &field_path(path, "hash_fallback_query_arg"),
            "must differ from 'hash_on_query_arg'",
        );
    }
    out
}

/// A string-or-null field; anything else is an error (and `None`).
fn string_field(
    value: &Option<Value>,
    path: &str,
    field: &str,
    issues: &mut Issues,
) -> Option<String> {
    match value {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            issues.error(
                &field_path(path, field),
                format!("expected a string, got {}", kind(other)),
            );
            None
        }
    }
}

/// True when `value` is present but not a string (already reported by [`string_field`]).
fn has_error(value: &Option<Value>) -> bool {
    !matches!(value, None | Some(Value::Null) | Some(Value::String(_)))
}

/// A header name, lowercased; `None` (reported) when it is not an HTTP token.
fn header_name(h: String, path: &str, field: &str, issues: &mut Issues) -> Option<String> {
    if h.is_empty() || !h.bytes().all(is_token_byte) {
        issues.error(
            &field_path(path, field),
            format!("bad header name '{h}', allowed characters are A-Z, a-z, 0-9, '_', and '-'"),
        );
        return None;
    }
    Some(h.to_ascii_lowercase())
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A target; `None` when its address is unusable.
fn target(
    item: &Item<config::Target>,
    upstream: Option<uuid::Uuid>,
    ctx: &mut Ctx,
) -> Option<Target> {
    let (cfg, path) = (&item.cfg, item.path.as_str());
    let issues = &mut ctx.issues;
    let explicit = explicit_id(&cfg.id, path, issues);
    let weight = int_in(cfg.weight, 100, (0, 65535), path, "weight", issues);
    let tags = checks::tags(&cfg.tags, path, issues);
    let written = checks::required(&cfg.target, path, "target", issues)?;
    let tpath = field_path(path, "target");
    let parsed = checks::split_host_port(written)
        .ok()
        .filter(|(h, _)| checks::valid_host(h));
    let Some((host, port)) = parsed else {
        issues.error(
            &tpath,
            format!("Invalid target ('{written}'); not a valid hostname or ip address"),
        );
        return None;
    };
    let port = port.unwrap_or(8000);
    let normalized = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };

    let upstream = upstream?;
    let key = ids::cache_key("targets", &[&upstream.to_string(), written]);
    let (id, from) = ids::assign("targets", explicit, Some(&key), "");
    if ctx.unique.check_scoped(
        "targets",
        "target",
        &normalized,
        &upstream.to_string(),
        path,
        &mut ctx.issues,
    ) {
        ctx.claim_id("targets", id, from, path);
    }
    Some(Target {
        id,
        target: normalized,
        host,
        port,
        weight: weight as u32,
        tags,
    })
}

/// Kong's healthcheck defaults (K:kong/db/schema/entities/upstreams.lua `healthchecks_config`).
pub(crate) fn healthcheck_defaults() -> Value {
    json!({
        "active": {
            "type": "http",
            "timeout": 1,
            "concurrency": 10,
            "http_path": "/",
            "https_verify_certificate": true,
            "healthy": { "interval": 0, "http_statuses": [200, 302], "successes": 0 },
            "unhealthy": {
                "interval": 0,
                "http_statuses": [429, 404, 500, 501, 502, 503, 504, 505],
                "tcp_failures": 0,
                "timeouts": 0,
                "http_failures": 0
            }
        },
        "passive": {
            "type": "http",
            "healthy": {
                "http_statuses": [200, 201, 202, 203, 204, 205, 206, 207, 208, 226,
                                  300, 301, 302, 303, 304, 305, 306, 307, 308],
                "successes": 0
            },
            "unhealthy": {
                "http_statuses": [429, 500, 503],
                "tcp_failures": 0,
                "timeouts": 0,
                "http_failures": 0
            }
        },
        "threshold": 0
    })
}

/// Merges `user` over `default` in place. `key` is the field name (it picks the value rules).
fn merge(default: &mut Value, user: &Value, key: &str, path: &str, issues: &mut Issues) {
    match (&mut *default, user) {
        (_, Value::Null) => {}
        (Value::Object(d), Value::Object(u)) => {
            for (k, v) in u {
                let here = field_path(path, k);
                match d.get_mut(k) {
                    Some(dv) => merge(dv, v, k, &here, issues),
                    // Fields Kong has without a default.
                    None if k == "https_sni" && key == "active" => match v {
                        Value::String(_) | Value::Null => {
                            d.insert(k.clone(), v.clone());
                        }
                        other => {
                            issues.error(&here, format!("expected a string, got {}", kind(other)))
                        }
                    },
                    None if k == "headers" && key == "active" => match v {
                        Value::Object(_) | Value::Null => {
                            d.insert(k.clone(), v.clone());
                        }
                        other => {
                            issues.error(&here, format!("expected an object, got {}", kind(other)))
                        }
                    },
                    None => issues.error(path, format!("unknown field '{k}'")),
                }
            }
        }
        (Value::Number(_), Value::Number(n)) => {
            let (lo, hi, integer) = match key {
                "timeout" | "interval" => (0.0, 65535.0, false),
                "concurrency" => (1.0, 2_147_483_648.0, true),
                "threshold" => (0.0, 100.0, false),
                _ => (0.0, 2_147_483_648.0, true),
            };
            let v = n.as_f64().unwrap_or(-1.0);
            if integer && v.fract() != 0.0 {
                issues.error(path, "expected an integer");
            } else if !(lo..=hi).contains(&v) {
                issues.error(path, format!("value should be between {lo} and {hi}"));
            } else {
                *default = user.clone();
            }
        }
        (Value::Bool(_), Value::Bool(_)) => *default = user.clone(),
        (Value::String(_), Value::String(s)) => {
            let ok = match key {
                "type" => {
                    let ok = ["tcp", "http", "https", "grpc", "grpcs"].contains(&s.as_str());
                    if !ok {
                        issues.error(path, "expected one of: tcp, http, https, grpc, grpcs");
                    }
                    ok
                }
                "http_path" => checks::check_upstream_path(s, path, issues),
                _ => true,
            };
            if ok {
                *default = user.clone();
            }
        }
        (Value::Array(_), Value::Array(items)) => {
            let bad = items
                .iter()
                .any(|s| !s.as_u64().is_some_and(|c| (100..=999).contains(&c)));
            if bad {
                issues.error(
                    path,
                    "expected HTTP status codes (integers between 100 and 999)",
                );
            } else {
                *default = user.clone();
            }
        }
        (d, other) => issues.error(path, format!("expected {}, got {}", kind(d), kind(other))),
    }
}
