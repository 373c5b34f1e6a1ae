//! The metrics' cost per request: `Observed::matched` (the route's slot) plus
//! `Metrics::record` (request counter, two histograms, bytes), as `proxy::handle` runs them, on
//! a config of 1,000 routes, the slot table prepared as `Shared::swap` does before publishing;
//! and `Metrics::prepare` itself, the cost a config swap of 10,000 routes pays.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{Method, Response};
use portico_data_plane::headers::TrustedIps;
use portico_data_plane::metrics::Observed;
use portico_data_plane::response::ProxyBody;
use portico_data_plane::runtime::Runtime;
use portico_data_plane::Shared;

fn config(routes: usize) -> String {
    let mut y = String::from("_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://127.0.0.1:9\n    routes:\n");
    for i in 0..routes {
        y.push_str(&format!("      - name: r{i}\n        paths: [/r{i}]\n"));
    }
    y
}

fn bench(c: &mut Criterion) {
    let shared = Shared::new(TrustedIps::default());
    let loaded = portico_common::load_str(&config(1000), &|_| None).expect("valid");
    let rt = Runtime::compile(loaded.snapshot, &shared.pools).expect("compiles");
    shared.swap(rt);
    let rt: Arc<Runtime> = shared.runtime.load_full().expect("live");
    let resp = Response::new(ProxyBody::full("hello world"));
    let mut i = 0;
    c.bench_function("metrics/matched+record (200, 1,000 routes)", |b| {
        b.iter(|| {
            let mut o = Observed::default();
            o.matched(&shared.metrics, &rt, i % 1000);
            o.upstream_latency = Some(Duration::from_micros(300));
            shared
                .metrics
                .record(&o, &Method::GET, &resp, Duration::from_micros(450), Some(0));
            i += 1;
        })
    });

    // What `Shared::swap` adds to every config apply: the route slot table.
    let loaded = portico_common::load_str(&config(10_000), &|_| None).expect("valid");
    let big = Runtime::compile(loaded.snapshot, &shared.pools).expect("compiles");
    c.bench_function("metrics/prepare (10,000 routes)", |b| {
        b.iter(|| shared.metrics.prepare(&big))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
