//! TLS termination on the proxy's TLS listener (`--proxy-listen-tls`): the certificate for a
//! handshake is chosen by the client's server name from the `certificates` and `snis` of the
//! config being served, so a config swap rotates certificates for every new handshake while
//! open connections carry on with the one they negotiated.
//!
//! Selection, as Kong's (K:kong/runloop/certificate.lua): the exact name, then a leftmost
//! wildcard for the name minus its first label (`*.example.com` for `api.example.com`, one
//! label only), then a rightmost one for the name minus its last label (`example.*`), then the
//! SNI `*`, then the listener's default certificate (`--tls-cert`/`--tls-key`, or one
//! generated at start). A certificate with an alternative pair (`cert_alt`/`key_alt`) serves
//! the first pair to clients that can verify its key type and the other to the rest.
//!
//! Only TLS 1.2 and 1.3, with rustls' default (modern) cipher suites; ALPN offers `h2` and
//! `http/1.1`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use portico_common::snapshot::{Certificate, Snapshot};
use portico_common::tls::{parse, Field};
use portico_common::ConfigIssue;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SignatureScheme};
use uuid::Uuid;

use crate::state::Shared;

/// One certificate entity, ready for handshakes.
#[derive(Debug)]
struct Pair {
    main: Arc<CertifiedKey>,
    alt: Option<Arc<CertifiedKey>>,
}

impl Pair {
    /// The first pair when the client can verify its key type, else the alternative one.
    fn pick(&self, schemes: &[SignatureScheme]) -> Arc<CertifiedKey> {
        match &self.alt {
            Some(alt)
                if self.main.key.choose_scheme(schemes).is_none()
                    && alt.key.choose_scheme(schemes).is_some() =>
            {
                Arc::clone(alt)
            }
            _ => Arc::clone(&self.main),
        }
    }
}

/// The certificates of one config, by server name.
#[derive(Debug, Default)]
pub struct CertStore {
    /// By certificate id, with the entity it was parsed from (for reuse by the next compile).
    by_id: HashMap<Uuid, (Arc<Certificate>, Arc<Pair>)>,
    /// By SNI name as written: `api.example.com`, `*.example.com`, `example.*`, `*`.
    by_name: HashMap<Box<str>, Arc<Pair>>,
}

impl CertStore {
    /// Parses the certificates of `snapshot`, reusing those of `previous` whose entity did not
    /// change. Errors name the certificate.
    pub fn build(
        snapshot: &Snapshot,
        previous: Option<&CertStore>,
    ) -> Result<CertStore, Vec<ConfigIssue>> {
        let mut store = CertStore::default();
        let mut issues = Vec::new();
        for (i, cert) in snapshot.certificates.iter().enumerate() {
            let reused = previous
                .and_then(|p| p.by_id.get(&cert.id))
                .filter(|(old, _)| **old == **cert)
                .map(|(_, pair)| Arc::clone(pair));
            let pair = match reused {
                Some(p) => p,
                None => match compile(cert) {
                    Ok(p) => Arc::new(p),
                    Err((field, message)) => {
                        issues.push(ConfigIssue::new(
                            format!("certificates[{i}] ({}).{field}", cert.id),
                            message,
                        ));
                        continue;
                    }
                },
            };
            for sni in &cert.snis {
                store
                    .by_name
                    .insert(sni.name.as_str().into(), Arc::clone(&pair));
            }
            store.by_id.insert(cert.id, (Arc::clone(cert), pair));
        }
        if issues.is_empty() {
            Ok(store)
        } else {
            Err(issues)
        }
    }

    /// Number of certificates.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when the config has no certificate.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The certificate entity for `server_name` (already lowercase, as rustls gives it).
    fn find(&self, server_name: Option<&str>) -> Option<&Arc<Pair>> {
        if let Some(name) = server_name {
            if let Some(p) = self.by_name.get(name) {
                return Some(p);
            }
            if let Some((_, rest)) = name.split_once('.') {
                if let Some(p) = self.by_name.get(format!("*.{rest}").as_str()) {
                    return Some(p);
                }
            }
            if let Some((head, _)) = name.rsplit_once('.') {
                if let Some(p) = self.by_name.get(format!("{head}.*").as_str()) {
                    return Some(p);
                }
            }
        }
        self.by_name.get("*")
    }
}

fn compile(cert: &Certificate) -> Result<Pair, (&'static str, String)> {
    let at = |field: Field, main: bool| match (field, main) {
        (Field::Cert, true) => "cert",
        (Field::Key, true) => "key",
        (Field::Cert, false) => "cert_alt",
        (Field::Key, false) => "key_alt",
    };
    let main = parse(&cert.cert, &cert.key).map_err(|e| (at(e.field, true), e.message))?;
    let alt = match (&cert.cert_alt, &cert.key_alt) {
        (Some(c), Some(k)) => Some(
            parse(c, k)
                .map_err(|e| (at(e.field, false), e.message))?
                .key,
        ),
        _ => None,
    };
    Ok(Pair {
        main: main.key,
        alt,
    })
}

/// Picks each handshake's certificate from the runtime being served.
#[derive(Debug)]
struct Resolver {
    shared: Arc<Shared>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let runtime = self.shared.runtime.load();
        let found = runtime
            .as_ref()
            .and_then(|rt| rt.certs.find(hello.server_name()))
            .map(|pair| pair.pick(hello.signature_schemes()));
        Some(found.unwrap_or_else(|| Arc::clone(&self.default)))
    }
}

