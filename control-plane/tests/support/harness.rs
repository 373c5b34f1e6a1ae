//! Test harness: a control plane on 127.0.0.1:0 with a temp data dir, gRPC and HTTP clients,
//! a fake data plane driving the discovery stream, and polling with a deadline.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portico_control_plane::{run, CpError, CpListeners, CpOptions};
use portico_proto::v1::{
    admin_client::AdminClient, control_plane_message, data_plane_message,
    discovery_client::DiscoveryClient, Ack, ControlPlaneMessage, DataPlaneInfo, DataPlaneMessage,
    FleetRequest, Hello, Nack, Status, Update,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

pub const DEADLINE: Duration = Duration::from_secs(10);

/// A minimal valid config; `n` changes its content (and so its hash).
pub fn config(n: u32) -> String {
    format!(
        "_format_version: \"3.0\"\nservices:\n  - name: svc{n}\n    url: http://127.0.0.1:{port}\n    routes:\n      - name: r{n}\n        paths: [/r{n}]\n",
        port = 9000 + n
    )
}

/// A running control plane.
pub struct Cp {
    pub admin: SocketAddr,
    pub cluster: SocketAddr,
    pub dir: tempfile::TempDir,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), CpError>>,
}

/// Starts a control plane; `opts.data_dir` is replaced by a temp dir.
pub async fn start(opts: CpOptions) -> Cp {
    start_in(tempfile::tempdir().unwrap(), opts).await
}

/// Starts a control plane on an existing data dir.
pub async fn start_in(dir: tempfile::TempDir, mut opts: CpOptions) -> Cp {
    opts.data_dir = dir.path().to_owned();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cluster = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (admin_addr, cluster_addr) = (admin.local_addr().unwrap(), cluster.local_addr().unwrap());
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(run(opts, CpListeners { admin, cluster }, rx));
    let cp = Cp {
        admin: admin_addr,
        cluster: cluster_addr,
        dir,
        shutdown: tx,
        task,
    };
    // Ready when the admin API answers (listeners are bound already; this waits for the store).
    let url = format!("http://{}/status", cp.admin);
    eventually("admin API answers", || async {
        http(hyper::Method::GET, &url, None, &[]).await.ok()
    })
    .await;
    cp
}

impl Cp {
    pub async fn admin_client(&self) -> AdminClient<Channel> {
        AdminClient::connect(format!("http://{}", self.admin))
            .await
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// Signals shutdown and waits for `run` to return; gives back the data dir.
    pub async fn stop(self) -> tempfile::TempDir {
        self.shutdown.send_replace(true);
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("control plane stops within the deadline")
            .unwrap()
            .unwrap();
        self.dir
    }

    /// The fleet entry of `node_id`, via the admin gRPC API.
    pub async fn node(&self, node_id: &str) -> Option<DataPlaneInfo> {
        let mut admin = self.admin_client().await;
        let fleet = admin
            .fleet(FleetRequest::default())
            .await
            .unwrap()
            .into_inner();
        fleet.data_planes.into_iter().find(|d| d.node_id == node_id)
    }

    /// Polls until `node_id` satisfies `pred`.
    pub async fn wait_node(
        &self,
        node_id: &str,
        what: &str,
        pred: impl Fn(&DataPlaneInfo) -> bool,
    ) -> DataPlaneInfo {
        eventually(what, || async {
            self.node(node_id).await.filter(|n| pred(n))
        })
        .await
    }
}

/// Polls `f` until it yields `Some`, failing after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One HTTP/1.1 request; returns status and body.
pub async fn http(
    method: hyper::Method,
    url: &str,
    body: Option<(&str, &str)>,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = match body {
        Some((content_type, text)) => req
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(text.to_owned()))),
        None => req.body(Full::new(Bytes::new())),
    }
    .unwrap();
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        status,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    ))
}

