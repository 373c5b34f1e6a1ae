//! Routes: protocols, methods, hosts, headers and paths with Kong's rules (KONG.md §1.4, §2.1;
//! K:kong/db/schema/entities/routes.lua, K:kong/db/schema/typedefs.lua).

use std::collections::BTreeMap;

use serde_json::Value;

use super::checks::{self, check_name, explicit_id, one_of};
use super::collect::Item;
use super::ids::{self, IdFrom};
use super::{Ctx, Index};
use crate::config;
use crate::error::{field_path, index_path, Issues};
use crate::snapshot::{Protocol, Route, Service};

const PROTOCOLS: &[&str] = &[
    "grpc",
    "grpcs",
    "http",
    "https",
    "tcp",
    "tls",
    "tls_passthrough",
    "udp",
];
const REDIRECT_CODES: &[i64] = &[426, 301, 302, 307, 308];
/// Characters that make a prefix path look like a regex its author forgot to mark with `~`.
const REGEX_HINTS: &[char] = &[
    '\\', '(', ')', '[', ']', '*', '+', '$', '^', '{', '}', '|', '?',
];

/// Lists at least this long are prechecked on two threads (see [`precheck`]).
const PARALLEL_MIN: usize = 2048;

/// A route that passed every check of [`checked`] without an error or a warning.
type Clean = Option<(Route, IdFrom)>;

/// Validates every route; the list stays aligned with `items`.
pub(crate) fn build(
    items: &[Item<config::Route>],
    services: &[Service],
    service_index: &Index,
    ctx: &mut Ctx,
) -> (Vec<Route>, Index) {
    let mut clean = precheck(items, services, service_index, ctx.canonicalize);
    let mut out = Vec::with_capacity(items.len());
    let mut index = Index::default();
    for (i, item) in items.iter().enumerate() {
        let svc = service_index.parent(
            item.parent,
            &item.cfg.service,
            "services",
            &item.path,
            "service",
            false,
            &mut ctx.issues,
        );
        let r = match clean.get_mut(i).and_then(Option::take) {
            Some((r, from)) => finish(r, from, &item.path, ctx),
            None => route(item, svc.map(|s| services[s].id), ctx),
        };
        index.add(r.name.as_deref(), r.id, i);
        out.push(r);
    }
    (out, index)
}

/// For a long list, runs [`checked`] for every route on two threads, each route against its
/// own scratch issues, and keeps the result of each route that had none. [`build`] then takes
/// such a route as it is (its checks cannot report anything in the real run either: issues
/// are only ever added, or silenced by a settled place) and runs every other route the
/// sequential way, so the errors, warnings and their order are exactly the sequential ones.
/// Empty (nothing prechecked) for a short list or on one core.
fn precheck(
    items: &[Item<config::Route>],
    services: &[Service],
    service_index: &Index,
    canonicalize: super::Canonicalize,
) -> Vec<Clean> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if items.len() < PARALLEL_MIN || cores < 2 {
        return Vec::new();
    }
    #[cfg(test)]
    if SEQUENTIAL.with(std::cell::Cell::get) {
        return Vec::new();
    }
    let run = |items: &[Item<config::Route>]| -> Vec<Clean> {
        items
            .iter()
            .map(|item| {
                let mut scratch = Issues::default();
                let svc = service_index.parent(
                    item.parent,
                    &item.cfg.service,
                    "services",
                    &item.path,
                    "service",
                    false,
                    &mut scratch,
                );
                let r = checked(
                    item,
                    svc.map(|s| services[s].id),
                    canonicalize,
                    &mut scratch,
                );
                (scratch.errors.is_empty() && scratch.warnings.is_empty()).then_some(r)
            })
            .collect()
    };
    let (first, second) = items.split_at(items.len() / 2);
    std::thread::scope(|scope| {
        let other = std::thread::Builder::new()
            .name("routes".into())
            .spawn_scoped(scope, || run(second));
        let mut out = run(first);
        // Without a thread, the second half goes the sequential way.
        if let Ok(Ok(rest)) = other.map(|h| h.join()) {
            out.extend(rest);
        }
        out
    })
}

