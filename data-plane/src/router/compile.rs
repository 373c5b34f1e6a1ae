//! Turns snapshot routes into matchers the way Kong's traditional_compatible flavor does
//! (K:kong/router/transform.lua): one matcher per path group (`split_routes_and_services_by_path`),
//! the 64-bit priority of `get_priority`, and the per-field predicates of `get_expression`.
//!
//! Recompiling against the previous router reuses what did not change: the rules of a route
//! whose `Route` value is unchanged (shared through an `Arc`; only the indexes into the new
//! snapshot are new), and every compiled regex whose pattern text is unchanged. Regexes that
//! must be compiled are compiled on every core when there are many.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderName;
use portico_common::snapshot::{Protocol, Route, Snapshot};
use uuid::Uuid;

use super::index::FxBuild;
use super::regex::{Compiler, Mode, Regex};
use super::{CompileStats, RouterError};

/// Namespace Kong uses to derive the ids of split routes (transform.lua `uuid_generator`).
const SPLIT_NAMESPACE: Uuid = Uuid::from_u128(0x7f145bf9_0dce_4f91_98eb_debbce4b9f6b);

const MATCH_WEIGHT_SHIFT: u32 = 61;
const PLAIN_HOST_ONLY_BIT: u64 = 1 << 60;
const HEADER_COUNT_SHIFT: u32 = 52;
const MAX_HEADER_COUNT: u64 = 255;
const REGEX_URL_BIT: u64 = 1 << 51;
const REGEX_PRIORITY_SHIFT: u32 = 19;
const MAX_LENGTH_MASK: u64 = 0x7FFFF;

/// Below this many regexes to compile, one thread does it (a thread costs more than it saves).
const PARALLEL_REGEXES: usize = 64;

type FxMap<K, V> = HashMap<K, V, FxBuild>;

/// One compiled matcher: a route, or one path group of a split route. What depends on the
/// route alone is in the shared [`Rule`]; what depends on where the route sits in this
/// snapshot is here.
#[derive(Debug)]
pub(super) struct Matcher {
    pub priority: u64,
    /// The route id, or the derived id of a split group; breaks priority ties.
    pub id: Uuid,
    /// Index into `snapshot.routes`.
    pub route_index: u32,
    /// Index into `snapshot.services`.
    pub service_index: Option<u32>,
    pub rule: Arc<Rule>,
}

/// The predicates and flags of one matcher, a function of the `Route` value only.
#[derive(Debug)]
pub(super) struct Rule {
    pub methods: Methods,
    pub hosts: Box<[HostPattern]>,
    pub headers: Box<[HeaderRule]>,
    pub paths: Box<[PathPattern]>,
    /// The route's `snis` (same wildcard forms as hosts, never a port).
    pub snis: Box<[HostPattern]>,
    pub strip_path: bool,
    /// The route accepts only TLS (https / grpcs without their plaintext twin).
    pub tls_only: bool,
    /// The route speaks only gRPC (the proxy answers HTTP/1 with 426).
    pub grpc_only: bool,
}

impl std::ops::Deref for Matcher {
    type Target = Rule;
    fn deref(&self) -> &Rule {
        &self.rule
    }
}

impl Rule {
    /// Every field except `paths` (methods, hosts with ports, headers, and snis for a
    /// request over TLS).
    pub fn matches_non_path(&self, req: &super::RouteRequest<'_>) -> bool {
        self.methods.matches(req.method)
            && (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(req.host, req.port)))
            && self.headers.iter().all(|h| h.matches(req.headers))
            && (self.snis.is_empty()
                || !req.https
                || req
                    .sni
                    .is_some_and(|sni| self.snis.iter().any(|p| p.matches(sni, 0))))
    }

    /// The span of `path` the first matching regex path (in config order, as Kong's `||`
    /// evaluates) matched; atc-router reports that text as the matched `http.path`.
    pub fn match_regex(&self, path: &str) -> Option<(usize, usize)> {
        self.paths.iter().find_map(|p| match p {
            PathPattern::Regex { re, .. } => re.find(path),
            PathPattern::Prefix(_) => None,
        })
    }
}

/// The standard methods as bits, so the common method lists cost no allocation; anything else
/// is compared as text. Matching stays exact (case-sensitive), as Kong's.
const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

fn method_bit(m: &str) -> u16 {
    KNOWN_METHODS
        .iter()
        .position(|k| *k == m)
        .map_or(0, |i| 1 << i)
}

