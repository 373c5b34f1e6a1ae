//! Active and passive health checks over real in-process upstreams (KONG.md §1.5): targets
//! leave rotation and come back, all-unhealthy answers Kong's 503, and health survives a config
//! swap that keeps the upstream.

#[path = "support/harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use harness::{get, raw, Gateway, Upstream};
use http::{Response, StatusCode};
use http_body_util::Full;
use portico_data_plane::runtime::Runtime;

/// A config with one upstream `pool` (`upstream_extra` indented by 4) over `targets`.
fn config(upstream_extra: &str, targets: &[SocketAddr], routes: &str) -> String {
    let mut y = String::from("_format_version: \"3.0\"\nupstreams:\n  - name: pool\n");
    y.push_str(upstream_extra);
    y.push_str("    targets:\n");
    for addr in targets {
        y.push_str(&format!("      - target: {addr}\n"));
    }
    y.push_str("services:\n  - name: s\n    host: pool\n    routes:\n");
    y.push_str(routes);
    y
}

const CATCH_ALL: &str = "      - paths: [\"/\"]\n";

/// An upstream answering 200 while `ok` is true, 500 otherwise (health probes included).
async fn switchable(name: &'static str, ok: Arc<AtomicBool>) -> Upstream {
    Upstream::start(move |_| {
        let ok = Arc::clone(&ok);
        async move {
            let (status, body) = if ok.load(Ordering::SeqCst) {
                (StatusCode::OK, name)
            } else {
                (StatusCode::INTERNAL_SERVER_ERROR, "broken")
            };
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            r.headers_mut()
                .insert("x-upstream", http::HeaderValue::from_static(name));
            r
        }
    })
    .await
}

