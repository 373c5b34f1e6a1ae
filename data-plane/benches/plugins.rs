//! The plugin chain's cost per request: the access phase of a route's chain plus the identity
//! headers, as the proxy runs them (no network). Chains: key-auth + acl, jwt (HS256 and RS256),
//! and key-auth + acl + jwt together, with the same token every time (as a client sends it, so
//! jwt finds it verified already) and with a new token every time (`*-new-token`). The consumer table holds 10,000 consumers so lookups are
//! measured at a realistic size.

use std::borrow::Cow;
use std::fmt::Write as _;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Method, Uri};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use portico_data_plane::plugins::{Ctx, Flow, Req};
use portico_data_plane::pool::Pools;
use portico_data_plane::runtime::Runtime;
use portico_data_plane::upstream_body::UpstreamBody;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

const CONSUMERS: usize = 10_000;

fn config(rsa_public_pem: &str) -> String {
    let mut y = String::from(
        r#"_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:9
    routes:
      - name: key-acl
        paths: [/key-acl]
        plugins:
          - name: key-auth
          - { name: acl, config: { allow: [staff] } }
      - name: jwt
        paths: [/jwt]
        plugins: [{ name: jwt }]
      - name: all
        paths: [/all]
        plugins:
          - name: key-auth
          - name: jwt
          - { name: acl, config: { allow: [staff] } }
consumers:
"#,
    );
    let pem = rsa_public_pem.replace('\n', "\\n");
    for i in 0..CONSUMERS {
        let _ = write!(
            y,
            "  - username: user{i}\n    keyauth_credentials: [{{ key: key-{i} }}]\n    acls: [{{ group: staff }}, {{ group: team{i} }}]\n    jwt_secrets:\n      - {{ key: hs-{i}, algorithm: HS256, secret: secret-{i}-0123456789abcdef0123456789 }}\n      - {{ key: rs-{i}, algorithm: RS256, rsa_public_key: \"{pem}\" }}\n"
        );
    }
    y
}

/// Runs the access phase of `route`'s chain for one request with `headers`; panics unless the
/// request goes through (a bench of the refusal path would measure something else).
fn run(rt: &Runtime, route: usize, uri: &Uri, headers: HeaderMap) -> HeaderMap {
    let mut headers = headers;
    let mut body = UpstreamBody::Empty;
    let id = HeaderValue::from_static("bench");
    let chain = rt.plugins.for_route(route);
    let mut req = Req {
        method: &Method::GET,
        path: uri.path(),
        uri,
        headers: &mut headers,
        query: uri.query().map(Cow::Borrowed),
        body: &mut body,
        client_ip: "127.0.0.1".parse().unwrap(),
        https: false,
        host: "bench",
        request_id: &id,
    };
    let mut ctx = Ctx::new(&rt.snapshot, &rt.consumers);
    match chain.access(&mut req, &mut ctx).now_or_never() {
        Some(Flow::Continue) => {}
        other => panic!("the bench request was refused: {other:?}"),
    }
    ctx.identity_headers(req.headers);
    headers
}

fn bench(c: &mut Criterion) {
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("rsa key");
    let public = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("pem");
    let private = key.to_pkcs8_pem(LineEnding::LF).expect("pem");
    let loaded = portico_common::load_str(&config(&public), &|_| None).expect("bench config");
    let rt = Runtime::compile(loaded.snapshot, &Pools::default()).expect("compiles");
    let route = |name: &str| {
        rt.snapshot
            .routes
            .iter()
            .position(|r| r.name.as_deref() == Some(name))
            .expect("route")
    };
    let exp = 4_000_000_000u64;
    let hs = encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({ "iss": "hs-4242", "exp": exp }),
        &EncodingKey::from_secret(b"secret-4242-0123456789abcdef0123456789"),
    )
    .unwrap();
    let rs = encode(
        &Header::new(Algorithm::RS256),
        &serde_json::json!({ "iss": "rs-4242", "exp": exp }),
        &EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
    )
    .unwrap();
    let headers = |pairs: &[(&'static str, String)]| {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("bench"));
        h.insert("user-agent", HeaderValue::from_static("criterion"));
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    };
    let cases = [
        (
            "key-auth+acl",
            route("key-acl"),
            "/key-acl",
            headers(&[("apikey", "key-4242".into())]),
        ),
        (
            "jwt-hs256",
            route("jwt"),
            "/jwt",
            headers(&[("authorization", format!("Bearer {hs}"))]),
        ),
        (
            "jwt-rs256",
            route("jwt"),
            "/jwt",
            headers(&[("authorization", format!("Bearer {rs}"))]),
        ),
        (
            "key-auth+acl+jwt-hs256",
            route("all"),
            "/all",
            headers(&[
                ("apikey", "key-4242".into()),
                ("authorization", format!("Bearer {hs}")),
            ]),
        ),
    ];
    let mut g = c.benchmark_group("plugin_chain");
    for (name, route, path, h) in &cases {
        let uri: Uri = path.parse().unwrap();
        // Fail loudly before measuring if the chain does not authenticate.
        let out = run(&rt, *route, &uri, h.clone());
        assert!(out.contains_key("x-consumer-id"), "{name}: {out:?}");
        g.bench_function(*name, |b| {
            b.iter_batched(
                || h.clone(),
                |h| std::hint::black_box(run(&rt, *route, &uri, h)),
                BatchSize::SmallInput,
            )
        });
    }
    // A new token on every request: the cache of verified tokens (512 slots) misses at least
    // seven times in eight over 4,096 tokens, so this is the cost of decoding and verifying.
    let fresh = |alg: Algorithm, iss: &str, key: &EncodingKey| -> Vec<HeaderMap> {
        (0..4096)
            .map(|i| {
                let claims = serde_json::json!({ "iss": iss, "exp": exp, "jti": i });
                let t = encode(&Header::new(alg), &claims, key).unwrap();
                headers(&[("authorization", format!("Bearer {t}"))])
            })
            .collect()
    };
    let uncached = [
        (
            "jwt-hs256-new-token",
            fresh(
                Algorithm::HS256,
                "hs-4242",
                &EncodingKey::from_secret(b"secret-4242-0123456789abcdef0123456789"),
            ),
        ),
        (
            "jwt-rs256-new-token",
            fresh(
                Algorithm::RS256,
                "rs-4242",
                &EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
            ),
        ),
    ];
    let jwt = route("jwt");
    let uri: Uri = "/jwt".parse().unwrap();
    for (name, tokens) in &uncached {
        let mut next = 0;
        g.bench_function(*name, |b| {
            b.iter_batched(
                || {
                    next = (next + 1) % tokens.len();
                    tokens[next].clone()
                },
                |h| std::hint::black_box(run(&rt, jwt, &uri, h)),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
