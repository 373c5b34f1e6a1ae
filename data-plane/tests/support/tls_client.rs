//! TLS clients for tests: verified connections with rustls to a given server name, the
//! certificate a server presented, HTTP/1.1 over such a connection, and PEM as a YAML block.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// `pem` as a YAML block scalar (`|` and its lines) for a field at `indent` spaces.
pub fn pem_block(pem: &str, indent: usize) -> String {
    let pad = " ".repeat(indent + 2);
    let mut s = String::from("|\n");
    for line in pem.trim_end().lines() {
        s.push_str(&pad);
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// A client trusting `ca_pem`, offering `alpn`, speaking the given TLS versions.
pub fn connector(
    ca_pem: &str,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(cfg))
}

/// A connection to `addr` sending `name` as SNI, verified against `ca_pem` (TLS 1.2 or 1.3).
pub async fn connect(
    addr: SocketAddr,
    name: &str,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> TlsStream<TcpStream> {
    connect_with(
        addr,
        name,
        &connector(ca_pem, alpn, rustls::DEFAULT_VERSIONS),
    )
    .await
}

/// [`connect`] with a given connector.
pub async fn connect_with(
    addr: SocketAddr,
    name: &str,
    connector: &TlsConnector,
) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake for {name}: {e}"))
}

/// The DER of the first certificate in `pem`.
pub fn leaf_der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// The leaf certificate the server presented on `s`.
pub fn served_leaf(s: &TlsStream<TcpStream>) -> Vec<u8> {
    s.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec()
}

pub type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// HTTP/1.1 over `stream`.
pub async fn http1(stream: TlsStream<TcpStream>) -> Sender {
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// GET `path` with `Host: host`; the status and the body as text.
pub async fn get1(send: &mut Sender, host: &str, path: &str) -> (StatusCode, String) {
    send.ready().await.unwrap();
    let req = Request::get(path)
        .header("host", host)
        .body(Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
