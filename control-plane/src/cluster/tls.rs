//! The cluster listener's rustls configuration: the server's certificate chain and key, and
//! mandatory client certificates signed by the cluster CA. The `ring` provider is pinned
//! explicitly so the build never depends on which rustls provider another crate enabled.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::{ClusterTls, CpError};

fn tls_error(path: &Path, message: impl std::fmt::Display) -> CpError {
    CpError::ClusterTls(format!("{}: {message}", path.display()))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CpError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(path, format!("cannot read PEM certificates: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(path, format!("invalid PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(tls_error(path, "no PEM certificate found"));
    }
    Ok(certs)
}

/// Builds the TLS acceptor for the cluster listener (mutual TLS, ALPN h2).
pub(crate) fn acceptor(tls: &ClusterTls) -> Result<TlsAcceptor, CpError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = read_certs(&tls.cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| tls_error(&tls.key, format!("cannot read a PEM private key: {e}")))?;
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&tls.client_ca)? {
        roots
            .add(ca)
            .map_err(|e| tls_error(&tls.client_ca, format!("unusable CA certificate: {e}")))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| tls_error(&tls.client_ca, format!("client CA: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CpError::ClusterTls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            CpError::ClusterTls(format!(
                "{} / {}: certificate and key do not form a usable identity: {e}",
                tls.cert.display(),
                tls.key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A handshake failure in words an operator can act on.
pub(super) fn explain(e: &std::io::Error) -> String {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return e.to_string();
    };
    match tls {
        rustls::Error::NoCertificatesPresented => {
            "the client presented no certificate (the cluster listener requires mutual TLS)".into()
        }
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the client certificate is not signed by the cluster CA (UnknownIssuer)".into()
        }
        rustls::Error::InvalidCertificate(CertificateError::Expired) => {
            "the client certificate has expired".into()
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidYet) => {
            "the client certificate is not valid yet (clock skew?)".into()
        }
        other => format!("TLS error: {other}"),
    }
}
