//! circuit-breaker through the real proxy, against upstreams the tests switch between failing
//! and healthy: opening at the threshold, failing fast without the upstream, a single probe
//! after the timeout, closing and re-opening, the sliding window, connection errors and
//! timeouts, state kept across config swaps, and `/status`.

#[path = "support/harness.rs"]
mod harness;

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use harness::{get, Gateway, Got, Upstream};
use http::{Response, StatusCode};
use http_body_util::Full;
use portico_data_plane::runtime::Runtime;
use serde_json::Value;

const OPEN_MESSAGE: &str = "Service temporarily unavailable: circuit open";

/// An upstream answering the status in `status` after `delay_ms`, both switchable mid-test.
struct Switch {
    up: Upstream,
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
}

impl Switch {
    async fn start(status: u16) -> Switch {
        let (s, d) = (
            Arc::new(AtomicU16::new(status)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s2, d2) = (Arc::clone(&s), Arc::clone(&d));
        let up = Upstream::start(move |_| {
            let (s, d) = (Arc::clone(&s2), Arc::clone(&d2));
            async move {
                let delay = d.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                let mut r = Response::new(Full::new(Bytes::from_static(b"upstream")));
                *r.status_mut() =
                    StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK);
                r
            }
        })
        .await;
        Switch {
            up,
            status: s,
            delay_ms: d,
        }
    }

