//! Kong's router (traditional_compatible flavor, KONG.md §2), compiled once per snapshot and
//! indexed so that one match costs the same with 10 routes or 10,000.
//!
//! - [`compile`] turns routes into matchers: path-group splitting, the 64-bit priority and the
//!   field predicates of K:kong/router/transform.lua. [`Router::recompile`] reuses the matchers
//!   of unchanged routes and every regex whose pattern is unchanged, so a one-route change to
//!   10,000 routes costs milliseconds.
//! - [`index`] holds host buckets and path tries that yield candidates along the request.
//! - [`regex`] runs route regexes on the regex crate's NFA engines, without the per-regex
//!   memory of `regex::Regex`.
//! - This file is the API the proxy calls, plus the upstream-path rewrite of
//!   K:kong/router/utils.lua `get_upstream_uri_v0`.
//!
//! The router has no locks and allocates nothing per match except the upstream path (regex
//! scratch space is one per thread, kept between matches).

mod compile;
mod index;
mod regex;

use std::borrow::Cow;

use compile::{Matcher, PathPattern, Previous};
use index::Index;
use portico_common::snapshot::Snapshot;

/// A compiled, immutable router for one snapshot.
#[derive(Debug)]
pub struct Router {
    /// Sorted best-first: priority descending, then id descending (see [`compile::compile`]).
    matchers: Vec<Matcher>,
    index: Index,
    /// `service.path` by service index (`None` means `/`).
    service_paths: Vec<Option<Box<str>>>,
    stats: CompileStats,
}

/// What a compilation reused and what it had to build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompileStats {
    /// Routes whose matchers were taken from the previous router (unchanged `Route` value).
    pub routes_reused: usize,
    /// Distinct regexes (path and header) compiled.
    pub regexes_compiled: usize,
    /// Distinct regexes of changed or new routes taken from the previous router (same
    /// pattern text); regexes inside reused routes are not counted.
    pub regexes_reused: usize,
}

/// What the router looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RouteRequest<'a> {
    /// As received, uppercase.
    pub method: &'a str,
    /// Lowercased, port and trailing dot stripped.
    pub host: &'a str,
    /// The local (listener) port the request arrived on: Kong's `net.dst.port`.
    pub port: u16,
    /// The canonical path (from [`portico_common::path::canonicalize`]), without query.
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
    /// The request arrived over TLS (or a trusted `X-Forwarded-Proto: https`).
    pub https: bool,
    /// The server name the client sent in its TLS handshake (lowercased); `None` over plain
    /// HTTP or when the client sent none. Kong checks a route's `snis` only for https
    /// requests, so an https request without one matches no route that has `snis`.
    pub sni: Option<&'a str>,
}

/// The route a request matched and how to rewrite it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch<'r> {
    /// Index into `snapshot.routes`.
    pub route_index: usize,
    /// Index into `snapshot.services`; `None` for a serviceless route.
    pub service_index: Option<usize>,
    /// The path to send upstream (strip_path + service.path, path_handling v0), no query.
    pub upstream_path: String,
    /// The text stripped from the request path (for `X-Forwarded-Prefix`); `None` when
    /// nothing was stripped or the prefix is `/`. Borrowed from the route for a prefix path,
    /// owned for the text a regex path matched.
    pub stripped_prefix: Option<Cow<'r, str>>,
    /// The route lacks the request's protocol but has its TLS twin (the proxy answers 426 or
    /// redirects).
    pub https_required: bool,
    /// The route speaks only gRPC (the proxy answers HTTP/1 with 426).
    pub grpc_only: bool,
}

/// A route the router cannot compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RouterError {
    /// Where in the config, e.g. `routes[3].paths[1]`.
    pub path: String,
    pub message: String,
}

impl Router {
    /// Compiles the HTTP routes of `snapshot` (stream routes and routes of disabled services
    /// are left out, as Kong does).
    pub fn new(snapshot: &Snapshot) -> Result<Router, Vec<RouterError>> {
        Router::build(snapshot, None)
    }

    /// The same router as [`Router::new`] gives, built faster by reusing from `previous`, the
    /// router compiled from `previous_snapshot`: the matchers of every route whose `Route`
    /// value is unchanged, and every compiled regex whose pattern text is unchanged. Entities
    /// may have moved in the lists; routes are matched by id.
    pub fn recompile(
        snapshot: &Snapshot,
        previous: &Router,
        previous_snapshot: &Snapshot,
    ) -> Result<Router, Vec<RouterError>> {
        Router::build(
            snapshot,
            Some(Previous {
                matchers: &previous.matchers,
                snapshot: previous_snapshot,
            }),
        )
    }