/// A route's `methods`; empty means any.
#[derive(Debug)]
pub(super) struct Methods {
    known: u16,
    other: Box<[Box<str>]>,
}

impl Methods {
    fn new(list: &[String]) -> Methods {
        let mut known = 0;
        let mut other = Vec::new();
        for m in list {
            match method_bit(m) {
                0 => other.push(Box::from(m.as_str())),
                bit => known |= bit,
            }
        }
        Methods {
            known,
            other: other.into(),
        }
    }

    fn matches(&self, method: &str) -> bool {
        if self.known == 0 && self.other.is_empty() {
            return true;
        }
        match method_bit(method) {
            0 => self.other.iter().any(|o| **o == *method),
            bit => self.known & bit != 0,
        }
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

#[derive(Debug, Clone)]
pub(super) struct HeaderRule {
    pub name: HeaderName,
    pub values: Box<[HeaderValueMatch]>,
}

#[derive(Debug, Clone)]
pub(super) enum HeaderValueMatch {
    /// ASCII-lowercased; compared case-insensitively.
    Exact(Box<[u8]>),
    /// `~*re`: Kong lowercases the pattern too and searches (unanchored) the lowercased value.
    Regex(Regex),
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

fn regex_on_lowercase(re: &Regex, v: &[u8]) -> bool {
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

/// The router a snapshot is recompiled against, with the snapshot it was compiled from.
#[derive(Clone, Copy)]
pub(super) struct Previous<'a> {
    pub matchers: &'a [Matcher],
    pub snapshot: &'a Snapshot,
}

/// Compiles every HTTP route of `snapshot` into matchers sorted best-first (priority
/// descending, then id descending: atc-router iterates its `BTreeMap<MatcherKey(priority,
/// uuid)>` from the top, so the larger uuid wins a tie), reusing from `previous` whatever did
/// not change.
pub(super) fn compile(
    snapshot: &Snapshot,
    previous: Option<Previous<'_>>,
) -> Result<(Vec<Matcher>, CompileStats), Vec<RouterError>> {
    let services: FxMap<Uuid, usize> = snapshot
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id, i))
        .collect();
    let mut reuse = previous.map(Reuse::new);
    let mut stats = CompileStats::default();
    let mut pending = Vec::new();
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
        if reuse.as_mut().is_some_and(|r| r.take(route, &flags)) {
            stats.routes_reused += 1;
        } else {
            pending.push(flags);
        }
    }

    let mut regexes = RegexTable::new(previous.map(|p| p.matchers));
    let pending_routes: Vec<&Route> = pending
        .iter()
        .map(|f| &*snapshot.routes[f.route_index])
        .collect();
    regexes.prepare(&pending_routes);
    let mut fresh = Vec::with_capacity(pending.len());
    for flags in &pending {
        let route = &snapshot.routes[flags.route_index];
        if let Err(mut e) = compile_route(route, flags, &regexes, &mut fresh) {
            errors.append(&mut e);
        }
    }
    stats.regexes_compiled = regexes.compiled;
    stats.regexes_reused = regexes.reused;
    if !errors.is_empty() {
        // Report in config order whatever the order they were found in.
        errors.sort_by_key(|e| route_of_error(&e.path));
        return Err(errors);
    }
    fresh.sort_unstable_by(best_first);
    let matchers = match reuse {
        // The previous matchers are sorted, so the reused ones come out sorted: merge.
        Some(r) => merge(r.reused(), fresh),
        None => {
            fresh.shrink_to_fit();
            fresh
        }
    };
    Ok((matchers, stats))
}

/// The router's order: priority descending, then id descending. (priority, id) is unique, so
/// the order does not depend on the order of the input.
fn best_first(a: &Matcher, b: &Matcher) -> std::cmp::Ordering {
    (b.priority, b.id).cmp(&(a.priority, a.id))
}

/// Merges two lists sorted best-first.
fn merge(a: Vec<Matcher>, b: Vec<Matcher>) -> Vec<Matcher> {
    if b.is_empty() {
        return a;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let mut a = a.into_iter().peekable();
    let mut b = b.into_iter().peekable();
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => best_first(x, y).is_le(),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        out.extend(if take_a { a.next() } else { b.next() });
    }
    out
}

