//! The data plane fed by a control plane, over real sockets: a scripted tonic Discovery server
//! (plaintext and mutual TLS with certificates made at test time), in-process upstreams, and
//! the data plane's real proxy and status listeners. Waits poll with a deadline; nothing sleeps
//! to synchronise.

#[path = "support/harness.rs"]
mod harness;
#[path = "support/mock_cp.rs"]
mod mock_cp;
#[path = "support/pki.rs"]
mod pki;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use harness::{get, Upstream};
use mock_cp::{MockCp, ServerTls, WAIT};
use portico_common::delta::Delta;
use portico_common::digest::Digests;
use portico_common::snapshot::Snapshot;
use portico_data_plane::{cache, ClientTls, ControlPlaneOptions, Listeners, StartError};
use portico_proto::v1::data_plane_message::Kind as DpKind;
use portico_proto::v1::Update;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Polls `$cond` (which may `.await`) until it holds or `WAIT` passes.
macro_rules! eventually {
    ($what:expr, $cond:expr) => {{
        let deadline = Instant::now() + WAIT;
        loop {
            if $cond {
                break;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {}", $what);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }};
}

const GROUP: &str = "edge";
const NODE: &str = "node-1";

/// A data plane running `run_from_control_plane` on port-0 listeners.
struct Dp {
    proxy: SocketAddr,
    status: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), StartError>>,
}

impl Dp {
    async fn start(opts: ControlPlaneOptions) -> Dp {
        let listeners = Listeners {
            proxy: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            status: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            proxy_tls: None,
        };
        let proxy = listeners.proxy.local_addr().unwrap();
        let status = listeners.status.local_addr().unwrap();
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(portico_data_plane::run_from_control_plane(
            opts, listeners, rx,
        ));
        Dp {
            proxy,
            status,
            shutdown,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy, path)
    }

    async fn ready(&self) -> u16 {
        get(&format!("http://{}/status/ready", self.status), &[])
            .await
            .status
            .as_u16()
    }

    /// The `control_plane` object of `/status`.
    async fn link(&self) -> serde_json::Value {
        get(&format!("http://{}/status", self.status), &[])
            .await
            .json()["control_plane"]
            .clone()
    }

    /// The body of `GET /` through the proxy.
    async fn body(&self) -> String {
        get(&self.url("/"), &[]).await.body
    }

    async fn stop(self) {
        let _ = self.shutdown.send(true);
        let r = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the data plane did not stop in time")
            .unwrap();
        assert!(r.is_ok(), "{r:?}");
    }
}

fn opts(url: &str, cache_dir: &Path) -> ControlPlaneOptions {
    ControlPlaneOptions {
        control_plane: url.to_owned(),
        group: GROUP.into(),
        node_id: NODE.into(),
        cache_dir: cache_dir.to_path_buf(),
        tls: None,
        trusted_ips: vec![],
        plugins: vec!["bundled".into()],
        drain_timeout: Duration::from_secs(2),
        telemetry: Default::default(),
        limits: Default::default(),
    }
}

/// One catch-all route to `upstream`; `plugins` is YAML under the service.
fn snapshot(upstream: SocketAddr, plugins: &str) -> Snapshot {
    let yaml = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: svc\n    url: http://{upstream}\n    routes:\n      - name: all\n        paths: [\"/\"]\n{plugins}"
    );
    portico_common::load_str(&yaml, &|_| None)
        .expect("test config is valid")
        .snapshot
}

fn update(nonce: &str, version: u64, s: &Snapshot) -> Update {
    Update {
        nonce: nonce.into(),
        group: GROUP.into(),
        version,
        hash: s.hash.clone(),
        snapshot_json: serde_json::to_vec(s).unwrap().into(),
        ..Update::default()
    }
}

/// An address where nothing listens.
async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn hello_then_updates_are_applied_acked_cached_and_followed_by_traffic() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let mut cp = MockCp::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let dp = Dp::start(opts(&cp.url(), dir.path())).await;

    let hello = cp.hello().await;
    assert_eq!(
        (hello.node_id.as_str(), hello.group.as_str()),
        (NODE, GROUP)
    );
    assert_eq!(
        (hello.serving_version, hello.serving_hash.as_str()),
        (0, "")
    );
    assert_eq!(hello.build_version, env!("CARGO_PKG_VERSION"));
    // Connected but nothing to serve yet.
    assert_eq!(dp.ready().await, 503);
    eventually!("connected", dp.link().await["connected"] == true);
    let link = dp.link().await;
    assert_eq!(link["url"], cp.url());
    assert_eq!(link["group"], GROUP);
    assert_eq!(link["node_id"], NODE);
    assert!(link["connected_since"].is_string(), "{link}");

    let v1 = snapshot(a.addr, "");
    cp.send(update("n1", 1, &v1));
    let ack = cp.answer().await.expect("v1 acked");
    assert_eq!((ack.nonce.as_str(), ack.version), ("n1", 1));
    assert!(ack.apply_micros > 0);
    // A status report follows each apply.
    match cp.next().await {
        DpKind::Status(s) => {
            assert_eq!(
                (s.serving_version, s.serving_hash.as_str()),
                (1, v1.hash.as_str())
            );
        }
        other => panic!("expected Status, got {other:?}"),
    }
    assert_eq!(dp.ready().await, 200);
    assert_eq!(dp.body().await, "a /");
    assert_eq!(dp.link().await["serving_version"], 1);

    let v2 = snapshot(b.addr, "");
    cp.send(update("n2", 2, &v2));
    let ack = cp.answer().await.expect("v2 acked");
    assert_eq!((ack.nonce.as_str(), ack.version), ("n2", 2));
    assert_eq!(dp.body().await, "b /");
    // The cache is written after the answer, off the apply path.
    eventually!(
        "v2 cached",
        cache::load(dir.path(), GROUP)
            .unwrap()
            .is_some_and(|c| (c.version, c.hash.as_str()) == (2, v2.hash.as_str()))
    );

    // The version already served is acknowledged without being applied again.
    cp.send(update("n3", 2, &v2));
    let ack = cp.answer().await.expect("repeat acked");
    assert_eq!(
        (ack.nonce.as_str(), ack.version, ack.apply_micros),
        ("n3", 2, 0)
    );
    dp.stop().await;
}

#[tokio::test]
async fn refused_updates_are_nacked_naming_the_entity_and_the_old_config_keeps_serving() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let mut cp = MockCp::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    // A node that runs only key-auth, like a node of an older build missing a plugin.
    let mut o = opts(&cp.url(), dir.path());
    o.plugins = vec!["key-auth".into()];
    let dp = Dp::start(o).await;
    cp.hello().await;
    cp.send(update("n1", 1, &snapshot(a.addr, "")));
    cp.answer().await.expect("v1 acked");
    eventually!(
        "v1 cached",
        cache::load(dir.path(), GROUP)
            .unwrap()
            .is_some_and(|c| c.version == 1)
    );

    // A plugin this node does not run.
    let with_plugin = snapshot(
        b.addr,
        "    plugins:\n      - name: ip-restriction\n        config: { allow: [127.0.0.1] }\n",
    );
    cp.send(update("n2", 2, &with_plugin));
    let nack = cp
        .answer()
        .await
        .expect_err("a plugin this node does not run is NACKed");
    assert_eq!((nack.nonce.as_str(), nack.version), ("n2", 2));
    assert!(
        nack.errors
            .iter()
            .any(|e| e.path.contains("plugins[0]") && e.message.contains("not enabled")),
        "{nack:?}"
    );
    assert_eq!(dp.body().await, "a /");
    let status = get(&format!("http://{}/status", dp.status), &[])
        .await
        .json();
    assert_eq!(status["reloads"]["failed"], 1);
    assert!(status["reloads"]["last_errors"][0]
        .as_str()
        .unwrap()
        .contains("ip-restriction"));

    // Content that does not hash to what was sent.
    let mut tampered = update("n3", 3, &snapshot(b.addr, ""));
    tampered.hash = "0".repeat(64);
    cp.send(tampered);
    let nack = cp.answer().await.expect_err("a hash mismatch is NACKed");
    assert_eq!(nack.version, 3);
    assert!(nack.errors.iter().any(|e| e.path == "hash"), "{nack:?}");

    // Not a snapshot at all.
    let mut garbage = update("n4", 4, &snapshot(b.addr, ""));
    garbage.snapshot_json = bytes::Bytes::from_static(b"{not json");
    cp.send(garbage);
    let nack = cp.answer().await.expect_err("undecodable JSON is NACKed");
    assert!(
        nack.errors.iter().any(|e| e.path == "snapshot_json"),
        "{nack:?}"
    );

    // Another group's snapshot.
    let mut other = update("n5", 5, &snapshot(b.addr, ""));
    other.group = "web".into();
    cp.send(other);
    let nack = cp
        .answer()
        .await
        .expect_err("another group's update is NACKed");
    assert!(nack.errors.iter().any(|e| e.path == "group"), "{nack:?}");

    assert_eq!(dp.body().await, "a /");
    assert_eq!(dp.link().await["serving_version"], 1);
    assert_eq!(cache::load(dir.path(), GROUP).unwrap().unwrap().version, 1);

    // And a good one after all that still applies.
    cp.send(update("n6", 6, &snapshot(b.addr, "")));
    cp.answer().await.expect("v6 acked");
    assert_eq!(dp.body().await, "b /");
    dp.stop().await;
}

