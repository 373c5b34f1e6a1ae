//! PEM certificates and keys as the proxy's TLS listener uses them: parsed once by the loader
//! (to refuse a bad certificate with the entity and field it came from) and again by the data
//! plane when it compiles a snapshot.

use std::sync::Arc;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{Error, InconsistentKeys, SignatureAlgorithm};

/// Which field of a certificate entity a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Cert,
    Key,
}

/// Why a certificate and key cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemError {
    pub field: Field,
    pub message: String,
}

impl PemError {
    fn cert(message: impl Into<String>) -> PemError {
        PemError {
            field: Field::Cert,
            message: message.into(),
        }
    }

    fn key(message: impl Into<String>) -> PemError {
        PemError {
            field: Field::Key,
            message: message.into(),
        }
    }
}

/// A chain and its key, ready for a TLS handshake, and the key's type.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub key: Arc<CertifiedKey>,
    pub algorithm: SignatureAlgorithm,
}

/// Parses a PEM chain (leaf first) and its PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC),
/// and checks that the key is the leaf's (Kong: "certificate does not match key").
pub fn parse(cert_pem: &str, key_pem: &str) -> Result<Parsed, PemError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| PemError::cert(format!("invalid certificate: {e}")))?;
    if chain.is_empty() {
        return Err(PemError::cert(
            "invalid certificate: no PEM 'CERTIFICATE' block found",
        ));
    }
    // The key's text never goes into a message: only what kind of problem it has.
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| {
        PemError::key(match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "invalid key: no PEM private key block found (PKCS#8, RSA or EC)".to_owned()
            }
            _ => "invalid key: malformed PEM".to_owned(),
        })
    })?;
    let signer = any_supported_type(&key).map_err(|_| {
        PemError::key("invalid key: not an RSA, ECDSA (P-256, P-384) or Ed25519 key")
    })?;
    let algorithm = signer.algorithm();
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        Ok(()) | Err(Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(Parsed {
            key: Arc::new(certified),
            algorithm,
        }),
        Err(Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(PemError::key("certificate does not match key"))
        }
        Err(e) => Err(PemError::cert(format!("invalid certificate: {e}"))),
    }
}

/// The name of a key type, for messages.
pub fn algorithm_name(a: SignatureAlgorithm) -> &'static str {
    match a {
        SignatureAlgorithm::RSA => "RSA",
        SignatureAlgorithm::ECDSA => "ECDSA",
        SignatureAlgorithm::ED25519 => "Ed25519",
        SignatureAlgorithm::ED448 => "Ed448",
        _ => "unknown",
    }
}

/// Checks a CA certificate as Kong's `ca_certificates` schema does: exactly one PEM
/// certificate, with the CA basic constraint, not expired.
pub fn check_ca(cert_pem: &str) -> Result<CertificateDer<'static>, String> {
    let mut certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes());
    let first = match certs.next() {
        Some(Ok(c)) => c,
        Some(Err(e)) => return Err(format!("invalid certificate: {e}")),
        None => return Err("invalid certificate: no PEM 'CERTIFICATE' block found".to_owned()),
    };
    if certs.next().is_some() {
        return Err("please submit only one certificate at a time".to_owned());
    }
    let (_, parsed) = x509_parser::parse_x509_certificate(&first)
        .map_err(|e| format!("invalid certificate: {e}"))?;
    let is_ca = parsed
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|b| b.value.ca);
    if !is_ca {
        return Err(
            "certificate does not appear to be a CA because it is missing the \"CA\" basic constraint"
                .to_owned(),
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if parsed.validity().not_after.timestamp() < now {
        return Err("certificate expired, \"Not After\" time is in the past".to_owned());
    }
    Ok(first)
}
