//! `Router::recompile` must build exactly the router `Router::new` builds, whatever changed
//! between the snapshots (routes added, removed, edited, moved; services edited, disabled,
//! moved), and must reuse what did not change.

use std::sync::Arc;

use portico_common::snapshot::{shared, Protocol, Route, Snapshot};

use super::compile::{HeaderValueMatch, PathPattern};
use super::regex::Regex;
use super::tests::{req, route, service, Req, RouteExt};
use super::*;

/// Services 0..=3 (service 2 with a path) and 300 routes of every kind: regex and prefix
/// paths, split routes, hosts (exact, wildcard, with port), methods, headers (exact and
/// regex), gRPC-only and TLS-only protocols.
fn base() -> Snapshot {
    let mut routes = Vec::new();
    for i in 0..300u128 {
        let mut r = route(i + 1, i % 4);
        r = match i % 9 {
            0 => r.paths(&[&format!("~/rx{}/items/\\d+$", i % 40)]),
            1 => r.hosts(&[&format!("h{}.test", i % 13)]),
            2 => r
                .hosts(&[&format!("*.w{}.test", i % 7), "plain.test:9000"])
                .paths(&["/api"]),
            3 => r
                .hosts(&[&format!("p{}.*", i % 5)])
                .paths(&[&format!("/svc{}", i % 41)]),
            4 => r
                .methods(&["POST", "PURGE"])
                .paths(&[&format!("/svc{}", i % 41)]),
            5 => r
                .header("x-t", &[&(i % 3).to_string(), "~*^beta-\\d$"])
                .paths(&["/svc1"]),
            // Split into groups: one regex group, two prefix lengths.
            6 => r.paths(&[&format!("/svc{}/items", i % 41), "~/alt/.*", "/a"]),
            7 => r
                .paths(&[&format!("/g{}", i % 11)])
                .protocols(&[Protocol::Grpcs]),
            _ => r
                .paths(&[&format!("~/v{}/(?<id>[^/]+)", i % 17)])
                .regex_priority((i % 5) as i64),
        };
        routes.push(r);
    }
    let mut services: Vec<_> = (0..4).map(|n| service(n, None)).collect();
    services[2].path = Some("/base/".into());
    Snapshot {
        services: shared(services),
        routes: shared(routes),
        ..Snapshot::default()
    }
}

fn requests() -> Vec<Req> {
    let mut out = Vec::new();
    let hosts = ["h3.test", "a.w2.test", "plain.test", "p1.com", "none.test"];
    let paths = [
        "/",
        "/svc1",
        "/svc12/items/7",
        "/rx3/items/42",
        "/rx3/items/x",
        "/rx9/items/7",
        "/alt/x",
        "/a/b",
        "/api/v",
        "/v4/abc/def",
        "/g3",
        "/new/1",
    ];
    for host in hosts {
        for path in paths {
            for method in ["GET", "POST", "PURGE"] {
                for t in ["0", "beta-7"] {
                    out.push(req(method, host, path).header("x-t", t));
                    out.push(req(method, host, path).header("x-t", t).port(9000).https());
                }
            }
        }
    }
    out
}

/// The routers agree on every matcher (order, indexes, rules) and on every request.
fn assert_same(fresh: &Router, recompiled: &Router, what: &str) {
    assert_eq!(fresh.len(), recompiled.len(), "{what}: matcher count");
    for (rank, (a, b)) in fresh.matchers.iter().zip(&recompiled.matchers).enumerate() {
        assert_eq!(
            (a.priority, a.id, a.route_index, a.service_index),
            (b.priority, b.id, b.route_index, b.service_index),
            "{what}: matcher {rank}"
        );
        assert_eq!(
            format!("{:?}", a.rule),
            format!("{:?}", b.rule),
            "{what}: rule {rank}"
        );
    }
    assert_eq!(fresh.service_paths, recompiled.service_paths, "{what}");
    for rq in requests() {
        assert_eq!(
            fresh.find(&rq.get()),
            recompiled.find(&rq.get()),
            "{what}: {} {}{} {:?}",
            rq.method,
            rq.host,
            rq.path,
            rq.headers
        );
    }
}

/// Recompiles `next` against `prev` and checks it against a fresh compile; returns it.
fn check(prev: (&Snapshot, &Router), next: &Snapshot, what: &str) -> Router {
    let fresh = Router::new(next).expect("fresh compile");
    let recompiled = Router::recompile(next, prev.1, prev.0).expect("recompile");
    assert_same(&fresh, &recompiled, what);
    recompiled
}

