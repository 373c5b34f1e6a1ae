//! Telemetry overhead benchmark (not a test): the request rate of a data plane with the access
//! log and 100%-sampled tracing on, against the same data plane with them off, in one run.
//!
//! ```sh
//! apt-get install -y wrk   # the load generator
//! cargo build --release && cargo run --release --example telemetry_overhead -- [rounds] [seconds] [connections]
//! ```
//! Starts `portico echo` (the upstream) and two `portico dp --config` processes (release
//! binaries next to this example) on loopback: "off" with the defaults (Prometheus metrics are
//! always recorded; `--metrics off` turns them off for the baseline), "on" with metrics,
//! `--access-log FILE` and `--otlp-endpoint` to an OTLP/gRPC collector running in this process
//! with `--tracing-sampling-rate 1`. Then runs `wrk` against each, alternating which goes
//! first every round, and prints each run, the medians, and the ratio on/off. At the end it
//! checks the "on" node really logged and traced: access-log lines, OTLP exports and bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http_body_util::BodyExt;

#[path = "support/procs.rs"]
mod procs;
#[path = "support/wrk.rs"]
mod wrk;
use procs::{spawn_dp, spawn_listening};
use wrk::{cpu_seconds, median};

/// A minimal OTLP/gRPC sink: reads each export and answers OK without decoding it, so the
/// collector's own CPU (it shares the machine) stays small next to the gateway's. It counts
/// exports and bytes; `data-plane/tests/telemetry.rs` checks what the spans contain.
async fn sink(
    req: http::Request<hyper::body::Incoming>,
    exports: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
) -> Result<http::Response<GrpcOk>, std::convert::Infallible> {
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    if let Ok(b) = body {
        exports.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
    }
    Ok(http::Response::builder()
        .header("content-type", "application/grpc")
        .body(GrpcOk(0))
        .unwrap())
}

/// An empty gRPC message (the export response) followed by `grpc-status: 0` trailers.
struct GrpcOk(u8);

