//! The data plane over real sockets: in-process upstreams on 127.0.0.1:0, a real hyper client or
//! raw bytes on the downstream side.

#[path = "support/harness.rs"]
mod harness;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use harness::{get, raw, send, Gateway, Upstream};
use http::{Request, Response};
use http_body_util::Full;

fn svc(name: &str, url: &str, extra: &str, routes: &str) -> String {
    format!(
        "_format_version: \"3.0\"\nservices:\n  - name: {name}\n    url: {url}\n{extra}    routes:\n{routes}"
    )
}

/// A gateway with one catch-all route to a service at `addr` (`extra`: more service fields).
async fn catch_all(addr: std::net::SocketAddr, extra: &str) -> Gateway {
    Gateway::start(&svc(
        "s",
        &format!("http://{addr}"),
        extra,
        "      - paths: [\"/\"]\n",
    ))
    .await
}

#[tokio::test]
async fn strips_the_prefix_joins_the_service_path_and_passes_the_query() {
    let up = Upstream::echo("a").await;
    let gw = Gateway::start(&svc(
        "s",
        &format!("http://{}/svc", up.addr),
        "",
        "      - name: r\n        paths: [\"/api\"]\n",
    ))
    .await;
    let got = get(&gw.url("/api/users?b=2&a=%20x"), &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(up.last().uri, "/svc/users?b=2&a=%20x");
    assert_eq!(got.headers["x-upstream"], "a");
    assert!(got.headers["via"]
        .to_str()
        .unwrap()
        .starts_with("1.1 portico/"));
    assert_eq!(got.headers["x-request-id"].len(), 24);
    assert!(got.headers.contains_key("x-portico-upstream-latency"));
    assert!(got.headers.contains_key("x-portico-proxy-latency"));
    // The upstream got the same request id, and Portico's Via.
    let seen = up.last();
    assert_eq!(seen.headers["x-request-id"], got.headers["x-request-id"]);
    assert!(seen.headers["via"].to_str().unwrap().contains("portico/"));
    assert_eq!(seen.headers["x-forwarded-prefix"], "/api");
    gw.stop().await;
}

#[tokio::test]
async fn client_request_id_is_propagated() {
    let up = Upstream::echo("a").await;
    let gw = catch_all(up.addr, "").await;
    let got = get(&gw.url("/x"), &[("x-request-id", "trace-42")]).await;
    assert_eq!(got.headers["x-request-id"], "trace-42");
    assert_eq!(up.last().headers["x-request-id"], "trace-42");
}

#[tokio::test]
async fn no_route_answers_kongs_404_body_with_the_request_id() {
    let up = Upstream::echo("a").await;
    let gw = Gateway::start(&svc(
        "s",
        &format!("http://{}", up.addr),
        "",
        "      - paths: [\"/api\"]\n",
    ))
    .await;
    let got = get(&gw.url("/nothing"), &[]).await;
    assert_eq!(got.status, 404);
    assert_eq!(
        got.headers["content-type"],
        "application/json; charset=utf-8"
    );
    let id = got.headers["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(
        got.body,
        format!("{{\n  \"message\":\"no Route matched with those values\",\n  \"request_id\":\"{id}\"\n}}")
    );
    assert_eq!(up.count(), 0);

    // Kong's error templates follow Accept.
    let got = get(
        &gw.url("/nothing"),
        &[("accept", "text/html;q=0.9, text/plain")],
    )
    .await;
    assert_eq!(got.headers["content-type"], "text/plain; charset=utf-8");
    assert!(got
        .body
        .starts_with("no Route matched with those values\nrequest_id: "));
    let got = get(&gw.url("/nothing"), &[("accept", "text/html")]).await;
    assert!(got
        .body
        .contains("<p>no Route matched with those values.</p>"));
}

#[tokio::test]
async fn forwarding_headers_are_regenerated_for_untrusted_clients() {
    let up = Upstream::echo("a").await;
    let yaml = svc(
        "s",
        &format!("http://{}", up.addr),
        "",
        "      - paths: [\"/p\"]\n        strip_path: false\n",
    );
    let spoof = [
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-port", "1"),
        ("x-real-ip", "6.6.6.6"),
        ("forwarded", "for=6.6.6.6"),
        ("x-consumer-username", "admin"),
        ("host", "api.example.com:8443"),
    ];

    let gw = Gateway::start(&yaml).await;
    get(&gw.url("/p/x"), &spoof).await;
    let h = up.last().headers;
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "api.example.com");
    assert_eq!(h["x-forwarded-port"], gw.addr.port().to_string().as_str());
    assert_eq!(h["x-forwarded-path"], "/p/x");
    assert!(h.get("forwarded").is_none());
    assert!(h.get("x-consumer-username").is_none());
    gw.stop().await;

    // From a trusted proxy, its forwarding headers stand and our hop is appended.
    let gw = Gateway::start_trusting(&yaml, &["127.0.0.1"]).await;
    get(&gw.url("/p/x"), &spoof).await;
    let h = up.last().headers;
    assert_eq!(h["x-forwarded-for"], "6.6.6.6, 127.0.0.1");
    assert_eq!(h["x-real-ip"], "6.6.6.6");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "evil.example");
    assert!(
        h.get("x-consumer-username").is_none(),
        "identity headers are never trusted"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_in_both_directions() {
    let up = Upstream::start(|_| async {
        Response::builder()
            .header("connection", "x-internal")
            .header("x-internal", "leak")
            .header("keep-alive", "timeout=5")
            .header("x-kept", "yes")
            .body(Full::new(Bytes::from_static(b"ok")))
            .unwrap()
    })
    .await;
    let gw = catch_all(up.addr, "").await;
    let resp = raw(
        gw.addr,
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret, X-Forwarded-For\r\nX-Secret: s\r\nKeep-Alive: 1\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let lower = resp.to_ascii_lowercase();
    assert!(!lower.contains("x-internal"), "{resp}");
    assert!(lower.contains("x-kept: yes"));
    let h = up.last().headers;
    for gone in [
        "x-secret",
        "keep-alive",
        "upgrade",
        "http2-settings",
        "te",
        "proxy-connection",
    ] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream");
    }
    // Listing X-Forwarded-For in Connection does not delete ours.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn upstream_host_header_follows_preserve_host() {
    let up = Upstream::echo("a").await;
    let yaml = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://{}\n    routes:\n      - paths: [\"/keep\"]\n        preserve_host: true\n      - paths: [\"/swap\"]\n",
        up.addr
    );
    let gw = Gateway::start(&yaml).await;
    get(&gw.url("/keep"), &[("host", "client.example:8000")]).await;
    assert_eq!(up.last().headers["host"], "client.example:8000");
    get(&gw.url("/swap"), &[("host", "client.example")]).await;
    assert_eq!(up.last().headers["host"], up.addr.to_string().as_str());
}

