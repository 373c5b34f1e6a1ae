//! Router tests: Kong's priority rules (KONG.md §2.2), field semantics (§2.1), protocol flags,
//! config errors, and an index-versus-linear-scan cross-check over thousands of routes.

use std::sync::Arc;

use http::HeaderMap;
use portico_common::snapshot::{shared, Protocol, Route, Service, Snapshot};
use uuid::Uuid;

use super::compile::{literal_prefix_for_tests as literal_prefix, priority, PathPattern};
use super::*;

pub(super) fn service(n: u128, path: Option<&str>) -> Service {
    Service {
        name: Some(format!("svc{n}")),
        port: 80,
        path: path.map(str::to_owned),
        ..Service::with_defaults(Uuid::from_u128(0x5e00 + n), "upstream.test")
    }
}

/// A route with Kong's defaults, bound to service `svc` (by its `n`).
pub(super) fn route(n: u128, svc: u128) -> Route {
    Route {
        name: Some(format!("r{n}")),
        service: Some(Uuid::from_u128(0x5e00 + svc)),
        ..Route::with_defaults(Uuid::from_u128(n))
    }
}

pub(super) trait RouteExt {
    fn paths(self, p: &[&str]) -> Self;
    fn hosts(self, h: &[&str]) -> Self;
    fn methods(self, m: &[&str]) -> Self;
    fn header(self, name: &str, values: &[&str]) -> Self;
    fn regex_priority(self, p: i64) -> Self;
    fn strip(self, s: bool) -> Self;
    fn protocols(self, p: &[Protocol]) -> Self;
    fn snis(self, s: &[&str]) -> Self;
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

impl RouteExt for Route {
    fn paths(mut self, p: &[&str]) -> Self {
        self.paths = strings(p);
        self
    }
    fn hosts(mut self, h: &[&str]) -> Self {
        self.hosts = strings(h);
        self
    }
    fn methods(mut self, m: &[&str]) -> Self {
        self.methods = strings(m);
        self
    }
    fn header(mut self, name: &str, values: &[&str]) -> Self {
        self.headers.insert(name.to_owned(), strings(values));
        self
    }
    fn regex_priority(mut self, p: i64) -> Self {
        self.regex_priority = p;
        self
    }
    fn strip(mut self, s: bool) -> Self {
        self.strip_path = s;
        self
    }
    fn protocols(mut self, p: &[Protocol]) -> Self {
        self.protocols = p.to_vec();
        self
    }
    fn snis(mut self, s: &[&str]) -> Self {
        self.snis = strings(s);
        self
    }
}

/// A snapshot with services 0..=3 (no path) and the given routes.
pub(super) fn snapshot(routes: Vec<Route>) -> Snapshot {
    Snapshot {
        services: shared((0..4).map(|n| service(n, None))),
        routes: shared(routes),
        ..Snapshot::default()
    }
}

pub(super) fn router(routes: Vec<Route>) -> Router {
    match Router::new(&snapshot(routes)) {
        Ok(r) => r,
        Err(e) => panic!("router failed: {e:?}"),
    }
}

/// An owned request; `.get()` borrows it as a [`RouteRequest`].
pub(super) struct Req {
    pub method: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub headers: HeaderMap,
    pub https: bool,
    pub sni: Option<String>,
}

pub(super) fn req(method: &str, host: &str, path: &str) -> Req {
    Req {
        method: method.into(),
        host: host.into(),
        port: 8000,
        path: path.into(),
        headers: HeaderMap::new(),
        https: false,
        sni: None,
    }
}

impl Req {
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        let v = http::HeaderValue::from_str(value).expect("test header value");
        self.headers.append(name, v);
        self
    }
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    pub fn https(mut self) -> Self {
        self.https = true;
        self
    }
    /// Over TLS, with this server name.
    pub fn sni(mut self, name: &str) -> Self {
        self.https = true;
        self.sni = Some(name.into());
        self
    }
    pub fn get(&self) -> RouteRequest<'_> {
        RouteRequest {
            method: &self.method,
            host: &self.host,
            port: self.port,
            path: &self.path,
            headers: &self.headers,
            https: self.https,
            sni: self.sni.as_deref(),
        }
    }
}

