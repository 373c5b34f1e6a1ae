//! End to end with the real binary: `portico dp --config kong.yml` terminating TLS with the
//! file's certificates by SNI, `--tls-cert`/`--tls-key` for other names, and a certificate
//! rotated by editing the file (hot reload) while a connection opened before stays served.

#[path = "support/binary.rs"]
mod binary;
#[path = "../data-plane/tests/support/harness.rs"]
mod harness;
#[path = "../data-plane/tests/support/pki.rs"]
mod pki;
#[path = "../data-plane/tests/support/tls_client.rs"]
mod tls_client;

use std::net::SocketAddr;
use std::time::Duration;

use binary::{eventually, Portico};
use harness::Upstream;
use http::StatusCode;
use tls_client::{connect, get1, http1, leaf_der, pem_block, served_leaf};

fn config(up: SocketAddr, leaf: &pki::Leaf) -> String {
    format!(
        "_format_version: \"3.0\"\nservices:\n  - name: app\n    url: http://{up}\n    routes:\n      - name: app\n        protocols: [https]\n        paths: [/]\ncertificates:\n  - cert: {}    key: {}    snis: [api.example.com]\n",
        pem_block(&leaf.cert, 6),
        pem_block(&leaf.key, 6)
    )
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

    let s = connect(dp.proxy_tls, "api.example.com", &ca.pem(), &[]).await;
    assert_eq!(served_leaf(&s), leaf_der(&first.cert));
    let mut open = http1(s).await;
    assert_eq!(
        get1(&mut open, "api.example.com", "/hello").await,
        (StatusCode::OK, "app /hello".into())
    );
    let s = connect(dp.proxy_tls, "default.example.org", &ca.pem(), &[]).await;
    assert_eq!(
        served_leaf(&s),
        leaf_der(&default.cert),
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
            let s = connect(dp.proxy_tls, "api.example.com", &ca.pem(), &[]).await;
            (served_leaf(&s) == leaf_der(&second.cert)).then_some(())
        },
    )
    .await;
    assert_eq!(
        get1(&mut open, "api.example.com", "/after").await,
        (StatusCode::OK, "app /after".into())
    );
}