/// The listener's certificate for names no SNI takes.
#[derive(Debug, Clone)]
pub struct DefaultCertificate(pub Arc<CertifiedKey>);

impl DefaultCertificate {
    /// Reads `--tls-cert` and `--tls-key` (PEM), checked against each other.
    pub fn from_files(cert: &Path, key: &Path) -> Result<DefaultCertificate, String> {
        let read = |p: &Path, flag: &str| {
            std::fs::read_to_string(p).map_err(|e| format!("{flag} {}: {e}", p.display()))
        };
        let cert_pem = read(cert, "--tls-cert")?;
        let key_pem = read(key, "--tls-key")?;
        let parsed = parse(&cert_pem, &key_pem).map_err(|e| match e.field {
            Field::Cert => format!("--tls-cert {}: {}", cert.display(), e.message),
            Field::Key => format!("--tls-key {}: {}", key.display(), e.message),
        })?;
        Ok(DefaultCertificate(parsed.key))
    }

    /// A self-signed certificate for `localhost`, made at start (Kong does the same when no
    /// `ssl_cert` is set). Clients will not trust it; it only lets the listener answer
    /// handshakes for names no SNI takes.
    pub fn self_signed() -> Result<DefaultCertificate, String> {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .map_err(|e| format!("cannot generate the default TLS certificate: {e}"))?;
        let parsed = parse(
            &generated.cert.pem(),
            &generated.signing_key.serialize_pem(),
        )
        .map_err(|e| format!("the generated default TLS certificate: {}", e.message))?;
        Ok(DefaultCertificate(parsed.key))
    }
}

/// The TLS listener's rustls configuration: TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`, the
/// certificate chosen per handshake from `shared`'s current runtime.
pub fn server_config(
    shared: Arc<Shared>,
    default: DefaultCertificate,
) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver {
            shared,
            default: default.0,
        }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// How one `https` service's upstream connections speak TLS: whether and against which roots
/// the upstream's certificate is verified, and the client certificate presented (mutual TLS).
/// The server name sent and verified is the target's host.
pub struct UpstreamTls {
    connector: tokio_rustls::TlsConnector,
    /// Identifies the settings and the PEM they came from: connection pools are keyed by it,
    /// so a changed CA or client certificate never reuses a connection made with the old one.
    pub key: String,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// The TLS settings of `service` (an `https` or `grpcs` service of `snapshot`). Errors say what is
    /// wrong, for the caller to name the service.
    pub fn for_service(
        service: &portico_common::snapshot::Service,
        snapshot: &Snapshot,
    ) -> Result<UpstreamTls, String> {
        use std::hash::{Hash, Hasher};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verify = service.tls_verify.unwrap_or(false);
        let mut fingerprint = std::collections::hash_map::DefaultHasher::new();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS setup: {e}"))?;
        let builder = if verify {
            let mut roots = rustls::RootCertStore::empty();
            if service.ca_certificates.is_empty() {
                roots.add_parsable_certificates(system_roots().iter().cloned());
                if roots.is_empty() {
                    return Err("tls_verify is on but this host has no system CA certificates; list the upstream's CA in 'ca_certificates'".to_owned());
                }
            }
            for id in &service.ca_certificates {
                let ca = snapshot
                    .ca_certificates
                    .iter()
                    .find(|c| c.id == *id)
                    .ok_or_else(|| format!("ca_certificates: no CA certificate {id}"))?;
                ca.cert.hash(&mut fingerprint);
                let der = CertificateDer::from_pem_slice(ca.cert.as_bytes())
                    .map_err(|e| format!("ca_certificates {id}: {e}"))?;
                roots
                    .add(der)
                    .map_err(|e| format!("ca_certificates {id}: {e}"))?;
            }
            builder.with_root_certificates(roots)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        };
        let mut config = match service.client_certificate {
            Some(id) => {
                let cert = snapshot
                    .certificates
                    .iter()
                    .find(|c| c.id == id)
                    .ok_or_else(|| format!("client_certificate: no certificate {id}"))?;
                cert.cert.hash(&mut fingerprint);
                cert.key.hash(&mut fingerprint);
                let chain: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_slice_iter(cert.cert.as_bytes())
                        .collect::<Result<_, _>>()
                        .map_err(|e| format!("client_certificate {id}: {e}"))?;
                let key = PrivateKeyDer::from_pem_slice(cert.key.as_bytes())
                    .map_err(|_| format!("client_certificate {id}: invalid key"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("client_certificate {id}: {e}"))?
            }
            None => builder.with_no_client_auth(),
        };
        // gRPC over TLS is HTTP/2, chosen by ALPN; everything else is HTTP/1.1.
        config.alpn_protocols = if service.protocol == portico_common::snapshot::Protocol::Grpcs {
            vec![b"h2".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let key = format!(
            "verify={verify};ca={:?};client={:?};{:016x}",
            service.ca_certificates,
            service.client_certificate,
            fingerprint.finish()
        );
        Ok(UpstreamTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            key,
        })
    }

    /// Runs the client handshake on `io` for `host`.
    pub async fn connect<IO>(
        &self,
        host: &str,
        io: IO,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("'{host}' is not a valid TLS server name"),
            )
        })?;
        self.connector.connect(name, io).await
    }
}

/// The system's CA certificates, read once.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: std::sync::OnceLock<Vec<CertificateDer<'static>>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "cannot read a system CA certificate");
        }
        found.certs
    })
}

/// Kong's default for `tls_verify` unset or false: the upstream's certificate is not checked
/// (the handshake's signatures still are).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