#[tokio::test]
async fn a_dead_upstream_is_a_502_with_kongs_message() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gw = catch_all(dead, "    retries: 2\n").await;
    let got = get(&gw.url("/"), &[]).await;
    assert_eq!(got.status, 502);
    assert_eq!(
        got.json()["message"],
        "An invalid response was received from the upstream server"
    );
}

#[tokio::test]
async fn a_hung_upstream_is_a_504_after_read_timeout_without_retry() {
    let up = Upstream::start(|_| async {
        std::future::pending::<()>().await;
        unreachable!()
    })
    .await;
    let gw = catch_all(up.addr, "    read_timeout: 300\n    retries: 5\n").await;
    let t = Instant::now();
    let got = get(&gw.url("/"), &[]).await;
    assert_eq!(got.status, 504);
    assert_eq!(got.json()["message"], "The upstream server is timing out");
    // Answered by the service's read_timeout, not the 60 s default or 6x with retries.
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(up.count(), 1, "a timed-out request is not sent again");
}

/// A listening socket whose accept queue is full and never drained: the kernel drops further
/// SYNs, so a connect to it hangs, as to a host that does not answer (without leaving loopback).
fn blackhole() -> (
    std::net::SocketAddr,
    Vec<std::net::TcpStream>,
    socket2::Socket,
) {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fill = Vec::new();
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => fill.push(s),
            Err(_) => return (addr, fill, sock),
        }
    }
    panic!("could not fill the accept queue of {addr}");
}