#[test]
fn recompile_gives_the_same_router_as_compile() {
    let s0 = base();
    let r0 = Router::new(&s0).expect("base");
    assert!(r0.len() > 300, "split routes add matchers");

    let unchanged = check((&s0, &r0), &s0, "unchanged");
    assert_eq!(unchanged.stats().routes_reused, 300);
    assert_eq!(unchanged.stats().regexes_compiled, 0);

    let mut added = s0.clone();
    added
        .routes
        .insert(150, Arc::new(route(1_000, 1).paths(&["~/new/\\d+"])));
    added.routes.push(Arc::new(
        route(1_001, 2).paths(&["/new"]).hosts(&["h3.test"]),
    ));
    let r_added = check((&s0, &r0), &added, "route added");
    assert_eq!(r_added.stats().routes_reused, 300);
    assert_eq!(r_added.stats().regexes_compiled, 1);

    let mut removed = s0.clone();
    removed.routes.remove(0);
    removed.routes.remove(100);
    check((&s0, &r0), &removed, "routes removed");

    let mut regex_changed = s0.clone();
    Arc::make_mut(&mut regex_changed.routes[9]).paths[0] = "~/rx9/things/\\d+$".into();
    Arc::make_mut(&mut regex_changed.routes[14])
        .headers
        .insert("x-t".into(), vec!["~*^gamma$".into()]);
    let r = check((&s0, &r0), &regex_changed, "regex changed");
    assert_eq!(r.stats().regexes_compiled, 2);

    let mut service_changed = s0.clone();
    Arc::make_mut(&mut service_changed.routes[10]).service = Some(service(3, None).id);
    Arc::make_mut(&mut service_changed.services[2]).path = Some("/other".into());
    check((&s0, &r0), &service_changed, "service changed");

    let mut disabled = s0.clone();
    Arc::make_mut(&mut disabled.services[1]).enabled = false;
    let r_disabled = check((&s0, &r0), &disabled, "service disabled");
    // Enabled again: its routes had no matchers in the previous router, so they compile.
    let r_enabled = check((&disabled, &r_disabled), &s0, "service re-enabled");
    assert_eq!(r_enabled.stats().routes_reused, 225);

    let mut moved = s0.clone();
    moved.routes.rotate_left(77);
    moved.routes.swap(3, 200);
    moved.services.reverse();
    let r_moved = check((&s0, &r0), &moved, "entities moved");
    assert_eq!(r_moved.stats().routes_reused, 300);

    // A chain: recompile from a recompiled router.
    let mut chained = moved.clone();
    chained.routes.truncate(250);
    chained.routes[5] = Arc::new(Route::clone(&chained.routes[5]).paths(&["~/chained/(\\d+)"]));
    check((&moved, &r_moved), &chained, "chained");

    // A config error is reported as by a fresh compile.
    let mut broken = s0.clone();
    Arc::make_mut(&mut broken.routes[9]).paths[0] = "~/bad(".into();
    let fresh = Router::new(&broken).expect_err("bad regex");
    let recompiled = Router::recompile(&broken, &r0, &s0).expect_err("bad regex");
    assert_eq!(fresh, recompiled);
}

fn path_regexes(r: &Router) -> Vec<(u32, Regex)> {
    r.matchers
        .iter()
        .flat_map(|m| {
            m.paths.iter().filter_map(move |p| match p {
                PathPattern::Regex { re, .. } => Some((m.route_index, re.clone())),
                PathPattern::Prefix(_) => None,
            })
        })
        .collect()
}

fn header_regex(r: &Router, route_index: u32) -> Regex {
    r.matchers
        .iter()
        .filter(|m| m.route_index == route_index)
        .flat_map(|m| m.headers.iter())
        .flat_map(|h| h.values.iter())
        .find_map(|v| match v {
            HeaderValueMatch::Regex(re) => Some(re.clone()),
            HeaderValueMatch::Exact(_) => None,
        })
        .expect("a header regex")
}

#[test]
fn unchanged_regexes_are_reused_not_recompiled() {
    let s0 = base();
    let r0 = Router::new(&s0).expect("base");

    // Route 0 changes (new prefix path added) but keeps its regex; route 5 keeps its header
    // regex but changes its exact value; everything else is untouched.
    let mut s1 = s0.clone();
    Arc::make_mut(&mut s1.routes[0]).paths.push("/extra".into());
    Arc::make_mut(&mut s1.routes[5])
        .headers
        .insert("x-t".into(), vec!["9".into(), "~*^beta-\\d$".into()]);
    let r1 = Router::recompile(&s1, &r0, &s0).expect("recompile");
    assert_eq!(
        r1.stats(),
        CompileStats {
            routes_reused: 298,
            regexes_compiled: 0,
            regexes_reused: 2,
        }
    );
    let before = path_regexes(&r0);
    let after = path_regexes(&r1);
    assert_eq!(before.len(), after.len());
    for (ri, re) in &after {
        let (_, old) = before
            .iter()
            .find(|(i, old)| i == ri && old.source() == re.source())
            .expect("same regex before");
        assert!(Regex::ptr_eq(old, re), "route {ri}: {re:?} was recompiled");
    }
    assert!(Regex::ptr_eq(&header_regex(&r0, 5), &header_regex(&r1, 5)));

    // Identical patterns within one snapshot compile once.
    let fresh = Router::new(&s0).expect("fresh");
    let distinct: std::collections::HashSet<&str> =
        before.iter().map(|(_, re)| re.source()).collect();
    assert_eq!(
        fresh.stats().regexes_compiled,
        distinct.len() + 1,
        "path regexes plus the one header regex"
    );

    // A fresh compile shares nothing with the previous router.
    let (_, any) = &path_regexes(&fresh)[0];
    assert!(!before.iter().any(|(_, old)| Regex::ptr_eq(old, any)));
}

#[test]
fn reused_routes_follow_their_new_indexes() {
    let s0 = base();
    let r0 = Router::new(&s0).expect("base");
    let mut s1 = s0.clone();
    s1.routes.reverse();
    s1.services.swap(0, 3);
    let r1 = Router::recompile(&s1, &r0, &s0).expect("recompile");
    let rq = req("GET", "h", "/rx3/items/42");
    let (a, b) = (
        r0.find(&rq.get()).expect("hit"),
        r1.find(&rq.get()).expect("hit"),
    );
    assert_eq!(s0.routes[a.route_index].id, s1.routes[b.route_index].id);
    let service_id = |s: &Snapshot, i: Option<usize>| i.map(|i| s.services[i].id);
    assert_eq!(
        service_id(&s0, a.service_index),
        service_id(&s1, b.service_index)
    );
    assert_ne!(a.route_index, b.route_index);
}
