//! Test harness: in-process upstreams on 127.0.0.1:0 that record what they receive, and an
//! in-process data plane serving a config given as YAML.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use portico_data_plane::headers::TrustedIps;
use portico_data_plane::runtime::Runtime;
use portico_data_plane::{Listeners, Shared};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body_len: usize,
}

/// An in-process upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub hits: Arc<AtomicUsize>,
}

impl Upstream {
    /// Answers 200 with a body naming `name` and the path it got.
    pub async fn echo(name: &'static str) -> Upstream {
        Upstream::start(move |seen: Seen| async move {
            let mut r = Response::new(Full::new(Bytes::from(format!("{name} {}", seen.uri))));
            r.headers_mut().insert("x-upstream", name.parse().unwrap());
            r
        })
        .await
    }

    /// Runs `f` for every request (after reading the whole body).
    pub async fn start<F, Fut>(f: F) -> Upstream
    where
        F: Fn(Seen) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Full<Bytes>>> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hits = Arc::new(AtomicUsize::new(0));
        let (s2, h2) = (Arc::clone(&seen), Arc::clone(&hits));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (f, seen, hits) = (f.clone(), Arc::clone(&s2), Arc::clone(&h2));
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (f, seen, hits) = (f.clone(), Arc::clone(&seen), Arc::clone(&hits));
                        async move {
                            hits.fetch_add(1, Ordering::SeqCst);
                            let (parts, mut body) = req.into_parts();
                            // Count the body without keeping it: tests stream gigabytes.
                            let mut body_len = 0;
                            while let Some(Ok(frame)) = body.frame().await {
                                body_len += frame.data_ref().map_or(0, |d| d.len());
                            }
                            let s = Seen {
                                method: parts.method.to_string(),
                                uri: parts.uri.to_string(),
                                headers: parts.headers,
                                body_len,
                            };
                            seen.lock().unwrap().push(s.clone());
                            Ok::<_, Infallible>(f(s).await)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { addr, seen, hits }
    }

    /// The last request seen.
    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream saw no request")
    }

    pub fn count(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Compiles `yaml` and swaps it into `shared`, as a reload does.
pub fn apply(shared: &Shared, yaml: &str) {
    let loaded =
        portico_common::load_str(yaml, &|_| None).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let rt = Runtime::compile(loaded.snapshot, &shared.pools).expect("compiles");
    shared.swap(rt);
}

/// An in-process data plane.
pub struct Gateway {
    pub addr: SocketAddr,
    pub status: SocketAddr,
    pub shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    /// Serves `yaml` (a Kong declarative document).
    pub async fn start(yaml: &str) -> Gateway {
        Gateway::start_trusting(yaml, &[]).await
    }

    /// Serves `yaml`, trusting forwarding headers from `trusted`.
    pub async fn start_trusting(yaml: &str, trusted: &[&str]) -> Gateway {
        let trusted: Vec<String> = trusted.iter().map(|s| s.to_string()).collect();
        let shared = Shared::new(TrustedIps::parse(&trusted).unwrap());
        Gateway::serve(yaml, shared).await
    }

    /// Serves `yaml` with an access log and tracing as `telemetry` says.
    pub async fn start_with_telemetry(
        yaml: &str,
        telemetry: &portico_data_plane::telemetry::TelemetryOptions,
    ) -> Gateway {
        let telemetry = portico_data_plane::telemetry::Telemetry::start(telemetry).unwrap();
        let shared = Shared::with_telemetry(
            TrustedIps::parse(&[]).unwrap(),
            portico_data_plane::plugins::Enabled::default(),
            telemetry,
        );
        Gateway::serve(yaml, shared).await
    }

    /// Serves `yaml` with the proxy listener bounded by `limits`.
    pub async fn start_with_limits(
        yaml: &str,
        limits: portico_data_plane::server::Limits,
    ) -> Gateway {
        let shared = Shared::with_limits(
            TrustedIps::parse(&[]).unwrap(),
            portico_data_plane::plugins::Enabled::default(),
            Default::default(),
            limits,
        );
        Gateway::serve(yaml, shared).await
    }

    async fn serve(yaml: &str, shared: Arc<Shared>) -> Gateway {
        let loaded = portico_common::load_str(yaml, &|_| None).expect("test config is valid");
        let rt = Runtime::compile(loaded.snapshot, &shared.pools).expect("test config compiles");
        shared.swap(rt);
        let listeners = Listeners {
            proxy: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            status: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            proxy_tls: None,
        };
        let addr = listeners.proxy.local_addr().unwrap();
        let status = listeners.status.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(portico_data_plane::serve(
            Arc::clone(&shared),
            listeners,
            rx,
            Duration::from_secs(5),
        ));
        Gateway {
            addr,
            status,
            shared,
            shutdown: tx,
            task,
        }
    }

    /// Swaps in `yaml`, as a reload does.
    pub fn apply(&self, yaml: &str) {
        apply(&self.shared, yaml);
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops accepting and waits for the drain.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// A plain HTTP/1.1 client (keep-alive pool).
pub fn client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// A collected response.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Got {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends `req` and collects the response.
pub async fn send(req: Request<Full<Bytes>>) -> Got {
    let resp = client().request(req).await.expect("request failed");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// GET `url` with extra headers.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Got {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(Full::new(Bytes::new())).unwrap()).await
}

/// Writes raw bytes to `addr` and returns everything read until the server closes or 5 s pass.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                // One full response is enough when the server keeps the connection open.
                let text = String::from_utf8_lossy(&out);
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let head = &text[..head_end];
                    let len = head.lines().find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    });
                    if let Some(len) = len {
                        if out.len() >= head_end + 4 + len {
                            break;
                        }
                    }
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