impl http_body::Body for GrpcOk {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0 += 1;
        std::task::Poll::Ready(match self.0 {
            1 => Some(Ok(http_body::Frame::data(bytes::Bytes::from_static(&[
                0, 0, 0, 0, 0,
            ])))),
            2 => {
                let mut t = http::HeaderMap::new();
                t.insert("grpc-status", http::HeaderValue::from_static("0"));
                Some(Ok(http_body::Frame::trailers(t)))
            }
            _ => None,
        })
    }
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rounds = args.first().copied().unwrap_or(5);
    let seconds = args.get(1).copied().unwrap_or(5);
    let connections = args.get(2).copied().unwrap_or(50) as usize;

    let spans = Arc::new(AtomicU64::new(0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let collector = listener.local_addr().unwrap();
    let (exports, export_bytes) = (Arc::clone(&spans), Arc::new(AtomicU64::new(0)));
    let bytes_seen = Arc::clone(&export_bytes);
    // The collector runs on its own runtime and thread, so the load phases (blocking on wrk)
    // never stall it.
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((stream, _)) = listener.accept().await {
                    let (e, b) = (Arc::clone(&exports), Arc::clone(&bytes_seen));
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            sink(req, Arc::clone(&e), Arc::clone(&b))
                        });
                        let _ = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                    });
                }
            })
    });

    let tmp = tempfile::tempdir().unwrap();
    let echo_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (_echo, echo) = spawn_listening(
        &[
            "echo".into(),
            "--listen".into(),
            format!("127.0.0.1:{echo_port}"),
        ],
        "echo",
        None,
    );
    let config = tmp.path().join("kong.yml");
    std::fs::write(
        &config,
        format!(
            "_format_version: \"3.0\"\nservices:\n  - name: bench\n    url: http://{echo}\n    routes:\n      - name: bench\n        paths: [/bench]\n"
        ),
    )
    .unwrap();
    let access_log = tmp.path().join("access.log");
    let dp = |extra: Vec<String>| spawn_dp(&config, &extra, None);
    let (off_proc, off) = dp(vec!["--metrics".into(), "off".into()]);
    // TELEMETRY_ON=log|trace measures one of the two alone, TELEMETRY_ON=metrics neither
    // (default: both).
    let only = std::env::var("TELEMETRY_ON").unwrap_or_default();
    let mut on_args: Vec<String> = Vec::new();
    if only != "trace" && only != "metrics" {
        on_args.extend(["--access-log".into(), access_log.display().to_string()]);
    }
    if only != "log" && only != "metrics" {
        on_args.extend([
            "--otlp-endpoint".into(),
            format!("http://{collector}"),
            "--tracing-sampling-rate".into(),
            "1".into(),
        ]);
    }
    let (on_proc, on) = dp(on_args);
    let pids = [off_proc.0.id(), on_proc.0.id()];
    println!(
        "wrk -t1 -c{connections} -d{seconds}s, {rounds} rounds, alternating; upstream `portico echo`"
    );
    // Warm both (connection pools, allocator) before measuring.
    wrk::wrk(&format!("http://{off}/bench"), 1, connections, &[]);
    wrk::wrk(&format!("http://{on}/bench"), 1, connections, &[]);
    let (exports_before, bytes_before) = (
        spans.load(Ordering::Relaxed),
        export_bytes.load(Ordering::Relaxed),
    );

    let (mut rps_off, mut rps_on, mut p99_off, mut p99_on) = (vec![], vec![], vec![], vec![]);
    let (mut cpu_off, mut cpu_on) = (vec![], vec![]);
    let mut requests_on = 0;
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for telemetry in order {
            let addr = if telemetry { &on } else { &off };
            let pid = pids[usize::from(telemetry)];
            let cpu_before = cpu_seconds(pid);
            let sink_before = cpu_seconds(std::process::id());
            let r = wrk::wrk(&format!("http://{addr}/bench"), seconds, connections, &[]);
            let cpu_us = (cpu_seconds(pid) - cpu_before) * 1e6 / r.requests.max(1) as f64;
            // This process is the OTLP sink (and an idle main thread): what receiving the
            // spans costs the shared machine.
            let sink_us =
                (cpu_seconds(std::process::id()) - sink_before) * 1e6 / r.requests.max(1) as f64;
            println!(
                "  round {round} {:<3} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  data-plane CPU {cpu_us:>5.1} µs/request  OTLP sink CPU {sink_us:>4.1} µs/request",
                if telemetry { "on" } else { "off" },
                r.rps,
                r.p50_ms,
                r.p99_ms
            );
            if telemetry { &mut cpu_on } else { &mut cpu_off }.push(cpu_us);
            if telemetry {
                rps_on.push(r.rps);
                p99_on.push(r.p99_ms);
                requests_on += r.requests;
            } else {
                rps_off.push(r.rps);
                p99_off.push(r.p99_ms);
            }
        }
    }
    let (off_m, on_m) = (median(rps_off), median(rps_on));
    println!(
        "data-plane CPU per request (median): off {:.1} µs, on {:.1} µs",
        median(cpu_off),
        median(cpu_on)
    );
    println!(
        "median: off {off_m:.0} req/s (p99 {:.2} ms), on {on_m:.0} req/s (p99 {:.2} ms): on/off = {:.3}",
        median(p99_off),
        median(p99_on),
        on_m / off_m
    );
    // Let the last batch of spans arrive (the exporter sends every 500 ms).
    std::thread::sleep(std::time::Duration::from_secs(2));
    let lines = std::fs::read_to_string(&access_log)
        .map(|t| t.lines().count())
        .unwrap_or(0);
    println!(
        "the 'on' node: {lines} access-log lines; the collector got {} OTLP exports ({:.1} MB) for {requests_on} measured requests",
        spans.load(Ordering::Relaxed) - exports_before,
        (export_bytes.load(Ordering::Relaxed) - bytes_before) as f64 / 1e6
    );
}
