//! The verification key of each jwt secret, and the one algorithm it is pinned to.
//!
//! The algorithm always comes from the consumer's `jwt_secrets.algorithm`, never from the
//! token: the token's `alg` is only compared with it (Kong's "Invalid algorithm"). That, plus a
//! key whose family matches the pinned algorithm, is what makes `alg: none`, HS256 signed with
//! the RSA public key, and RS256→PS256 switches fail.
//!
//! Parsing a PEM public key costs far more than a hash lookup, and setting up an HMAC key
//! (hashing its padded blocks) costs as much as the HMAC of a short token, so every key is made
//! at most once per snapshot and plugin instance ([`Keys`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use aws_lc_rs::hmac;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use portico_common::snapshot::{JwtSecret, Snapshot};
use rsa::pkcs1::DecodeRsaPublicKey as _;
use rsa::traits::PublicKeyParts as _;
use uuid::Uuid;

use super::verified::Cache;

/// RSA moduli below this are refused: 1024-bit keys are within reach of a well-funded attacker
/// and 512-bit ones of anyone (SECURITY.md §3.3).
const MIN_RSA_BITS: usize = 2048;

/// Why a secret cannot verify anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// No secret/key, an undecodable one, a key of the wrong kind or curve, an empty HMAC
    /// secret or a short RSA key. Answered as Kong's "Invalid key/secret".
    Invalid,
}

/// `jwt_secrets.algorithm` as a `jsonwebtoken` algorithm; `None` for ES512 (and for anything
/// the loader should already have refused).
pub fn pinned(algorithm: &str) -> Option<Algorithm> {
    Some(match algorithm {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The HMAC key of an HS* secret for `alg`; `secret_is_base64` decodes it first (Kong accepts
/// either base64 alphabet, padded or not).
pub fn hmac_key(
    secret: &JwtSecret,
    secret_is_base64: bool,
    alg: Algorithm,
) -> Result<hmac::Key, KeyError> {
    let hash = match alg {
        Algorithm::HS256 => hmac::HMAC_SHA256,
        Algorithm::HS384 => hmac::HMAC_SHA384,
        Algorithm::HS512 => hmac::HMAC_SHA512,
        _ => return Err(KeyError::Invalid),
    };
    let raw = secret.secret.as_deref().ok_or(KeyError::Invalid)?;
    let decoded;
    let bytes = if secret_is_base64 {
        let trimmed = raw.trim_end_matches('=');
        let padded = format!("{trimmed}{}", "=".repeat((4 - trimmed.len() % 4) % 4));
        decoded = STANDARD
            .decode(&padded)
            .or_else(|_| URL_SAFE.decode(&padded))
            .map_err(|_| KeyError::Invalid)?;
        &decoded[..]
    } else {
        raw.as_bytes()
    };
    // An empty HMAC key verifies tokens anyone can mint (CVE-2019-20933).
    if bytes.is_empty() {
        return Err(KeyError::Invalid);
    }
    Ok(hmac::Key::new(hash, bytes))
}

/// The verification key of one secret.
#[derive(Debug, Clone)]
pub enum Key {
    /// Boxed: aws-lc's HMAC context is 1.2 KB, and every secret of the snapshot has a slot for
    /// its key whether or not a token ever names it.
    Hmac(Box<hmac::Key>),
    Public(DecodingKey),
}

impl Key {
    /// Whether `signature` over `message` is valid; `signature_b64` is the same signature as
    /// the token spells it.
    pub fn verify(
        &self,
        message: &[u8],
        signature: &[u8],
        signature_b64: &str,
        alg: Algorithm,
    ) -> bool {
        match self {
            // Constant-time comparison of the tags.
            Key::Hmac(key) => hmac::verify(key, message, signature).is_ok(),
            Key::Public(key) => matches!(
                jsonwebtoken::crypto::verify(signature_b64, message, key, alg),
                Ok(true)
            ),
        }
    }
}

/// The key of `secret` for its pinned `alg`.
pub fn key(secret: &JwtSecret, secret_is_base64: bool, alg: Algorithm) -> Result<Key, KeyError> {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            hmac_key(secret, secret_is_base64, alg).map(|k| Key::Hmac(Box::new(k)))
        }
        _ => public_key(secret, alg).map(Key::Public),
    }
}

/// Parses the PEM public key of an asymmetric secret for `alg`.
pub fn public_key(secret: &JwtSecret, alg: Algorithm) -> Result<DecodingKey, KeyError> {
    let pem = secret
        .rsa_public_key
        .as_deref()
        .ok_or(KeyError::Invalid)?
        .as_bytes();
    let key = match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => {
            let key = DecodingKey::from_rsa_pem(pem).map_err(|_| KeyError::Invalid)?;
            let DecodingKeyKind::SecretOrDer(der) = key.kind() else {
                return Err(KeyError::Invalid);
            };
            // from_rsa_pem also takes a private key PEM; only a public key parses here.
            let parsed = rsa::RsaPublicKey::from_pkcs1_der(der).map_err(|_| KeyError::Invalid)?;
            if parsed.n().bits() < MIN_RSA_BITS {
                return Err(KeyError::Invalid);
            }
            key
        }
        Algorithm::ES256 | Algorithm::ES384 => {
            let key = DecodingKey::from_ec_pem(pem).map_err(|_| KeyError::Invalid)?;
            // The PEM parser does not check the curve: an uncompressed SEC1 point is 65 bytes
            // on P-256 and 97 on P-384; refuse a key of the other curve up front.
            let want = if alg == Algorithm::ES256 { 65 } else { 97 };
            if key.as_bytes().len() != want {
                return Err(KeyError::Invalid);
            }
            key
        }
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem).map_err(|_| KeyError::Invalid)?,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => return Err(KeyError::Invalid),
    };
    Ok(key)
}