/// The health `/status` shows for `addr` in upstream `pool`.
async fn health(gw: &Gateway, addr: SocketAddr) -> String {
    let status = get(&format!("http://{}/status", gw.status), &[])
        .await
        .json();
    let targets = status["upstreams"]["pool"]["targets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    targets
        .iter()
        .find(|t| t["address"] == addr.to_string())
        .and_then(|t| t["health"].as_str())
        .unwrap_or("missing")
        .to_owned()
}

/// Polls until `/status` shows `want` for `addr`, for at most 10 s.
async fn wait_health(gw: &Gateway, addr: SocketAddr, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = health(gw, addr).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} stayed {got}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const ACTIVE: &str = "    healthchecks:\n      active:\n        http_path: /health\n        timeout: 1\n        healthy:\n          interval: 0.1\n          successes: 2\n        unhealthy:\n          interval: 0.1\n          http_failures: 2\n          tcp_failures: 1\n          timeouts: 1\n";

#[tokio::test]
async fn active_checks_take_a_failing_target_out_and_bring_it_back() {
    let a_ok = Arc::new(AtomicBool::new(true));
    let a = switchable("a", Arc::clone(&a_ok)).await;
    let b = Upstream::echo("b").await;
    let gw = Gateway::start(&config(ACTIVE, &[a.addr, b.addr], CATCH_ALL)).await;
    // The prober reaches /health with the target's Host.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a
        .seen
        .lock()
        .expect("lock")
        .iter()
        .any(|s| s.uri == "/health")
    {
        assert!(Instant::now() < deadline, "no probe reached the target");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(health(&gw, a.addr).await, "healthy");

    a_ok.store(false, Ordering::SeqCst);
    wait_health(&gw, a.addr, "unhealthy").await;
    for _ in 0..10 {
        let got = get(&gw.url("/"), &[]).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.headers["x-upstream"], "b", "a is out of rotation");
    }

    a_ok.store(true, Ordering::SeqCst);
    wait_health(&gw, a.addr, "healthy").await;
    let mut saw_a = false;
    for _ in 0..4 {
        saw_a |= get(&gw.url("/"), &[]).await.headers["x-upstream"] == "a";
    }
    assert!(saw_a, "a is back in rotation");
    gw.stop().await;
}

const PASSIVE: &str = "    healthchecks:\n      passive:\n        unhealthy:\n          http_failures: 2\n          tcp_failures: 1\n";

#[tokio::test]
async fn passive_checks_take_a_failing_target_out_and_it_survives_a_swap() {
    let a = switchable("a", Arc::new(AtomicBool::new(false))).await;
    let b = Upstream::echo("b").await;
    let yaml = config(PASSIVE, &[a.addr, b.addr], CATCH_ALL);
    let gw = Gateway::start(&yaml).await;
    for _ in 0..4 {
        get(&gw.url("/"), &[]).await;
    }
    assert_eq!(a.count(), 2, "two 500s, then out of rotation");
    wait_health(&gw, a.addr, "unhealthy").await;

    // A config change elsewhere (a new route) keeps the upstream, its balancer and its health.
    let yaml2 = config(
        PASSIVE,
        &[a.addr, b.addr],
        "      - paths: [\"/\"]\n      - paths: [\"/other\"]\n",
    );
    let loaded = portico_common::load_str(&yaml2, &|_| None).expect("valid");
    let current = gw.shared.runtime.load_full().expect("a runtime");
    let rt = Runtime::recompile(loaded.snapshot, &gw.shared.pools, &current).expect("compiles");
    gw.shared.swap(rt);
    assert_eq!(
        gw.shared
            .runtime
            .load()
            .as_ref()
            .map(|rt| rt.snapshot.routes.len()),
        Some(2)
    );
    assert_eq!(health(&gw, a.addr).await, "unhealthy");
    for _ in 0..6 {
        assert_eq!(get(&gw.url("/other"), &[]).await.headers["x-upstream"], "b");
    }
    assert_eq!(a.count(), 2);
    let status = get(&format!("http://{}/status", gw.status), &[])
        .await
        .json();
    assert_eq!(status["upstreams"]["pool"]["healthy"], true);
    gw.stop().await;
}

#[tokio::test]
async fn all_targets_unhealthy_answers_kongs_503() {
    // Two ports nothing listens on.
    let mut dead = Vec::new();
    for _ in 0..2 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        dead.push(l.local_addr().expect("addr"));
    }
    let gw = Gateway::start(&config(PASSIVE, &dead, CATCH_ALL)).await;
    // The first request's attempts (and retries) mark both targets down.
    let first = get(&gw.url("/"), &[]).await;
    assert!(first.status.is_server_error(), "{first:?}");
    for addr in &dead {
        wait_health(&gw, *addr, "unhealthy").await;
    }
    let got = get(&gw.url("/"), &[]).await;
    assert_eq!(got.status, 503);
    assert_eq!(
        got.json()["message"],
        "failure to get a peer from the ring-balancer"
    );
    let status = get(&format!("http://{}/status", gw.status), &[])
        .await
        .json();
    assert_eq!(status["upstreams"]["pool"]["healthy"], false);
    assert_eq!(
        status["upstreams"]["pool"]["targets"][0]["counters"]["tcp_failures"], 0,
        "a flip clears the counters"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_body_cut_off_at_the_clients_size_limit_does_not_count_against_the_target() {
    let up = Upstream::echo("a").await;
    let routes = "      - paths: [\"/\"]\n        plugins:\n          - name: request-size-limiting\n            config: { allowed_payload_size: 1, size_unit: kilobytes }\n";
    let gw = Gateway::start(&config(PASSIVE, &[up.addr], routes)).await;
    // tcp_failures: 1 would take the only target out on the first real connection failure.
    for _ in 0..3 {
        let mut req = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..3 {
            req.extend(b"200\r\n");
            req.extend(std::iter::repeat_n(b'a', 0x200));
            req.extend(b"\r\n");
        }
        req.extend(b"0\r\n\r\n");
        let resp = raw(gw.addr, &req).await;
        assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    }
    assert_eq!(health(&gw, up.addr).await, "healthy");
    assert_eq!(get(&gw.url("/"), &[]).await.status, 200);
    gw.stop().await;
}
