//! End to end with the real binary: `portico dp --config FILE` hot reload under load, graceful
//! drain on SIGTERM, streaming 1 GiB each way with flat memory.

#[path = "support/binary.rs"]
mod binary;
#[path = "../data-plane/tests/support/harness.rs"]
mod harness;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use binary::{eventually, Portico};
use bytes::Bytes;
use harness::{get, Upstream};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

fn config(upstream: std::net::SocketAddr, version: u32) -> String {
    format!(
        "_format_version: \"3.0\"\nservices:\n  - name: app\n    url: http://{upstream}/v{version}\n    routes:\n      - name: app\n        paths: [\"/app\"]\n"
    )
}

/// An invalid config of each kind the reload must survive.
fn invalid(i: usize) -> &'static str {
    match i % 3 {
        0 => "_format_version: \"3.0\"\nservices:\n  - name: app\n    url: http://127.0.0.1:1\n    routes:\n      - paths: [\"~/(unclosed\"]\n",
        1 => "_format_version: \"3.0\"\nservices: [ this is not: valid yaml",
        _ => "_format_version: \"3.0\"\nroutes:\n  - name: orphan\n    service: missing\n    paths: [\"/x\"]\n",
    }
}

async fn reloads(status: std::net::SocketAddr) -> (u64, u64) {
    let v = get(&format!("http://{status}/status"), &[]).await.json();
    (
        v["reloads"]["succeeded"].as_u64().unwrap(),
        v["reloads"]["failed"].as_u64().unwrap(),
    )
}

/// How many connections the load uses: 2,000, or fewer when the open-file limit is too low for
/// this process (client + upstream sockets) and the data plane.
fn concurrency() -> usize {
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|n| n.parse::<usize>().ok())
        })
        .unwrap_or(1024);
    (limit.saturating_sub(200) / 3).clamp(64, 2000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_concurrent_load_fail_no_request() {
    let up = Upstream::echo("app").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kong.yml");
    std::fs::write(&path, config(up.addr, 0)).unwrap();
    let mut dp = Portico::dp(&path, &[]);
    let proxy = dp.proxy;

    let conns = concurrency();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for _ in 0..conns {
        let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        workers.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            // Every connection keeps requests flowing until the reloads are done (and sends at
            // least one), so thousands are in flight across the swaps.
            let mut sent = 0;
            while sent == 0 || !stop.load(Ordering::Relaxed) {
                sent += 1;
                let req = Request::get("/app/item")
                    .header("host", "gw")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let result = async {
                    sender.ready().await?;
                    let resp = sender.send_request(req).await?;
                    let status = resp.status();
                    let body = resp.into_body().collect().await?.to_bytes();
                    Ok::<_, hyper::Error>((status, body))
                }
                .await;
                match result {
                    Ok((s, body)) if s == 200 && body.starts_with(b"app /v") => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((s, body)) => failed
                        .lock()
                        .unwrap()
                        .push(format!("{s}: {}", String::from_utf8_lossy(&body))),
                    Err(e) => {
                        failed.lock().unwrap().push(format!("transport: {e}"));
                        return;
                    }
                }
            }
        }));
    }

    eventually("the load to start", Duration::from_secs(30), || {
        let n = ok.load(Ordering::Relaxed);
        async move { (n >= conns.min(500)).then_some(()) }
    })
    .await;

    // 20 reloads, valid and invalid mixed; each waits until the data plane reports it.
    let (mut good, mut bad) = reloads(dp.status).await;
    let mut live = 0;
    for i in 0..20 {
        let valid = i % 3 != 1;
        if valid {
            live = i as u32 + 1;
            std::fs::write(&path, config(up.addr, i as u32 + 1)).unwrap();
        } else {
            std::fs::write(&path, invalid(i / 3)).unwrap();
        }
        let status = dp.status;
        let (g, b) = eventually(
            &format!("reload {i} to be reported"),
            Duration::from_secs(20),
            || async move {
                let (g, b) = reloads(status).await;
                (g > good || b > bad).then_some((g, b))
            },
        )
        .await;
        assert_eq!(
            (g > good, b > bad),
            (valid, !valid),
            "reload {i} (valid: {valid})"
        );
        (good, bad) = (g, b);
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let failures = failed.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let total = ok.load(Ordering::Relaxed);
    assert!(total >= 2000, "only {total} requests ran");
    // The last valid config is live; the invalid ones after it were refused with their errors.
    let got = get(&format!("http://{proxy}/app/x"), &[]).await;
    assert_eq!(got.body, format!("app /v{live}/x"));
    dp.pump_logs();
    assert!(dp
        .log_lines
        .iter()
        .any(|l| l.contains("config rejected") && l.contains("invalid regex")));
    eprintln!("{total} requests over {conns} connections across 20 reloads, none failed");
}