/// GET returning parsed JSON.
pub async fn get_json(url: &str, headers: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let (status, body) = http(hyper::Method::GET, url, None, headers).await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// A fake data plane holding one discovery stream.
pub struct FakeDp {
    pub node_id: String,
    tx: mpsc::Sender<DataPlaneMessage>,
    rx: Streaming<ControlPlaneMessage>,
}

impl FakeDp {
    /// Opens a stream on `channel` and says Hello (build "test-1.0").
    pub async fn connect(
        channel: Channel,
        node_id: &str,
        group: &str,
        serving: (u64, &str),
    ) -> Result<FakeDp, tonic::Status> {
        FakeDp::connect_build(channel, node_id, group, serving, "test-1.0").await
    }

    /// Opens a stream on `channel` and says Hello as build `build`.
    pub async fn connect_build(
        channel: Channel,
        node_id: &str,
        group: &str,
        serving: (u64, &str),
        build: &str,
    ) -> Result<FakeDp, tonic::Status> {
        let (tx, rx) = mpsc::channel(16);
        tx.send(msg(data_plane_message::Kind::Hello(Hello {
            node_id: node_id.into(),
            group: group.into(),
            build_version: build.into(),
            serving_version: serving.0,
            serving_hash: serving.1.into(),
        })))
        .await
        .unwrap();
        let mut client = DiscoveryClient::new(channel);
        let rx = client.stream(ReceiverStream::new(rx)).await?.into_inner();
        Ok(FakeDp {
            node_id: node_id.into(),
            tx,
            rx,
        })
    }

    /// Plaintext connect to `cp`'s cluster listener.
    pub async fn plain(cp: &Cp, node_id: &str, group: &str, serving: (u64, &str)) -> FakeDp {
        FakeDp::plain_build(cp, node_id, group, serving, "test-1.0").await
    }

    /// Plaintext connect as build `build`.
    pub async fn plain_build(
        cp: &Cp,
        node_id: &str,
        group: &str,
        serving: (u64, &str),
        build: &str,
    ) -> FakeDp {
        let channel = Channel::from_shared(format!("http://{}", cp.cluster))
            .unwrap()
            .connect()
            .await
            .unwrap();
        FakeDp::connect_build(channel, node_id, group, serving, build)
            .await
            .unwrap()
    }

    /// The next Update (fails after the deadline or if the stream ends).
    pub async fn update(&mut self) -> Update {
        let next = tokio::time::timeout(DEADLINE, self.rx.message())
            .await
            .expect("an update within the deadline")
            .expect("stream ok")
            .expect("stream open");
        match next.kind {
            Some(control_plane_message::Kind::Update(u)) => u,
            None => panic!("empty control-plane message"),
        }
    }

    pub async fn ack(&self, u: &Update) {
        self.send(data_plane_message::Kind::Ack(Ack {
            nonce: u.nonce.clone(),
            version: u.version,
            apply_micros: 1234,
        }))
        .await;
    }

    pub async fn nack(&self, u: &Update, path: &str, message: &str) {
        self.send(data_plane_message::Kind::Nack(Nack {
            nonce: u.nonce.clone(),
            version: u.version,
            errors: vec![portico_proto::v1::ConfigError {
                path: path.into(),
                message: message.into(),
            }],
            apply_micros: 99,
            resync: false,
        }))
        .await;
    }

    /// Answers a delta with "cannot apply it to what I serve; send the whole snapshot".
    pub async fn nack_resync(&self, u: &Update) {
        self.send(data_plane_message::Kind::Nack(Nack {
            nonce: u.nonce.clone(),
            version: u.version,
            errors: vec![portico_proto::v1::ConfigError {
                path: "base_version".into(),
                message: "not the served version".into(),
            }],
            apply_micros: 5,
            resync: true,
        }))
        .await;
    }

    pub async fn send(&self, kind: data_plane_message::Kind) {
        self.tx.send(msg(kind)).await.unwrap();
    }

    /// A barrier: sends a Status carrying `marker` as its connection count and waits until the
    /// registry shows it. The session handles messages in order and sends any due update before
    /// reading the next message, so after this returns, an update that was due has been sent.
    pub async fn barrier(&self, cp: &Cp, marker: u64) -> DataPlaneInfo {
        let (version, hash) = match cp.node(&self.node_id).await {
            Some(n) => (n.serving_version, n.serving_hash),
            None => (0, String::new()),
        };
        self.send(data_plane_message::Kind::Status(Status {
            serving_version: version,
            serving_hash: hash,
            apply_latency_micros: 0,
            active_connections: marker,
        }))
        .await;
        cp.wait_node(&self.node_id, "status barrier", |n| {
            n.active_connections == marker
        })
        .await
    }

    /// Asserts no update is pending: after a barrier, nothing arrives within a short grace.
    pub async fn assert_no_update(&mut self, cp: &Cp, marker: u64) {
        let node = self.barrier(cp, marker).await;
        assert_ne!(node.state, "applying", "an update was sent: {node:?}");
        if let Ok(Ok(Some(m))) =
            tokio::time::timeout(Duration::from_millis(200), self.rx.message()).await
        {
            panic!("unexpected message {m:?}");
        }
    }

    /// Closes the sending half (the data plane goes away).
    pub fn close(self) {
        drop(self);
    }
}

fn msg(kind: data_plane_message::Kind) -> DataPlaneMessage {
    DataPlaneMessage { kind: Some(kind) }
}
