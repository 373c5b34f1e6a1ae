//! Load harness (not a test): Portico's data plane against nginx doing the same job, and against
//! the upstream alone, on loopback, in one run.
//!
//! ```sh
//! cargo build --release && cargo run --release --example load -- [rounds] [seconds]
//! ```
//! Needs `wrk` and `nginx` (installed with `apt-get install -y wrk nginx` when missing and
//! running as root). Starts `portico echo` (the fixed upstream), a Portico data plane with 10
//! routes and one with 10,000 (`portico dp --config`, release binaries next to this example),
//! and nginx as a reverse proxy with upstream keep-alive, `access_log off`, as many workers as
//! cores. Each scenario runs every target `rounds` times, rotating which goes first, each run
//! bounded by `seconds` (plus a margin). It prints requests/s, p50/p99/max latency, CPU µs per
//! request and peak RSS per target (medians over the rounds), then Portico/nginx and
//! Portico/direct ratios. A third data plane runs key-auth, jwt (HS256) and rate-limiting
//! (local) for the `plugins-50` scenario, and `upload-1mb` POSTs 1 MiB bodies.
//! `LOAD_SCENARIOS=plain-50,10k-routes` runs a subset.
//!
//! Layouts (`LOAD_LAYOUT`: `pin`, the default, or `free`): see `examples/support/layout.rs`.

use std::process::{Command, Stdio};

#[path = "support/layout.rs"]
mod layout;
#[path = "support/procs.rs"]
mod procs;
#[path = "support/wrk.rs"]
mod wrk;
use procs::{spawn_dp, spawn_listening, Parent};
use wrk::{cpu_seconds, median, peak_rss, with_children};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Installs `tools` with apt-get when one is missing (needs root); exits with what to do
/// otherwise.
fn ensure_tools(tools: &[(&str, &str)]) {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(bin, _)| {
            !Command::new("sh")
                .args([
                    "-c",
                    &format!("command -v {bin} || test -x /usr/sbin/{bin}"),
                ])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return;
    }
    eprintln!("installing {}", missing.join(" "));
    let ok = Command::new("apt-get")
        .args(["install", "-y"])
        .args(&missing)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "cannot install {}: run `apt-get install -y {}` and try again",
            missing.join(" "),
            missing.join(" ")
        );
        std::process::exit(2);
    }
}

fn nginx_binary() -> String {
    if std::path::Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx".into()
    } else {
        "nginx".into()
    }
}

/// nginx as a reverse proxy to `upstream` with keep-alive, on `port`, files under `dir`.
fn start_nginx(
    dir: &std::path::Path,
    port: u16,
    h2_port: u16,
    upstream: &str,
    pin: Option<&str>,
    workers: usize,
) -> Parent {
    // The headers Portico adds by default (Kong's): nginx does the same job, so the upstream
    // sees and echoes the same request, and the client gets the same response headers.
    const SAME_HEADERS: &str = "      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
      proxy_set_header X-Forwarded-Proto $scheme;\n      proxy_set_header X-Forwarded-Host $host;\n\
      proxy_set_header X-Forwarded-Port $server_port;\n      proxy_set_header X-Forwarded-Path $request_uri;\n\
      proxy_set_header X-Forwarded-Prefix /bench;\n      proxy_set_header X-Real-IP $remote_addr;\n\
      proxy_set_header Via \"1.1 nginx\";\n      proxy_set_header X-Request-Id $request_id;\n\
      add_header Via \"1.1 nginx\";\n      add_header X-Upstream-Latency $upstream_response_time;\n\
      add_header X-Proxy-Latency 0;\n      add_header X-Request-Id $request_id;\n";
    let d = dir.display();
    let user = if is_root() { "user root;\n" } else { "" };
    let conf = format!(
        "{user}worker_processes {workers};\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           keepalive_requests 1000000;\n  client_max_body_size 2m;\n  upstream echo {{ server {upstream}; keepalive 512; }}\n\
           server {{\n    listen 127.0.0.1:{port} reuseport;\n    listen 127.0.0.1:{h2_port} http2;\n    http2_max_concurrent_streams 128;\n\
               location / {{\n      proxy_pass http://echo;\n\
               proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n{SAME_HEADERS}    }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let mut cmd = match pin {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus]).arg(nginx_binary());
            c
        }
        None => Command::new(nginx_binary()),
    };
    let child = cmd
        .args(["-p", &d.to_string(), "-c", &path.display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn nginx");
    // Ready when it accepts connections.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nginx did not start: see {d}/error.log"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Parent(child)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next().map(|u| u == "0"))
        .unwrap_or(false)
}

fn routes_config(upstream: &str, routes: usize) -> String {
    let mut s = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: bench\n    url: http://{upstream}\n    routes:\n      - name: bench\n        paths: [/bench]\n"
    );
    for i in 1..routes {
        s.push_str(&format!(
            "      - name: r{i}\n        paths: [/r{i}/items]\n        methods: [GET]\n"
        ));
    }
    s
}