/// The name of the matched route, or "none".
fn hit(r: &Router, rq: &Req) -> String {
    r.find(&rq.get())
        .map_or("none".into(), |m| format!("r{}", m.route_index))
}

#[test]
fn regex_beats_prefix_at_equal_weight() {
    // #9914/#10151: same match weight, the regex bit decides.
    let r = router(vec![
        route(1, 0).paths(&["/foo"]),
        route(2, 0).paths(&["~/foo/bar$"]),
    ]);
    assert_eq!(hit(&r, &req("GET", "x", "/foo/bar")), "r1");
    assert_eq!(hit(&r, &req("GET", "x", "/foo/bar/baz")), "r0");
    assert_eq!(hit(&r, &req("GET", "x", "/foo")), "r0");
}

#[test]
fn adding_methods_flips_it() {
    let r = router(vec![
        route(1, 0).paths(&["/foo"]).methods(&["GET"]),
        route(2, 0).paths(&["~/foo/bar$"]),
    ]);
    assert_eq!(hit(&r, &req("GET", "x", "/foo/bar")), "r0");
    assert_eq!(hit(&r, &req("POST", "x", "/foo/bar")), "r1");
}

#[test]
fn plain_host_beats_wildcard() {
    let r = router(vec![
        route(1, 0).hosts(&["*.ex.com"]).paths(&["/"]),
        route(2, 0).hosts(&["api.ex.com"]).paths(&["/"]),
        // A mixed list is not "plain host only".
        route(3, 0).hosts(&["api.ex.com", "*.ex.org"]).paths(&["/"]),
    ]);
    assert_eq!(hit(&r, &req("GET", "api.ex.com", "/x")), "r1");
    assert_eq!(hit(&r, &req("GET", "www.ex.com", "/x")), "r0");
}

#[test]
fn more_headers_win() {
    let r = router(vec![
        route(1, 0).header("x-a", &["1"]),
        route(2, 0).header("x-a", &["1"]).header("x-b", &["2"]),
    ]);
    let both = req("GET", "x", "/").header("x-a", "1").header("x-b", "2");
    assert_eq!(hit(&r, &both), "r1");
    assert_eq!(hit(&r, &req("GET", "x", "/").header("x-a", "1")), "r0");
    assert_eq!(hit(&r, &req("GET", "x", "/").header("x-b", "2")), "none");
}

#[test]
fn regex_priority_orders_regex_routes() {
    let r = router(vec![
        route(1, 0).paths(&["~/api/.*"]).regex_priority(-5),
        route(2, 0).paths(&["~/api/v\\d+"]).regex_priority(0),
        route(3, 0).paths(&["~/api/v1"]).regex_priority(10),
    ]);
    assert_eq!(hit(&r, &req("GET", "x", "/api/v1/x")), "r2");
    assert_eq!(hit(&r, &req("GET", "x", "/api/v2/x")), "r1");
    assert_eq!(hit(&r, &req("GET", "x", "/api/zz")), "r0");
    // regex_priority means nothing for prefix paths: the longer prefix still wins.
    let r = router(vec![
        route(1, 0).paths(&["/"]).regex_priority(100),
        route(2, 0).paths(&["/v1"]),
    ]);
    assert_eq!(hit(&r, &req("GET", "x", "/v1/x")), "r1");
}

#[test]
fn longest_prefix_wins_and_is_not_segment_aware() {
    let r = router(vec![
        route(1, 0).paths(&["/"]),
        route(2, 0).paths(&["/api"]),
        route(3, 0).paths(&["/api/v1"]),
    ]);
    assert_eq!(hit(&r, &req("GET", "x", "/api/v1/x")), "r2");
    assert_eq!(hit(&r, &req("GET", "x", "/api/x")), "r1");
    assert_eq!(hit(&r, &req("GET", "x", "/apix")), "r1");
    assert_eq!(hit(&r, &req("GET", "x", "/x")), "r0");
}