    fn set(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

/// Service `s` to `addr` (no retries, `read_timeout_ms`) on `/`, with the breaker `config`.
fn yaml(addr: impl std::fmt::Display, read_timeout_ms: u64, config: &str) -> String {
    format!(
        r#"_format_version: "3.0"
services:
  - name: s
    url: http://{addr}
    retries: 0
    read_timeout: {read_timeout_ms}
    routes:
      - {{ name: r, paths: ["/"] }}
    plugins:
      - {{ id: 3f6c2a8e-1d4b-4c1e-9a57-0b7e5d2c9f10, name: circuit-breaker, config: {config} }}
"#
    )
}

/// Whether `got` is the open circuit's fast answer.
fn is_fast_fail(got: &Got) -> bool {
    got.status == StatusCode::SERVICE_UNAVAILABLE && got.body.contains(OPEN_MESSAGE)
}

async fn circuits(gw: &Gateway) -> Vec<Value> {
    let got = get(&format!("http://{}/status", gw.status), &[]).await;
    match got.json()["circuits"].clone() {
        Value::Array(list) => list,
        other => panic!("no circuits list: {other}"),
    }
}

/// Sends requests every 50 ms until one is not failed fast (the probe), within `within`.
async fn until_through(gw: &Gateway, within: Duration) -> Got {
    let deadline = Instant::now() + within;
    loop {
        let got = get(&gw.url("/"), &[]).await;
        if !is_fast_fail(&got) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "the circuit never let a probe through"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn opens_at_the_threshold_fails_fast_then_a_probe_closes_it() {
    let sw = Switch::start(500).await;
    let gw = Gateway::start(&yaml(sw.up.addr, 60_000, "{threshold: 3, timeout: 1}")).await;
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/"), &[]).await.status, 500);
    }
    assert_eq!(sw.up.count(), 3);

    let got = get(&gw.url("/"), &[]).await;
    assert!(is_fast_fail(&got), "{got:?}");
    assert_eq!(got.json()["message"], OPEN_MESSAGE);
    assert!(
        got.json()["request_id"].is_string(),
        "Kong's error template"
    );
    assert_eq!(got.headers["retry-after"], "1");
    assert_eq!(
        sw.up.count(),
        3,
        "an open circuit does not call the upstream"
    );

    let list = circuits(&gw).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["service"], "s");
    assert_eq!(list[0]["state"], "open");
    assert_eq!(list[0]["failures"], 3);
    assert!(list[0]["opened_at"].is_string());
    assert_eq!(list[0]["plugin_id"], "3f6c2a8e-1d4b-4c1e-9a57-0b7e5d2c9f10");

    sw.set(200);
    let got = until_through(&gw, Duration::from_secs(3)).await;
    assert_eq!(got.status, 200);
    assert_eq!(sw.up.count(), 4, "exactly one probe");
    let list = circuits(&gw).await;
    assert_eq!(list[0]["state"], "closed");
    assert_eq!(list[0]["failures"], 0, "closing forgets the old failures");
    assert!(list[0]["opened_at"].is_null());

    // Closed again, with a fresh count: two more failures do not reopen it.
    sw.set(502);
    for _ in 0..2 {
        assert_eq!(get(&gw.url("/"), &[]).await.status, 502);
    }
    sw.set(200);
    assert_eq!(get(&gw.url("/"), &[]).await.status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn a_failed_probe_reopens_for_another_timeout() {
    let sw = Switch::start(503).await;
    let gw = Gateway::start(&yaml(sw.up.addr, 60_000, "{threshold: 1, timeout: 1}")).await;
    assert_eq!(get(&gw.url("/"), &[]).await.status, 503);
    assert!(is_fast_fail(&get(&gw.url("/"), &[]).await));

    let probe = until_through(&gw, Duration::from_secs(3)).await;
    assert_eq!(probe.status, 503);
    assert!(!probe.body.contains(OPEN_MESSAGE), "the upstream's own 503");
    assert_eq!(sw.up.count(), 2);
    let got = get(&gw.url("/"), &[]).await;
    assert!(is_fast_fail(&got), "open again: {got:?}");
    assert_eq!(sw.up.count(), 2);
    assert_eq!(circuits(&gw).await[0]["state"], "open");

    // A status outside failure_statuses is a success for the next probe.
    sw.set(404);
    assert_eq!(until_through(&gw, Duration::from_secs(3)).await.status, 404);
    assert_eq!(circuits(&gw).await[0]["state"], "closed");
    gw.stop().await;
}

#[tokio::test]
async fn only_one_probe_goes_through_under_concurrency() {
    let sw = Switch::start(500).await;
    let gw =
        Arc::new(Gateway::start(&yaml(sw.up.addr, 60_000, "{threshold: 1, timeout: 1}")).await);
    assert_eq!(get(&gw.url("/"), &[]).await.status, 500);
    sw.set(200);
    // The probe takes a while, so the burst below all arrives while it is out.
    sw.delay_ms.store(300, Ordering::SeqCst);
    // Waiting out the open timeout is the point here: no request may arrive before it.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let burst = (0..20).map(|_| {
        let gw = Arc::clone(&gw);
        tokio::spawn(async move { get(&gw.url("/"), &[]).await })
    });
    let results = futures_util::future::join_all(burst).await;
    let mut through = 0;
    for r in results {
        let got = r.expect("request task");
        if got.status == 200 {
            through += 1;
        } else {
            assert!(is_fast_fail(&got), "{got:?}");
        }
    }
    assert_eq!(through, 1, "exactly one probe");
    assert_eq!(sw.up.count(), 2);
    assert_eq!(circuits(&gw).await[0]["state"], "closed");
    sw.delay_ms.store(0, Ordering::SeqCst);
    assert_eq!(get(&gw.url("/"), &[]).await.status, 200);
}

#[tokio::test]
async fn connection_errors_count_as_failures() {
    // A port nothing listens on any more: connection refused.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let gw = Gateway::start(&yaml(addr, 60_000, "{threshold: 2, timeout: 30}")).await;
    for _ in 0..2 {
        let got = get(&gw.url("/"), &[]).await;
        assert_eq!(got.status, 502, "{got:?}");
        assert!(!is_fast_fail(&got));
    }
    assert!(is_fast_fail(&get(&gw.url("/"), &[]).await));
    assert_eq!(circuits(&gw).await[0]["state"], "open");
    gw.stop().await;
}

#[tokio::test]
async fn timeouts_count_as_failures_and_the_open_circuit_answers_at_once() {
    let sw = Switch::start(200).await;
    sw.delay_ms.store(5_000, Ordering::SeqCst);
    let gw = Gateway::start(&yaml(sw.up.addr, 200, "{threshold: 2, timeout: 30}")).await;
    for _ in 0..2 {
        assert_eq!(get(&gw.url("/"), &[]).await.status, 504);
    }
    let start = Instant::now();
    let got = get(&gw.url("/"), &[]).await;
    assert!(is_fast_fail(&got), "{got:?}");
    assert!(
        start.elapsed() < Duration::from_millis(150),
        "no wait on the upstream"
    );
    assert_eq!(sw.up.count(), 2);
    assert_eq!(got.headers["retry-after"], "30");
    gw.stop().await;
}

#[tokio::test]
async fn failures_outside_the_window_do_not_count() {
    let sw = Switch::start(500).await;
    let gw = Gateway::start(&yaml(
        sw.up.addr,
        60_000,
        "{threshold: 2, window_size: 1, timeout: 30}",
    ))
    .await;
    assert_eq!(get(&gw.url("/"), &[]).await.status, 500);
    // Letting the first failure age out of the 1 s window is what is under test.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(circuits(&gw).await[0]["failures"], 0);
    assert_eq!(get(&gw.url("/"), &[]).await.status, 500);
    assert_eq!(circuits(&gw).await[0]["state"], "closed");
    // The next failure is the second within the window: it reached the upstream and opened it.
    assert_eq!(get(&gw.url("/"), &[]).await.status, 500);
    assert_eq!(sw.up.count(), 3);
    assert!(is_fast_fail(&get(&gw.url("/"), &[]).await));
    gw.stop().await;
}

#[tokio::test]
async fn the_open_circuit_survives_config_swaps() {
    let sw = Switch::start(500).await;
    let config = "{threshold: 1, timeout: 30}";
    let gw = Gateway::start(&yaml(sw.up.addr, 60_000, config)).await;
    assert_eq!(get(&gw.url("/"), &[]).await.status, 500);
    assert!(is_fast_fail(&get(&gw.url("/"), &[]).await));
    sw.set(200);

    // Another route added, same plugin: the same circuit carries on.
    let more = yaml(sw.up.addr, 60_000, config).replace(
        "      - { name: r, paths: [\"/\"] }\n",
        "      - { name: r, paths: [\"/\"] }\n      - { name: r2, paths: [\"/other\"] }\n",
    );
    // A new threshold resizes the failure ring but keeps the state.
    let resized = yaml(sw.up.addr, 60_000, "{threshold: 4, timeout: 30}");
    for next in [more, resized] {
        let loaded = portico_common::load_str(&next, &|_| None).expect("valid");
        let previous = gw.shared.runtime.load_full().expect("a runtime");
        let rt =
            Runtime::recompile(loaded.snapshot, &gw.shared.pools, &previous).expect("compiles");
        gw.shared.swap(rt);
        assert!(is_fast_fail(&get(&gw.url("/"), &[]).await));
        assert_eq!(sw.up.count(), 1);
        assert_eq!(circuits(&gw).await[0]["state"], "open");
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_global_instance_keeps_one_circuit_per_service() {
    let bad = Switch::start(500).await;
    let good = Switch::start(200).await;
    let yaml = format!(
        r#"_format_version: "3.0"
services:
  - {{ name: bad, url: "http://{}", retries: 0, routes: [{{ paths: ["/bad"] }}] }}
  - {{ name: good, url: "http://{}", retries: 0, routes: [{{ paths: ["/good"] }}] }}
plugins:
  - {{ name: circuit-breaker, config: {{ threshold: 2, timeout: 30, error_status: 429, error_message: "try later" }} }}
"#,
        bad.up.addr, good.up.addr
    );
    let gw = Gateway::start(&yaml).await;
    for _ in 0..2 {
        assert_eq!(get(&gw.url("/bad"), &[]).await.status, 500);
        assert_eq!(get(&gw.url("/good"), &[]).await.status, 200);
    }
    let got = get(&gw.url("/bad"), &[]).await;
    assert_eq!(got.status, 429);
    assert_eq!(got.json()["message"], "try later");
    assert_eq!(get(&gw.url("/good"), &[]).await.status, 200);

    let list = circuits(&gw).await;
    let states: Vec<(&str, &str)> = list
        .iter()
        .map(|c| {
            (
                c["service"].as_str().unwrap_or(""),
                c["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(states, [("bad", "open"), ("good", "closed")]);
    gw.stop().await;
}
