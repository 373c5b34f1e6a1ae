//! `https` services over real sockets, with certificates made at test time: the upstream's
//! certificate verified against `ca_certificates` (or not, Kong's default), a wrong CA refused
//! with 502, and a client certificate presented to an upstream that requires one.

#[path = "support/harness.rs"]
mod harness;
#[path = "support/pki.rs"]
mod pki;
#[path = "support/tls_client.rs"]
mod tls_client;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use harness::{get, Gateway};
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tls_client::pem_block;
use tokio::net::TcpListener;

/// An HTTPS upstream on 127.0.0.1 serving `leaf`; with `client_ca`, it requires a client
/// certificate that CA signed. It answers `tls-up <path> client=<bool>`.
async fn tls_upstream(leaf: &pki::Leaf, client_ca: Option<&pki::Ca>) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(leaf.cert.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
                .unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let client = tls.get_ref().1.peer_certificates().is_some();
                let svc = service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        let body = format!("tls-up {} client={client}", req.uri().path());
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

const CA_ID: &str = "0b7c5f2e-7a3a-4c1e-9d55-6f3c2b1a0e99";
const CLIENT_ID: &str = "3f4e6a0e-1b0c-4d8e-9a53-0c7f1f0a2b11";

/// One https service per `(name, extra service fields)`, each routed at `/<name>`.
fn config(
    up: SocketAddr,
    trusted: &pki::Ca,
    client: &pki::Leaf,
    services: &[(&str, &str)],
) -> String {
    let mut yaml = String::from("_format_version: \"3.0\"\nservices:\n");
    for (name, extra) in services {
        yaml.push_str(&format!(
            "  - name: {name}\n    url: https://localhost:{}\n{extra}    routes:\n      - paths: [/{name}]\n",
            up.port()
        ));
    }
    yaml.push_str(&format!(
        "ca_certificates:\n  - id: {CA_ID}\n    cert: {}certificates:\n  - id: {CLIENT_ID}\n    cert: {}    key: {}",
        pem_block(&trusted.pem(), 4),
        pem_block(&client.cert, 4),
        pem_block(&client.key, 4)
    ));
    yaml
}

#[tokio::test]
async fn https_upstreams_are_verified_against_their_ca_certificates() {
    let ca = pki::Ca::new("upstream ca");
    let other = pki::Ca::new("another ca");
    let up = tls_upstream(&ca.server(&["localhost"]), None).await;
    let client = other.client("portico");
    let verified = format!("    tls_verify: true\n    ca_certificates: [{CA_ID}]\n");
    let gw = Gateway::start(&config(
        up,
        &ca,
        &client,
        &[("verified", &verified), ("unverified", "")],
    ))
    .await;
    let r = get(&gw.url("/verified/a"), &[]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::OK, "tls-up /a client=false")
    );
    // tls_verify unset: Kong (nginx) does not check the upstream's certificate.
    let r = get(&gw.url("/unverified/b"), &[]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::OK, "tls-up /b client=false")
    );

    // The same upstream checked against a CA that did not sign it: 502, never the response.
    let gw = Gateway::start(&config(up, &other, &client, &[("verified", &verified)])).await;
    let r = get(&gw.url("/verified/a"), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(!r.body.contains("tls-up"), "{}", r.body);
}

#[tokio::test]
async fn a_client_certificate_is_presented_to_an_upstream_that_requires_one() {
    let ca = pki::Ca::new("upstream ca");
    let clients = pki::Ca::new("client ca");
    let up = tls_upstream(&ca.server(&["localhost"]), Some(&clients)).await;
    let client = clients.client("portico");
    let gw = Gateway::start(&config(
        up,
        &ca,
        &client,
        &[
            (
                "mtls",
                &format!(
                    "    tls_verify: true\n    ca_certificates: [{CA_ID}]\n    client_certificate: {{id: {CLIENT_ID}}}\n"
                ),
            ),
            ("anonymous", &format!("    tls_verify: true\n    ca_certificates: [{CA_ID}]\n")),
        ],
    ))
    .await;
    let r = get(&gw.url("/mtls/x"), &[]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::OK, "tls-up /x client=true")
    );
    for _ in 0..3 {
        // The pooled connection is reused and keeps its client certificate.
        let r = get(&gw.url("/mtls/y"), &[]).await;
        assert_eq!(r.body, "tls-up /y client=true");
    }
    let r = get(&gw.url("/anonymous/x"), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
}