#[test]
fn mixed_paths_are_split_into_groups() {
    // Without the split, r0 would carry its longest prefix (7) for every path and beat r1
    // on /abcx through `/a`.
    let r = router(vec![
        route(1, 0).paths(&["/a", "/abcdef", "~/r/\\d+", "/b"]),
        route(2, 0).paths(&["/abc"]),
    ]);
    assert_eq!(r.len(), 4, "groups: [/a,/b], [/abcdef], [~/r/\\d+] + r1");
    assert_eq!(hit(&r, &req("GET", "x", "/abcdefg")), "r0");
    assert_eq!(hit(&r, &req("GET", "x", "/abcx")), "r1");
    assert_eq!(hit(&r, &req("GET", "x", "/ax")), "r0");
    assert_eq!(hit(&r, &req("GET", "x", "/r/12")), "r0");
    let m = r.find(&req("GET", "x", "/abcdefg/h").get()).expect("match");
    assert_eq!(m.upstream_path, "/g/h");
    assert_eq!(m.stripped_prefix.as_deref(), Some("/abcdef"));
}

#[test]
fn ties_go_to_the_larger_uuid() {
    for routes in [
        vec![route(7, 0).paths(&["/x"]), route(9, 0).paths(&["/x"])],
        vec![route(9, 0).paths(&["/x"]), route(7, 0).paths(&["/x"])],
    ] {
        let r = router(routes.clone());
        let m = r.find(&req("GET", "h", "/x").get()).expect("match");
        assert_eq!(routes[m.route_index].id, Uuid::from_u128(9));
    }
}

#[test]
fn priority_bit_layout() {
    let rt = route(1, 0)
        .methods(&["GET"])
        .hosts(&["a.com"])
        .header("x-a", &["1"])
        .header("x-b", &["2"])
        .regex_priority(5);
    let regex = priority(&rt, &["~/x".to_owned()]);
    let want = (4u64 << 61) | (1 << 60) | (2 << 52) | (1 << 51) | ((5u64 + (1 << 31)) << 19);
    assert_eq!(regex, want, "{regex:#x} vs {want:#x}");
    let prefix = priority(&rt.clone().hosts(&["*.a.com"]), &["/abc".to_owned()]);
    assert_eq!(prefix, (4u64 << 61) | (2 << 52) | 4);
    assert_eq!(priority(&route(1, 0), &[] as &[String]), 0);
    // Header count caps at 255 and never spills into the weight.
    let mut many = route(1, 0);
    for i in 0..300 {
        many = many.header(&format!("x-{i}"), &["v"]);
    }
    assert_eq!(
        priority(&many, &[] as &[String]),
        (1u64 << 61) | (255 << 52)
    );
}

#[test]
fn hosts_exact_wildcards_and_ports() {
    let r = router(vec![
        route(1, 0).hosts(&["*.ex.com"]),
        route(2, 0).hosts(&["ex.*"]),
        route(3, 0).hosts(&["api.test:8443"]),
        route(4, 0).hosts(&["one.test", "two.test"]),
    ]);
    assert_eq!(hit(&r, &req("GET", "a.b.ex.com", "/")), "r0");
    assert_eq!(
        hit(&r, &req("GET", "ex.com", "/")),
        "r1",
        "ex.* matches ex.com"
    );
    assert_eq!(hit(&r, &req("GET", "ex.org", "/")), "r1");
    assert_eq!(hit(&r, &req("GET", "xex.com", "/")), "none");
    assert_eq!(hit(&r, &req("GET", "api.test", "/").port(8443)), "r2");
    assert_eq!(hit(&r, &req("GET", "api.test", "/").port(8000)), "none");
    assert_eq!(hit(&r, &req("GET", "two.test", "/")), "r3");
    assert_eq!(hit(&r, &req("GET", "three.test", "/")), "none");
}

