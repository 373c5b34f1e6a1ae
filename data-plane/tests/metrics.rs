//! `/metrics` on the status listener after known traffic: exact request counts and labels (a
//! 200, a 404 without a route, a 429 from rate-limiting, an upstream 500), histograms, bytes, no
//! raw path in any label, and a clean `promtool check metrics`.

#[path = "support/harness.rs"]
mod harness;
#[path = "support/mock_cp.rs"]
mod mock_cp;

#[path = "../../test-support/promtool.rs"]
mod promtool;

use bytes::Bytes;
use harness::{get, Gateway, Upstream};
use http::{Response, StatusCode};
use http_body_util::Full;
use mock_cp::MockCp;
use portico_data_plane::{ControlPlaneOptions, Listeners};
use portico_proto::v1::Update;
use tokio::net::TcpListener;
use tokio::sync::watch;

fn yaml(ok: &Upstream, broken: &Upstream) -> String {
    format!(
        "_format_version: \"3.0\"
services:
  - name: echo
    url: http://{}
    routes:
      - name: ok
        paths: [/ok]
      - name: limited
        paths: [/limited]
        plugins:
          - name: rate-limiting
            config: {{ minute: 1, policy: local }}
  - name: broken
    url: http://{}
    routes:
      - name: fail
        paths: [/fail]
",
        ok.addr, broken.addr
    )
}

/// The scraped exposition (Prometheus text, or OpenMetrics with `accept`) and its content type.
async fn scrape_as(gw: &Gateway, accept: &[(&str, &str)]) -> (String, String) {
    let got = get(&format!("http://{}/metrics", gw.status), accept).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    let ct = got
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (got.body, ct)
}

async fn scrape(gw: &Gateway) -> (String, String) {
    scrape_as(gw, &[]).await
}

/// The value of the sample written exactly as `series` (name and labels), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn expect(text: &str, series: &str, value: f64) {
    assert_eq!(
        sample(text, series),
        Some(value),
        "{series} should be {value} in:\n{text}"
    );
}