/// A target under load: its address and the processes whose CPU and memory count.
struct Target {
    name: &'static str,
    addr: String,
    pid: u32,
}

#[derive(Default)]
struct Samples {
    rps: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    max: Vec<f64>,
    cpu_us: Vec<f64>,
}

struct Scenario {
    name: &'static str,
    connections: usize,
    close: bool,
    /// Indexes into the targets.
    targets: Vec<usize>,
    /// What each request carries: the auth headers of the plugins scenario, or a 1 MB body.
    load: Load,
}

#[derive(Clone, Copy, PartialEq)]
enum Load {
    Get,
    /// `apikey` and a bearer HS256 token (the plugins scenario).
    Authenticated,
    /// POST with a 1 MiB body (a wrk Lua script).
    Upload,
    /// GET of a 1 MiB response (`portico echo`'s `bytes=` query).
    Download,
    /// HTTP/2 with prior knowledge from h2load, 10 streams per connection.
    Http2,
}

/// Concurrent streams per connection in the HTTP/2 scenario.
const H2_STREAMS: usize = 10;

/// The plugins scenario's route: key-auth, jwt (HS256) and rate-limiting (local, a limit the
/// run never reaches, so every request is counted and passes).
fn plugins_config(upstream: &str) -> String {
    format!(
        "_format_version: \"3.0\"\nservices:\n  - name: bench\n    url: http://{upstream}\n    routes:\n      - name: bench\n        paths: [/bench]\n        plugins:\n          - name: key-auth\n          - name: jwt\n          - name: rate-limiting\n            config: {{second: 1000000000, policy: local}}\nconsumers:\n  - username: bench\n    keyauth_credentials:\n      - key: bench-key\n    jwt_secrets:\n      - key: bench-iss\n        secret: {JWT_SECRET}\n        algorithm: HS256\n"
    )
}

/// Made up for the run; the harness signs its own token with it.
const JWT_SECRET: &str = "load-harness-secret-0123456789abcdef";