/// An update carrying only what changed from `base` (served as `base_version`) to `next`.
fn delta_update(
    nonce: &str,
    version: u64,
    base_version: u64,
    base: &Snapshot,
    next: &Snapshot,
) -> Update {
    let delta = Delta::between(base, &Digests::of(base), next, &Digests::of(next));
    Update {
        nonce: nonce.into(),
        group: GROUP.into(),
        version,
        hash: next.hash.clone(),
        base_version,
        base_hash: base.hash.clone(),
        delta_json: serde_json::to_vec(&delta).unwrap().into(),
        ..Update::default()
    }
}

#[tokio::test]
async fn deltas_apply_to_the_served_version_and_anything_else_asks_for_the_whole() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let mut cp = MockCp::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let dp = Dp::start(opts(&cp.url(), dir.path())).await;
    cp.hello().await;
    let v1 = snapshot(a.addr, "");
    cp.send(update("n1", 1, &v1));
    cp.answer().await.expect("v1 acked");
    assert_eq!(dp.body().await, "a /");

    // The service moves to upstream b: only that entity travels.
    let v2 = snapshot(b.addr, "");
    cp.send(delta_update("n2", 2, 1, &v1, &v2));
    let ack = cp.answer().await.expect("the delta is applied");
    assert_eq!((ack.nonce.as_str(), ack.version), ("n2", 2));
    assert_eq!(dp.body().await, "b /");
    assert_eq!(dp.link().await["serving_hash"], v2.hash.as_str());

    // A delta against a version this data plane does not serve: resync, not a refusal.
    let v3 = snapshot(a.addr, "");
    cp.send(delta_update("n3", 3, 1, &v1, &v3));
    let nack = cp.answer().await.expect_err("wrong base");
    assert!(nack.resync, "{nack:?}");
    assert_eq!(nack.errors[0].path, "base_version", "{nack:?}");
    // A delta that does not produce the announced content: resync as well.
    let mut lying = delta_update("n4", 4, 2, &v2, &v3);
    lying.hash = v1.hash.clone() + "0";
    cp.send(lying);
    let nack = cp.answer().await.expect_err("hash mismatch");
    assert!(nack.resync && nack.errors[0].path == "hash", "{nack:?}");
    // Through all of it v2 kept serving; the whole snapshot then applies.
    assert_eq!(dp.body().await, "b /");
    cp.send(update("n5", 3, &v3));
    cp.answer().await.expect("whole v3 acked");
    assert_eq!(dp.body().await, "a /");
    dp.stop().await;
}

