//! End to end with the real binary: `portico dp --config kong.yml` terminating TLS with the
//! file's certificates by SNI, `--tls-cert`/`--tls-key` for other names, and a certificate
//! rotated by editing the file (hot reload) while a connection opened before stays served.

#[path = "support/binary.rs"]
mod binary;
#[path = "../data-plane/tests/support/harness.rs"]
mod harness;
#[path = "../data-plane/tests/support/pki.rs"]
mod pki;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use binary::{eventually, Portico};
use bytes::Bytes;
use harness::Upstream;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

fn block(pem: &str) -> String {
    let mut s = String::from("|\n");
    for line in pem.trim_end().lines() {
        s.push_str("        ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

fn config(up: SocketAddr, leaf: &pki::Leaf) -> String {
    format!(
        "_format_version: \"3.0\"\nservices:\n  - name: app\n    url: http://{up}\n    routes:\n      - name: app\n        protocols: [https]\n        paths: [/]\ncertificates:\n  - cert: {}    key: {}    snis: [api.example.com]\n",
        block(&leaf.cert),
        block(&leaf.key)
    )
}

async fn connect(addr: SocketAddr, name: &str, ca: &pki::Ca) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake for {name}: {e}"))
}

fn leaf_of(s: &TlsStream<TcpStream>) -> Vec<u8> {
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn http1(s: TlsStream<TcpStream>) -> Sender {
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn get(send: &mut Sender, path: &str) -> (StatusCode, String) {
    send.ready().await.unwrap();
    let req = Request::get(path)
        .header("host", "api.example.com")
        .body(Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn dp_serves_the_files_certificates_and_rotates_them_on_reload() {
    let ca = pki::Ca::new("e2e ca");
    let first = ca.server(&["api.example.com"]);
    let second = ca.server(&["api.example.com"]);
    let default = ca.server(&["default.example.org"]);
    let up = Upstream::echo("app").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kong.yml");
    std::fs::write(&file, config(up.addr, &first)).unwrap();
    let cert = pki::write(dir.path(), "default.pem", &default.cert);
    let key = pki::write(dir.path(), "default-key.pem", &default.key);
    let dp = Portico::dp_waiting(
        &file,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &["proxy", "status", "proxy TLS"],
    );

    let s = connect(dp.proxy_tls, "api.example.com", &ca).await;
    assert_eq!(leaf_of(&s), der(&first.cert));
    let mut open = http1(s).await;
    assert_eq!(
        get(&mut open, "/hello").await,
        (StatusCode::OK, "app /hello".into())
    );
    let s = connect(dp.proxy_tls, "default.example.org", &ca).await;
    assert_eq!(
        leaf_of(&s),
        der(&default.cert),
        "--tls-cert for other names"
    );

    // The https-only route answers plain HTTP with Kong's 426.
    let r = harness::get(&format!("http://{}/hello", dp.proxy), &[]).await;
    assert_eq!(r.status, StatusCode::UPGRADE_REQUIRED);

    std::fs::write(&file, config(up.addr, &second)).unwrap();
    eventually(
        "the rotated certificate",
        Duration::from_secs(20),
        || async {
            let s = connect(dp.proxy_tls, "api.example.com", &ca).await;
            (leaf_of(&s) == der(&second.cert)).then_some(())
        },
    )
    .await;
    assert_eq!(
        get(&mut open, "/after").await,
        (StatusCode::OK, "app /after".into())
    );
}
