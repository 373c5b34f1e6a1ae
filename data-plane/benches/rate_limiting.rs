//! rate-limiting's cost, two ways:
//! - `rate_limiting_proxy/*`: whole requests through the real proxy (in-process upstream on
//!   127.0.0.1:0, the data plane, one keep-alive HTTP/1.1 client), 64 sequential requests per
//!   iteration, for a route without limiting, with `policy: local` and with `policy: redis`
//!   (a redis-server this bench starts on a free port; skipped when none is installed).
//! - `rate_limiting_chain/*`: the access phase alone, as benches/plugins.rs measures chains,
//!   for the local policy (fixed and sliding window).
//!
//! Limits are far above what a run sends, so every request is admitted and counted.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_data_plane::headers::TrustedIps;
use portico_data_plane::plugins::{Ctx, Flow, Req};
use portico_data_plane::runtime::Runtime;
use portico_data_plane::upstream_body::UpstreamBody;
use portico_data_plane::{Listeners, Shared};
use tokio::net::TcpListener;

const PER_ITER: u64 = 64;

fn config(upstream: SocketAddr, redis_port: Option<u16>) -> String {
    let mut y = format!(
        "_format_version: \"3.0\"
services:
  - name: s
    url: http://{upstream}
    routes:
      - name: none
        paths: [/none]
      - name: local
        paths: [/local]
        plugins:
          - {{ name: rate-limiting, config: {{ minute: 1000000000, hour: 1000000000 }} }}
      - name: sliding
        paths: [/sliding]
        plugins:
          - name: rate-limiting
            config: {{ minute: 1000000000, hour: 1000000000, algorithm: sliding-window }}
"
    );
    if let Some(port) = redis_port {
        y.push_str(&format!(
            "      - name: redis
        paths: [/redis]
        plugins:
          - name: rate-limiting
            config:
              minute: 1000000000
              hour: 1000000000
              policy: redis
              redis: {{ host: 127.0.0.1, port: {port} }}
"
        ));
    }
    y
}

/// A redis-server on a free port, killed on drop.
struct RedisServer(Child, u16);

impl RedisServer {
    fn start() -> Option<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = RedisServer(child, port);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn gateway(yaml: &str) -> (SocketAddr, Arc<Shared>, tokio::sync::watch::Sender<bool>) {
    let shared = Shared::new(TrustedIps::default());
    let loaded = portico_common::load_str(yaml, &|_| None).expect("bench config is valid");
    let rt = Runtime::compile(loaded.snapshot, &shared.pools).expect("bench config compiles");
    shared.swap(rt);
    let listeners = Listeners {
        proxy: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        status: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        proxy_tls: None,
    };
    let addr = listeners.proxy.local_addr().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(portico_data_plane::serve(
        Arc::clone(&shared),
        listeners,
        rx,
        Duration::from_secs(1),
    ));
    (addr, shared, tx)
}

async fn one(client: &Client<HttpConnector, Full<Bytes>>, uri: &Uri) {
    let resp = client
        .request(
            Request::get(uri.clone())
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .expect("request failed");
    assert_eq!(resp.status(), 200, "the bench request was refused");
    let _ = resp.into_body().collect().await;
}

fn proxy(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis = RedisServer::start();
    if redis.is_none() {
        eprintln!("redis-server not available: skipping rate_limiting_proxy/redis");
    }
    let (addr, _shared, _stop) = rt.block_on(async {
        let up = upstream().await;
        gateway(&config(up, redis.as_ref().map(|r| r.1))).await
    });
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut group = c.benchmark_group("rate_limiting_proxy");
    group.throughput(Throughput::Elements(PER_ITER));
    let mut routes = vec!["none", "local", "sliding"];
    if redis.is_some() {
        routes.push("redis");
    }
    for route in routes {
        let uri: Uri = format!("http://{addr}/{route}").parse().unwrap();
        // Warm the connection (and the Redis connection) outside the measurement.
        rt.block_on(one(&client, &uri));
        group.bench_function(route, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters * PER_ITER {
                        one(&client, &uri).await;
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

fn chain(c: &mut Criterion) {
    let yaml = config("127.0.0.1:9".parse().unwrap(), None);
    let loaded = portico_common::load_str(&yaml, &|_| None).unwrap();
    let shared = Shared::new(TrustedIps::default());
    let rt = Runtime::compile(loaded.snapshot, &shared.pools).unwrap();
    let id = HeaderValue::from_static("bench");
    let mut group = c.benchmark_group("rate_limiting_chain");
    for (name, route) in [("local", 1), ("sliding", 2)] {
        let uri: Uri = format!("/{name}").parse().unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut headers = HeaderMap::new();
                let mut body = UpstreamBody::Empty;
                let mut req = Req {
                    method: &Method::GET,
                    path: uri.path(),
                    uri: &uri,
                    headers: &mut headers,
                    query: uri.query().map(Cow::Borrowed),
                    body: &mut body,
                    client_ip: "127.0.0.1".parse().unwrap(),
                    https: false,
                    host: "bench",
                    request_id: &id,
                };
                let mut ctx = Ctx::new(&rt.snapshot, &rt.consumers);
                ctx.route = rt.snapshot.routes.get(route).map(|r| &**r);
                match rt
                    .plugins
                    .for_route(route)
                    .access(&mut req, &mut ctx)
                    .now_or_never()
                {
                    Some(Flow::Continue) => {}
                    other => panic!("the bench request was refused: {other:?}"),
                }
                ctx.response_headers
            })
        });
    }
    group.finish();
}

criterion_group!(benches, chain, proxy);
criterion_main!(benches);
