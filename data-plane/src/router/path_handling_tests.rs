//! Every path_handling v0 row of K:spec/fixtures/router_path_handling_tests.lua (Kong 3.x, the
//! revision whose rows match `get_upstream_uri_v0` as shipped), plus the normalisation rows of
//! KONG.md §2.3. Request paths go through `canonicalize` first, as in the proxy.

use std::sync::Arc;

use portico_common::path::canonicalize;

use super::tests::{req, route, service, snapshot, RouteExt};
use super::*;

const F: &[bool] = &[false];
const T: &[bool] = &[true];
const FT: &[bool] = &[false, true];

/// (service.path, route path or None for a hosts-only route, strip_path values, request,
/// expected upstream path).
type Row = (
    &'static str,
    Option<&'static str>,
    &'static [bool],
    &'static str,
    &'static str,
);

#[rustfmt::skip]
const ROWS: &[Row] = &[
    ("/", Some("/"), FT, "/", "/"),
    ("/", Some("/"), FT, "/route", "/route"),
    ("/", Some("/"), FT, "/route/", "/route/"),
    ("/", Some("/"), FT, "/routereq", "/routereq"),
    ("/", Some("/"), FT, "/route/req", "/route/req"),
    ("/", Some("/route"), F, "/route", "/route"),
    ("/", Some("/route"), F, "/route/", "/route/"),
    ("/", Some("/route"), F, "/routereq", "/routereq"),
    ("/", Some("/route"), T, "/route", "/"),
    ("/", Some("/route"), T, "/route/", "/"),
    ("/", Some("/route"), T, "/routereq", "/req"),
    ("/", Some("/route/"), F, "/route/", "/route/"),
    ("/", Some("/route/"), F, "/route/req", "/route/req"),
    ("/", Some("/route/"), T, "/route/", "/"),
    ("/", Some("/route/"), T, "/route/req", "/req"),
    ("/srv", Some("/rou"), F, "/roureq", "/srv/roureq"),
    ("/srv", Some("/rou"), T, "/roureq", "/srv/req"),
    ("/srv/", Some("/rou"), F, "/rou", "/srv/rou"),
    ("/srv/", Some("/rou"), T, "/rou", "/srv"),
    ("/service", Some("/"), FT, "/", "/service"),
    ("/service", Some("/"), FT, "/route", "/service/route"),
    ("/service", Some("/"), FT, "/route/", "/service/route/"),
    ("/service", Some("/"), FT, "/routereq", "/service/routereq"),
    ("/service", Some("/"), FT, "/route/req", "/service/route/req"),
    ("/service", Some("/route"), F, "/route", "/service/route"),
    ("/service", Some("/route"), F, "/route/", "/service/route/"),
    ("/service", Some("/route"), F, "/routereq", "/service/routereq"),
    ("/service", Some("/route"), T, "/route", "/service"),
    ("/service", Some("/route"), T, "/route/", "/service/"),
    ("/service", Some("/route"), T, "/routereq", "/service/req"),
    ("/service", Some("/route/"), F, "/route/", "/service/route/"),
    ("/service", Some("/route/"), F, "/route/req", "/service/route/req"),
    ("/service", Some("/route/"), T, "/route/", "/service/"),
    ("/service", Some("/route/"), T, "/route/req", "/service/req"),
    ("/service/", Some("/"), FT, "/route/", "/service/route/"),
    ("/service/", Some("/"), FT, "/", "/service/"),
    ("/service/", Some("/"), FT, "/route", "/service/route"),
    ("/service/", Some("/"), FT, "/routereq", "/service/routereq"),
    ("/service/", Some("/"), FT, "/route/req", "/service/route/req"),
    ("/service/", Some("/route"), F, "/route", "/service/route"),
    ("/service/", Some("/route"), F, "/route/", "/service/route/"),
    ("/service/", Some("/route"), F, "/routereq", "/service/routereq"),
    ("/service/", Some("/route"), T, "/route", "/service"),
    ("/service/", Some("/route"), T, "/route/", "/service/"),
    ("/service/", Some("/route"), T, "/routereq", "/service/req"),
    ("/service/", Some("/route/"), F, "/route/", "/service/route/"),
    ("/service/", Some("/route/"), F, "/route/req", "/service/route/req"),
    ("/service/", Some("/route/"), T, "/route/", "/service/"),
    ("/service/", Some("/route/"), T, "/route/req", "/service/req"),
    ("/", None, FT, "/", "/"),
    ("/", None, FT, "/route", "/route"),
    ("/", None, FT, "/route/", "/route/"),
    ("/service", None, FT, "/", "/service"),
    ("/service", None, FT, "/route", "/service/route"),
    ("/service", None, FT, "/route/", "/service/route/"),
    ("/service/", None, FT, "/", "/service/"),
    ("/service/", None, FT, "/route", "/service/route"),
    ("/service/", None, FT, "/route/", "/service/route/"),
    ("/service", Some("/route"), T, "/route./req", "/service/req"),
    ("/service", Some("/route"), T, "/route%2E%2E/req", "/service/req"),
    ("/service", Some("/route"), T, "/route/./req", "/service/req"),
    ("/service", Some("/route"), T, "/route.", "/service"),
    ("/service", Some("/route"), T, "/route%2e%2e", "/service"),
    ("/service/", Some("/route"), T, "/route..", "/service"),
    ("/service", Some("/route"), T, "/route/x/../req", "/service/req"),
    ("/service", Some("/route"), F, "/route%2E%2E/req", "/service/route../req"),
    ("/", Some("~/users/\\d+"), T, "/users/42/profile", "/profile"),
    ("/", Some("~/users/\\d+"), F, "/users/42/profile", "/users/42/profile"),
    ("/v2", Some("~/users/\\d+"), T, "/users/42", "/v2"),
];

#[test]
fn kong_path_handling_fixture() {
    let mut checked = 0;
    for (i, &(service_path, route_path, strips, request, expected)) in ROWS.iter().enumerate() {
        for &strip in strips {
            // Kong treats a null service path and "/" alike; check both spellings.
            let spellings: &[Option<&str>] = if service_path == "/" {
                &[Some("/"), None]
            } else {
                &[Some(service_path)]
            };
            for &sp in spellings {
                let mut r = route(1, 0).strip(strip);
                r = match route_path {
                    Some(p) => r.paths(&[p]),
                    None => r.hosts(&["example.com"]),
                };
                let mut snap = snapshot(vec![r]);
                snap.services[0] = Arc::new(service(0, sp));
                let router = Router::new(&snap).expect("router");
                let path = canonicalize(request).expect("canonical");
                let rq = req("GET", "example.com", &path);
                let got = router.find(&rq.get()).map(|m| m.upstream_path);
                assert_eq!(
                    got.as_deref(),
                    Some(expected),
                    "row {i}: service {sp:?} route {route_path:?} strip {strip} request {request}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 100, "only {checked} cases");
}

#[test]
fn serviceless_route_uses_root_base() {
    let mut r = route(1, 0).paths(&["/x"]);
    r.service = None;
    let router = Router::new(&snapshot(vec![r])).expect("router");
    let m = router.find(&req("GET", "h", "/x/y").get()).expect("match");
    assert_eq!(m.service_index, None);
    assert_eq!(m.upstream_path, "/y");
}
