//! The loader on the propagation benchmark's 10,000-route config (100 services; a fifth of the
//! routes with a regex path, a fifth with hosts, the rest two prefix paths and two methods):
//! what the control plane spends validating each `apply` before it stores and pushes.
//! YAML and JSON texts of the same config, the parse step alone, the CLI's conversion to JSON,
//! and a data plane applying a one-route delta to it.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ROUTES: usize = 10_000;
const PER_SERVICE: usize = 100;

fn config() -> String {
    let mut s = String::from("_format_version: \"3.0\"\nservices:\n");
    for svc in 0..ROUTES.div_ceil(PER_SERVICE) {
        s.push_str(&format!(
            "  - name: svc{svc}\n    url: http://127.0.0.1:9/base{svc}\n    routes:\n"
        ));
        for r in 0..PER_SERVICE.min(ROUTES - svc * PER_SERVICE) {
            let i = svc * PER_SERVICE + r;
            match i % 5 {
                0 => s.push_str(&format!("      - name: r{i}\n        paths: [\"~/api/v{i}/items/\\\\d+$\", \"/changed0\"]\n")),
                1 => s.push_str(&format!("      - name: r{i}\n        hosts: [\"h{i}.example.com\", \"*.w{i}.example.com\"]\n        paths: [\"/p{i}\"]\n")),
                _ => s.push_str(&format!("      - name: r{i}\n        paths: [\"/api/v{i}/res\", \"/alt/{i}\"]\n        methods: [GET, POST]\n")),
            }
        }
    }
    s
}

fn bench(c: &mut Criterion) {
    let yaml = config();
    let value: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
    let json = serde_json::to_string(&value).unwrap();
    let env = |_: &str| None;
    let mut g = c.benchmark_group("load_10k_routes");
    g.sample_size(20);
    g.bench_function("yaml", |b| {
        b.iter(|| portico_common::load_str(black_box(&yaml), &env).unwrap())
    });
    g.bench_function("json", |b| {
        b.iter(|| portico_common::load_str(black_box(&json), &env).unwrap())
    });
    // What the control plane does for the next version: the live one's digests reused.
    let live = portico_common::load_str(&json, &env).unwrap();
    let next = json.replacen("/changed0", "/changed1", 1);
    g.bench_function("json_after_previous", |b| {
        b.iter(|| {
            portico_common::load_str_after(black_box(&next), &env, (&live.snapshot, &live.digests))
                .unwrap()
        })
    });
    g.bench_function("parse_yaml_only", |b| {
        b.iter(|| serde_yaml::from_str::<serde_json::Value>(black_box(&yaml)).unwrap())
    });
    // What `portico apply -f` does before sending: the document as compact JSON.
    g.bench_function("transport_text", |b| {
        b.iter(|| portico_common::load::transport_text(black_box(&yaml)).len())
    });
    // The data plane's side of a one-route change: the delta applied to the served snapshot.
    let base = portico_common::load_str(&yaml, &env).unwrap();
    let changed =
        portico_common::load_str(&yaml.replacen("/changed0", "/changed1", 1), &env).unwrap();
    let delta = portico_common::Delta::between(
        &base.snapshot,
        &base.digests,
        &changed.snapshot,
        &changed.digests,
    );
    g.bench_function("delta_apply_one_route", |b| {
        b.iter(|| {
            delta
                .apply(black_box(&base.snapshot), &base.digests)
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
