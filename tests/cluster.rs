//! End to end: `portico cp`, data planes fed by it, and the CLI, as real processes.

#[path = "support/binary.rs"]
mod binary;
#[path = "../data-plane/tests/support/harness.rs"]
mod harness;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use binary::{eventually, portico, Portico};
use harness::{get, Upstream};

/// Runs the CLI; returns (exit code, stdout, stderr).
async fn cli(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = portico().args(&args).output().expect("run portico");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A config routing /app to `upstream` with the service path `/v{version}`.
fn config(upstream: std::net::SocketAddr, version: u32) -> String {
    format!(
        "_format_version: \"3.0\"\nservices:\n  - name: app\n    url: http://{upstream}/v{version}\n    routes:\n      - name: app\n        paths: [\"/app\"]\n"
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

async fn apply(cp: &Portico, file: &str, group: &str, wait: bool) -> (i32, String, String) {
    let mut a = args(&[
        "apply",
        "-f",
        file,
        "--group",
        group,
        "--admin-url",
        &cp.admin_url(),
    ]);
    if wait {
        a.extend(args(&["--wait", "--wait-timeout", "20"]));
    }
    cli(a).await
}

/// The cell of `column` in the row starting with `row` of a table `portico` printed (columns
/// start where their header does).
fn cell(table: &str, row: &str, column: &str) -> String {
    let header = table
        .lines()
        .find(|l| l.contains(column))
        .unwrap_or_else(|| panic!("no {column} column:\n{table}"));
    let start = header.find(column).unwrap();
    let end = header[start + column.len()..]
        .find(|c: char| c != ' ')
        .map(|i| start + column.len() + i);
    let line = table
        .lines()
        .find(|l| l.starts_with(row))
        .unwrap_or_else(|| panic!("no {row} row:\n{table}"));
    let end = end.unwrap_or(line.len()).min(line.len());
    line.get(start..end).unwrap_or("").trim().to_owned()
}

/// What a data plane's proxy answers for /app/x (the upstream echoes its name and path).
async fn served(dp: &Portico) -> String {
    get(&format!("http://{}/app/x", dp.proxy), &[]).await.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_reaches_every_data_plane_of_its_group_and_only_those() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let tmp = tempfile::tempdir().unwrap();
    let cp = Portico::cp(&tmp.path().join("cp"), &[]);
    let edge1 = Portico::dp_cluster(
        &cp.cluster_url(),
        "edge",
        "edge-1",
        &tmp.path().join("c1"),
        &[],
    );
    let edge2 = Portico::dp_cluster(
        &cp.cluster_url(),
        "edge",
        "edge-2",
        &tmp.path().join("c2"),
        &[],
    );
    let bff = Portico::dp_cluster(
        &cp.cluster_url(),
        "bff",
        "bff-1",
        &tmp.path().join("c3"),
        &[],
    );

    // Not ready before any config exists for their group.
    assert_eq!(
        get(&format!("http://{}/status/ready", edge1.status), &[])
            .await
            .status,
        503
    );

    let f = write(tmp.path(), "edge.yml", &config(a.addr, 1));
    let (code, out, err) = apply(&cp, &f, "edge", true).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("applied version"), "{out}");
    assert_eq!(
        out.matches("ACK").count(),
        2,
        "both edge data planes ACK:\n{out}"
    );
    let f = write(tmp.path(), "bff.yml", &config(b.addr, 7));
    let (code, out, err) = apply(&cp, &f, "bff", true).await;
    assert_eq!(code, 0, "{out}{err}");

    assert_eq!(served(&edge1).await, "a /v1/x");
    assert_eq!(served(&edge2).await, "a /v1/x");
    assert_eq!(served(&bff).await, "b /v7/x");

    let (code, out, _) = cli(args(&["status", "--admin-url", &cp.admin_url()])).await;
    assert_eq!(code, 0);
    for node in ["edge-1", "edge-2", "bff-1"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_else(|| panic!("{node} missing:\n{out}"));
        assert!(line.contains("in_sync"), "{line}");
    }
    // The REST view agrees.
    let v = get(&format!("http://{}/clustering/data-planes", cp.admin), &[])
        .await
        .json();
    assert_eq!(v["data"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_planes_outlive_the_control_plane_and_resume_without_a_repush() {
    let up = Upstream::echo("a").await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cp");
    let cache = tmp.path().join("cache");
    // Fixed ports so the restarted control plane is where the data plane looks for it.
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string()
    };
    let (admin, cluster) = (free(), free());
    let cp_args = [
        "--admin-listen",
        admin.as_str(),
        "--cluster-listen",
        cluster.as_str(),
    ];
    let start_cp = || {
        let mut cmd = portico();
        cmd.args(["--log-format", "json", "cp", "--data-dir"])
            .arg(&data)
            .args(cp_args);
        Portico::spawn_waiting(cmd, &["admin", "cluster"])
    };
    let url = format!("http://{cluster}");

    let mut cp = start_cp();
    let mut dp = Portico::dp_cluster(&url, "default", "dp-1", &cache, &[]);
    let f = write(tmp.path(), "v1.yml", &config(up.addr, 1));
    let (code, out, err) = apply(&cp, &f, "default", true).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(served(&dp).await, "a /v1/x");
    // The cache is written just after the ACK, off the apply path.
    dp.wait_log(|l| l.contains("config cached"), Duration::from_secs(10));

    // Control plane gone: the data plane keeps serving.
    let _ = cp.child.kill();
    let _ = cp.child.wait();
    assert_eq!(served(&dp).await, "a /v1/x");

    // Restarted while the control plane is down: it boots from its cache.
    drop(dp);
    let mut dp = Portico::dp_cluster(&url, "default", "dp-1", &cache, &[]);
    dp.wait_log(
        |l| l.contains("serving cached config"),
        Duration::from_secs(10),
    );
    assert_eq!(
        get(&format!("http://{}/status/ready", dp.status), &[])
            .await
            .status,
        200
    );
    assert_eq!(served(&dp).await, "a /v1/x");

    // Control plane back: the data plane reconnects, says what it serves, and gets no re-push.
    cp = start_cp();
    let status_url = format!("http://{}/status", dp.status);
    let v = eventually(
        "the data plane to reconnect",
        Duration::from_secs(30),
        || {
            let u = status_url.clone();
            async move {
                let v = get(&u, &[]).await.json();
                (v["control_plane"]["connected"] == true).then_some(v)
            }
        },
    )
    .await;
    assert_eq!(
        v["control_plane"]["serving_version"], 1,
        "no version regression: {v}"
    );
    let admin_url = cp.admin_url();
    let (_, out, _) = eventually(
        "the fleet to show dp-1 in sync",
        Duration::from_secs(10),
        || {
            let a = args(&["status", "--admin-url", &admin_url]);
            async move {
                let r = cli(a).await;
                r.1.lines()
                    .any(|l| l.starts_with("dp-1") && l.contains("in_sync"))
                    .then_some(r)
            }
        },
    )
    .await;
    assert!(out.contains("dp-1"));
    dp.pump_logs();
    let applies = dp
        .log_lines
        .iter()
        .filter(|l| l.contains("config applied"))
        .count();
    assert_eq!(
        applies, 1,
        "only the cached config was applied; the control plane re-pushed nothing"
    );
    assert_eq!(served(&dp).await, "a /v1/x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_configs_change_nothing_and_nacked_ones_are_parked_and_visible() {
    let up = Upstream::echo("a").await;
    let tmp = tempfile::tempdir().unwrap();
    let cp = Portico::cp(&tmp.path().join("cp"), &[]);
    // This node runs only key-auth (Kong's `plugins` property), as a node of an older build
    // would: a config using another plugin is valid for the control plane but not runnable here.
    let dp = Portico::dp_cluster(
        &cp.cluster_url(),
        "default",
        "dp-1",
        &tmp.path().join("c"),
        &["--plugins", "key-auth"],
    );
    let f = write(tmp.path(), "v1.yml", &config(up.addr, 1));
    assert_eq!(apply(&cp, &f, "default", true).await.0, 0);

    // Invalid: refused by the CLI (locally) and by the control plane; nothing changes.
    let bad = write(tmp.path(), "bad.yml", "_format_version: \"3.0\"\nservices:\n  - name: app\n    url: http://x\n    routes:\n      - paths: [\"~/(\"]\n");
    let (code, _, err) = apply(&cp, &bad, "default", false).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("services[0].routes[0].paths[0]") && err.contains("invalid regex"),
        "{err}"
    );
    let v = get(&format!("http://{}/config?group=default", cp.admin), &[])
        .await
        .json();
    assert_eq!(v["version"], 1, "{v}");
    let (status, _) = {
        let r = harness::send(
            http::Request::post(format!("http://{}/config?group=default", cp.admin))
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    b"_format_version: \"3.0\"\nservices:\n  - name: x\n    pathz: 1\n",
                )))
                .unwrap(),
        )
        .await;
        (r.status, r.body)
    };
    assert_eq!(status, 400);

    // Valid for the control plane, but this data plane does not run the plugin: NACKed,
    // parked, visible, and the data plane keeps serving v1.
    let plugin = format!(
        "{}    plugins:\n      - name: ip-restriction\n        config: {{ allow: [127.0.0.1] }}\n",
        config(up.addr, 2)
    );
    let f2 = write(tmp.path(), "v2.yml", &plugin);
    let (code, out, err) = apply(&cp, &f2, "default", true).await;
    assert_eq!(code, 3, "--wait reports the NACK: {out}{err}");
    assert!(
        out.contains("NACK") && out.contains("ip-restriction"),
        "{out}"
    );
    assert_eq!(served(&dp).await, "a /v1/x");
    let (_, out, _) = cli(args(&["status", "--admin-url", &cp.admin_url()])).await;
    let line = out.lines().find(|l| l.starts_with("dp-1")).unwrap();
    assert!(line.contains("nacked v2"), "{line}");
    // The errors are listed under the table, one per line with its path.
    assert!(
        out.contains("dp-1 refused version 2")
            && out.contains(
                "\n  plugins[0] (ip-restriction).name: plugin 'ip-restriction' is not enabled"
            ),
        "{out}"
    );

    // A newer good version replaces the parked one.
    let f3 = write(tmp.path(), "v3.yml", &config(up.addr, 3));
    let (code, out, _) = apply(&cp, &f3, "default", true).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(served(&dp).await, "a /v3/x");
    let (_, out, _) = cli(args(&["history", "--admin-url", &cp.admin_url()])).await;
    assert_eq!(
        out.lines().count(),
        1 + 3,
        "header + versions 3, 2, 1:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_nodes_propagation_time_lag_and_refusal() {
    let up = Upstream::echo("a").await;
    let tmp = tempfile::tempdir().unwrap();
    let cp = Portico::cp(&tmp.path().join("cp"), &[]);
    let ok = Portico::dp_cluster(
        &cp.cluster_url(),
        "default",
        "dp-ok",
        &tmp.path().join("c1"),
        &[],
    );
    // Runs only key-auth, so it refuses a config using ip-restriction.
    let old = Portico::dp_cluster(
        &cp.cluster_url(),
        "default",
        "dp-old",
        &tmp.path().join("c2"),
        &["--plugins", "key-auth"],
    );
    let f = write(tmp.path(), "v1.yml", &config(up.addr, 1));
    let (code, out, err) = apply(&cp, &f, "default", true).await;
    assert_eq!(code, 0, "{out}{err}");
    let plugin = format!(
        "{}    plugins:\n      - name: ip-restriction\n        config: {{ allow: [127.0.0.1] }}\n",
        config(up.addr, 2)
    );
    let f2 = write(tmp.path(), "v2.yml", &plugin);
    let (code, out, err) = apply(&cp, &f2, "default", true).await;
    assert_eq!(code, 3, "dp-old NACKs: {out}{err}");
    assert_eq!(served(&ok).await, "a /v2/x");
    assert_eq!(served(&old).await, "a /v1/x");

    let live = get(&format!("http://{}/config?group=default", cp.admin), &[])
        .await
        .json();
    let nodes = get(&format!("http://{}/clustering/data-planes", cp.admin), &[])
        .await
        .json();
    let node = |id: &str| {
        nodes["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} missing: {nodes}"))
    };
    // In sync: how long v2 took to reach it, nothing behind.
    let n = node("dp-ok");
    assert_eq!(n["state"], "in_sync", "{n}");
    assert_eq!(n["serving_version"], live["version"], "{n}");
    let propagation = n["propagation_ms"].as_f64().unwrap_or(0.0);
    assert!(propagation > 0.0 && propagation < 20_000.0, "{n}");
    assert_eq!(n["behind_versions"], 0, "{n}");
    assert!(n["out_of_sync_since"].is_null(), "{n}");
    // Refused v2: its error with the entity path, one version behind since v2 was applied.
    let n = node("dp-old");
    assert_eq!(n["state"], "nacked", "{n}");
    assert_eq!(n["nacked_version"], live["version"], "{n}");
    assert_eq!(
        n["nack_errors"][0]["path"], "plugins[0] (ip-restriction).name",
        "{n}"
    );
    let message = n["nack_errors"][0]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("'ip-restriction' is not enabled on this data plane"),
        "{n}"
    );
    assert_eq!(n["behind_versions"], 1, "{n}");
    assert_eq!(n["out_of_sync_since"], live["applied_at"], "{n}");
    assert!(n["out_of_sync_for_ms"].as_u64().is_some(), "{n}");
    assert!(
        n["propagation_ms"].as_f64().unwrap_or(0.0) > 0.0,
        "v1's time stays: {n}"
    );

    // The CLI: a PROPAGATION and a LAG column, the refusal spelled out under the table.
    let (code, out, _) = cli(args(&["status", "--admin-url", &cp.admin_url()])).await;
    assert_eq!(code, 0, "{out}");
    let header = out.lines().find(|l| l.starts_with("DATA PLANE")).unwrap();
    assert!(
        header.contains("PROPAGATION") && header.contains("LAG"),
        "{out}"
    );
    let ok_propagation = cell(&out, "dp-ok", "PROPAGATION");
    assert!(
        ok_propagation.ends_with(" ms") || ok_propagation.ends_with(" s"),
        "{out}"
    );
    assert_eq!(cell(&out, "dp-ok", "LAG"), "-", "{out}");
    assert_eq!(cell(&out, "dp-ok", "STATE"), "in_sync", "{out}");
    assert!(
        cell(&out, "dp-old", "LAG").starts_with("1 behind, "),
        "{out}"
    );
    assert_eq!(
        cell(&out, "dp-old", "STATE"),
        format!("nacked v{}", live["version"]),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "dp-old refused version {} (1 error):\n  plugins[0] (ip-restriction).name: plugin 'ip-restriction' is not enabled",
            live["version"]
        )),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_plane_with_a_certificate_from_another_ca_is_refused() {
    let up = Upstream::echo("a").await;
    let tmp = tempfile::tempdir().unwrap();
    let (ours, theirs) = (tmp.path().join("ours"), tmp.path().join("theirs"));
    for d in [&ours, &theirs] {
        let out = portico()
            .args(["certs", "init", "--out"])
            .arg(d)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let p = |d: &Path, f: &str| d.join(f).display().to_string();
    let mut cp = Portico::cp(
        &tmp.path().join("cp"),
        &[
            "--cluster-cert",
            &p(&ours, "cp.crt"),
            "--cluster-key",
            &p(&ours, "cp.key"),
            "--cluster-ca",
            &p(&ours, "ca.crt"),
        ],
    );
    let url = format!("https://localhost:{}", cp.cluster.port());
    let f = write(tmp.path(), "v1.yml", &config(up.addr, 1));
    assert_eq!(apply(&cp, &f, "default", false).await.0, 0);

    let good = Portico::dp_cluster(
        &url,
        "default",
        "good",
        &tmp.path().join("c1"),
        &[
            "--cluster-cert",
            &p(&ours, "dp.crt"),
            "--cluster-key",
            &p(&ours, "dp.key"),
            "--cluster-ca",
            &p(&ours, "ca.crt"),
        ],
    );
    let ready = format!("http://{}/status/ready", good.status);
    eventually(
        "the mTLS data plane to get its config",
        Duration::from_secs(20),
        || {
            let u = ready.clone();
            async move { (get(&u, &[]).await.status == 200).then_some(()) }
        },
    )
    .await;
    assert_eq!(served(&good).await, "a /v1/x");

    // Trusts our control plane, but its own certificate comes from another CA.
    let mut bad = Portico::dp_cluster(
        &url,
        "default",
        "intruder",
        &tmp.path().join("c2"),
        &[
            "--cluster-cert",
            &p(&theirs, "dp.crt"),
            "--cluster-key",
            &p(&theirs, "dp.key"),
            "--cluster-ca",
            &p(&ours, "ca.crt"),
        ],
    );
    cp.wait_log(
        |l| l.contains("certificate") && (l.contains("refused") || l.contains("rejected")),
        Duration::from_secs(20),
    );
    bad.wait_log(
        |l| l.to_ascii_lowercase().contains("tls") || l.contains("certificate"),
        Duration::from_secs(20),
    );
    assert_eq!(
        get(&format!("http://{}/status/ready", bad.status), &[])
            .await
            .status,
        503
    );
    let v = get(&format!("http://{}/clustering/data-planes", cp.admin), &[])
        .await
        .json();
    assert!(
        !v.to_string().contains("intruder"),
        "a refused data plane never joins the fleet: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_applies_under_load_fail_no_request() {
    let up = Upstream::echo("a").await;
    let tmp = tempfile::tempdir().unwrap();
    let cp = Portico::cp(&tmp.path().join("cp"), &[]);
    let dp = Portico::dp_cluster(
        &cp.cluster_url(),
        "default",
        "dp-1",
        &tmp.path().join("c"),
        &[],
    );
    let f = write(tmp.path(), "v0.yml", &config(up.addr, 0));
    assert_eq!(apply(&cp, &f, "default", true).await.0, 0);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let proxy = dp.proxy;
    let mut workers = Vec::new();
    for _ in 0..200 {
        let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let got = get(&format!("http://{proxy}/app/x"), &[]).await;
                if got.status == 200 && got.body.starts_with("a /v") {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed
                        .lock()
                        .unwrap()
                        .push(format!("{}: {}", got.status, got.body));
                }
            }
        }));
    }
    for i in 1..=20 {
        let f = write(tmp.path(), &format!("v{i}.yml"), &config(up.addr, i));
        let (code, out, err) = apply(&cp, &f, "default", true).await;
        assert_eq!(code, 0, "apply {i}: {out}{err}");
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let failures = failed.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(
        ok.load(Ordering::Relaxed) > 1000,
        "only {} requests",
        ok.load(Ordering::Relaxed)
    );
    assert_eq!(served(&dp).await, "a /v20/x");
}
