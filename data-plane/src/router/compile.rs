//! Turns snapshot routes into matchers the way Kong's traditional_compatible flavor does
//! (K:kong/router/transform.lua): one matcher per path group (`split_routes_and_services_by_path`),
//! the 64-bit priority of `get_priority`, and the per-field predicates of `get_expression`.

use std::collections::HashMap;

use http::HeaderName;
use portico_common::snapshot::{Protocol, Route, Snapshot};
use regex::Regex;
use uuid::Uuid;

use super::RouterError;

/// Namespace Kong uses to derive the ids of split routes (transform.lua `uuid_generator`).
const SPLIT_NAMESPACE: Uuid = Uuid::from_u128(0x7f145bf9_0dce_4f91_98eb_debbce4b9f6b);

const MATCH_WEIGHT_SHIFT: u32 = 61;
const PLAIN_HOST_ONLY_BIT: u64 = 1 << 60;
const HEADER_COUNT_SHIFT: u32 = 52;
const MAX_HEADER_COUNT: u64 = 255;
const REGEX_URL_BIT: u64 = 1 << 51;
const REGEX_PRIORITY_SHIFT: u32 = 19;
const MAX_LENGTH_MASK: u64 = 0x7FFFF;

/// One compiled matcher: a route, or one path group of a split route.
#[derive(Debug)]
pub(super) struct Matcher {
    pub route_index: usize,
    pub service_index: Option<usize>,
    pub priority: u64,
    /// The route id, or the derived id of a split group; breaks priority ties.
    pub id: Uuid,
    pub methods: Box<[Box<str>]>,
    pub hosts: Box<[HostPattern]>,
    pub headers: Box<[HeaderRule]>,
    pub paths: Box<[PathPattern]>,
    pub strip_path: bool,
    /// The route accepts only TLS (https / grpcs without their plaintext twin).
    pub tls_only: bool,
    /// The route speaks only gRPC (the proxy answers HTTP/1 with 426).
    pub grpc_only: bool,
}

