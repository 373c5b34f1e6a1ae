//! Telemetry overhead benchmark (not a test): the request rate of a data plane with the access
//! log and 100%-sampled tracing on, against the same data plane with them off, in one run.
//!
//! ```sh
//! apt-get install -y wrk   # the load generator
//! cargo build --release && cargo run --release --example telemetry_overhead -- [rounds] [seconds] [connections]
//! ```
//! Starts `portico echo` (the upstream) and `portico dp --config` processes (release binaries
//! next to this example) on loopback: "off" with `--metrics off`, and one "on" node per part
//! named in `TELEMETRY_ON` (default `all`): `metrics` (the default per-request metrics),
//! `log` (`--access-log FILE`), `trace` (`--otlp-endpoint` to an OTLP/gRPC collector running in
//! this process, `--tracing-sampling-rate 1`), `all` (the three at once). E.g.
//! `TELEMETRY_ON=log,trace,all` shows each part alone and together in one run. Every round runs
//! `wrk` against each node, rotating which goes first, and prints each run; then the medians and
//! each node's ratio to "off", overall and round by round. At the end it checks the nodes
//! really logged and traced: access-log lines, OTLP exports and bytes.
//! `LOAD_LAYOUT=pin` (the default on 2 or more cores) runs each data plane alone on the last
//! core with one worker, its exporter and log writer included, and wrk, the upstream and the
//! sink on the others; `free` pins nothing (`examples/support/layout.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http_body_util::BodyExt;