use std::sync::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_sigterm_drains_in_flight_requests() {
    let slow = Upstream::start(|seen: harness::Seen| async move {
        if seen.uri.contains("slow") {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        http::Response::new(http_body_util::Full::new(Bytes::from("done")))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kong.yml");
    std::fs::write(&path, config(slow.addr, 1)).unwrap();
    let mut dp = Portico::dp(&path, &["--no-watch", "--drain-timeout", "10"]);
    let (proxy, status) = (dp.proxy, dp.status);

    // With --no-watch a change is picked up on SIGHUP only.
    std::fs::write(&path, config(slow.addr, 2)).unwrap();
    dp.signal("HUP");
    eventually("SIGHUP reload", Duration::from_secs(10), || async move {
        (reloads(status).await.0 >= 2).then_some(())
    })
    .await;

    let in_flight =
        tokio::spawn(async move { get(&format!("http://{proxy}/app/slow"), &[]).await });
    eventually(
        "the slow request to reach the upstream",
        Duration::from_secs(10),
        || {
            let n = slow.count();
            async move { (n >= 1).then_some(()) }
        },
    )
    .await;
    dp.signal("TERM");
    // While the slow request drains, readiness says so (the status listener stays up).
    let ready = format!("http://{status}/status/ready");
    eventually(
        "readiness to report draining",
        Duration::from_secs(5),
        || {
            let u = ready.clone();
            async move {
                let got = get(&u, &[]).await;
                (got.status == 503 && got.body.contains("draining")).then_some(())
            }
        },
    )
    .await;
    let got = in_flight.await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.body, "done");
    let st = dp.wait_exit(Duration::from_secs(15));
    assert!(st.success(), "exit status {st:?}");
    assert!(
        tokio::net::TcpStream::connect(proxy).await.is_err(),
        "still accepting after drain"
    );
}

/// An upstream that answers every request with a 1 GiB body, streamed in 1 MiB chunks.
async fn gigabyte_upstream() -> std::net::SocketAddr {
    use hyper_util::rt::TokioExecutor;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    let chunk = Bytes::from(vec![b'y'; 1 << 20]);
                    let frames = futures_util::stream::iter((0..1024).map(move |_| {
                        Ok::<_, std::io::Error>(http_body::Frame::data(chunk.clone()))
                    }));
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::StreamBody::new(frames),
                    ))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_up_and_down_streams_with_flat_memory() {
    let sink = Upstream::echo("sink").await;
    let source = gigabyte_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kong.yml");
    let yaml = format!(
        "{}  - name: source\n    url: http://{source}\n    routes:\n      - paths: [\"/download\"]\n",
        config(sink.addr, 1)
    );
    std::fs::write(&path, yaml).unwrap();
    let dp = Portico::dp(&path, &[]);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();

    // Upload: 1 GiB in, counted by the upstream.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(8);
    let chunk = Bytes::from(vec![b'x'; 1 << 20]);
    tokio::spawn(async move {
        for _ in 0..1024 {
            if tx
                .send(Ok(http_body::Frame::data(chunk.clone())))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut rx = rx;
    let body =
        http_body_util::StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let resp = client
        .request(
            Request::post(format!("http://{}/app/upload", dp.proxy))
                .body(body)
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(sink.last().body_len, 1 << 30);

    // Download: 1 GiB out, counted here without keeping it.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let resp = client
        .request(
            Request::get(format!("http://{}/download", dp.proxy))
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0usize;
    while let Some(frame) = body.frame().await {
        got += frame.unwrap().data_ref().map_or(0, |d| d.len());
    }
    assert_eq!(got, 1 << 30);

    let peak = dp.peak_rss_kib().expect("VmHWM");
    assert!(
        peak < 96 * 1024,
        "data plane peak RSS {peak} KiB while streaming 2 GiB"
    );
    eprintln!(
        "1 GiB up and 1 GiB down; data plane peak RSS {} MiB",
        peak / 1024
    );
}

/// A `;` in the path is refused by default; `--allow-path-semicolons` forwards it as Kong does.
#[tokio::test]
async fn semicolons_in_paths_are_refused_unless_allowed() {
    let up = Upstream::echo("app").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kong.yml");
    std::fs::write(&path, config(up.addr, 1)).unwrap();
    let strict = Portico::dp(&path, &["--no-watch"]);
    let kong = Portico::dp(&path, &["--no-watch", "--allow-path-semicolons"]);

    let got = harness::raw(
        strict.proxy,
        b"GET /app/a;jsessionid=1/b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    assert_eq!(up.count(), 0);

    let got = harness::raw(
        kong.proxy,
        b"GET /app/a;jsessionid=1/b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert_eq!(up.last().uri, "/v1/a;jsessionid=1/b");
}