    fn build(
        snapshot: &Snapshot,
        previous: Option<Previous<'_>>,
    ) -> Result<Router, Vec<RouterError>> {
        let (matchers, stats) = compile::compile(snapshot, previous)?;
        let index = Index::build(&matchers);
        let service_paths = snapshot
            .services
            .iter()
            .map(|s| s.path.as_deref().map(Box::from))
            .collect();
        Ok(Router {
            matchers,
            index,
            service_paths,
            stats,
        })
    }

    /// What building this router reused and compiled.
    pub fn stats(&self) -> CompileStats {
        self.stats
    }

    /// The highest-priority route matching `req`, or `None` (the proxy answers 404).
    pub fn find(&self, req: &RouteRequest<'_>) -> Option<RouteMatch<'_>> {
        let best = self.index.search(&self.matchers, req)?;
        let m = self.matchers.get(best.rank as usize)?;
        let path = req.path;
        // Kong: the prefix is the matched path text when strip_path is on; the postfix is what
        // follows it (by length, as `req_uri:sub(#matched_path + 1)`), else all but the
        // leading `/`.
        let prefix = match best.matched {
            Some((start, end)) if m.strip_path => path.get(start..end),
            _ => None,
        };
        let postfix = match prefix {
            Some(p) => path.get(p.len()..).unwrap_or(""),
            None => path.get(1..).unwrap_or(""),
        };
        let service_index = m.service_index.map(|si| si as usize);
        let base = service_index
            .and_then(|si| self.service_path(si))
            .unwrap_or("/");
        Some(RouteMatch {
            route_index: m.route_index as usize,
            service_index,
            upstream_path: upstream_uri_v0(m.strip_path, sanitize_uri_postfix(postfix), path, base),
            stripped_prefix: prefix.filter(|p| *p != "/").map(|p| {
                configured_prefix(m, p).map_or_else(|| Cow::Owned(p.to_owned()), Cow::Borrowed)
            }),
            https_required: m.tls_only && !req.https,
            grpc_only: m.grpc_only,
        })
    }

    /// Number of compiled matchers (a route split by path groups counts once per group).
    pub fn len(&self) -> usize {
        self.matchers.len()
    }

    /// True when no HTTP route compiled.
    pub fn is_empty(&self) -> bool {
        self.matchers.is_empty()
    }

    fn service_path(&self, si: usize) -> Option<&str> {
        self.service_paths.get(si).and_then(|p| p.as_deref())
    }
}

/// The matcher's own prefix path equal to `matched`, so the common case borrows instead of
/// copying request text.
fn configured_prefix<'r>(m: &'r Matcher, matched: &str) -> Option<&'r str> {
    m.paths.iter().find_map(|p| match p {
        PathPattern::Prefix(text) if **text == *matched => Some(&**text),
        _ => None,
    })
}

/// K:kong/router/utils.lua `sanitize_uri_postfix`: a postfix that starts with a dot segment
/// loses it, so `/route./req` and `/route../req` against prefix `/route` forward `req`.
fn sanitize_uri_postfix(postfix: &str) -> &str {
    if postfix == "." || postfix == ".." {
        return "";
    }
    postfix
        .strip_prefix("./")
        .or_else(|| postfix.strip_prefix("../"))
        .unwrap_or(postfix)
}

/// K:kong/router/utils.lua `get_upstream_uri_v0`, branch for branch.
fn upstream_uri_v0(strip_path: bool, postfix: &str, req_path: &str, base: &str) -> String {
    if let Some(base_dir) = base.strip_suffix('/') {
        if strip_path {
            if postfix.is_empty() {
                if base == "/" {
                    return "/".to_owned();
                }
                if req_path.ends_with('/') {
                    return base.to_owned();
                }
                return base_dir.to_owned();
            }
            if postfix.starts_with('/') {
                // Double `/`: drop the base's.
                return concat(base_dir, postfix);
            }
            return concat(base, postfix);
        }
        // Keep the request path, minus its leading `/` (the base has one).
        return concat(base, req_path.get(1..).unwrap_or(""));
    }
    if strip_path {
        if postfix.is_empty() {
            if req_path.len() > 1 && req_path.ends_with('/') {
                return concat(base, "/");
            }
            return base.to_owned();
        }
        if postfix.starts_with('/') {
            return concat(base, postfix);
        }
        let mut s = String::with_capacity(base.len() + 1 + postfix.len());
        s.push_str(base);
        s.push('/');
        s.push_str(postfix);
        return s;
    }
    if req_path == "/" {
        return base.to_owned();
    }
    concat(base, req_path)
}

fn concat(a: &str, b: &str) -> String {
    let mut s = String::with_capacity(a.len() + b.len());
    s.push_str(a);
    s.push_str(b);
    s
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod path_handling_tests;

#[cfg(test)]
mod recompile_tests;