/// The keys of one snapshot's jwt secrets, by secret id. Each key is made on first use and then
/// read without a lock.
#[derive(Debug, Default)]
pub struct Keys {
    /// The snapshot these keys were read from ([`Snapshot::hash`]).
    hash: String,
    secret_is_base64: bool,
    by_secret: HashMap<Uuid, OnceLock<Result<Key, KeyError>>>,
    verified: Cache,
}

impl Keys {
    /// A slot for every jwt secret of `snapshot`; nothing is parsed yet, so this is cheap
    /// enough to run when a runtime is compiled.
    pub fn new(snapshot: &Snapshot, secret_is_base64: bool) -> Keys {
        let by_secret = snapshot
            .consumers
            .iter()
            .flat_map(|c| &c.jwt_secrets)
            .map(|s| (s.id, OnceLock::new()))
            .collect();
        Keys {
            hash: snapshot.hash.clone(),
            secret_is_base64,
            by_secret,
            verified: Cache::default(),
        }
    }

    /// The tokens verified with these keys, when they are `snapshot`'s.
    pub fn verified(&self, snapshot: &Snapshot) -> Option<&Cache> {
        (self.hash == snapshot.hash).then_some(&self.verified)
    }

    /// The key of `secret` (of `snapshot`) for its pinned `alg`.
    pub fn key(
        &self,
        snapshot: &Snapshot,
        secret: &JwtSecret,
        alg: Algorithm,
    ) -> Result<Cow<'_, Key>, KeyError> {
        // Ids are stable across reloads but keys can be rotated under the same id, so a cache
        // from another snapshot is never consulted.
        let slot = (self.hash == snapshot.hash)
            .then(|| self.by_secret.get(&secret.id))
            .flatten();
        match slot {
            Some(slot) => {
                let made = slot.get_or_init(|| {
                    let made = key(secret, self.secret_is_base64, alg);
                    if made.is_err() {
                        tracing::warn!(plugin = "jwt", jwt_secret = %secret.id, algorithm = %secret.algorithm, "jwt secret has no usable key; its tokens are refused");
                    }
                    made
                });
                made.as_ref().map(Cow::Borrowed).map_err(|e| *e)
            }
            None => key(secret, self.secret_is_base64, alg).map(Cow::Owned),
        }
    }
}
