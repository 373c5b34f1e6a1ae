//! Propagation benchmark (not a test): how long a config takes from `apply` to "every data plane
//! ACKed", for a 10,000-route config and then for a one-route change, and how much memory each
//! data plane uses at 10,000 routes.
//!
//! ```sh
//! cargo build --release && cargo run --release --example propagation -- [data-planes] [routes] [rounds]
//! ```
//! Starts the real `portico cp` and N `portico dp` processes on loopback (release binaries next
//! to this example), applies through the admin gRPC API what `portico apply -f` sends (the
//! YAML config as compact JSON, `portico_common::load::transport_text`) and polls the fleet
//! every 2 ms.
//! "stored" is the control plane's part (parse, validate, diff, fsync), measured at the client;
//! "push" is from there to the last ACK; "data-plane apply" is what each data plane reports in
//! its ACK (decode, hash check, compile, swap; the disk cache is written after the ACK). The
//! rest of "push" is transfer and waiting for CPU when many data planes share few cores.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portico_proto::v1::admin_client::AdminClient;
use portico_proto::v1::{ApplyRequest, FleetRequest};

#[path = "support/procs.rs"]
mod procs;
use procs::{binary, Proc};

/// Spawns portico with JSON logs and returns it with the addresses it reported for `names`.
fn spawn(
    args: &[String],
    names: &[&str],
) -> (
    Proc,
    Vec<String>,
    std::sync::mpsc::Receiver<serde_json::Value>,
) {
    let mut child = Command::new(binary())
        .args(["--log-format", "json"])
        .args(args)
        .env("PORTICO_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn portico");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut addrs = Vec::new();
    for name in names {
        let needle = format!("{name} listening");
        loop {
            let line = lines.next().expect("portico exited").unwrap();
            if line.contains(&needle) {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                addrs.push(v["addr"].as_str().unwrap().to_string());
                break;
            }
        }
    }
    // Keep draining stderr so the process never blocks on a full pipe, and report each
    // version the process says it cached (data planes write their cache after the ACK).
    let (tx, cached) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.contains("config cached") || line.contains("config applied") {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        }
    });
    (Proc(child), addrs, cached)
}

/// Waits until every data plane has cached `version`, so the next round starts from a quiet
/// fleet rather than racing the previous round's cache writes for the two cores.
fn settle(cached: &[std::sync::mpsc::Receiver<serde_json::Value>], version: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for rx in cached {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(v) if v["config_version"].as_u64() >= Some(version) => break,
                Ok(_) => {}
                Err(_) => panic!("a data plane did not cache version {version} within 10 s"),
            }
        }
    }
}

fn config(routes: usize, variant: usize) -> String {
    let mut s = String::from("_format_version: \"3.0\"\nservices:\n");
    let per = 100;
    for svc in 0..routes.div_ceil(per) {
        s.push_str(&format!(
            "  - name: svc{svc}\n    url: http://127.0.0.1:9/base{svc}\n    routes:\n"
        ));
        for r in 0..per.min(routes - svc * per) {
            let i = svc * per + r;
            // One route differs between variants: the "one-route change".
            let v = if i == 0 { variant } else { 0 };
            match i % 5 {
                0 => s.push_str(&format!("      - name: r{i}\n        paths: [\"~/api/v{i}/items/\\\\d+$\", \"/changed{v}\"]\n")),
                1 => s.push_str(&format!("      - name: r{i}\n        hosts: [\"h{i}.example.com\", \"*.w{i}.example.com\"]\n        paths: [\"/p{i}\"]\n")),
                _ => s.push_str(&format!("      - name: r{i}\n        paths: [\"/api/v{i}/res\", \"/alt/{i}\"]\n        methods: [GET, POST]\n")),
            }
        }
    }
    s
}

