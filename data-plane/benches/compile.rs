//! `Runtime::compile` and `Runtime::recompile` of a 10,000-route config (100 services; a fifth
//! of the routes have a regex path such as `~/api/v{i}/items/\d+$`, a fifth have an exact and a
//! wildcard host, the rest two prefix paths and two methods; the mix of
//! `examples/phases.rs`). Recompiling after a one-route change must cost about an index build,
//! not a full compile.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use portico_common::snapshot::{shared, Route, Service, Snapshot};
use portico_data_plane::pool::Pools;
use portico_data_plane::runtime::Runtime;
use uuid::Uuid;

const ROUTES: usize = 10_000;
const PER_SERVICE: usize = 100;

fn service(s: usize) -> Service {
    Service {
        name: Some(format!("svc{s}")),
        port: 9,
        path: Some(format!("/base{s}")),
        ..Service::with_defaults(Uuid::from_u128(0x5e00_0000 + s as u128), "127.0.0.1")
    }
}

fn route(i: usize) -> Route {
    let (hosts, paths, methods): (Vec<String>, Vec<String>, Vec<String>) = match i % 5 {
        0 => (
            vec![],
            vec![format!("~/api/v{i}/items/\\d+$"), "/changed0".into()],
            vec![],
        ),
        1 => (
            vec![format!("h{i}.example.com"), format!("*.w{i}.example.com")],
            vec![format!("/p{i}")],
            vec![],
        ),
        _ => (
            vec![],
            vec![format!("/api/v{i}/res"), format!("/alt/{i}")],
            vec!["GET".into(), "POST".into()],
        ),
    };
    Route {
        name: Some(format!("r{i}")),
        service: Some(service(i / PER_SERVICE).id),
        methods,
        hosts,
        paths,
        ..Route::with_defaults(Uuid::from_u128(0x1000_0000 + i as u128))
    }
}

fn snapshot() -> Snapshot {
    Snapshot {
        source_format_version: "3.0".into(),
        services: shared((0..ROUTES.div_ceil(PER_SERVICE)).map(service)),
        routes: shared((0..ROUTES).map(route)),
        ..Snapshot::default()
    }
}

fn bench(c: &mut Criterion) {
    let pools = Pools::default();
    let base = snapshot();
    let previous = Runtime::compile(base.clone(), &pools).expect("bench config compiles");

    // One regex route gets a new pattern.
    let mut one_regex = base.clone();
    Arc::make_mut(&mut one_regex.routes[5_000]).paths[0] = "~/api/v5000/things/\\d+$".into();
    // One prefix route gets a new path.
    let mut one_prefix = base.clone();
    Arc::make_mut(&mut one_prefix.routes[5_002]).paths[0] = "/api/v5002/other".into();
    // Same routes, another order (a delta may reorder entities).
    let mut moved = base.clone();
    moved.routes.rotate_left(1234);

    let mut g = c.benchmark_group("compile/10000");
    g.sample_size(20);
    g.bench_function("full", |b| {
        b.iter_batched(
            || base.clone(),
            |s| black_box(Runtime::compile(s, &pools).expect("compiles")),
            BatchSize::PerIteration,
        )
    });
    for (name, snap) in [
        ("recompile-one-regex-route", &one_regex),
        ("recompile-one-prefix-route", &one_prefix),
        ("recompile-unchanged", &base),
        ("recompile-reordered", &moved),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || snap.clone(),
                |s| black_box(Runtime::recompile(s, &pools, &previous).expect("compiles")),
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