fn bench_token() -> String {
    let claims = serde_json::json!({"iss": "bench-iss", "sub": "bench", "exp": 4_102_444_800u64});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("sign the bench token")
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rounds = args.first().copied().unwrap_or(3).max(1);
    let seconds = args.get(1).copied().unwrap_or(5).max(1);
    ensure_tools(&[
        ("wrk", "wrk"),
        ("nginx", "nginx"),
        ("h2load", "nghttp2-client"),
    ]);

    let layout = layout::Layout::from_env();
    let pin = layout.server.as_deref();
    let client_cpus = layout.client.clone();
    let workers = layout.workers;

    let tmp = tempfile::tempdir().unwrap();
    let echo_port = free_port();
    // The proxies' upstream, beside wrk.
    let (_echo_proc, echo) = spawn_listening(
        &[
            "echo".into(),
            "--listen".into(),
            format!("127.0.0.1:{echo_port}"),
        ],
        "echo",
        client_cpus.as_deref(),
    );
    // The "direct" target: the same upstream where the proxies run.
    let (direct_proc, direct) = spawn_listening(
        &["echo".into(), "--listen".into(), "127.0.0.1:0".into()],
        "echo",
        pin,
    );
    let dp = |routes: usize| {
        let config = tmp.path().join(format!("kong-{routes}.yml"));
        std::fs::write(&config, routes_config(&echo, routes)).unwrap();
        spawn_dp(&config, &[], pin)
    };
    let (dp10_proc, dp10) = dp(10);
    let (dp10k_proc, dp10k) = dp(10_000);
    let (plugins_proc, plugins) = {
        let config = tmp.path().join("kong-plugins.yml");
        std::fs::write(&config, plugins_config(&echo)).unwrap();
        spawn_dp(&config, &[], pin)
    };
    let upload_script = tmp.path().join("upload.lua");
    std::fs::write(
        &upload_script,
        "wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", 1048576)\nwrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n",
    )
    .unwrap();
    let token_header = format!("Authorization: Bearer {}", bench_token());
    let nginx_port = free_port();
    let nginx_h2_port = free_port();
    let nginx = start_nginx(tmp.path(), nginx_port, nginx_h2_port, &echo, pin, workers);

    let targets = [
        Target {
            name: "direct",
            addr: direct,
            pid: direct_proc.0.id(),
        },
        Target {
            name: "nginx",
            addr: format!("127.0.0.1:{nginx_port}"),
            pid: nginx.0.id(),
        },
        Target {
            name: "portico",
            addr: dp10,
            pid: dp10_proc.0.id(),
        },
        Target {
            name: "portico-10k",
            addr: dp10k,
            pid: dp10k_proc.0.id(),
        },
        Target {
            name: "portico-plugins",
            addr: plugins,
            pid: plugins_proc.0.id(),
        },
        // nginx's HTTP/2 (h2c) listener; Portico and the echo upstream take h2c on their one.
        Target {
            name: "nginx-h2",
            addr: format!("127.0.0.1:{nginx_h2_port}"),
            pid: nginx.0.id(),
        },
    ];
    let scenarios = [
        Scenario {
            name: "plain-1",
            connections: 1,
            close: false,
            targets: vec![0, 1, 2],
            load: Load::Get,
        },
        Scenario {
            name: "plain-50",
            connections: 50,
            close: false,
            targets: vec![0, 1, 2],
            load: Load::Get,
        },
        Scenario {
            name: "plain-256",
            connections: 256,
            close: false,
            targets: vec![0, 1, 2],
            load: Load::Get,
        },
        Scenario {
            name: "new-connection-50",
            connections: 50,
            close: true,
            targets: vec![0, 1, 2],
            load: Load::Get,
        },
        Scenario {
            name: "10k-routes",
            connections: 50,
            close: false,
            targets: vec![2, 3],
            load: Load::Get,
        },
        Scenario {
            name: "plugins-50",
            connections: 50,
            close: false,
            targets: vec![1, 2, 4],
            load: Load::Authenticated,
        },
        Scenario {
            name: "upload-1mb",
            connections: 50,
            close: false,
            targets: vec![0, 1, 2],
            load: Load::Upload,
        },
        Scenario {
            name: "download-1mb",
            connections: 50,
            close: false,
            targets: vec![0, 1, 2],
            load: Load::Download,
        },
        Scenario {
            name: "h2-50",
            connections: 50,
            close: false,
            targets: vec![0, 5, 2],
            load: Load::Http2,
        },
    ];
    let only = std::env::var("LOAD_SCENARIOS").unwrap_or_default();
    let only: Vec<&str> = only.split(',').filter(|s| !s.is_empty()).collect();

    println!(
        "load harness: {}; wrk -t1, {rounds} rounds x {seconds} s per target, order rotated each round",
        layout.describe()
    );
    println!(
        "upstream `portico echo`; nginx {workers} worker(s) with upstream keep-alive; portico dp --config (10 and 10,000 routes); peak RSS is the process's peak so far"
    );
    for scenario in &scenarios {
        if !only.is_empty() && !only.contains(&scenario.name) {
            continue;
        }
        let mut samples: Vec<Samples> = targets.iter().map(|_| Samples::default()).collect();
        let mut extra: Vec<&str> = if scenario.close {
            vec!["-H", "Connection: close"]
        } else {
            Vec::new()
        };
        match scenario.load {
            Load::Get => {}
            Load::Authenticated => {
                extra.extend(["-H", "apikey: bench-key", "-H", token_header.as_str()])
            }
            Load::Upload => extra.extend(["-s", upload_script.to_str().unwrap()]),
            Load::Download | Load::Http2 => {}
        }
        let url = |t: &Target| match scenario.load {
            Load::Download => format!("http://{}/bench?bytes=1048576", t.addr),
            _ => format!("http://{}/bench", t.addr),
        };
        let run = |t: &Target, seconds: u64| match scenario.load {
            Load::Http2 => layout.h2load(&url(t), seconds, scenario.connections, H2_STREAMS),
            _ => layout.wrk(&url(t), seconds, scenario.connections, &extra),
        };
        // Warm every target (connection pools, allocators).
        for &i in &scenario.targets {
            run(&targets[i], 1);
        }
        for round in 0..rounds as usize {
            let n = scenario.targets.len();
            for k in 0..n {
                let i = scenario.targets[(k + round) % n];
                let t = &targets[i];
                let pids = with_children(t.pid);
                let before: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
                let r = run(t, seconds);
                let after: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
                let s = &mut samples[i];
                s.rps.push(r.rps);
                s.p50.push(r.p50_ms);
                s.p99.push(r.p99_ms);
                s.max.push(r.max_ms);
                s.cpu_us
                    .push((after - before) * 1e6 / r.requests.max(1) as f64);
            }
        }
        println!(
            "\n{} ({} connections{})",
            scenario.name,
            scenario.connections,
            match (scenario.close, scenario.load) {
                (_, Load::Http2) =>
                    ", HTTP/2 prior knowledge, 10 streams each (h2load: p50 is the mean, no p99)",
                (true, _) => ", Connection: close",
                (false, _) => ", keep-alive",
            }
        );
        println!(
            "  {:<16} {:>10} {:>9} {:>9} {:>9} {:>12} {:>10}",
            "target", "req/s", "p50 ms", "p99 ms", "max ms", "CPU µs/req", "peak RSS"
        );
        let mut med = std::collections::HashMap::new();
        for &i in &scenario.targets {
            let t = &targets[i];
            let s = std::mem::take(&mut samples[i]);
            let rss: u64 = with_children(t.pid).iter().map(|p| peak_rss(*p)).sum();
            let (rps, p99) = (median(s.rps), median(s.p99));
            println!(
                "  {:<16} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>12.1} {:>7.1} MB",
                t.name,
                rps,
                median(s.p50),
                p99,
                median(s.max),
                median(s.cpu_us),
                rss as f64 / 1e6
            );
            med.insert(t.name, (rps, p99));
        }
        if let (Some(p), Some(n)) = (med.get("portico"), med.get("nginx-h2")) {
            println!("  portico/nginx over HTTP/2: requests/s {:.3}", p.0 / n.0);
        }
        if let (Some(p), Some(n)) = (med.get("portico"), med.get("nginx")) {
            println!(
                "  portico/nginx: requests/s {:.3}, p99 {:.3}",
                p.0 / n.0,
                p.1 / n.1
            );
        }
        if let (Some(p), Some(d)) = (med.get("portico"), med.get("direct")) {
            println!("  portico/direct: requests/s {:.3}", p.0 / d.0);
        }
        if let (Some(p), Some(k)) = (med.get("portico"), med.get("portico-10k")) {
            println!("  10,000 routes / 10 routes: requests/s {:.3}", k.0 / p.0);
        }
        if let (Some(p), Some(k)) = (med.get("portico"), med.get("portico-plugins")) {
            println!(
                "  key-auth + jwt + rate-limiting / plain portico: requests/s {:.3}",
                k.0 / p.0
            );
        }
        if let (Some(k), Some(n)) = (med.get("portico-plugins"), med.get("nginx")) {
            println!(
                "  portico with plugins / plain nginx: requests/s {:.3}",
                k.0 / n.0
            );
        }
    }
    drop(nginx);
}
