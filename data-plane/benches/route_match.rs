//! `Router::find` over 10, 1,000 and 10,000 routes in three mixes (prefix-only, 20% regex,
//! host-based with wildcards), for a request that hits a route in the middle of the config and
//! for a miss. The cost per match must not grow with the number of routes.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::HeaderMap;
use portico_common::snapshot::{shared, Route, Service, Snapshot};
use portico_data_plane::router::{RouteRequest, Router};
use uuid::Uuid;

const SIZES: [usize; 3] = [10, 1_000, 10_000];

fn service() -> Service {
    Service {
        name: None,
        port: 80,
        path: Some("/base".into()),
        ..Service::with_defaults(Uuid::from_u128(1), "upstream.test")
    }
}

fn route(i: usize, hosts: Vec<String>, paths: Vec<String>) -> Route {
    Route {
        service: Some(Uuid::from_u128(1)),
        methods: if i.is_multiple_of(4) {
            vec!["GET".into()]
        } else {
            vec![]
        },
        hosts,
        paths,
        ..Route::with_defaults(Uuid::from_u128(0x1000 + i as u128))
    }
}

fn build(routes: Vec<Route>) -> Router {
    let snap = Snapshot {
        services: shared([service()]),
        routes: shared(routes),
        ..Snapshot::default()
    };
    Router::new(&snap).expect("bench routes compile")
}

/// (mix name, routes, [(case name, host, path)])
type Mix = (
    &'static str,
    Vec<Route>,
    Vec<(&'static str, String, String)>,
);

fn prefix_only(n: usize) -> Mix {
    let routes = (0..n)
        .map(|i| route(i, vec![], vec![format!("/svc{i}/items")]))
        .collect();
    let mid = n / 2;
    let cases = vec![
        ("hit", "api.test".into(), format!("/svc{mid}/items/42")),
        ("miss", "api.test".into(), "/nothing/here".into()),
    ];
    ("prefix", routes, cases)
}

fn regex_heavy(n: usize) -> Mix {
    let routes = (0..n)
        .map(|i| {
            let p = if i % 5 == 0 {
                format!("~/rx{i}/items/\\d+$")
            } else {
                format!("/svc{i}/items")
            };
            route(i, vec![], vec![p])
        })
        .collect();
    let mid = n / 2 / 5 * 5;
    let cases = vec![
        ("hit", "api.test".into(), format!("/rx{mid}/items/42")),
        ("miss", "api.test".into(), "/rx/none".into()),
    ];
    ("regex20", routes, cases)
}

fn host_based(n: usize) -> Mix {
    let routes = (0..n)
        .map(|i| {
            let host = match i % 3 {
                0 => format!("h{i}.example.com"),
                1 => format!("*.w{i}.example.com"),
                _ => format!("p{i}.*"),
            };
            route(i, vec![host], vec!["/".into()])
        })
        .collect();
    let mid = n / 2 / 3 * 3;
    let cases = vec![
        ("hit", format!("h{mid}.example.com"), "/api/x".into()),
        (
            "hit-wildcard",
            format!("a.w{}.example.com", mid + 1),
            "/api/x".into(),
        ),
        ("miss", "nobody.example.org".into(), "/api/x".into()),
    ];
    ("hosts", routes, cases)
}

fn bench(c: &mut Criterion) {
    let headers = HeaderMap::new();
    for n in SIZES {
        for (mix, routes, cases) in [prefix_only(n), regex_heavy(n), host_based(n)] {
            let router = build(routes);
            for (case, host, path) in cases {
                let req = RouteRequest {
                    method: "GET",
                    host: &host,
                    port: 8000,
                    path: &path,
                    headers: &headers,
                    https: false,
                    sni: None,
                };
                let expect_hit = case.starts_with("hit");
                assert_eq!(router.find(&req).is_some(), expect_hit, "{mix}/{n}/{case}");
                c.bench_function(&format!("{mix}/{n}/{case}"), |b| {
                    b.iter(|| black_box(router.find(black_box(&req))))
                });
            }
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