#[tokio::test]
async fn an_unanswered_connect_is_a_504_after_connect_timeout() {
    let (addr, _fill, _sock) = blackhole();
    let gw = catch_all(addr, "    connect_timeout: 250\n    retries: 1\n").await;
    let t = Instant::now();
    let got = get(&gw.url("/"), &[]).await;
    assert_eq!(got.status, 504);
    assert_eq!(got.json()["message"], "The upstream server is timing out");
    // Two attempts (retries: 1) of 250 ms each, not the 60 s default.
    assert!(t.elapsed() >= Duration::from_millis(500));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
}

/// An upstream that reads each request (head and Content-Length body) and records its head.
/// The first `swallow` requests it closes without answering (the request was seen, so
/// replaying it could duplicate a write); later ones get a 200.
async fn flaky_upstream(swallow: usize) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let h2 = Arc::clone(&heads);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let heads = Arc::clone(&h2);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    let answer = {
                        let mut heads = heads.lock().unwrap();
                        heads.push(text[..end].to_string());
                        heads.len() > swallow
                    };
                    if !answer {
                        return; // close without a response
                    }
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    buf.drain(..end + 4 + len);
                }
            });
        }
    });
    (addr, heads)
}

/// A request head's lines after the request line, names lowercased, in order.
fn head_fields(head: &str) -> Vec<(String, String)> {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

#[tokio::test]
async fn a_post_the_upstream_saw_is_never_replayed_but_a_get_is_retried() {
    let (addr, heads) = flaky_upstream(usize::MAX).await;
    let gw = catch_all(addr, "    retries: 3\n").await;
    let seen = || heads.lock().unwrap().len();

    let post = Request::post(gw.url("/orders"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"order\":1}")))
        .unwrap();
    let got = send(post).await;
    assert_eq!(got.status, 502);
    assert_eq!(seen(), 1, "the POST reached the upstream exactly once");

    let got = get(&gw.url("/orders"), &[]).await;
    assert_eq!(got.status, 502);
    assert_eq!(seen(), 1 + 4, "a GET is tried once plus `retries` times");
}