#[tokio::test]
async fn keeps_serving_without_the_control_plane_and_resumes_with_its_version() {
    let a = Upstream::echo("a").await;
    let mut cp = MockCp::start(None).await;
    let addr = cp.addr;
    let dir = tempfile::tempdir().unwrap();
    let dp = Dp::start(opts(&cp.url(), dir.path())).await;
    cp.hello().await;
    let v1 = snapshot(a.addr, "");
    cp.send(update("n1", 1, &v1));
    cp.answer().await.expect("v1 acked");

    cp.stop().await;
    eventually!("disconnected", dp.link().await["connected"] == false);
    let link = dp.link().await;
    assert!(
        link["last_error"]
            .as_str()
            .unwrap()
            .contains(&addr.to_string()),
        "{link}"
    );
    // Still serving, still ready, across failed reconnects.
    assert_eq!(dp.ready().await, 200);
    assert_eq!(dp.body().await, "a /");
    eventually!(
        "a refused reconnect",
        dp.link().await["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("connection refused"))
    );
    assert_eq!(dp.body().await, "a /");

    // The control plane comes back on the same address: the data plane says what it serves.
    let mut cp = MockCp::start_on(addr, None).await;
    let hello = cp.hello().await;
    assert_eq!(
        (hello.serving_version, hello.serving_hash),
        (1, v1.hash.clone())
    );
    eventually!("reconnected", dp.link().await["connected"] == true);
    dp.stop().await;
}

#[tokio::test]
async fn boots_from_the_cache_when_the_control_plane_is_unreachable() {
    let a = Upstream::echo("a").await;
    let dir = tempfile::tempdir().unwrap();
    let v = snapshot(a.addr, "");
    cache::store(dir.path(), GROUP, 5, &v).unwrap();
    let url = format!("http://{}", dead_addr().await);
    let dp = Dp::start(opts(&url, dir.path())).await;

    eventually!("ready from the cache", dp.ready().await == 200);
    assert_eq!(dp.body().await, "a /");
    let link = dp.link().await;
    assert_eq!(link["serving_version"], 5);
    assert_eq!(link["serving_hash"], v.hash);
    eventually!(
        "a connection error",
        dp.link().await["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("connection refused"))
    );
    assert_eq!(dp.link().await["connected"], false);
    dp.stop().await;
}

#[tokio::test]
async fn without_cache_or_control_plane_it_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{}", dead_addr().await);
    let dp = Dp::start(opts(&url, dir.path())).await;
    eventually!(
        "a connection error",
        dp.link().await["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("connection refused"))
    );
    assert_eq!(dp.ready().await, 503);
    let got = get(&dp.url("/"), &[]).await;
    assert!(got.status.is_server_error() || got.status == 404, "{got:?}");
    dp.stop().await;
}

#[tokio::test]
async fn bad_options_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let listeners = Listeners {
        proxy: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        status: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        proxy_tls: None,
    };
    let (_tx, rx) = watch::channel(false);
    let err = portico_data_plane::run_from_control_plane(
        opts("https://cp.example:8005", dir.path()),
        listeners,
        rx,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StartError::ControlPlane(_)), "{err}");
    assert!(err.to_string().contains("client certificate"), "{err}");
}