#[test]
fn header_values_are_case_insensitive_ored_and_regexes_search() {
    let r = router(vec![route(1, 0)
        .header("x-version", &["V1", "v2"])
        .header("x-team", &["~*^Team-[a-z]+$"])]);
    let ok = |v: &str, t: &str| {
        req("GET", "h", "/")
            .header("x-version", v)
            .header("x-team", t)
    };
    assert_eq!(hit(&r, &ok("v1", "team-blue")), "r0");
    assert_eq!(hit(&r, &ok("V2", "TEAM-BLUE")), "r0");
    assert_eq!(hit(&r, &ok("v3", "team-blue")), "none");
    assert_eq!(hit(&r, &ok("v1", "team-42")), "none");
    assert_eq!(
        hit(&r, &req("GET", "h", "/").header("x-version", "v1")),
        "none"
    );
    // Any of several request values will do.
    let multi = req("GET", "h", "/")
        .header("x-version", "v9")
        .header("x-version", "v2")
        .header("x-team", "team-a");
    assert_eq!(hit(&r, &multi), "r0");
}

#[test]
fn methods_are_exact() {
    let r = router(vec![route(1, 0).methods(&["GET", "HEAD"]).paths(&["/"])]);
    assert_eq!(hit(&r, &req("GET", "h", "/")), "r0");
    assert_eq!(hit(&r, &req("HEAD", "h", "/")), "r0");
    assert_eq!(hit(&r, &req("POST", "h", "/")), "none");
    assert_eq!(hit(&r, &req("get", "h", "/")), "none");
}

#[test]
fn hosts_only_route_and_no_match() {
    let r = router(vec![route(1, 0).hosts(&["only.test"])]);
    let m = r
        .find(&req("GET", "only.test", "/any/path").get())
        .expect("match");
    assert_eq!(m.upstream_path, "/any/path");
    assert_eq!(m.stripped_prefix, None);
    assert!(r
        .find(&req("GET", "other.test", "/any/path").get())
        .is_none());
    assert!(router(vec![]).find(&req("GET", "h", "/").get()).is_none());
}

#[test]
fn disabled_services_and_stream_routes_are_skipped() {
    let mut snap = snapshot(vec![
        route(1, 1).paths(&["/a"]),
        route(2, 0).paths(&["/a"]),
        route(3, 0).protocols(&[Protocol::Tcp, Protocol::Tls]),
    ]);
    Arc::make_mut(&mut snap.services[1]).enabled = false;
    let r = Router::new(&snap).expect("router");
    assert_eq!(r.len(), 1);
    assert_eq!(hit(&r, &req("GET", "h", "/a")), "r1");
}

#[test]
fn snis_match_only_requests_over_tls_and_add_to_the_match_weight() {
    let r = router(vec![
        route(1, 0).paths(&["/api"]).snis(&["a.example.com"]),
        route(2, 0).paths(&["/api"]).snis(&["*.wild.example.com"]),
        route(3, 0).paths(&["/api"]),
        route(4, 0)
            .snis(&["only.example.com"])
            .protocols(&[Protocol::Https]),
    ]);
    // Same paths: the route with snis outranks the one without when its sni matches.
    assert_eq!(hit(&r, &req("GET", "h", "/api").sni("a.example.com")), "r0");
    assert_eq!(
        hit(&r, &req("GET", "h", "/api").sni("x.wild.example.com")),
        "r1"
    );
    assert_eq!(
        hit(&r, &req("GET", "h", "/api").sni("other.example.com")),
        "r2"
    );
    // An https request that sent no server name matches no route with snis.
    assert_eq!(hit(&r, &req("GET", "h", "/api").https()), "r2");
    // Over plain HTTP snis are not checked (Kong: `net.protocol != "https" || tls.sni == ..`):
    // r0 and r1 both match at the same priority, and the tie goes by id.
    assert_eq!(hit(&r, &req("GET", "h", "/api")), "r1");
    // A route with nothing but snis takes every path of its server name.
    assert_eq!(
        hit(&r, &req("GET", "h", "/x").sni("only.example.com")),
        "r3"
    );
    assert_eq!(hit(&r, &req("GET", "h", "/x").sni("a.example.com")), "none");
}

