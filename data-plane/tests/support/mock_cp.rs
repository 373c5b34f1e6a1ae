//! A scripted control plane for discovery tests: a real tonic `Discovery` server on 127.0.0.1,
//! optionally with mutual TLS. The test sends updates through it and reads what the data plane
//! says (Hello, Ack, Nack, Status) from a channel; `stop` makes it go away for real (listener
//! closed, streams failed), and `start_on` brings one back on the same address.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portico_proto::v1::control_plane_message::Kind as CpKind;
use portico_proto::v1::data_plane_message::Kind as DpKind;
use portico_proto::v1::discovery_server::{Discovery, DiscoveryServer};
use portico_proto::v1::{Ack, ControlPlaneMessage, DataPlaneMessage, Hello, Nack, Update};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::Stream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

/// How long a test waits for the data plane to say something.
pub const WAIT: Duration = Duration::from_secs(10);

type ToDp = mpsc::UnboundedSender<Result<ControlPlaneMessage, Status>>;

/// PEM material for a TLS mock: its certificate and key, and the CA its clients must chain to.
#[derive(Clone)]
pub struct ServerTls {
    pub cert: String,
    pub key: String,
    pub client_ca: String,
}

struct Svc {
    from_dp: mpsc::UnboundedSender<DataPlaneMessage>,
    current: Arc<Mutex<Option<ToDp>>>,
}

#[tonic::async_trait]
impl Discovery for Svc {
    type StreamStream =
        Pin<Box<dyn Stream<Item = Result<ControlPlaneMessage, Status>> + Send + 'static>>;

    async fn stream(
        &self,
        req: Request<Streaming<DataPlaneMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        *self.current.lock().unwrap() = Some(tx);
        let from_dp = self.from_dp.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                let _ = from_dp.send(m);
            }
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }
}

/// A running mock control plane.
pub struct MockCp {
    pub addr: SocketAddr,
    from_dp: mpsc::UnboundedReceiver<DataPlaneMessage>,
    current: Arc<Mutex<Option<ToDp>>>,
    accept: tokio::task::JoinHandle<()>,
    shutdown: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl MockCp {
    /// Starts on a free port.
    pub async fn start(tls: Option<ServerTls>) -> MockCp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        MockCp::serve(listener, tls)
    }

    /// Starts on `addr` (the address of a stopped mock), retrying the bind for a while.
    pub async fn start_on(addr: SocketAddr, tls: Option<ServerTls>) -> MockCp {
        let deadline = Instant::now() + WAIT;
        loop {
            match TcpListener::bind(addr).await {
                Ok(l) => return MockCp::serve(l, tls),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot rebind {addr}: {e}"),
            }
        }
    }

    fn serve(listener: TcpListener, tls: Option<ServerTls>) -> MockCp {
        let addr = listener.local_addr().unwrap();
        let (from_dp_tx, from_dp) = mpsc::unbounded_channel();
        let current = Arc::new(Mutex::new(None));
        let svc = Svc {
            from_dp: from_dp_tx,
            current: Arc::clone(&current),
        };
        // Accepting in a task of our own lets `stop` close the listening socket at once.
        let (conn_tx, conn_rx) =
            mpsc::unbounded_channel::<std::io::Result<tokio::net::TcpStream>>();
        let accept = tokio::spawn(async move {
            loop {
                let r = listener.accept().await.map(|(s, _)| s);
                if conn_tx.send(r).is_err() {
                    return;
                }
            }
        });
        let mut builder = Server::builder();
        if let Some(t) = tls {
            builder = builder
                .tls_config(
                    ServerTlsConfig::new()
                        .identity(Identity::from_pem(t.cert, t.key))
                        .client_ca_root(Certificate::from_pem(t.client_ca)),
                )
                .unwrap();
        }
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = builder
                .add_service(DiscoveryServer::new(svc))
                .serve_with_incoming_shutdown(UnboundedReceiverStream::new(conn_rx), async {
                    let _ = stop.await;
                })
                .await;
        });
        MockCp {
            addr,
            from_dp,
            current,
            accept,
            shutdown: Some(shutdown),
            server,
        }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends `update` on the latest stream.
    pub fn send(&self, update: Update) {
        let cur = self.current.lock().unwrap();
        let tx = cur.as_ref().expect("no data plane is connected");
        tx.send(Ok(ControlPlaneMessage {
            kind: Some(CpKind::Update(update)),
        }))
        .expect("the stream is gone");
    }

    /// The next message from the data plane.
    pub async fn next(&mut self) -> DpKind {
        let m = tokio::time::timeout(WAIT, self.from_dp.recv())
            .await
            .expect("the data plane said nothing in time")
            .expect("the mock is closed");
        m.kind.expect("a message without a kind")
    }

    /// The next Hello (a data plane's first message on every stream).
    pub async fn hello(&mut self) -> Hello {
        match self.next().await {
            DpKind::Hello(h) => h,
            other => panic!("expected Hello, got {other:?}"),
        }
    }

    /// The next Ack or Nack, skipping Status reports.
    pub async fn answer(&mut self) -> Result<Ack, Nack> {
        loop {
            match self.next().await {
                DpKind::Ack(a) => return Ok(a),
                DpKind::Nack(n) => return Err(n),
                DpKind::Status(_) => continue,
                DpKind::Hello(h) => panic!("unexpected Hello {h:?}"),
            }
        }
    }

    /// Goes away: no more connections, the open stream fails, the server stops.
    pub async fn stop(mut self) {
        self.accept.abort();
        let _ = (&mut self.accept).await;
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(tx) = self.current.lock().unwrap().take() {
            let _ = tx.send(Err(Status::unavailable("mock control plane going away")));
        }
        tokio::time::timeout(WAIT, &mut self.server)
            .await
            .expect("the mock control plane did not stop")
            .unwrap();
    }
}
