//! Authored config: serde types that mirror one entity of Kong's declarative file as written.
//!
//! Each type holds the entity's own fields only. Nested children (`services[].routes`,
//! `consumers[].keyauth_credentials`, ...) are walked separately by the loader, so one bad child
//! never hides the errors of its siblings. Every field is optional here: the loader decides
//! what is required and reports "required field missing" with the field's path, and it decodes
//! an entity field by field when the whole fails, so every bad field gets its own error.
//! `deny_unknown_fields` makes a typo (`pathz`) an error rather than a silently ignored key.
//!
//! Foreign keys (`route.service`, `plugin.consumer`, ...) are the parent's name or id as a
//! string, as in Kong's top-level form. Fields Kong knows but Portico does not carry yet are
//! kept as raw values so the loader can accept them at Kong's default (exports write
//! `tls_verify: null`) and refuse anything else instead of dropping it.

pub mod de;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A service (K:kong/db/schema/entities/services.lua).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Service {
    pub id: Option<String>,
    pub name: Option<String>,
    /// Shorthand for protocol, host, port and path.
    pub url: Option<String>,
    pub protocol: Option<String>,
    pub host: Option<String>,
    #[serde(deserialize_with = "de::int")]
    pub port: Option<i64>,
    pub path: Option<String>,
    #[serde(deserialize_with = "de::int")]
    pub retries: Option<i64>,
    #[serde(deserialize_with = "de::int")]
    pub connect_timeout: Option<i64>,
    #[serde(deserialize_with = "de::int")]
    pub write_timeout: Option<i64>,
    #[serde(deserialize_with = "de::int")]
    pub read_timeout: Option<i64>,
    #[serde(deserialize_with = "de::boolean")]
    pub enabled: Option<bool>,
    pub tags: Option<Vec<String>>,
    #[serde(deserialize_with = "de::boolean")]
    pub tls_verify: Option<bool>,
    pub tls_verify_depth: Option<Value>,
    /// Ids of `ca_certificates` entities.
    pub ca_certificates: Option<Vec<String>>,
    /// A `certificates` id, as a string or Kong's `{ id = ... }`.
    pub client_certificate: Option<Value>,
    #[serde(rename = "_comment")]
    pub comment: Option<String>,
    #[serde(rename = "_ignore")]
    pub ignore: Option<Vec<Value>>,
    pub created_at: Option<Value>,
    pub updated_at: Option<Value>,
}

/// A route (K:kong/db/schema/entities/routes.lua).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Route {
    pub id: Option<String>,
    pub name: Option<String>,
    /// The service's name or id (top-level routes only).
    pub service: Option<String>,
    pub protocols: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
    pub hosts: Option<Vec<String>>,
    pub paths: Option<Vec<String>>,
    pub headers: Option<BTreeMap<String, Vec<String>>>,
    #[serde(deserialize_with = "de::boolean")]
    pub strip_path: Option<bool>,
    #[serde(deserialize_with = "de::boolean")]
    pub preserve_host: Option<bool>,
    #[serde(deserialize_with = "de::int")]
    pub regex_priority: Option<i64>,
    pub path_handling: Option<String>,
    #[serde(deserialize_with = "de::int")]
    pub https_redirect_status_code: Option<i64>,
    #[serde(deserialize_with = "de::boolean")]
    pub request_buffering: Option<bool>,
    #[serde(deserialize_with = "de::boolean")]
    pub response_buffering: Option<bool>,
    pub tags: Option<Vec<String>>,
    pub snis: Option<Vec<String>>,
    pub sources: Option<Value>,
    pub destinations: Option<Value>,
    pub expression: Option<Value>,
    pub priority: Option<Value>,
    #[serde(rename = "_comment")]
    pub comment: Option<String>,
    #[serde(rename = "_ignore")]
    pub ignore: Option<Vec<Value>>,
    pub created_at: Option<Value>,
    pub updated_at: Option<Value>,
}

/// An upstream (K:kong/db/schema/entities/upstreams.lua).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Upstream {
    pub id: Option<String>,
    pub name: Option<String>,
    pub algorithm: Option<String>,
    pub hash_on: Option<String>,
    pub hash_fallback: Option<String>,
    #[serde(deserialize_with = "de::int")]
    pub slots: Option<i64>,
    /// Merged over Kong's defaults; checked against their shape.
    pub healthchecks: Option<Value>,
    pub host_header: Option<String>,
    pub tags: Option<Vec<String>>,
    pub hash_on_header: Option<Value>,
    pub hash_fallback_header: Option<Value>,
    pub hash_on_cookie: Option<Value>,
    pub hash_on_cookie_path: Option<Value>,
    pub hash_on_query_arg: Option<Value>,
    pub hash_fallback_query_arg: Option<Value>,
    pub hash_on_uri_capture: Option<Value>,
    pub hash_fallback_uri_capture: Option<Value>,
    pub client_certificate: Option<Value>,
    pub use_srv_name: Option<Value>,
    #[serde(rename = "_comment")]
    pub comment: Option<String>,
    #[serde(rename = "_ignore")]
    pub ignore: Option<Vec<Value>>,
    pub created_at: Option<Value>,
    pub updated_at: Option<Value>,
}

