//! Mutual TLS on the cluster listener, with certificates generated at test time: a data plane
//! with a certificate signed by the cluster CA gets its config; one signed by another CA, one
//! without a certificate, and a plaintext client are refused, and each refusal is logged with
//! the peer address and the reason.

#[path = "support/harness.rs"]
mod harness;

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use harness::{config, eventually, start, Cp, FakeDp};
use portico_control_plane::{ClusterTls, CpOptions};
use portico_proto::v1::ApplyRequest;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Everything the control plane logs in this test binary.
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        tracing_subscriber::fmt()
            .with_writer(|| LogWriter)
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .init();
    });
}

fn logs() -> String {
    String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned()
}

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn issuer(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, cn);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, sans[0]);
    p.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let ca = issuer("cluster CA");
    Pki {
        ca: ca.pem(),
        server: leaf(
            &ca,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        client: leaf(&ca, &["dp-1"], ExtendedKeyUsagePurpose::ClientAuth),
    }
}

async fn start_tls(pki: &Pki) -> (Cp, tempfile::TempDir) {
    capture_logs();
    let certs = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = certs.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let tls = ClusterTls {
        cert: write("cp.crt", &pki.server.0),
        key: write("cp.key", &pki.server.1),
        client_ca: write("ca.crt", &pki.ca),
    };
    let cp = start(CpOptions {
        cluster_tls: Some(tls),
        ..Default::default()
    })
    .await;
    let mut admin = cp.admin_client().await;
    let r = admin
        .apply(ApplyRequest {
            group: "default".into(),
            config_text: config(1),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.accepted);
    (cp, certs)
}

fn client_tls(ca: &str, identity: Option<&(String, String)>) -> ClientTlsConfig {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    match identity {
        Some((cert, key)) => tls.identity(Identity::from_pem(cert, key)),
        None => tls,
    }
}

/// Connects and says Hello; `Err` with the reason when refused anywhere along the way.
async fn try_dp(
    cp: &Cp,
    scheme: &str,
    tls: Option<ClientTlsConfig>,
    node: &str,
) -> Result<FakeDp, String> {
    let mut endpoint = Channel::from_shared(format!("{scheme}://{}", cp.cluster)).unwrap();
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    FakeDp::connect(channel, node, "default", (0, ""))
        .await
        .map_err(|e| format!("stream: {e}"))
}

async fn wait_log(needle: &str) -> String {
    eventually(needle, || async {
        let all = logs();
        all.lines().find(|l| l.contains(needle)).map(str::to_owned)
    })
    .await
}

#[tokio::test]
async fn a_data_plane_with_a_ca_signed_certificate_gets_its_config() {
    let pki = pki();
    let (cp, _certs) = start_tls(&pki).await;
    let mut dp = try_dp(
        &cp,
        "https",
        Some(client_tls(&pki.ca, Some(&pki.client))),
        "tls-ok",
    )
    .await
    .expect("mTLS accepted");
    let u = dp.update().await;
    assert_eq!(u.version, 1);
    dp.ack(&u).await;
    let node = cp
        .wait_node("tls-ok", "in sync over mTLS", |n| n.state == "in_sync")
        .await;
    assert!(
        node.address.starts_with("127.0.0.1:"),
        "peer address known over TLS: {node:?}"
    );
    cp.stop().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_and_logged() {
    let pki = pki();
    let (cp, _certs) = start_tls(&pki).await;
    let rogue = issuer("rogue CA");
    let rogue_client = leaf(&rogue, &["dp-evil"], ExtendedKeyUsagePurpose::ClientAuth);
    let result = try_dp(
        &cp,
        "https",
        Some(client_tls(&pki.ca, Some(&rogue_client))),
        "tls-rogue",
    )
    .await;
    assert!(result.is_err(), "refused");
    let line = wait_log("not signed by the cluster CA").await;
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("data plane refused"), "{line}");
    assert!(line.contains("peer=127.0.0.1:"), "names the peer: {line}");
    assert!(cp.node("tls-rogue").await.is_none());
    cp.stop().await;
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_and_logged() {
    let pki = pki();
    let (cp, _certs) = start_tls(&pki).await;
    let result = try_dp(&cp, "https", Some(client_tls(&pki.ca, None)), "tls-anon").await;
    assert!(result.is_err(), "refused");
    let line = wait_log("presented no certificate").await;
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    assert!(cp.node("tls-anon").await.is_none());
    cp.stop().await;
}

#[tokio::test]
async fn a_plaintext_client_on_the_tls_listener_is_refused_and_logged() {
    let pki = pki();
    let (cp, _certs) = start_tls(&pki).await;
    let result = try_dp(&cp, "http", None, "plain").await;
    assert!(result.is_err(), "refused");
    let line = wait_log("did not start a TLS handshake").await;
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    assert!(cp.node("plain").await.is_none());
    cp.stop().await;
}
