//! gRPC through the proxy with a real tonic client and server: the four call kinds, trailers
//! (a status sent after streamed messages), h2c and TLS (`grpcs`) upstreams, and the
//! gateway's own errors as gRPC statuses.

#[path = "support/harness.rs"]
mod harness;
#[path = "support/pki.rs"]
mod pki;

use std::net::SocketAddr;
use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use harness::Gateway;
use portico_proto::testing::echo_client::EchoClient;
use portico_proto::testing::echo_server::{Echo, EchoServer};
use portico_proto::testing::{EchoReply, EchoRequest};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status, Streaming};

struct EchoService;

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

fn reply(message: impl Into<String>) -> EchoReply {
    EchoReply {
        message: message.into(),
    }
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let msg = req.into_inner().message;
        if msg == "fail" {
            return Err(Status::invalid_argument("no failing allowed"));
        }
        Ok(Response::new(reply(format!("unary {msg}"))))
    }

    type ServerStreamStream = ReplyStream;

    async fn server_stream(
        &self,
        req: Request<EchoRequest>,
    ) -> Result<Response<ReplyStream>, Status> {
        let r = req.into_inner();
        let mut items: Vec<Result<EchoReply, Status>> = (0..r.count)
            .map(|i| Ok(reply(format!("{} {i}", r.message))))
            .collect();
        // A status after the messages travels in the HTTP/2 trailers.
        items.push(Err(Status::resource_exhausted("that is all")));
        Ok(Response::new(Box::pin(futures_util::stream::iter(items))))
    }

    async fn client_stream(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoReply>, Status> {
        let mut stream = req.into_inner();
        let mut all = Vec::new();
        while let Some(m) = stream.next().await {
            all.push(m?.message);
        }
        Ok(Response::new(reply(all.join("+"))))
    }

    type BidiStream = ReplyStream;

    async fn bidi(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let out = req
            .into_inner()
            .map(|m| m.map(|m| reply(format!("bidi {}", m.message))));
        Ok(Response::new(Box::pin(out)))
    }
}

/// A tonic Echo server on 127.0.0.1, plain (h2c) or with `tls`.
async fn echo_server(tls: Option<&pki::Leaf>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut builder = tonic::transport::Server::builder();
    if let Some(leaf) = tls {
        let identity = tonic::transport::Identity::from_pem(&leaf.cert, &leaf.key);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .unwrap();
    }
    let router = builder.add_service(EchoServer::new(EchoService));
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    addr
}

fn config(protocol: &str, up: SocketAddr, extra: &str) -> String {
    format!(
        "_format_version: \"3.0\"\nservices:\n  - name: echo\n    protocol: {protocol}\n    host: localhost\n    port: {}\n{extra}    routes:\n      - name: echo\n        protocols: [grpc, grpcs]\n        paths: [/portico.testing.v1.Echo/]\n",
        up.port()
    )
}

async fn client(gw: &Gateway) -> EchoClient<tonic::transport::Channel> {
    EchoClient::connect(format!("http://{}", gw.addr))
        .await
        .expect("h2c to the gateway")
}

fn req(message: &str, count: u32) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        count,
    }
}

/// The four call kinds and a status in trailers, through `gw`.
async fn all_four(gw: &Gateway) {
    let mut c = client(gw).await;

    let r = c.unary(req("hi", 0)).await.expect("unary");
    assert_eq!(r.into_inner().message, "unary hi");
    let e = c.unary(req("fail", 0)).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "no failing allowed")
    );

    let mut s = c.server_stream(req("tick", 3)).await.unwrap().into_inner();
    for i in 0..3 {
        assert_eq!(
            s.message().await.unwrap().unwrap().message,
            format!("tick {i}")
        );
    }
    let end = s.message().await.unwrap_err();
    assert_eq!(
        (end.code(), end.message()),
        (Code::ResourceExhausted, "that is all")
    );

    let up = futures_util::stream::iter(["a", "b", "c"].map(|m| req(m, 0)));
    let r = c.client_stream(up).await.expect("client stream");
    assert_eq!(r.into_inner().message, "a+b+c");

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = c
        .bidi(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for m in ["x", "y", "z"] {
        // One at a time: each reply comes back before the next message goes out.
        tx.send(req(m, 0)).await.unwrap();
        assert_eq!(
            replies.message().await.unwrap().unwrap().message,
            format!("bidi {m}")
        );
    }
    drop(tx);
    assert!(replies.message().await.unwrap().is_none(), "clean end");
}

#[tokio::test]
async fn the_four_call_kinds_and_trailers_through_an_h2c_upstream() {
    let up = echo_server(None).await;
    let gw = Gateway::start(&config("grpc", up, "")).await;
    all_four(&gw).await;
}

#[tokio::test]
async fn grpcs_upstreams_are_spoken_to_over_tls_with_alpn_h2() {
    let ca = pki::Ca::new("grpc ca");
    let up = echo_server(Some(&ca.server(&["localhost"]))).await;
    let block: String = ca
        .pem()
        .trim_end()
        .lines()
        .map(|l| format!("      {l}\n"))
        .collect();
    let id = "0b7c5f2e-7a3a-4c1e-9d55-6f3c2b1a0e99";
    let yaml = format!(
        "{}ca_certificates:\n  - id: {id}\n    cert: |\n{block}",
        config(
            "grpcs",
            up,
            &format!("    tls_verify: true\n    ca_certificates: [{id}]\n")
        )
    );
    let gw = Gateway::start(&yaml).await;
    all_four(&gw).await;
}

#[tokio::test]
async fn gateway_errors_are_grpc_statuses() {
    // Nothing listens on the upstream port: UNAVAILABLE, with the gateway's message.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let gw = Gateway::start(&config("grpc", dead, "    retries: 0\n")).await;
    let e = client(&gw).await.unary(req("hi", 0)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");

    // No route for the method: NOT_FOUND with Kong's message.
    let up = echo_server(None).await;
    let gw = Gateway::start(
        &config("grpc", up, "").replace("/portico.testing.v1.Echo/", "/some.other.Service/"),
    )
    .await;
    let e = client(&gw).await.unary(req("hi", 0)).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "no Route matched with those values")
    );

    // Auth on the route: UNAUTHENTICATED before the upstream sees anything.
    let yaml = config("grpc", up, "").replace(
        "        paths: [/portico.testing.v1.Echo/]\n",
        "        paths: [/portico.testing.v1.Echo/]\n        plugins:\n          - name: key-auth\n",
    );
    let gw = Gateway::start(&yaml).await;
    let e = client(&gw).await.unary(req("hi", 0)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
}

#[tokio::test]
async fn grpc_routes_answer_http1_with_426_and_other_content_with_415() {
    let up = echo_server(None).await;
    let gw = Gateway::start(&config("grpc", up, "")).await;
    let path = "/portico.testing.v1.Echo/Unary";

    // HTTP/1.1 on a gRPC route: Kong's 426, as plain HTTP (not a gRPC status).
    let r = harness::get(&gw.url(path), &[("content-type", "application/grpc")]).await;
    assert_eq!(r.status, http::StatusCode::UPGRADE_REQUIRED);
    assert_eq!(r.json()["message"], "Please use HTTP2 protocol");

    // HTTP/2 without a gRPC content type: 415.
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{}{path}", gw.addr))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("Non-gRPC request matched gRPC route"),
        "{body:?}"
    );
}