#[path = "support/layout.rs"]
mod layout;
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
    let layout = layout::Layout::from_env();
    // The OTLP sink below runs in this process: beside wrk, not beside the data planes.
    layout.pin_self();

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

    // TELEMETRY_SINK_ONLY=1: only the sink, for profiling a data plane by hand against it
    // (`portico dp ... --otlp-endpoint http://ADDR`); runs until killed.
    if std::env::var_os("TELEMETRY_SINK_ONLY").is_some() {
        println!("OTLP sink on http://{collector}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(10));
            println!(
                "exports {} bytes {}",
                spans.load(Ordering::Relaxed),
                export_bytes.load(Ordering::Relaxed)
            );
        }
    }

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
        layout.client.as_deref(),
    );
    let config = tmp.path().join("kong.yml");
    std::fs::write(
        &config,
        format!(
            "_format_version: \"3.0\"\nservices:\n  - name: bench\n    url: http://{echo}\n    routes:\n      - name: bench\n        paths: [/bench]\n"
        ),
    )
    .unwrap();
    // The access log goes to tmpfs when there is one: on disk, the kernel's writeback of
    // hundreds of MB lands on whichever core, the pinned data plane's included, and the
    // numbers measure the disk rather than the gateway. ACCESS_LOG_DIR picks another place.
    let log_dir = match std::env::var_os("ACCESS_LOG_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None if std::path::Path::new("/dev/shm").is_dir() => {
            tempfile::tempdir_in("/dev/shm").unwrap()
        }
        None => tempfile::tempdir().unwrap(),
    };
    let dp = |extra: Vec<String>| spawn_dp(&config, &extra, layout.server.as_deref());
    // TELEMETRY_ON: which "on" nodes run beside "off" (default `all`, everything at once);
    // e.g. `log,trace,all` shows each part alone and together in one run.
    let parts = std::env::var("TELEMETRY_ON").unwrap_or_else(|_| "all".into());
    let mut targets: Vec<Target> = Vec::new();
    let (off_proc, off) = dp(vec!["--metrics".into(), "off".into()]);
    targets.push(Target::new("off", off_proc, off, None));
    for part in parts.split(',').filter(|p| !p.is_empty()) {
        let (log, trace) = match part {
            "metrics" => (false, false),
            "log" => (true, false),
            "trace" => (false, true),
            "all" => (true, true),
            other => {
                eprintln!("TELEMETRY_ON takes metrics, log, trace and all, not {other}");
                std::process::exit(2);
            }
        };
        let mut args: Vec<String> = Vec::new();
        let log_file = log.then(|| log_dir.path().join(format!("access-{part}.log")));
        if let Some(f) = &log_file {
            args.extend(["--access-log".into(), f.display().to_string()]);
        }
        if trace {
            args.extend([
                "--otlp-endpoint".into(),
                format!("http://{collector}"),
                "--tracing-sampling-rate".into(),
                "1".into(),
            ]);
        }
        let (proc_, addr) = dp(args);
        targets.push(Target::new(part, proc_, addr, log_file));
    }
    println!(
        "wrk -t1 -c{connections} -d{seconds}s, {rounds} rounds, order rotated every round; upstream `portico echo`; {}",
        layout.describe()
    );
    // Warm every node (connection pools, allocator) before measuring.
    for t in &targets {
        layout.wrk(&format!("http://{}/bench", t.addr), 1, connections, &[]);
    }
    let (exports_before, bytes_before) = (
        spans.load(Ordering::Relaxed),
        export_bytes.load(Ordering::Relaxed),
    );
    let mut traced_requests = 0;
    for round in 0..rounds as usize {
        let mut rps_this_round = vec![0.0; targets.len()];
        for k in 0..targets.len() {
            let i = (k + round) % targets.len();
            let t = &mut targets[i];
            let pid = t.proc_.0.id();
            let cpu_before = cpu_seconds(pid);
            let sink_before = cpu_seconds(std::process::id());
            let r = layout.wrk(
                &format!("http://{}/bench", t.addr),
                seconds,
                connections,
                &[],
            );
            let cpu_us = (cpu_seconds(pid) - cpu_before) * 1e6 / r.requests.max(1) as f64;
            // This process is the OTLP sink (and an idle main thread): what receiving the
            // spans costs the machine.
            let sink_us =
                (cpu_seconds(std::process::id()) - sink_before) * 1e6 / r.requests.max(1) as f64;
            println!(
                "  round {round} {:<7} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  data-plane CPU {cpu_us:>5.1} µs/request  OTLP sink CPU {sink_us:>4.1} µs/request",
                t.name, r.rps, r.p50_ms, r.p99_ms
            );
            t.rps.push(r.rps);
            t.p99.push(r.p99_ms);
            t.cpu.push(cpu_us);
            if matches!(t.name, "trace" | "all") {
                traced_requests += r.requests;
            }
            rps_this_round[i] = r.rps;
        }
        for (i, t) in targets.iter_mut().enumerate().skip(1) {
            t.round_ratios.push(rps_this_round[i] / rps_this_round[0]);
        }
    }
    let off_rps = median(targets[0].rps.clone());
    println!("medians:");
    for t in &targets {
        let rps = median(t.rps.clone());
        let ratio = if t.round_ratios.is_empty() {
            String::new()
        } else {
            let mut r = t.round_ratios.clone();
            r.sort_by(f64::total_cmp);
            format!(
                "  {}/off = {:.3} (per round: {})",
                t.name,
                rps / off_rps,
                r.iter()
                    .map(|x| format!("{x:.2}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        };
        println!(
            "  {:<7} {rps:>9.0} req/s  p99 {:>6.2} ms  data-plane CPU {:>5.1} µs/request{ratio}",
            t.name,
            median(t.p99.clone()),
            median(t.cpu.clone()),
        );
    }
    // Let the last batch of spans arrive (the exporter drains every 200 ms).
    std::thread::sleep(std::time::Duration::from_secs(2));
    let lines: usize = targets
        .iter()
        .filter_map(|t| t.log_file.as_ref())
        .map(|f| {
            std::fs::read_to_string(f)
                .map(|t| t.lines().count())
                .unwrap_or(0)
        })
        .sum();
    println!(
        "the logging nodes wrote {lines} access-log lines; the collector got {} OTLP exports ({:.1} MB) for {traced_requests} measured traced requests",
        spans.load(Ordering::Relaxed) - exports_before,
        (export_bytes.load(Ordering::Relaxed) - bytes_before) as f64 / 1e6
    );
}

/// One data plane under test and its samples.
struct Target {
    name: &'static str,
    proc_: procs::Proc,
    addr: String,
    log_file: Option<std::path::PathBuf>,
    rps: Vec<f64>,
    p99: Vec<f64>,
    cpu: Vec<f64>,
    /// This node's requests/s over "off"'s in the same round.
    round_ratios: Vec<f64>,
}

impl Target {
    fn new(
        name: &str,
        proc_: procs::Proc,
        addr: String,
        log_file: Option<std::path::PathBuf>,
    ) -> Target {
        Target {
            name: match name {
                "off" => "off",
                "metrics" => "metrics",
                "log" => "log",
                "trace" => "trace",
                _ => "all",
            },
            proc_,
            addr,
            log_file,
            rps: Vec::new(),
            p99: Vec::new(),
            cpu: Vec::new(),
            round_ratios: Vec::new(),
        }
    }
}
