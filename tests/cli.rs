//! The CLI as users run it: `portico validate` and `portico up`.

#[path = "support/binary.rs"]
mod binary;
#[path = "../data-plane/tests/support/harness.rs"]
mod harness;

use binary::{portico, Portico};

fn run_validate(yaml: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("kong.yml");
    std::fs::write(&p, yaml).unwrap();
    let out = portico()
        .args(["validate", "-f"])
        .arg(&p)
        .env_remove("MISSING_KEY")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_prints_a_summary_for_a_good_file() {
    let (ok, out, _) = run_validate(
        "_format_version: \"3.0\"\nservices:\n  - name: a\n    url: http://a.internal\n    routes:\n      - paths: [\"/a\"]\n      - paths: [\"~/b/\\\\d+\"]\nupstreams:\n  - name: pool\n    targets:\n      - target: 10.0.0.1:80\n",
    );
    assert!(ok);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains("OK: 1 service, 2 routes, 1 upstream (1 target)"),
        "{out}"
    );
}

#[test]
fn validate_reports_every_error_with_its_path_and_fails() {
    let (ok, out, err) = run_validate(
        "_format_version: \"3.0\"\nservices:\n  - name: a\n    url: http://a.internal\n    pathz: /x\n    routes:\n      - paths: [\"~/(broken\"]\n  - name: a\n    url: http://b.internal\nroutes:\n  - service: nope\n    paths: [\"/c\"]\nconsumers:\n  - username: app\n    keyauth_credentials:\n      - key: ${MISSING_KEY}\n",
    );
    assert!(!ok);
    assert!(out.is_empty());
    for expected in [
        "pathz",
        "invalid regex",
        "uniqueness violation",
        "nope",
        "MISSING_KEY",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(
        err.contains("consumers[0].keyauth_credentials[0].key"),
        "{err}"
    );
}

#[test]
fn validate_refuses_plugins_portico_does_not_run_and_bad_plugin_config() {
    let (ok, _, err) = run_validate(
        "_format_version: \"3.0\"\nservices:\n  - name: a\n    url: http://a.internal\n    routes:\n      - paths: [\"/a\"]\n    plugins:\n      - name: cors\n      - name: key-auth\n        config: { key_names: [], nope: 1 }\n",
    );
    assert!(!ok);
    assert!(
        err.contains("services[0].plugins[0].name") && err.contains("cors"),
        "{err}"
    );
    assert!(err.contains("services[0].plugins[1].config"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_the_quickstart_tour() {
    // The shipped quickstart, with its echo port moved to a free one so the test does not depend
    // on 9080 being free on this machine.
    let echo_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let quickstart = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/examples/quickstart.yaml"
    ))
    .unwrap();
    assert!(quickstart.contains("127.0.0.1:9080"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("quickstart.yaml");
    std::fs::write(
        &config,
        quickstart.replace(":9080", &format!(":{echo_port}")),
    )
    .unwrap();
    let mut cmd = portico();
    cmd.args([
        "--log-format",
        "json",
        "up",
        "--proxy-listen",
        "127.0.0.1:0",
        "--proxy-listen-tls",
        "127.0.0.1:0",
        "--status-listen",
        "127.0.0.1:0",
    ])
    .args([
        "--admin-listen",
        "127.0.0.1:0",
        "--cluster-listen",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(dir.path().join("data"))
    .arg("--config")
    .arg(&config)
    .args(["--echo-listen", &format!("127.0.0.1:{echo_port}")]);
    let up = Portico::spawn_waiting(cmd, &["admin", "cluster", "proxy", "status"]);
    // The embedded data plane gets the quickstart from the embedded control plane.
    let ready = format!("http://{}/status/ready", up.status);
    binary::eventually(
        "the embedded data plane to be ready",
        std::time::Duration::from_secs(20),
        || {
            let u = ready.clone();
            async move { (harness::get(&u, &[]).await.status == 200).then_some(()) }
        },
    )
    .await;

    let got = harness::get(&format!("http://{}/echo/hello?x=1", up.proxy), &[]).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let v = got.json();
    assert_eq!(v["path"], "/hello");
    assert_eq!(v["query"], "x=1");
    assert_eq!(v["headers"]["x-forwarded-prefix"], "/echo");

    let got = harness::get(
        &format!("http://{}/api/orders", up.proxy),
        &[("host", "api.example.com")],
    )
    .await;
    assert_eq!(got.json()["path"], "/v2/orders");
    let got = harness::get(&format!("http://{}/users/42", up.proxy), &[]).await;
    assert_eq!(got.json()["path"], "/users/42");
    let got = harness::get(&format!("http://{}/users/42/x", up.proxy), &[]).await;
    assert_eq!(got.status, 404, "the regex route is anchored with $");
    let got = harness::get(&format!("http://{}/balanced/x", up.proxy), &[]).await;
    assert_eq!(got.json()["path"], "/x");

    // The CLI sees the embedded control plane and its one data plane.
    let out = portico()
        .args(["status", "--admin-url", &up.admin_url()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.lines()
            .any(|l| l.starts_with("local") && l.contains("in_sync")),
        "{out}"
    );
}