#[tokio::test]
async fn a_get_retried_after_the_upstream_saw_it_is_the_same_request_again() {
    // The retry is rebuilt from the client's headers and gets the proxy's own added again.
    let (addr, heads) = flaky_upstream(1).await;
    let gw = catch_all(addr, "    retries: 2\n").await;
    let got = get(
        &gw.url("/orders?page=2"),
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("connection", "x-hop"),
            ("x-hop", "secret"),
            ("x-client", "kept"),
        ],
    )
    .await;
    assert_eq!(got.status, 200);
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "tried once, then retried once: {heads:?}");
    assert_eq!(
        heads[0].lines().next(),
        heads[1].lines().next(),
        "same request line"
    );
    let (first, retry) = (head_fields(&heads[0]), head_fields(&heads[1]));
    assert_eq!(first, retry, "the retry carries the same headers");
    let value = |name: &str| {
        first
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(value("x-client"), Some("kept"));
    assert_eq!(value("x-hop"), None, "hop-by-hop headers stay behind");
    assert_eq!(value("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(value("x-forwarded-path"), Some("/orders"));
    assert!(value("x-request-id").is_some_and(|v| !v.is_empty()));
    assert!(value("via").is_some());
    assert_eq!(heads[0].lines().next(), Some("GET /orders?page=2 HTTP/1.1"));
}

#[tokio::test]
async fn weighted_round_robin_follows_weights_and_weight_zero_is_out() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let c = Upstream::echo("c").await;
    let yaml = format!(
        "_format_version: \"3.0\"\nupstreams:\n  - name: pool\n    targets:\n      - target: {}\n        weight: 300\n      - target: {}\n        weight: 100\n      - target: {}\n        weight: 0\nservices:\n  - name: s\n    host: pool\n    routes:\n      - paths: [\"/\"]\n",
        a.addr, b.addr, c.addr
    );
    let gw = Gateway::start(&yaml).await;
    for _ in 0..40 {
        assert_eq!(get(&gw.url("/"), &[]).await.status, 200);
    }
    assert_eq!((a.count(), b.count(), c.count()), (30, 10, 0));
    // The target's address is the Host upstream (no preserve_host).
    assert_eq!(a.last().headers["host"], a.addr.to_string().as_str());
}

#[tokio::test]
async fn an_upstream_with_no_weight_left_is_a_503() {
    let yaml = "_format_version: \"3.0\"\nupstreams:\n  - name: pool\n    targets:\n      - target: 127.0.0.1:1\n        weight: 0\nservices:\n  - name: s\n    host: pool\n    routes:\n      - paths: [\"/\"]\n";
    let gw = Gateway::start(yaml).await;
    let got = get(&gw.url("/"), &[]).await;
    assert_eq!(got.status, 503);
    assert_eq!(
        got.json()["message"],
        "failure to get a peer from the ring-balancer"
    );
}

#[tokio::test]
async fn the_canonical_path_is_routed_and_forwarded() {
    let up = Upstream::echo("a").await;
    let gw = Gateway::start(&svc(
        "s",
        &format!("http://{}", up.addr),
        "",
        "      - paths: [\"/api\"]\n",
    ))
    .await;
    let resp = raw(
        gw.addr,
        b"GET /static/../api//%7euser/./x HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(up.last().uri, "/~user/x");
}

#[tokio::test]
async fn malformed_requests_are_refused_before_any_upstream() {
    let up = Upstream::echo("a").await;
    let gw = catch_all(up.addr, "").await;
    let cases: &[&[u8]] = &[
        b"GET /a%00b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a%2fb HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a/..;/b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /a HTTP/1.1\r\n\r\n",
        b"GET http://a/x HTTP/1.1\r\nHost: b\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
    ];
    for case in cases {
        let resp = raw(gw.addr, case).await;
        assert!(
            resp.starts_with("HTTP/1.1 400"),
            "{:?} -> {resp}",
            String::from_utf8_lossy(case)
        );
    }
    assert_eq!(up.count(), 0, "nothing malformed reached the upstream");
}

#[tokio::test]
async fn a_get_with_a_chunked_body_keeps_its_body() {
    let up = Upstream::echo("a").await;
    let gw = catch_all(up.addr, "").await;
    let resp = raw(
        gw.addr,
        b"GET /search HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(up.last().body_len, 11);
}

#[tokio::test]
async fn https_only_routes_answer_426_over_http() {
    let up = Upstream::echo("a").await;
    let gw = Gateway::start(&svc(
        "s",
        &format!("http://{}", up.addr),
        "",
        "      - paths: [\"/secure\"]\n        protocols: [https]\n",
    ))
    .await;
    let got = get(&gw.url("/secure"), &[]).await;
    assert_eq!(got.status, 426);
    assert_eq!(got.json()["message"], "Please use HTTPS protocol");
    assert_eq!(got.headers["upgrade"], "TLS/1.2, HTTP/1.1");
}

#[tokio::test]
async fn https_only_routes_can_redirect_instead() {
    let up = Upstream::echo("a").await;
    let gw = Gateway::start(&svc(
        "s",
        &format!("http://{}", up.addr),
        "",
        "      - paths: [\"/secure\"]\n        protocols: [https]\n        https_redirect_status_code: 308\n",
    ))
    .await;
    let got = get(&gw.url("/secure/x?a=1"), &[("host", "shop.example:8000")]).await;
    assert_eq!(got.status, 308);
    assert_eq!(got.headers["location"], "https://shop.example/secure/x?a=1");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn readiness_is_503_until_a_config_is_live() {
    let shared = portico_data_plane::Shared::new(Default::default());
    let listeners = portico_data_plane::Listeners {
        proxy: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        status: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        proxy_tls: None,
    };
    let (proxy, status) = (
        listeners.proxy.local_addr().unwrap(),
        listeners.status.local_addr().unwrap(),
    );
    let (_tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(portico_data_plane::serve(
        shared,
        listeners,
        rx,
        Duration::from_secs(1),
    ));
    let ready = get(&format!("http://{status}/status/ready"), &[]).await;
    assert_eq!(ready.status, 503);
    assert!(ready.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("no configuration available"));
    let got = get(&format!("http://{proxy}/x"), &[]).await;
    assert_eq!(got.status, 503);
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let up = Upstream::echo("a").await;
    let gw = catch_all(up.addr, "").await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let get = |path: &str| {
        let req = Request::get(gw.url(path)).body(Full::new(Bytes::new()));
        client.request(req.unwrap())
    };
    let resp = get("/h2?q=1").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let seen = up.last();
    assert_eq!(seen.uri, "/h2?q=1");
    assert_eq!(seen.headers["host"], up.addr.to_string().as_str());
    // The request id is sent as a never-indexed HPACK literal: each response on the one
    // connection still carries its own, the one the upstream saw.
    let mut ids = vec![resp.headers()["x-request-id"].clone()];
    assert_eq!(seen.headers["x-request-id"], ids[0]);
    for _ in 0..2 {
        let resp = get("/h2").await.unwrap();
        assert_eq!(resp.status(), 200);
        let id = resp.headers()["x-request-id"].clone();
        assert_eq!(up.last().headers["x-request-id"], id);
        assert!(!ids.contains(&id), "{id:?} repeats {ids:?}");
        ids.push(id);
    }
}

#[tokio::test]
async fn large_bodies_stream_through_both_ways() {
    // 64 MiB up, streamed in chunks; the upstream counts what arrives.
    let up = Upstream::echo("a").await;
    let gw = catch_all(up.addr, "").await;
    let (tx, body) = {
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(4);
        (tx, http_body_util::StreamBody::new(tokio_stream(rx)))
    };
    let chunk = Bytes::from(vec![7u8; 1 << 20]);
    tokio::spawn(async move {
        for _ in 0..64 {
            if tx
                .send(Ok(http_body::Frame::data(chunk.clone())))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let resp = client
        .request(Request::post(gw.url("/upload")).body(body).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.last().body_len, 64 << 20);
}

fn tokio_stream<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn status_reports_config_and_readiness() {
    let up = Upstream::echo("a").await;
    let gw = catch_all(up.addr, "").await;
    get(&gw.url("/"), &[]).await;
    let st = get(&format!("http://{}/status", gw.status), &[]).await;
    assert_eq!(st.status, 200);
    let v = st.json();
    assert_eq!(
        v["config"]["hash"],
        gw.shared
            .runtime
            .load()
            .as_ref()
            .unwrap()
            .snapshot
            .hash
            .as_str()
    );
    assert_eq!(v["config"]["routes"], 1);
    assert!(v["requests"]["total"].as_u64().unwrap() >= 1);
    let ready = get(&format!("http://{}/status/ready", gw.status), &[]).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["message"], "ready");
}

#[tokio::test]
async fn an_upstream_that_stalls_mid_body_is_cut_after_read_timeout() {
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 2048];
        let _ = s.read(&mut buf).await;
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello")
            .await
            .unwrap();
        // ...and never the other 95 bytes; hold the socket open.
        std::future::pending::<()>().await;
    });
    let gw = catch_all(addr, "    read_timeout: 300\n").await;
    let t = Instant::now();
    let resp = harness::client()
        .request(
            Request::get(gw.url("/"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await;
    assert!(body.is_err(), "a truncated body must not look complete");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn an_upstream_that_stops_reading_is_a_504_after_write_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Accepts, then never reads: once the socket buffers fill, writes stall.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let gw = catch_all(addr, "    write_timeout: 300\n    retries: 0\n").await;

    let len = 256usize << 20;
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    tokio::spawn(async move {
        let head = format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n");
        wr.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b'z'; 1 << 20];
        for _ in 0..256 {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let t = Instant::now();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = rd.read(&mut tmp).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&tmp[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
    .await
    .expect("no response while the upstream stalled");
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_request_is_no_longer_counted() {
    use tokio::io::AsyncWriteExt;
    let up = Upstream::start(|_| async {
        std::future::pending::<()>().await;
        unreachable!()
    })
    .await;
    let gw = catch_all(up.addr, "").await;
    let active = |gw: &Gateway| {
        gw.shared
            .stats
            .requests_active
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.count() == 0 || active(&gw) != 1 {
        assert!(Instant::now() < deadline, "request never became active");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(s);
    while active(&gw) != 0 {
        assert!(
            Instant::now() < deadline,
            "the abandoned request is still counted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