#[test]
fn protocol_flags() {
    let r = router(vec![
        route(1, 0).paths(&["/tls"]).protocols(&[Protocol::Https]),
        route(2, 0).paths(&["/both"]),
        route(3, 0)
            .paths(&["/grpc"])
            .protocols(&[Protocol::Grpc, Protocol::Grpcs]),
        route(4, 0).paths(&["/grpcs"]).protocols(&[Protocol::Grpcs]),
    ]);
    let flags = |rq: Req| {
        let m = r.find(&rq.get()).expect("match");
        (m.https_required, m.grpc_only)
    };
    assert_eq!(flags(req("GET", "h", "/tls")), (true, false));
    assert_eq!(flags(req("GET", "h", "/tls").https()), (false, false));
    assert_eq!(flags(req("GET", "h", "/both")), (false, false));
    assert_eq!(flags(req("POST", "h", "/grpc")), (false, true));
    assert_eq!(flags(req("POST", "h", "/grpcs")), (true, true));
    assert_eq!(flags(req("POST", "h", "/grpcs").https()), (false, true));
}

#[test]
fn regex_strip_uses_matched_text() {
    let r = router(vec![route(1, 0).paths(&["~/users/(?<id>\\d+)"])]);
    let m = r
        .find(&req("GET", "h", "/users/42/profile").get())
        .expect("match");
    assert_eq!(m.upstream_path, "/profile");
    assert_eq!(m.stripped_prefix.as_deref(), Some("/users/42"));
    assert!(matches!(m.stripped_prefix, Some(Cow::Owned(_))));
    // Anchored at the start only.
    assert!(r.find(&req("GET", "h", "/x/users/42").get()).is_none());
}

#[test]
fn stripped_prefix_reporting() {
    let r = router(vec![
        route(1, 0).paths(&["/"]),
        route(2, 0).paths(&["/keep"]).strip(false),
        route(3, 0).paths(&["/cut"]),
    ]);
    let prefix = |p: &str| {
        r.find(&req("GET", "h", p).get())
            .expect("match")
            .stripped_prefix
    };
    assert_eq!(prefix("/x"), None, "`/` is never reported");
    assert_eq!(prefix("/keep/x"), None, "nothing stripped");
    let cut = prefix("/cut/x");
    assert_eq!(cut.as_deref(), Some("/cut"));
    assert!(
        matches!(cut, Some(Cow::Borrowed(_))),
        "borrowed from the route"
    );
}

#[test]
fn config_errors_name_the_field() {
    let err = Router::new(&snapshot(vec![
        route(1, 0).paths(&["/ok"]),
        route(2, 0).paths(&["/ok", "~/bad(", "~/(?=lookahead)"]),
        route(3, 0).header("x-a", &["fine", "~*[z-a]"]),
    ]))
    .expect_err("must fail");
    let paths: Vec<&str> = err.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "routes[1].paths[1]",
            "routes[1].paths[2]",
            "routes[2].headers.x-a[1]"
        ]
    );
    assert!(
        err[0].message.starts_with("invalid regex: '~/bad('"),
        "{}",
        err[0]
    );
    let mut unknown = route(4, 0);
    unknown.service = Some(Uuid::from_u128(0xdead));
    let err = Router::new(&snapshot(vec![unknown])).expect_err("must fail");
    assert_eq!(err[0].path, "routes[0].service");
}