fn rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (dps, routes, rounds) = (
        args.first().copied().unwrap_or(10),
        args.get(1).copied().unwrap_or(10_000),
        args.get(2).copied().unwrap_or(5),
    );
    let tmp = tempfile::tempdir().unwrap();
    let (_cp, addrs, cp_log) = spawn(
        &[
            "cp".into(),
            "--data-dir".into(),
            tmp.path().join("cp").display().to_string(),
            "--admin-listen".into(),
            "127.0.0.1:0".into(),
            "--cluster-listen".into(),
            "127.0.0.1:0".into(),
        ],
        &["admin", "cluster"],
    );
    let (admin, cluster) = (addrs[0].clone(), addrs[1].clone());
    let (mut planes, mut cached) = (Vec::new(), Vec::new());
    for i in 0..dps {
        let (p, _, c) = spawn(
            &[
                "dp".into(),
                "--control-plane".into(),
                format!("http://{cluster}"),
                "--node-id".into(),
                format!("dp-{i}"),
                "--cache-dir".into(),
                tmp.path().join(format!("c{i}")).display().to_string(),
                "--proxy-listen".into(),
                "127.0.0.1:0".into(),
                "--proxy-listen-tls".into(),
                "off".into(),
                "--status-listen".into(),
                "127.0.0.1:0".into(),
            ],
            &["proxy"],
        );
        planes.push(p);
        cached.push(c);
    }
    let mut client = AdminClient::connect(format!("http://{admin}"))
        .await
        .unwrap()
        .max_encoding_message_size(256 << 20)
        .max_decoding_message_size(256 << 20);
    // Wait for every data plane to say hello.
    loop {
        let f = client
            .fleet(FleetRequest::default())
            .await
            .unwrap()
            .into_inner();
        if f.data_planes
            .iter()
            .filter(|d| d.state != "disconnected")
            .count()
            == dps
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let apply = |variant: usize| {
        // What `portico apply -f` sends: the parsed document as compact JSON. Converting is
        // the CLI's work before the request, so it is outside the measured time.
        let yaml = config(routes, variant);
        let converted = Instant::now();
        let text = portico_common::load::transport_text(&yaml).into_owned();
        if std::env::var_os("PROPAGATION_VERBOSE").is_some() {
            println!(
                "  CLI: YAML to JSON {:.1} ms ({} to {} bytes)",
                converted.elapsed().as_secs_f64() * 1e3,
                yaml.len(),
                text.len()
            );
        }
        let mut client = client.clone();
        async move {
            let t = Instant::now();
            let r = client
                .apply(ApplyRequest {
                    group: "default".into(),
                    config_text: text,
                })
                .await
                .unwrap()
                .into_inner();
            assert!(r.accepted, "{:?}", r.errors);
            let stored = t.elapsed();
            loop {
                let f = client
                    .fleet(FleetRequest::default())
                    .await
                    .unwrap()
                    .into_inner();
                let acked = f
                    .data_planes
                    .iter()
                    .filter(|d| d.serving_version == r.version)
                    .count();
                assert!(
                    !f.data_planes.iter().any(|d| d.state == "nacked"),
                    "a data plane NACKed"
                );
                if acked == dps {
                    let mut apply: Vec<f64> = f
                        .data_planes
                        .iter()
                        .map(|d| d.last_apply_micros as f64 / 1e3)
                        .collect();
                    return (stored, t.elapsed(), median(&mut apply), r.version);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };

    println!("{dps} data planes, {routes} routes");
    let (stored, all, dp_apply, version) = apply(1).await;
    settle(&cached, version);
    println!(
        "full config:       stored after {:>7.1} ms, all ACKed after {:>7.1} ms (push {:>7.1} ms), data-plane apply {:>6.1} ms (median)",
        stored.as_secs_f64() * 1e3,
        all.as_secs_f64() * 1e3,
        (all - stored).as_secs_f64() * 1e3,
        dp_apply
    );
    let (mut st, mut al, mut pu, mut ap) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (stored, all, dp_apply, version) = apply(2 + round).await;
        settle(&cached, version);
        st.push(stored.as_secs_f64() * 1e3);
        al.push(all.as_secs_f64() * 1e3);
        pu.push((all - stored).as_secs_f64() * 1e3);
        if std::env::var_os("PROPAGATION_VERBOSE").is_some() {
            // The control plane's own account of the stored phase.
            let cp = cp_log
                .try_iter()
                .filter(|v| v["config_version"].as_u64() == Some(version))
                .last()
                .unwrap_or_default();
            println!(
                "  round {round}: stored {:.1} ms (validate {:.1}, store {:.1}), push {:.1} ms, apply {dp_apply:.1} ms",
                stored.as_secs_f64() * 1e3,
                cp["validate_ms"].as_f64().unwrap_or(f64::NAN),
                cp["store_ms"].as_f64().unwrap_or(f64::NAN),
                (all - stored).as_secs_f64() * 1e3
            );
        }
        ap.push(dp_apply);
    }
    println!(
        "one-route change:  stored after {:>7.1} ms, all ACKed after {:>7.1} ms (push {:>7.1} ms), data-plane apply {:>6.1} ms (medians of {rounds})",
        median(&mut st),
        median(&mut al),
        median(&mut pu),
        median(&mut ap)
    );
    let mut rss: Vec<f64> = planes.iter().map(|p| rss_mib(p.0.id())).collect();
    let max = rss.iter().copied().fold(0.0, f64::max);
    println!(
        "data-plane RSS at {routes} routes: median {:.1} MiB, max {max:.1} MiB",
        median(&mut rss)
    );
}