impl Matcher {
    /// Every field except `paths` (methods, hosts with ports, headers).
    pub fn matches_non_path(&self, req: &super::RouteRequest<'_>) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| **m == *req.method))
            && (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(req.host, req.port)))
            && self.headers.iter().all(|h| h.matches(req.headers))
    }

    /// The span of `path` the first matching regex path (in config order, as Kong's `||`
    /// evaluates) matched; atc-router reports that text as the matched `http.path`.
    pub fn match_regex(&self, path: &str) -> Option<(usize, usize)> {
        self.paths.iter().find_map(|p| match p {
            PathPattern::Regex { re, .. } => re.find(path).map(|m| (m.start(), m.end())),
            PathPattern::Prefix(_) => None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HostKind {
    Exact,
    /// `*.ex.com`, stored as `.ex.com`.
    Suffix,
    /// `ex.*`, stored as `ex.`.
    Prefix,
}

#[derive(Debug)]
pub(super) struct HostPattern {
    pub kind: HostKind,
    pub text: Box<str>,
    pub port: Option<u16>,
}

impl HostPattern {
    fn parse(raw: &str) -> HostPattern {
        // As transform.lua `split_host_port`: a `:` followed by a number is a port; anything
        // else stays part of the host (and then simply never matches).
        let (host, port) = match raw.split_once(':') {
            Some((h, p)) => match p.parse::<u16>() {
                Ok(port) => (h, Some(port)),
                Err(_) => (raw, None),
            },
            None => (raw, None),
        };
        let (kind, text) = if let Some(rest) = host.strip_prefix('*') {
            (HostKind::Suffix, rest)
        } else if let Some(rest) = host.strip_suffix('*') {
            (HostKind::Prefix, rest)
        } else {
            (HostKind::Exact, host)
        };
        HostPattern {
            kind,
            text: text.into(),
            port,
        }
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        let host_ok = match self.kind {
            HostKind::Exact => host == &*self.text,
            HostKind::Suffix => host.ends_with(&*self.text),
            HostKind::Prefix => host.starts_with(&*self.text),
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

#[derive(Debug)]
pub(super) struct HeaderRule {
    pub name: HeaderName,
    pub values: Box<[HeaderValueMatch]>,
}

#[derive(Debug)]
pub(super) enum HeaderValueMatch {
    /// ASCII-lowercased; compared case-insensitively.
    Exact(Box<[u8]>),
    /// `~*re`: Kong lowercases the pattern too and searches (unanchored) the lowercased value.
    Regex(regex::bytes::Regex),
}

impl HeaderRule {
    /// Any request value of this header equals (or matches) any configured value.
    fn matches(&self, headers: &http::HeaderMap) -> bool {
        headers.get_all(&self.name).iter().any(|v| {
            let v = v.as_bytes();
            self.values.iter().any(|want| match want {
                HeaderValueMatch::Exact(w) => v.eq_ignore_ascii_case(w),
                HeaderValueMatch::Regex(re) => regex_on_lowercase(re, v),
            })
        })
    }
}

fn regex_on_lowercase(re: &regex::bytes::Regex, v: &[u8]) -> bool {
    // Lowercase into a stack buffer so the common short value does not allocate.
    let mut buf = [0u8; 256];
    if let Some(dst) = buf.get_mut(..v.len()) {
        dst.copy_from_slice(v);
        dst.make_ascii_lowercase();
        re.is_match(dst)
    } else {
        re.is_match(&v.to_ascii_lowercase())
    }
}

#[derive(Debug)]
pub(super) enum PathPattern {
    Prefix(Box<str>),
    Regex {
        re: Regex,
        /// A literal every match must start with (see [`literal_prefix`]); indexes the regex.
        literal: Box<str>,
    },
}

fn is_regex_path(p: &str) -> bool {
    p.starts_with('~')
}

/// Route protocols that make an HTTP route (the rest are stream routes, not ours).
fn http_flags(protocols: &[Protocol]) -> Option<(bool, bool)> {
    let has = |p| protocols.contains(&p);
    let http = has(Protocol::Http) || has(Protocol::Https);
    let grpc = has(Protocol::Grpc) || has(Protocol::Grpcs);
    if !http && !grpc {
        return None;
    }
    let plaintext = has(Protocol::Http) || has(Protocol::Grpc);
    let tls_only = !plaintext;
    let grpc_only = grpc && !http;
    Some((tls_only, grpc_only))
}

/// Compiles every HTTP route of `snapshot` into matchers, unordered.
pub(super) fn compile(snapshot: &Snapshot) -> Result<Vec<Matcher>, Vec<RouterError>> {
    let services: HashMap<Uuid, usize> = snapshot
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id, i))
        .collect();
    let mut matchers = Vec::with_capacity(snapshot.routes.len());
    let mut errors = Vec::new();
    for (ri, route) in snapshot.routes.iter().enumerate() {
        let Some((tls_only, grpc_only)) = http_flags(&route.protocols) else {
            continue;
        };
        let service_index = match route.service {
            None => None,
            Some(id) => match services.get(&id) {
                Some(&si) => Some(si),
                None => {
                    errors.push(RouterError {
                        path: format!("routes[{ri}].service"),
                        message: format!("unknown service {id}"),
                    });
                    continue;
                }
            },
        };
        // Kong builds its router from enabled services only; their routes do not exist.
        if service_index.is_some_and(|si| !snapshot.services[si].enabled) {
            continue;
        }
        let flags = Flags {
            route_index: ri,
            service_index,
            tls_only,
            grpc_only,
        };
        if let Err(mut e) = compile_route(route, &flags, &mut matchers) {
            errors.append(&mut e);
        }
    }
    if errors.is_empty() {
        Ok(matchers)
    } else {
        Err(errors)
    }
}

struct Flags {
    route_index: usize,
    service_index: Option<usize>,
    tls_only: bool,
    grpc_only: bool,
}

fn compile_route(
    route: &Route,
    flags: &Flags,
    out: &mut Vec<Matcher>,
) -> Result<(), Vec<RouterError>> {
    let ri = flags.route_index;
    let mut errors = Vec::new();
    let mut headers = Vec::with_capacity(route.headers.len());
    for (name, values) in &route.headers {
        match compile_header(name, values) {
            Ok(h) => headers.push(h),
            Err((j, message)) => errors.push(RouterError {
                path: match j {
                    Some(j) => format!("routes[{ri}].headers.{name}[{j}]"),
                    None => format!("routes[{ri}].headers.{name}"),
                },
                message,
            }),
        }
    }
    let mut paths = Vec::with_capacity(route.paths.len());
    for (j, p) in route.paths.iter().enumerate() {
        match compile_path(p) {
            Ok(c) => paths.push(c),
            Err(message) => errors.push(RouterError {
                path: format!("routes[{ri}].paths[{j}]"),
                message,
            }),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let methods: Box<[Box<str>]> = route.methods.iter().map(|m| m.as_str().into()).collect();
    let header_rules: Box<[HeaderRule]> = headers.into();

    for (group_index, group) in split_by_path(&route.paths, paths).into_iter().enumerate() {
        let id = if group.split {
            // Kong numbers groups from 1, in order of first appearance.
            let name = format!("{}#{}", route.id.hyphenated(), group_index + 1);
            Uuid::new_v5(&SPLIT_NAMESPACE, name.as_bytes())
        } else {
            route.id
        };
        let priority = priority(route, &group.sources);
        out.push(Matcher {
            route_index: ri,
            service_index: flags.service_index,
            priority,
            id,
            methods: methods.clone(),
            hosts: route.hosts.iter().map(|h| HostPattern::parse(h)).collect(),
            headers: clone_headers(&header_rules),
            paths: group.paths.into(),
            strip_path: route.strip_path,
            tls_only: flags.tls_only,
            grpc_only: flags.grpc_only,
        });
    }
    Ok(())
}

fn clone_headers(rules: &[HeaderRule]) -> Box<[HeaderRule]> {
    rules
        .iter()
        .map(|r| HeaderRule {
            name: r.name.clone(),
            values: r
                .values
                .iter()
                .map(|v| match v {
                    HeaderValueMatch::Exact(b) => HeaderValueMatch::Exact(b.clone()),
                    HeaderValueMatch::Regex(re) => HeaderValueMatch::Regex(re.clone()),
                })
                .collect(),
        })
        .collect()
}

fn compile_header(name: &str, values: &[String]) -> Result<HeaderRule, (Option<usize>, String)> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|e| (None, format!("invalid header name: {e}")))?;
    let mut out = Vec::with_capacity(values.len());
    for (j, v) in values.iter().enumerate() {
        let lower = v.to_ascii_lowercase();
        match lower.strip_prefix("~*") {
            Some(re) => {
                let re = regex::bytes::Regex::new(re)
                    .map_err(|e| (Some(j), format!("invalid regex: '{v}' ({e})")))?;
                out.push(HeaderValueMatch::Regex(re));
            }
            None => out.push(HeaderValueMatch::Exact(lower.into_bytes().into())),
        }
    }
    Ok(HeaderRule {
        name,
        values: out.into(),
    })
}

fn compile_path(p: &str) -> Result<PathPattern, String> {
    let Some(src) = p.strip_prefix('~') else {
        return Ok(PathPattern::Prefix(p.into()));
    };
    // transform.lua `path_val_transform`: anchor at the start only, and rename `(?<n>` to
    // `(?P<n>` for the Rust regex crate.
    let anchored = format!("^{}", src.replace("?<", "?P<"));
    let re = Regex::new(&anchored).map_err(|e| format!("invalid regex: '{p}' ({e})"))?;
    Ok(PathPattern::Regex {
        re,
        literal: literal_prefix(src).into(),
    })
}

/// A string every match of `^src` starts with, for indexing. Conservative: stops at the first
/// metacharacter, drops a literal that a `?`/`*`/`{` quantifier makes optional, and gives up
/// (returns "") when the pattern has a `|` anywhere, since a top-level alternation would
/// leave later branches unanchored.
fn literal_prefix(src: &str) -> String {
    if src.contains('|') {
        return String::new();
    }
    let mut out = String::new();
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        let lit = match c {
            '\\' => match chars.next() {
                Some(e) if e.is_ascii_punctuation() => e,
                _ => break,
            },
            '.' | '^' | '$' | '(' | ')' | '[' | ']' | '{' | '}' | '*' | '+' | '?' => break,
            c => c,
        };
        match chars.peek() {
            Some('?' | '*' | '{') => break,
            Some('+') => {
                out.push(lit);
                break;
            }
            _ => out.push(lit),
        }
    }
    out
}

struct Group {
    /// Whether the route was split (then each group gets a derived id).
    split: bool,
    /// The configured path strings of this group, for the priority.
    sources: Vec<String>,
    paths: Vec<PathPattern>,
}

/// transform.lua `split_routes_and_services_by_path`: all regex paths form one group, prefix
/// paths one group per length, in order of first appearance. A route that yields one group
/// (or has at most one path) is kept whole, with its own id.
fn split_by_path(sources: &[String], compiled: Vec<PathPattern>) -> Vec<Group> {
    let mut keys: Vec<usize> = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    for (src, pat) in sources.iter().zip(compiled) {
        let key = if is_regex_path(src) { 0 } else { src.len() };
        let gi = match keys.iter().position(|&k| k == key) {
            Some(gi) => gi,
            None => {
                keys.push(key);
                groups.push(Group {
                    split: false,
                    sources: Vec::new(),
                    paths: Vec::new(),
                });
                groups.len() - 1
            }
        };
        groups[gi].sources.push(src.clone());
        groups[gi].paths.push(pat);
    }
    if groups.is_empty() {
        groups.push(Group {
            split: false,
            sources: Vec::new(),
            paths: Vec::new(),
        });
    }
    let split = groups.len() > 1;
    for g in &mut groups {
        g.split = split;
    }
    groups
}

/// transform.lua `get_priority` for an HTTP route whose paths are one group.
pub(super) fn priority(route: &Route, group_paths: &[String]) -> u64 {
    let headers = route.headers.len() as u64;
    let weight = u64::from(!route.methods.is_empty())
        + u64::from(!route.hosts.is_empty())
        + u64::from(headers > 0)
        + u64::from(!group_paths.is_empty());
    let plain_host_only = !route.hosts.is_empty() && route.hosts.iter().all(|h| !h.contains('*'));
    let regex_url = group_paths.first().is_some_and(|p| is_regex_path(p));
    let uri_length = if regex_url {
        0
    } else {
        group_paths.first().map_or(0, |p| p.len() as u64)
    };
    let regex_priority = if regex_url {
        regex_priority_field(route.regex_priority)
    } else {
        0
    };
    (weight << MATCH_WEIGHT_SHIFT)
        | if plain_host_only {
            PLAIN_HOST_ONLY_BIT
        } else {
            0
        }
        | (headers.min(MAX_HEADER_COUNT) << HEADER_COUNT_SHIFT)
        | if regex_url { REGEX_URL_BIT } else { 0 }
        | (regex_priority << REGEX_PRIORITY_SHIFT)
        | (uri_length & MAX_LENGTH_MASK)
}

/// Kong shifts `regex_priority` into a 32-bit field (bits 19-50). A negative value there
/// would set every high bit and outrank everything, which no one intends; we offset the
/// field so that the order among regex routes is exactly "higher `regex_priority` first",
/// negatives included (values are clamped to the i32 range).
fn regex_priority_field(rp: i64) -> u64 {
    let clamped = rp.clamp(i64::from(i32::MIN), i64::from(i32::MAX));
    (clamped - i64::from(i32::MIN)) as u64
}

#[cfg(test)]
pub(super) fn literal_prefix_for_tests(src: &str) -> String {
    literal_prefix(src)
}