/// Writes a client identity signed by `ca` and trusting `trusted_ca` as TLS options.
fn client_tls(dir: &Path, tag: &str, ca: &pki::Ca, trusted_ca: &pki::Ca) -> ClientTls {
    let leaf = ca.client(NODE);
    ClientTls {
        cert: pki::write(dir, &format!("{tag}-cert.pem"), &leaf.cert),
        key: pki::write(dir, &format!("{tag}-key.pem"), &leaf.key),
        ca: pki::write(dir, &format!("{tag}-ca.pem"), &trusted_ca.pem()),
        server_name: Some("localhost".into()),
    }
}

#[tokio::test]
async fn mutual_tls_to_the_control_plane() {
    let a = Upstream::echo("a").await;
    let ca = pki::Ca::new("portico test CA");
    let server = ca.server(&["localhost"]);
    let mut cp = MockCp::start(Some(ServerTls {
        cert: server.cert,
        key: server.key,
        client_ca: ca.pem(),
    }))
    .await;
    let url = format!("https://{}", cp.addr);
    let files = tempfile::tempdir().unwrap();

    let cache_dir = tempfile::tempdir().unwrap();
    let mut o = opts(&url, cache_dir.path());
    o.tls = Some(client_tls(files.path(), "good", &ca, &ca));
    let dp = Dp::start(o).await;
    let hello = cp.hello().await;
    assert_eq!(hello.node_id, NODE);
    cp.send(update("n1", 1, &snapshot(a.addr, "")));
    cp.answer().await.expect("acked over TLS");
    assert_eq!(dp.body().await, "a /");
    assert_eq!(dp.link().await["connected"], true);

    // A data plane that does not trust the control plane's CA says so.
    let other = pki::Ca::new("another CA");
    let cache2 = tempfile::tempdir().unwrap();
    let mut o = opts(&url, cache2.path());
    o.tls = Some(client_tls(files.path(), "wrong-ca", &ca, &other));
    let distrustful = Dp::start(o).await;
    eventually!(
        "a TLS verdict on the server certificate",
        distrustful.link().await["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("TLS") && e.contains("not signed by the configured"))
    );

    // A client certificate the control plane does not trust is named as the problem.
    let cache3 = tempfile::tempdir().unwrap();
    let mut o = opts(&url, cache3.path());
    o.tls = Some(client_tls(files.path(), "wrong-client", &other, &ca));
    let stranger = Dp::start(o).await;
    eventually!(
        "a TLS verdict on the client certificate",
        stranger.link().await["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("refused this data plane's client certificate"))
    );
    assert_eq!(stranger.link().await["connected"], false);

    distrustful.stop().await;
    stranger.stop().await;
    dp.stop().await;
}