/// Scrapes until `series` reads `value` (at most 5 s).
async fn eventually(gw: &Gateway, series: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (text, _) = scrape(gw).await;
        if sample(&text, series) == Some(value) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            expect(&text, series, value);
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn request_metrics_count_known_traffic_with_config_labels_only() {
    let ok = Upstream::echo("echo").await;
    let broken = Upstream::start(|_| async {
        let mut r = Response::new(Full::new(Bytes::from_static(b"boom")));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
    .await;
    let gw = Gateway::start(&yaml(&ok, &broken)).await;

    assert_eq!(get(&gw.url("/ok"), &[]).await.status, StatusCode::OK);
    assert_eq!(
        get(&gw.url("/no-such-route/secret-4711"), &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&gw.url("/limited"), &[]).await.status, StatusCode::OK);
    assert_eq!(
        get(&gw.url("/limited"), &[]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        get(&gw.url("/fail"), &[]).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );

    let (text, ct) = scrape(&gw).await;
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert!(
        text.contains("# TYPE portico_http_requests_total counter"),
        "{text}"
    );
    let req = "portico_http_requests_total";
    expect(
        &text,
        &format!(r#"{req}{{service="echo",route="ok",method="GET",code="200",class="2xx"}}"#),
        1.0,
    );
    expect(
        &text,
        &format!(r#"{req}{{service="",route="",method="GET",code="404",class="4xx"}}"#),
        1.0,
    );
    expect(
        &text,
        &format!(r#"{req}{{service="echo",route="limited",method="GET",code="200",class="2xx"}}"#),
        1.0,
    );
    expect(
        &text,
        &format!(r#"{req}{{service="echo",route="limited",method="GET",code="429",class="4xx"}}"#),
        1.0,
    );
    expect(
        &text,
        &format!(r#"{req}{{service="broken",route="fail",method="GET",code="500",class="5xx"}}"#),
        1.0,
    );
    let request_lines = text.lines().filter(|l| l.starts_with(req)).count();
    assert_eq!(request_lines, 5, "five request series:\n{text}");

    expect(
        &text,
        r#"portico_rate_limited_total{service="echo",route="limited"}"#,
        1.0,
    );
    assert!(
        !text.contains(r#"portico_rate_limited_total{service="broken""#),
        "a 500 is no rate-limit rejection:\n{text}"
    );

    // Latency: every answered request is observed; upstream latency only for proxied ones.
    let lat = "portico_request_latency_seconds_count";
    let up = "portico_upstream_latency_seconds_count";
    expect(
        &text,
        &format!(r#"{lat}{{service="echo",route="ok"}}"#),
        1.0,
    );
    expect(
        &text,
        &format!(r#"{lat}{{service="echo",route="limited"}}"#),
        2.0,
    );
    expect(&text, &format!(r#"{lat}{{service="",route=""}}"#), 1.0);
    expect(&text, &format!(r#"{up}{{service="echo",route="ok"}}"#), 1.0);
    expect(
        &text,
        &format!(r#"{up}{{service="echo",route="limited"}}"#),
        1.0,
    );
    expect(
        &text,
        &format!(r#"{up}{{service="broken",route="fail"}}"#),
        1.0,
    );

    // strip_path: the echo upstream sees `/` and answers "echo /". Egress is counted when the
    // response body ends, which may be just after the client has read it.
    eventually(
        &gw,
        r#"portico_bandwidth_bytes_total{service="echo",route="ok",direction="egress"}"#,
        "echo /".len() as f64,
    )
    .await;

    // Node gauges (the clients' connections may still be closing: presence only).
    assert!(
        sample(&text, "portico_connections_active").is_some(),
        "{text}"
    );
    let hash = gw
        .shared
        .runtime
        .load_full()
        .map(|rt| rt.snapshot.hash.clone())
        .unwrap_or_default();
    expect(
        &text,
        &format!(r#"portico_config_info{{version="0",hash="{hash}"}}"#),
        1.0,
    );
    assert!(
        !text.contains("portico_control_plane_connected"),
        "a file-fed data plane has no control-plane gauge"
    );

    // Cardinality: nothing the client sent beyond the method set and the status ends up in a
    // label.
    assert!(!text.contains("secret-4711"), "raw path leaked:\n{text}");
    assert!(!text.contains("no-such-route"), "raw path leaked:\n{text}");
    assert!(!text.contains("127.0.0.1"), "host leaked:\n{text}");
    // No prometheus plugin with per_consumer: no consumer label anywhere.
    assert!(
        !text.contains("consumer=\""),
        "consumer label without per_consumer:\n{text}"
    );
    promtool::check_metrics(&text);

    let (om, ct) = scrape_as(
        &gw,
        &[("accept", "application/openmetrics-text;version=1.0.0")],
    )
    .await;
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(om.contains("# TYPE portico_http_requests counter"), "{om}");
    assert!(om.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    gw.stop().await;
}

/// Routes with key-auth and rate-limiting; `members` also runs prometheus with per_consumer
/// (route-scoped), `plain` runs a prometheus without it.
fn per_consumer_yaml(up: &Upstream) -> String {
    format!(
        "_format_version: \"3.0\"
services:
  - name: echo
    url: http://{}
    routes:
      - name: members
        paths: [/members]
        plugins:
          - name: key-auth
          - name: rate-limiting
            config: {{ minute: 1, policy: local, limit_by: consumer }}
          - name: prometheus
            config: {{ per_consumer: true }}
      - name: plain
        paths: [/plain]
        plugins:
          - name: key-auth
          - name: rate-limiting
            config: {{ minute: 1, policy: local, limit_by: consumer }}
          - name: prometheus
consumers:
  - username: alice
    keyauth_credentials: [{{ key: alice-key }}]
  - username: bob
    keyauth_credentials: [{{ key: bob-key }}]
  - id: 5b2d1c8e-0f3a-4c55-9b7e-2f1d0a9c6e41
    custom_id: batch-job
    keyauth_credentials: [{{ key: job-key }}]
",
        up.addr
    )
}

#[tokio::test]
async fn per_consumer_counts_rate_limit_rejections_and_requests_by_consumer() {
    let up = Upstream::echo("echo").await;
    let gw = Gateway::start(&per_consumer_yaml(&up)).await;
    let call = |path: &'static str, key: &'static str| {
        let url = gw.url(path);
        async move { get(&url, &[("apikey", key)]).await.status }
    };
    // alice: one allowed, two refused; bob: one allowed, one refused; the consumer without a
    // username: one refused after one allowed. Each consumer has its own allowance.
    assert_eq!(call("/members", "alice-key").await, StatusCode::OK);
    assert_eq!(
        call("/members", "alice-key").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        call("/members", "alice-key").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(call("/members", "bob-key").await, StatusCode::OK);
    assert_eq!(
        call("/members", "bob-key").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(call("/members", "job-key").await, StatusCode::OK);
    assert_eq!(
        call("/members", "job-key").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // No consumer identified: counted in the route's families only.
    assert_eq!(call("/members", "wrong").await, StatusCode::UNAUTHORIZED);
    // The route whose prometheus has no per_consumer.
    assert_eq!(call("/plain", "alice-key").await, StatusCode::OK);
    assert_eq!(
        call("/plain", "alice-key").await,
        StatusCode::TOO_MANY_REQUESTS
    );

    let (text, _) = scrape(&gw).await;
    let limited = "portico_rate_limited_by_consumer_total";
    let job = "5b2d1c8e-0f3a-4c55-9b7e-2f1d0a9c6e41";
    for (consumer, n) in [("alice", 2.0), ("bob", 1.0), (job, 1.0)] {
        expect(
            &text,
            &format!(r#"{limited}{{service="echo",route="members",consumer="{consumer}"}}"#),
            n,
        );
    }
    let requests = "portico_http_requests_by_consumer_total";
    for (consumer, code, class, n) in [
        ("alice", 200, "2xx", 1.0),
        ("alice", 429, "4xx", 2.0),
        ("bob", 200, "2xx", 1.0),
        ("bob", 429, "4xx", 1.0),
        (job, 200, "2xx", 1.0),
        (job, 429, "4xx", 1.0),
    ] {
        expect(
            &text,
            &format!(
                r#"{requests}{{service="echo",route="members",consumer="{consumer}",code="{code}",class="{class}"}}"#
            ),
            n,
        );
    }
    // Exactly those series: no 401 without a consumer, nothing for the route without
    // per_consumer.
    let consumer_lines: Vec<&str> = text.lines().filter(|l| l.contains("consumer=\"")).collect();
    assert_eq!(consumer_lines.len(), 9, "{consumer_lines:#?}");
    assert!(
        consumer_lines
            .iter()
            .all(|l| l.contains(r#"route="members""#)),
        "{consumer_lines:#?}"
    );
    // The route families keep their label sets and count every request.
    expect(
        &text,
        r#"portico_rate_limited_total{service="echo",route="members"}"#,
        4.0,
    );
    expect(
        &text,
        r#"portico_rate_limited_total{service="echo",route="plain"}"#,
        1.0,
    );
    expect(
        &text,
        r#"portico_http_requests_total{service="echo",route="members",method="GET",code="401",class="4xx"}"#,
        1.0,
    );
    assert!(
        !text.contains("alice-key") && !text.contains("batch-job"),
        "{text}"
    );
    promtool::check_metrics(&text);
    gw.stop().await;
}

#[tokio::test]
async fn unknown_methods_share_one_label() {
    let ok = Upstream::echo("echo").await;
    let gw = Gateway::start(&format!(
        "_format_version: \"3.0\"
services:
  - name: echo
    url: http://{}
    routes:
      - name: ok
        paths: [/ok]
",
        ok.addr
    ))
    .await;
    for m in ["FOO", "BAR"] {
        let req = http::Request::builder()
            .method(m)
            .uri(gw.url("/ok"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        harness::send(req).await;
    }
    let (text, _) = scrape(&gw).await;
    expect(
        &text,
        r#"portico_http_requests_total{service="echo",route="ok",method="other",code="200",class="2xx"}"#,
        2.0,
    );
    assert!(!text.contains("FOO") && !text.contains("BAR"), "{text}");
    gw.stop().await;
}

#[tokio::test]
async fn target_health_and_circuit_state_gauges() {
    let broken = Upstream::start(|_| async {
        let mut r = Response::new(Full::new(Bytes::from_static(b"boom")));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
    .await;
    let gw = Gateway::start(&format!(
        "_format_version: \"3.0\"
upstreams:
  - name: pool
    targets:
      - target: {}
services:
  - name: broken
    host: pool
    routes:
      - name: fail
        paths: [/fail]
plugins:
  - {{ name: circuit-breaker, config: {{ threshold: 2, timeout: 30 }} }}
",
        broken.addr
    ))
    .await;
    for _ in 0..2 {
        assert_eq!(get(&gw.url("/fail"), &[]).await.status, 500);
    }
    let (text, _) = scrape(&gw).await;
    let target = broken.addr.to_string();
    for (state, v) in [
        ("healthchecks_off", 1.0),
        ("healthy", 0.0),
        ("unhealthy", 0.0),
    ] {
        expect(
            &text,
            &format!(
                r#"portico_upstream_target_health{{upstream="pool",target="{target}",state="{state}"}}"#
            ),
            v,
        );
    }
    for (state, v) in [("open", 1.0), ("closed", 0.0), ("half_open", 0.0)] {
        expect(
            &text,
            &format!(r#"portico_circuit_state{{service="broken",state="{state}"}}"#),
            v,
        );
    }
    promtool::check_metrics(&text);
    gw.stop().await;
}

#[tokio::test]
async fn control_plane_link_and_last_apply_gauges() {
    let up = Upstream::echo("a").await;
    let mut cp = MockCp::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let listeners = Listeners {
        proxy: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        status: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        proxy_tls: None,
    };
    let status = listeners.status.local_addr().unwrap();
    let (shutdown, rx) = watch::channel(false);
    let opts = ControlPlaneOptions {
        control_plane: cp.url(),
        group: "edge".into(),
        node_id: "node-1".into(),
        cache_dir: dir.path().to_path_buf(),
        tls: None,
        trusted_ips: vec![],
        plugins: vec!["bundled".into()],
        drain_timeout: std::time::Duration::from_secs(2),
        telemetry: Default::default(),
        limits: Default::default(),
    };
    let task = tokio::spawn(portico_data_plane::run_from_control_plane(
        opts, listeners, rx,
    ));
    cp.hello().await;
    let yaml = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: svc\n    url: http://{}\n    routes:\n      - name: all\n        paths: [\"/\"]\n",
        up.addr
    );
    let snapshot = portico_common::load_str(&yaml, &|_| None).unwrap().snapshot;
    cp.send(Update {
        nonce: "n1".into(),
        group: "edge".into(),
        version: 7,
        hash: snapshot.hash.clone(),
        snapshot_json: serde_json::to_vec(&snapshot).unwrap().into(),
        ..Update::default()
    });
    let ack = cp.answer().await.expect("acked");

    let got = get(&format!("http://{status}/metrics"), &[]).await;
    let text = got.body;
    expect(&text, "portico_control_plane_connected", 1.0);
    expect(
        &text,
        &format!(
            r#"portico_config_info{{version="7",hash="{}"}}"#,
            snapshot.hash
        ),
        1.0,
    );
    // The gauge shows the apply the ACK reported, in seconds.
    expect(
        &text,
        "portico_config_last_apply_duration_seconds",
        ack.apply_micros as f64 / 1e6,
    );
    promtool::check_metrics(&text);
    let _ = shutdown.send(true);
    let _ = tokio::time::timeout(mock_cp::WAIT, task).await;
}

/// A chunked response of unknown length is counted as it streams, as is the access log's
/// bytes_out: egress is the body bytes the client was sent, not a Content-Length.
#[tokio::test]
async fn streamed_response_bytes_are_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut read = 0;
                // Read the request head, then stream two chunks.
                while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                    )
                    .await;
                let _ = s.write_all(b"6\r\n world\r\n0\r\n\r\n").await;
            });
        }
    });
    let yaml = format!(
        "_format_version: \"3.0\"
services:
  - name: stream
    url: http://{addr}
    routes:
      - name: chunks
        paths: [/chunks]
"
    );
    let gw = Gateway::start(&yaml).await;
    let got = get(&gw.url("/chunks"), &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, "hello world");
    eventually(
        &gw,
        r#"portico_bandwidth_bytes_total{service="stream",route="chunks",direction="egress"}"#,
        11.0,
    )
    .await;
    gw.stop().await;
}