#[test]
fn literal_prefixes_are_conservative() {
    assert_eq!(literal_prefix("/users/\\d+"), "/users/");
    assert_eq!(literal_prefix("/a\\.b/c?"), "/a.b/");
    assert_eq!(literal_prefix("/ab*"), "/a");
    assert_eq!(literal_prefix("/ab+c"), "/ab");
    assert_eq!(literal_prefix("/ab{2}"), "/a");
    assert_eq!(literal_prefix("/(?i)abc"), "/");
    assert_eq!(literal_prefix("(?i)/abc"), "");
    assert_eq!(literal_prefix("/a|/b"), "");
    assert_eq!(literal_prefix("/x[yz]"), "/x");
    assert_eq!(literal_prefix("/foo/bar$"), "/foo/bar");
    // Case-insensitive regexes are found through their (empty) literal prefix.
    let r = router(vec![route(1, 0).paths(&["~(?i)/ABC"])]);
    assert_eq!(hit(&r, &req("GET", "h", "/abc")), "r0");
    // An alternation leaves later branches unanchored (`^/a|/b`), as in Kong.
    let r = router(vec![route(1, 0).paths(&["~/a|/b"])]);
    assert_eq!(hit(&r, &req("GET", "h", "/x/b")), "r0");
}

/// The index must pick exactly what a linear scan over all matchers in rank order picks.
#[test]
fn index_agrees_with_linear_scan() {
    let mut routes = Vec::new();
    for i in 0..1500u128 {
        let mut r = route(i + 1, i % 4);
        match i % 10 {
            0 => r = r.paths(&[&format!("~/svc{}/items/\\d+", i % 37)]),
            1 => r = r.hosts(&[&format!("h{}.test", i % 13)]),
            2 => r = r.hosts(&[&format!("*.w{}.test", i % 7)]).paths(&["/api"]),
            3 => {
                r = r
                    .hosts(&[&format!("p{}.*", i % 5)])
                    .paths(&[&format!("/svc{}", i % 41)])
            }
            4 => r = r.methods(&["POST"]).paths(&[&format!("/svc{}", i % 41)]),
            5 => r = r.header("x-t", &[&(i % 3).to_string()]).paths(&["/svc1"]),
            6 => r = r.paths(&[&format!("/svc{}/items", i % 41), "~/alt/.*"]),
            7 => r = r.hosts(&[&format!("h{}.test:9000", i % 13)]),
            _ => {
                r = r
                    .paths(&[&format!("/svc{}", i % 53)])
                    .regex_priority((i % 5) as i64)
            }
        }
        routes.push(r);
    }
    let r = router(routes);
    let hosts = [
        "h3.test",
        "a.w2.test",
        "x.y.w6.test",
        "p1.com",
        "p4.org",
        "none.test",
    ];
    let paths = [
        "/",
        "/svc1",
        "/svc12/items/7",
        "/svc3/items",
        "/alt/x",
        "/api/v",
        "/nope",
    ];
    let mut checked = 0;
    for host in hosts {
        for path in paths {
            for method in ["GET", "POST"] {
                for port in [8000, 9000] {
                    for t in ["0", "2"] {
                        let rq = req(method, host, path).port(port).header("x-t", t);
                        let got = r.find(&rq.get()).map(|m| m.route_index);
                        assert_eq!(
                            got,
                            linear(&r, &rq.get()),
                            "{method} {host}:{port}{path} t={t}"
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 336);
}

fn linear(r: &Router, rq: &RouteRequest<'_>) -> Option<usize> {
    r.matchers
        .iter()
        .find(|m| {
            m.matches_non_path(rq)
                && (m.paths.is_empty()
                    || m.paths.iter().any(|p| match p {
                        PathPattern::Prefix(t) => rq.path.starts_with(&**t),
                        PathPattern::Regex { re, .. } => re.find(rq.path).is_some(),
                    }))
        })
        .map(|m| m.route_index as usize)
}