/// A target (K:kong/db/schema/entities/targets.lua).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Target {
    pub id: Option<String>,
    /// `host[:port]`.
    pub target: Option<String>,
    #[serde(deserialize_with = "de::int")]
    pub weight: Option<i64>,
    /// The upstream's name or id (top-level targets only).
    pub upstream: Option<String>,
    pub tags: Option<Vec<String>>,
    #[serde(rename = "_comment")]
    pub comment: Option<String>,
    #[serde(rename = "_ignore")]
    pub ignore: Option<Vec<Value>>,
    pub created_at: Option<Value>,
    pub updated_at: Option<Value>,
}

/// A consumer (K:kong/db/schema/entities/consumers.lua).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Consumer {
    pub id: Option<String>,
    pub username: Option<String>,
    pub custom_id: Option<String>,
    pub tags: Option<Vec<String>>,
    #[serde(rename = "_comment")]
    pub comment: Option<String>,
    #[serde(rename = "_ignore")]
    pub ignore: Option<Vec<Value>>,
    pub created_at: Option<Value>,
    pub updated_at: Option<Value>,
}

/// A key-auth credential (K:kong/plugins/key-auth/daos.lua).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyAuthCredential {
    pub id: Option<String>,
    pub key: Option<String>,
    #[serde(deserialize_with = "de::int")]
    pub ttl: Option<i64>,
    /// The consumer's username or id (top-level credentials only).
    pub consumer: Option<String>,
    pub tags: Option<Vec<String>>,
    #[serde(rename = "_comment")]
    pub comment: Option<String>,
    #[serde(rename = "_ignore")]
    pub ignore: Option<Vec<Value>>,
    pub created_at: Option<Value>,
}

/// A jwt credential (K:kong/plugins/jwt/daos.lua).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtSecret {
    pub id: Option<String>,
    pub key: Option<String>,
    pub secret: Option<String>,
    pub rsa_public_key: Option<String>,
    pub algorithm: Option<String>,
    pub consumer: Option<String>,
    pub tags: Option<Vec<String>>,
    #[serde(rename = "_comment")]
    pub comment: Option<String>,
    #[serde(rename = "_ignore")]
    pub ignore: Option<Vec<Value>>,
    pub created_at: Option<Value>,
}

/// A basic-auth credential (K:kong/plugins/basic-auth/daos.lua).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BasicAuthCredential {
    pub id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub consumer: Option<String>,
    pub tags: Option<Vec<String>>,
    #[serde(rename = "_comment")]
    pub comment: Option<String>,
    #[serde(rename = "_ignore")]
    pub ignore: Option<Vec<Value>>,
    pub created_at: Option<Value>,
}

/// An ACL group membership (K:kong/plugins/acl/daos.lua).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Acl {
    pub id: Option<String>,
    pub group: Option<String>,
    pub consumer: Option<String>,
    pub tags: Option<Vec<String>>,
    #[serde(rename = "_comment")]
    pub comment: Option<String>,
    #[serde(rename = "_ignore")]
    pub ignore: Option<Vec<Value>>,
    pub created_at: Option<Value>,
}

/// A TLS certificate and its private key, with an optional second pair of another key type
/// (K:kong/db/schema/entities/certificates.lua). `snis` nested in it are its server names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Certificate {
    pub id: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub cert_alt: Option<String>,
    pub key_alt: Option<String>,
    pub tags: Option<Vec<String>>,
    #[serde(rename = "_comment")]
    pub comment: Option<String>,
    #[serde(rename = "_ignore")]
    pub ignore: Option<Vec<Value>>,
    pub created_at: Option<Value>,
    pub updated_at: Option<Value>,
}

/// A CA certificate upstream TLS verification trusts (K:kong/db/schema/entities/ca_certificates.lua).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaCertificate {
    pub id: Option<String>,
    pub cert: Option<String>,
    /// Kong computes it; accepted and ignored (Portico keys CA certificates by id).
    pub cert_digest: Option<String>,
    pub tags: Option<Vec<String>>,
    #[serde(rename = "_comment")]
    pub comment: Option<String>,
    #[serde(rename = "_ignore")]
    pub ignore: Option<Vec<Value>>,
    pub created_at: Option<Value>,
    pub updated_at: Option<Value>,
}

/// A server name served with a certificate (K:kong/db/schema/entities/snis.lua).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sni {
    pub id: Option<String>,
    pub name: Option<String>,
    /// The certificate's id (top-level snis only).
    pub certificate: Option<String>,
    pub tags: Option<Vec<String>>,
    #[serde(rename = "_comment")]
    pub comment: Option<String>,
    #[serde(rename = "_ignore")]
    pub ignore: Option<Vec<Value>>,
    pub created_at: Option<Value>,
    pub updated_at: Option<Value>,
}

/// A plugin instance (K:kong/db/schema/entities/plugins.lua).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Plugin {
    pub id: Option<String>,
    pub name: Option<String>,
    pub instance_name: Option<String>,
    pub service: Option<String>,
    pub route: Option<String>,
    pub consumer: Option<String>,
    /// Kept as written here; the loader types it with `crate::plugins::PluginConfig::parse`.
    pub config: Option<Value>,
    pub protocols: Option<Vec<String>>,
    #[serde(deserialize_with = "de::boolean")]
    pub enabled: Option<bool>,
    pub tags: Option<Vec<String>>,
    pub run_on: Option<Value>,
    pub consumer_group: Option<Value>,
    pub ordering: Option<Value>,
    #[serde(rename = "_comment")]
    pub comment: Option<String>,
    #[serde(rename = "_ignore")]
    pub ignore: Option<Vec<Value>>,
    pub created_at: Option<Value>,
    pub updated_at: Option<Value>,
}