#[cfg(test)]
thread_local! {
    /// Set by tests to load the sequential way, for comparison.
    pub(crate) static SEQUENTIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn route(item: &Item<config::Route>, service: Option<uuid::Uuid>, ctx: &mut Ctx) -> Route {
    let (r, from) = checked(item, service, ctx.canonicalize, &mut ctx.issues);
    finish(r, from, &item.path, ctx)
}

/// The checks that need more than the route itself: its name's uniqueness and its id's.
fn finish(r: Route, from: IdFrom, path: &str, ctx: &mut Ctx) -> Route {
    let fresh = r
        .name
        .as_ref()
        .is_none_or(|n| ctx.unique.check("routes", "name", n, path, &mut ctx.issues));
    if fresh {
        ctx.claim_id("routes", r.id, from, path);
    }
    r
}

/// Every check of one route that needs only the route and its service's id; the route with
/// Kong's defaults, and how its id was assigned.
fn checked(
    item: &Item<config::Route>,
    service: Option<uuid::Uuid>,
    canonicalize: super::Canonicalize,
    issues: &mut Issues,
) -> (Route, IdFrom) {
    let (cfg, path) = (&item.cfg, item.path.as_str());

    let explicit = explicit_id(&cfg.id, path, issues);
    // The content (and its service) only names a route that has no name.
    let content = match cfg.name {
        Some(_) => String::new(),
        None => format!(
            "{}|service:{}",
            item.content,
            service.map(|s| s.to_string()).unwrap_or_default()
        ),
    };
    let (id, from) = ids::assign("routes", explicit, cfg.name.as_deref(), &content);
    check_name(&cfg.name, path, "name", issues);

    let protocols = protocols(cfg.protocols.as_deref(), path, issues);
    let is_grpc = protocols
        .iter()
        .any(|p| matches!(p, Protocol::Grpc | Protocol::Grpcs));
    let is_stream = protocols.iter().any(|p| p.is_stream());
    if is_stream {
        issues.error(
            &field_path(path, "protocols"),
            "stream routes (tcp, tls, tls_passthrough, udp) are not supported by Portico yet",
        );
    }

    let errors_before = issues.errors.len();
    let methods = methods(cfg.methods.as_deref(), path, issues);
    if is_grpc && !methods.is_empty() {
        issues.error(
            &field_path(path, "methods"),
            "cannot set 'methods' when 'protocols' is 'grpc' or 'grpcs'",
        );
    }
    let hosts = hosts(cfg.hosts.as_deref(), path, issues);
    let headers = headers(cfg.headers.as_ref(), path, issues);
    let paths = paths(cfg.paths.as_deref(), path, canonicalize, issues);
    let snis = snis(cfg.snis.as_deref(), path, issues);
    let tls_protocol = protocols.iter().any(|p| {
        matches!(
            p,
            Protocol::Https | Protocol::Grpcs | Protocol::Tls | Protocol::TlsPassthrough
        )
    });
    if !snis.is_empty() && !tls_protocol {
        issues.error(
            &field_path(path, "snis"),
            "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or 'tls_passthrough'",
        );
    }

    if !is_stream {
        let plain = protocols.contains(&Protocol::Http) || protocols.contains(&Protocol::Grpc);
        let any = !methods.is_empty()
            || !hosts.is_empty()
            || !headers.is_empty()
            || !paths.is_empty()
            || (!plain && !snis.is_empty());
        // A route whose only path was refused already has its error; don't add a second one.
        if !any && issues.errors.len() == errors_before {
            let msg = if is_grpc {
                let p = if protocols.contains(&Protocol::Grpc) {
                    "grpc"
                } else {
                    "grpcs"
                };
                format!("must set one of 'hosts', 'headers', 'paths' when 'protocols' is '{p}'")
            } else if protocols.contains(&Protocol::Http) {
                "must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'"
                    .to_owned()
            } else {
                "must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'https'".to_owned()
            };
            issues.error(path, msg);
        }
    }

    // gRPC routes never strip (Kong forces false and refuses true).
    let strip_path = match (is_grpc, cfg.strip_path) {
        (true, Some(true)) => {
            issues.error(
                &field_path(path, "strip_path"),
                "cannot set 'strip_path' when 'protocols' is 'grpc' or 'grpcs'",
            );
            false
        }
        (true, _) => false,
        (false, v) => v.unwrap_or(true),
    };
    let path_handling = cfg.path_handling.clone().unwrap_or_else(|| "v0".to_owned());
    if one_of(&path_handling, &["v0", "v1"], path, "path_handling", issues) && path_handling == "v1"
    {
        issues.warn(
            &field_path(path, "path_handling"),
            "'v1' is deprecated in Kong and does not work with its default router; consider 'v0'",
        );
    }
    let redirect = cfg.https_redirect_status_code.unwrap_or(426);
    if !REDIRECT_CODES.contains(&redirect) {
        issues.error(
            &field_path(path, "https_redirect_status_code"),
            "expected one of: 426, 301, 302, 307, 308",
        );
    }
    let regex_priority = cfg.regex_priority.unwrap_or(0);

    for (field, value) in [
        ("sources", &cfg.sources),
        ("destinations", &cfg.destinations),
        ("expression", &cfg.expression),
        ("priority", &cfg.priority),
    ] {
        checks::unsupported(value, &Value::Null, path, field, issues);
    }
    let tags = checks::tags(&cfg.tags, path, issues);

    let route = Route {
        id,
        name: cfg.name.clone(),
        service,
        protocols,
        methods,
        hosts,
        paths,
        headers,
        strip_path,
        preserve_host: cfg.preserve_host.unwrap_or(false),
        regex_priority,
        path_handling,
        https_redirect_status_code: if REDIRECT_CODES.contains(&redirect) {
            redirect as u16
        } else {
            426
        },
        request_buffering: cfg.request_buffering.unwrap_or(true),
        response_buffering: cfg.response_buffering.unwrap_or(true),
        tags,
        snis,
    };
    (route, from)
}

fn protocols(written: Option<&[String]>, path: &str, issues: &mut Issues) -> Vec<Protocol> {
    let Some(written) = written else {
        return vec![Protocol::Http, Protocol::Https];
    };
    let field = field_path(path, "protocols");
    if written.is_empty() {
        issues.error(&field, "length must be at least 1");
    }
    let mut out = Vec::new();
    for (i, p) in written.iter().enumerate() {
        match Protocol::parse(p).filter(|_| PROTOCOLS.contains(&p.as_str())) {
            Some(proto) if !out.contains(&proto) => out.push(proto),
            Some(_) => {}
            None => issues.error(
                &index_path(&field, i),
                format!("expected one of: {}", PROTOCOLS.join(", ")),
            ),
        }
    }
    let group = |p: &Protocol| match p {
        Protocol::Http | Protocol::Https => 0,
        Protocol::Tcp | Protocol::Tls | Protocol::Udp => 1,
        Protocol::TlsPassthrough => 2,
        _ => 3,
    };
    if out.iter().any(|p| group(p) != group(&out[0])) {
        issues.error(
            &field,
            "these sets are mutually exclusive: ('http', 'https'), ('tcp', 'tls', 'udp'), ('tls_passthrough'), ('grpc', 'grpcs')",
        );
    }
    out
}

/// Methods are HTTP tokens; written in any case, stored uppercase (Kong compares them exactly).
fn methods(written: Option<&[String]>, path: &str, issues: &mut Issues) -> Vec<String> {
    let field = || field_path(path, "methods");
    let mut out = Vec::new();
    for (i, m) in written.unwrap_or_default().iter().enumerate() {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
            issues.error(
                &index_path(&field(), i),
                format!("invalid method '{m}': expected letters only, e.g. 'GET'"),
            );
            continue;
        }
        let m = m.to_ascii_uppercase();
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

/// Hosts: lowercased, optional `:port`, at most one `*` in the leftmost or rightmost label.
fn hosts(written: Option<&[String]>, path: &str, issues: &mut Issues) -> Vec<String> {
    let field = || field_path(path, "hosts");
    let mut out = Vec::new();
    for (i, h) in written.unwrap_or_default().iter().enumerate() {
        let h = h.to_ascii_lowercase();
        if let Err(msg) = check_route_host(&h) {
            issues.error(&index_path(&field(), i), msg);
        } else if !out.contains(&h) {
            out.push(h);
        }
    }
    out
}

/// TLS server names, lowercased: hostnames with at most one wildcard, leftmost or rightmost,
/// and no port.
fn snis(written: Option<&[String]>, path: &str, issues: &mut Issues) -> Vec<String> {
    let field = || field_path(path, "snis");
    let mut out = Vec::new();
    for (i, name) in written.unwrap_or_default().iter().enumerate() {
        let name = name.to_ascii_lowercase();
        match checks::sni_name(&name) {
            Err(msg) => issues.error(&index_path(&field(), i), msg),
            Ok(()) if name == "*" => issues.error(
                &index_path(&field(), i),
                "invalid value: a route's snis need a hostname ('*' names the default certificate only)",
            ),
            Ok(()) if !out.contains(&name) => out.push(name),
            Ok(()) => {}
        }
    }
    out
}

fn check_route_host(h: &str) -> Result<(), String> {
    let invalid = || format!("invalid hostname: {h}");
    let (name, _port) = checks::split_host_port(h).map_err(|_| invalid())?;
    let stars = name.matches('*').count();
    if stars > 1 {
        return Err("invalid wildcard: must have at most one wildcard".to_owned());
    }
    if stars == 1 {
        let rest = name
            .strip_prefix("*.")
            .or_else(|| name.strip_suffix(".*"))
            .ok_or_else(|| {
                "invalid wildcard: must be placed at leftmost or rightmost label".to_owned()
            })?;
        return if checks::is_hostname(rest) {
            Ok(())
        } else {
            Err(invalid())
        };
    }
    if checks::valid_host(&name) {
        Ok(())
    } else {
        Err(invalid())
    }
}

/// Header names lowercased (HTTP names are case-insensitive); `Host` belongs in `hosts`.
fn headers(
    written: Option<&BTreeMap<String, Vec<String>>>,
    path: &str,
    issues: &mut Issues,
) -> BTreeMap<String, Vec<String>> {
    let Some(written) = written else {
        return BTreeMap::new();
    };
    let field = field_path(path, "headers");
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, values) in written {
        let lower = name.to_ascii_lowercase();
        let here = field_path(&field, name);
        if lower == "host" {
            issues.error(
                &field,
                "cannot contain 'host' header, which must be specified in the 'hosts' attribute",
            );
            continue;
        }
        if lower.is_empty() || !lower.bytes().all(is_token_byte) {
            issues.error(&here, format!("invalid header name '{name}'"));
            continue;
        }
        if values.is_empty() {
            issues.error(&here, "length must be at least 1");
        }
        for (i, v) in values.iter().enumerate() {
            if let Some(re) = v.strip_prefix("~*") {
                if let Err(e) = check_regex(&format!("(?i){re}")) {
                    issues.error(
                        &index_path(&here, i),
                        format!("invalid regex: '{re}' ({e})"),
                    );
                }
            }
        }
        if out.contains_key(&lower) {
            issues.error(
                &here,
                format!("duplicate header '{lower}' (header names are case-insensitive)"),
            );
            continue;
        }
        out.insert(lower, values.clone());
    }
    out
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Prefix paths (`/..`, already normalized) and regex paths (`~..`, must compile as `^..`).
fn paths(
    written: Option<&[String]>,
    path: &str,
    canonicalize: super::Canonicalize,
    issues: &mut Issues,
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, p) in written.unwrap_or_default().iter().enumerate() {
        // Built only when there is something to report.
        let here = || index_path(&field_path(path, "paths"), i);
        if let Some(pattern) = p.strip_prefix('~') {
            if plainly_valid(pattern) {
                // Nothing the parser could refuse.
            } else if let Err(e) = check_regex(&format!("^{pattern}")) {
                issues.error(&here(), format!("invalid regex: '{pattern}' ({e})"));
                continue;
            }
        } else {
            if !p.starts_with('/') {
                issues.error(
                    &here(),
                    "should start with: / (fixed path) or ~/ (regex path)",
                );
                continue;
            }
            if p.contains(REGEX_HINTS) {
                issues.warn(
                    &here(),
                    format!("prefix path '{p}' contains regex characters but matches literally; write '~{p}' if you meant a regex"),
                );
            }
            if p.contains("//") {
                issues.error(&here(), "must not have empty segments");
                continue;
            }
            match canonicalize(p) {
                Ok(n) if n != p.as_str() => {
                    issues.error(
                        &here(),
                        format!("non-normalized path, consider use '{n}' instead"),
                    );
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    issues.error(&here(), format!("invalid path: {e}"));
                    continue;
                }
            }
        }
        if !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}

/// Checks a regex's syntax with `regex_syntax`, the parser the `regex` crate itself runs with
/// the same default settings, so it accepts and refuses the same patterns with the same
/// messages, without building the matcher (a full `Regex::new` per path cost a quarter of a
/// 10,000-route load). The one failure left to compilation is a pattern whose compiled program
/// exceeds the regex size limit (`a{100000}`); the data plane's compile step refuses it, naming
/// the route, and `portico validate` runs that step too.
///
/// Errors are reduced to their one-line cause (`unclosed group`).
fn check_regex(pattern: &str) -> Result<(), String> {
    regex_syntax::Parser::new()
        .parse(pattern)
        .map(drop)
        .map_err(|e| one_line(&e.to_string()))
}

/// Whether `^` followed by `pattern` is in a small subset of regex syntax that
/// [`check_regex`] always accepts, so the parser need not run (it was a third of validating a
/// route): ASCII letters, digits and `/-_,:;=@!%'"` as literals, `.`, the classes
/// `\d \D \w \W \s \S`, escaped `. / - \\`, the anchors `^ $`, and one of `+ * ?` (optionally
/// followed by `?`, lazy) right after a literal, `.` or an escape. Anything else (groups,
/// classes, counted repetition, other escapes) goes to the parser.
fn plainly_valid(pattern: &str) -> bool {
    // Whether the previous item can take a repetition operator.
    let mut repeatable = false;
    let mut bytes = pattern.bytes();
    while let Some(b) = bytes.next() {
        repeatable = match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' => true,
            b'/' | b'-' | b'_' | b',' | b':' | b';' | b'=' | b'@' | b'!' | b'%' | b'\'' | b'"' => {
                true
            }
            b'^' | b'$' => false,
            b'\\' => match bytes.next() {
                Some(b'd' | b'D' | b'w' | b'W' | b's' | b'S' | b'.' | b'/' | b'-' | b'\\') => true,
                _ => return false,
            },
            b'+' | b'*' | b'?' if repeatable => {
                let mut rest = bytes.clone();
                if rest.next() == Some(b'?') {
                    bytes = rest;
                }
                false
            }
            _ => return false,
        };
    }
    true
}

/// The parser's multi-line error (pattern, caret, `error: ..`), reduced to its one-line cause.
fn one_line(text: &str) -> String {
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map(str::to_owned)
        .unwrap_or_else(|| text.lines().last().unwrap_or_default().trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checks agree with `regex::Regex::new`, messages included.
    #[test]
    fn regex_check_matches_the_regex_crate() {
        for p in [
            r"^/users/\d+$",
            r"^/(?P<id>\w+)",
            r"^/(?<id>\w+)",
            r"(?i)abc",
            r"^/users/(\d+",
            r"^/a(?=b)",
            r"^/x((",
            r"^/\p{Foo}",
            r"^[z-a]",
            r"^a{2,1}",
            r"^\8",
            r"(?i)[",
            r"^*",
        ] {
            let expected = regex::Regex::new(p).map(drop).map_err(|e| match e {
                regex::Error::Syntax(text) => one_line(&text),
                other => panic!("{other}"),
            });
            assert_eq!(check_regex(p), expected, "{p}");
        }
    }

    /// Whatever skips the parser, the parser accepts; the rest goes through it.
    #[test]
    fn plainly_valid_patterns_parse() {
        let plain = [
            r"/api/v1/items/\d+$",
            r"/users/\w+/x",
            r"/a.b*c?d+?e*?f??/",
            r"/x\.y\/z\-w\\v",
            r"$/^",
            r"/q=1,2;a:b@c!d%e'f",
            "/\"q\"",
            r"/\D\W\S\s",
            "",
        ];
        for p in plain {
            assert!(plainly_valid(p), "{p}");
            assert_eq!(check_regex(&format!("^{p}")), Ok(()), "{p}");
        }
        for p in [
            r"+", r"/a++", r"/a+*", r"/a???", r"$*", r"/(a)", r"/[a]", r"/a{2}", r"/a|b",
            r"/\p{L}", r"/\b", r"/\", r"/\8", "/é", "/a b", "/#",
        ] {
            assert!(!plainly_valid(p), "{p}");
        }
    }

    /// The one difference, left to the data plane's compile step: a pattern that parses but
    /// compiles past the regex size limit.
    #[test]
    fn size_limit_is_left_to_compilation() {
        let p = r"^(\w{100}){100}";
        assert!(matches!(
            regex::Regex::new(p),
            Err(regex::Error::CompiledTooBig(_))
        ));
        assert_eq!(check_regex(p), Ok(()));
    }
}