/// The route number of an error path `routes[N]...`, for ordering.
fn route_of_error(path: &str) -> usize {
    path.strip_prefix("routes[")
        .and_then(|rest| rest.split(']').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

fn index_u32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// Which routes of the previous router carry over unchanged.
struct Reuse<'a> {
    previous: Previous<'a>,
    /// Route id to its index in the previous snapshot; built on the first route that is not
    /// at the same index as before.
    routes: Option<FxMap<Uuid, usize>>,
    /// Per previous route: whether it had matchers (a route of a disabled service had none).
    compiled: Vec<bool>,
    /// Per previous route: the (route, service) indexes in the new snapshot it carries over to.
    taken: Vec<Option<(u32, Option<u32>)>>,
}

impl<'a> Reuse<'a> {
    fn new(previous: Previous<'a>) -> Reuse<'a> {
        let n = previous.snapshot.routes.len();
        let mut compiled = vec![false; n];
        for m in previous.matchers {
            if let Some(c) = compiled.get_mut(m.route_index as usize) {
                *c = true;
            }
        }
        Reuse {
            previous,
            routes: None,
            compiled,
            taken: vec![None; n],
        }
    }

    /// Takes the previous matchers of `route` if it is unchanged; false when it must be
    /// compiled.
    fn take(&mut self, route: &Arc<Route>, flags: &Flags) -> bool {
        let before = &self.previous.snapshot.routes;
        // Entities usually keep their place: try the same index before the id map.
        let pi = match before.get(flags.route_index) {
            Some(r) if r.id == route.id => flags.route_index,
            _ => {
                let routes = self.routes.get_or_insert_with(|| {
                    before.iter().enumerate().map(|(i, r)| (r.id, i)).collect()
                });
                match routes.get(&route.id) {
                    Some(&pi) => pi,
                    None => return false,
                }
            }
        };
        // (`taken`: a second route with the same id, which validation refuses, compiles anew.)
        // A route a delta did not touch is the same allocation: no need to compare fields.
        let unchanged = Arc::ptr_eq(&before[pi], route) || before[pi] == *route;
        if !self.compiled[pi] || self.taken[pi].is_some() || !unchanged {
            return false;
        }
        self.taken[pi] = Some((
            index_u32(flags.route_index),
            flags.service_index.map(index_u32),
        ));
        true
    }

    /// The taken matchers, re-pointed at the new snapshot, in the previous (sorted) order.
    fn reused(&self) -> Vec<Matcher> {
        self.previous
            .matchers
            .iter()
            .filter_map(|m| {
                let (route_index, service_index) = (*self.taken.get(m.route_index as usize)?)?;
                Some(Matcher {
                    priority: m.priority,
                    id: m.id,
                    route_index,
                    service_index,
                    rule: Arc::clone(&m.rule),
                })
            })
            .collect()
    }
}

/// The regexes of the routes being compiled: reused from the previous router by pattern text
/// when it had them, compiled (once per distinct pattern) otherwise.
struct RegexTable<'a> {
    previous: Option<&'a [Matcher]>,
    /// Keyed by the configured path (`~...`).
    paths: FxMap<&'a str, Slot>,
    /// Keyed by the lowercased pattern (after `~*`).
    headers: FxMap<Box<str>, Slot>,
    compiled: usize,
    reused: usize,
}

struct Slot {
    regex: Result<Regex, String>,
    /// From the previous router, and not yet counted as reused.
    previous_unused: bool,
}

impl<'a> RegexTable<'a> {
    fn new(previous: Option<&'a [Matcher]>) -> RegexTable<'a> {
        RegexTable {
            previous,
            paths: FxMap::default(),
            headers: FxMap::default(),
            compiled: 0,
            reused: 0,
        }
    }

    /// Loads the previous router's regexes whose source text is one of `paths` (configured
    /// paths, `~...`) or `headers` (lowercased patterns after `~*`): one pass over the
    /// previous matchers, copying only what is wanted (a one-route change wants one or two).
    fn seed(&mut self, paths: &FxMap<&'a str, ()>, headers: &FxMap<Box<str>, ()>) {
        let Some(previous) = self.previous.take() else {
            return;
        };
        if paths.is_empty() && headers.is_empty() {
            return;
        }
        let slot = |re: &Regex| Slot {
            regex: Ok(re.clone()),
            previous_unused: true,
        };
        let wanted = paths.len() + headers.len();
        let mut found = 0;
        for m in previous {
            for p in m.paths.iter() {
                if let PathPattern::Regex { re, .. } = p {
                    if paths.contains_key(re.source()) && !self.paths.contains_key(re.source()) {
                        self.paths.insert(re.source(), slot(re));
                        found += 1;
                    }
                }
            }
            for h in m.headers.iter() {
                for v in h.values.iter() {
                    if let HeaderValueMatch::Regex(re) = v {
                        if headers.contains_key(re.source())
                            && !self.headers.contains_key(re.source())
                        {
                            self.headers.insert(re.source().into(), slot(re));
                            found += 1;
                        }
                    }
                }
            }
            if found == wanted {
                break;
            }
        }
    }

    /// Makes sure every regex of `routes` is in the table, compiling the missing ones.
    fn prepare(&mut self, routes: &[&'a Route]) {
        if self.previous.is_some() {
            let mut paths: FxMap<&'a str, ()> = FxMap::default();
            let mut headers: FxMap<Box<str>, ()> = FxMap::default();
            for route in routes {
                for p in route.paths.iter().filter(|p| p.starts_with('~')) {
                    paths.insert(p, ());
                }
                for v in route.headers.values().flatten() {
                    let lower = v.to_ascii_lowercase();
                    if let Some(re) = lower.strip_prefix("~*") {
                        headers.insert(re.into(), ());
                    }
                }
            }
            self.seed(&paths, &headers);
        }
        // (is a path, key, pattern to compile)
        let mut todo: Vec<(bool, &'a str, String)> = Vec::new();
        let mut header_todo: Vec<Box<str>> = Vec::new();
        for route in routes {
            for p in &route.paths {
                let Some(src) = p.strip_prefix('~') else {
                    continue;
                };
                match self.paths.get_mut(p.as_str()) {
                    Some(slot) => self.reused += std::mem::take(&mut slot.previous_unused) as usize,
                    None => {
                        // transform.lua `path_val_transform`: anchor at the start only, and
                        // rename `(?<n>` to `(?P<n>`.
                        let pattern = format!("^{}", src.replace("?<", "?P<"));
                        self.paths.insert(
                            p,
                            Slot {
                                regex: Err(String::new()),
                                previous_unused: false,
                            },
                        );
                        todo.push((true, p, pattern));
                    }
                }
            }
            for values in route.headers.values() {
                for v in values {
                    let lower = v.to_ascii_lowercase();
                    let Some(re) = lower.strip_prefix("~*") else {
                        continue;
                    };
                    match self.headers.get_mut(re) {
                        Some(slot) => {
                            self.reused += std::mem::take(&mut slot.previous_unused) as usize
                        }
                        None => {
                            self.headers.insert(
                                re.into(),
                                Slot {
                                    regex: Err(String::new()),
                                    previous_unused: false,
                                },
                            );
                            header_todo.push(re.into());
                        }
                    }
                }
            }
        }
        let jobs: Vec<(&str, &str, Mode)> = todo
            .iter()
            .map(|(_, key, pattern)| (*key, pattern.as_str(), Mode::Str))
            .chain(header_todo.iter().map(|k| (&**k, &**k, Mode::Bytes)))
            .collect();
        self.compiled += jobs.len();
        let mut results = compile_all(&jobs).into_iter();
        for (_, key, _) in &todo {
            if let (Some(slot), Some(r)) = (self.paths.get_mut(key), results.next()) {
                slot.regex = r;
            }
        }
        for key in &header_todo {
            if let (Some(slot), Some(r)) = (self.headers.get_mut(key), results.next()) {
                slot.regex = r;
            }
        }
    }

    fn path(&self, p: &str) -> Result<Regex, String> {
        match self.paths.get(p) {
            Some(slot) => slot.regex.clone(),
            // `prepare` saw every route compiled; this is only a safety net.
            None => compile_one(p, &format!("^{}", p[1..].replace("?<", "?P<")), Mode::Str),
        }
    }

    fn header(&self, pattern: &str) -> Result<Regex, String> {
        match self.headers.get(pattern) {
            Some(slot) => slot.regex.clone(),
            None => compile_one(pattern, pattern, Mode::Bytes),
        }
    }
}

fn compile_one(source: &str, pattern: &str, mode: Mode) -> Result<Regex, String> {
    Compiler::new().compile(source, pattern, mode)
}

/// Compiles `(source, pattern, mode)` jobs, in order; on several threads when there are many.
fn compile_all(jobs: &[(&str, &str, Mode)]) -> Vec<Result<Regex, String>> {
    let run = |jobs: &[(&str, &str, Mode)]| -> Vec<Result<Regex, String>> {
        let c = Compiler::new();
        jobs.iter()
            .map(|&(source, pattern, mode)| c.compile(source, pattern, mode))
            .collect()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    if threads < 2 || jobs.len() < PARALLEL_REGEXES {
        return run(jobs);
    }
    let chunk = jobs.len().div_ceil(threads);
    let mut chunks = jobs.chunks(chunk);
    let here = chunks.next().unwrap_or(&[]);
    std::thread::scope(|s| {
        // This thread takes the first chunk (the memory it builds stays in this thread's
        // allocator arena, which has room left from loading the snapshot).
        let handles: Vec<_> = chunks.map(|c| s.spawn(move || run(c))).collect();
        let mut out = run(here);
        out.reserve(jobs.len() - out.len());
        for h in handles {
            match h.join() {
                Ok(mut part) => out.append(&mut part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
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
    regexes: &RegexTable<'_>,
    out: &mut Vec<Matcher>,
) -> Result<(), Vec<RouterError>> {
    let ri = flags.route_index;
    let mut errors = Vec::new();
    let mut headers = Vec::with_capacity(route.headers.len());
    for (name, values) in &route.headers {
        match compile_header(name, values, regexes) {
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
        match compile_path(p, regexes) {
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
            priority,
            id,
            route_index: index_u32(ri),
            service_index: flags.service_index.map(index_u32),
            rule: Arc::new(Rule {
                methods: Methods::new(&route.methods),
                hosts: route.hosts.iter().map(|h| HostPattern::parse(h)).collect(),
                headers: header_rules.clone(),
                paths: group.paths.into(),
                snis: route.snis.iter().map(|h| HostPattern::parse(h)).collect(),
                strip_path: route.strip_path,
                tls_only: flags.tls_only,
                grpc_only: flags.grpc_only,
            }),
        });
    }
    Ok(())
}

fn compile_header(
    name: &str,
    values: &[String],
    regexes: &RegexTable<'_>,
) -> Result<HeaderRule, (Option<usize>, String)> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|e| (None, format!("invalid header name: {e}")))?;
    let mut out = Vec::with_capacity(values.len());
    for (j, v) in values.iter().enumerate() {
        let lower = v.to_ascii_lowercase();
        match lower.strip_prefix("~*") {
            Some(re) => {
                let re = regexes
                    .header(re)
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

fn compile_path(p: &str, regexes: &RegexTable<'_>) -> Result<PathPattern, String> {
    let Some(src) = p.strip_prefix('~') else {
        return Ok(PathPattern::Prefix(p.into()));
    };
    let re = regexes
        .path(p)
        .map_err(|e| format!("invalid regex: '{p}' ({e})"))?;
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

struct Group<'r> {
    /// Whether the route was split (then each group gets a derived id).
    split: bool,
    /// The configured path strings of this group, for the priority.
    sources: Vec<&'r str>,
    paths: Vec<PathPattern>,
}

/// transform.lua `split_routes_and_services_by_path`: all regex paths form one group, prefix
/// paths one group per length, in order of first appearance. A route that yields one group
/// (or has at most one path) is kept whole, with its own id.
fn split_by_path(sources: &[String], compiled: Vec<PathPattern>) -> Vec<Group<'_>> {
    let mut keys: Vec<usize> = Vec::new();
    let mut groups: Vec<Group<'_>> = Vec::new();
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
        groups[gi].sources.push(src);
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
pub(super) fn priority(route: &Route, group_paths: &[impl AsRef<str>]) -> u64 {
    let headers = route.headers.len() as u64;
    let weight = u64::from(!route.methods.is_empty())
        + u64::from(!route.hosts.is_empty())
        + u64::from(headers > 0)
        + u64::from(!group_paths.is_empty())
        + u64::from(!route.snis.is_empty());
    let plain_host_only = !route.hosts.is_empty() && route.hosts.iter().all(|h| !h.contains('*'));
    let regex_url = group_paths
        .first()
        .is_some_and(|p| is_regex_path(p.as_ref()));
    let uri_length = if regex_url {
        0
    } else {
        group_paths.first().map_or(0, |p| p.as_ref().len() as u64)
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
