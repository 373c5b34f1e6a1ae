//! The validated snapshot: references resolved to ids, Kong's defaults applied, deterministic
//! ids, and a content hash. This is what crosses from `common` to the planes (and, later, the
//! wire). Every field here is already checked; consumers never re-validate it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A complete, validated configuration for one node group.
///
/// Entities are shared (`Arc`): a snapshot made from another by a delta
/// ([`crate::delta::Delta::apply`]) shares every entity the delta did not touch, so a one-route
/// change to 10,000 routes copies 10,000 pointers, not 10,000 routes, and dropping the old
/// snapshot frees only what changed. Edit an entity with `Arc::make_mut`; the wire form is the
/// plain entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Snapshot {
    /// The `_format_version` the file was written in (before migration to 3.0).
    pub source_format_version: String,
    pub services: Vec<Arc<Service>>,
    pub routes: Vec<Arc<Route>>,
    pub upstreams: Vec<Arc<Upstream>>,
    pub consumers: Vec<Arc<Consumer>>,
    pub plugins: Vec<Arc<Plugin>>,
    /// TLS certificates with their server names; left out of the serialized form when there
    /// are none, so configs without TLS keep their content hash.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<Arc<Certificate>>,
    /// CA certificates services trust for upstream TLS (left out when none, as above).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_certificates: Vec<Arc<CaCertificate>>,
    /// Hex content hash of everything above ([`crate::digest::Digests::root`]): equal content,
    /// equal hash, whatever the order of the entities in the lists.
    pub hash: String,
}

/// Entities as a snapshot holds them: each in its own `Arc`.
pub fn shared<T>(entities: impl IntoIterator<Item = T>) -> Vec<Arc<T>> {
    entities.into_iter().map(Arc::new).collect()
}

/// Upstream protocols a service may speak (Kong's `protocol` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Http,
    Https,
    Grpc,
    Grpcs,
    Tcp,
    Tls,
    TlsPassthrough,
    Udp,
    Ws,
    Wss,
}

impl Protocol {
    /// The name used in Kong's config files.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Grpc => "grpc",
            Protocol::Grpcs => "grpcs",
            Protocol::Tcp => "tcp",
            Protocol::Tls => "tls",
            Protocol::TlsPassthrough => "tls_passthrough",
            Protocol::Udp => "udp",
            Protocol::Ws => "ws",
            Protocol::Wss => "wss",
        }
    }

    /// The port a URL of this scheme implies.
    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Https | Protocol::Grpcs | Protocol::Tls | Protocol::Wss => 443,
            _ => 80,
        }
    }
}

/// A Kong service: where matched requests go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub id: Uuid,
    pub name: Option<String>,
    pub protocol: Protocol,
    /// A hostname or IP, or the name of an [`Upstream`].
    pub host: String,
    pub port: u16,
    /// Upstream base path; `None` means `/`.
    pub path: Option<String>,
    pub retries: u32,
    /// Milliseconds.
    pub connect_timeout: u64,
    /// Milliseconds.
    pub write_timeout: u64,
    /// Milliseconds.
    pub read_timeout: u64,
    pub enabled: bool,
    pub tags: Vec<String>,
    /// `https` upstreams: verify the upstream's certificate (Kong's `tls_verify`; unset means
    /// no verification, nginx's and so Kong's default). The fields below are left out of the
    /// serialized form when unset, so services without TLS keep their content hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_verify: Option<bool>,
    /// The [`CaCertificate`]s verification trusts; empty means the system's roots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_certificates: Vec<Uuid>,
    /// The [`Certificate`] presented to the upstream (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<Uuid>,
}

/// A Kong route: which requests match, and how they are rewritten.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub id: Uuid,
    pub name: Option<String>,
    /// The service matched requests go to; `None` answers 503 like Kong's serviceless routes.
    pub service: Option<Uuid>,
    pub protocols: Vec<Protocol>,
    /// Uppercase HTTP methods; empty means any.
    pub methods: Vec<String>,
    /// Lowercased hosts, optionally `*.` / `.*` wildcards and `:port`; empty means any.
    pub hosts: Vec<String>,
    /// Prefix paths (`/foo`) and regex paths (`~/foo/\d+`), already migrated to 3.0 form.
    pub paths: Vec<String>,
    /// Lowercased header name to values (`~*` prefix marks a case-insensitive regex).
    pub headers: BTreeMap<String, Vec<String>>,
    pub strip_path: bool,
    pub preserve_host: bool,
    pub regex_priority: i64,
    pub path_handling: String,
    pub https_redirect_status_code: u16,
    pub request_buffering: bool,
    pub response_buffering: bool,
    pub tags: Vec<String>,
    /// Lowercased TLS server names (`*.` / `.*` wildcards allowed) a request over TLS must have
    /// sent to match; left out of the serialized form when empty (content hashes unchanged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snis: Vec<String>,
}

/// A load-balanced set of targets, used by a service whose `host` equals the upstream's `name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upstream {
    pub id: Uuid,
    pub name: String,
    pub algorithm: String,
    pub hash_on: String,
    pub hash_fallback: String,
    pub slots: u32,
    pub host_header: Option<String>,
    /// The names `hash_on`/`hash_fallback` read (`hash_on_header`, ...); left out of the
    /// serialized form when unset, so configs that hash on nothing keep their content hash.
    #[serde(default, skip_serializing_if = "HashInputs::is_unset")]
    pub hash_inputs: HashInputs,
    /// Kong's `healthchecks` object with defaults applied, kept for the health-check issue.
    /// Written with sorted keys (canonical for the content hash).
    #[serde(serialize_with = "crate::digest::sorted_keys")]
    pub healthchecks: serde_json::Value,
    pub targets: Vec<Target>,
    pub tags: Vec<String>,
}

/// Which header, cookie or query argument a consistent-hashing upstream hashes on (Kong's
/// `hash_on_header`, `hash_fallback_header`, `hash_on_cookie`, `hash_on_cookie_path`,
/// `hash_on_query_arg`, `hash_fallback_query_arg`). Set only when `hash_on`/`hash_fallback`
/// uses them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HashInputs {
    /// Lowercased header name for `hash_on: header`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_header: Option<String>,
    /// Lowercased header name for `hash_fallback: header`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_header: Option<String>,
    /// Cookie name for `hash_on`/`hash_fallback: cookie`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// `Path` of the cookie set when the client has none (Kong's default `/`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie_path: Option<String>,
    /// Query argument for `hash_on: query_arg`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_query_arg: Option<String>,
    /// Query argument for `hash_fallback: query_arg`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_query_arg: Option<String>,
}

impl HashInputs {
    /// True when no hash input names anything (the serialized form leaves it out).
    pub fn is_unset(&self) -> bool {
        *self == HashInputs::default()
    }
}

/// One upstream target (`host:port`, weight).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub id: Uuid,
    /// As written, normalised to `host:port`.
    pub target: String,
    pub host: String,
    pub port: u16,
    /// 0 takes the target out of rotation.
    pub weight: u32,
    pub tags: Vec<String>,
}

/// A consumer and its credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consumer {
    pub id: Uuid,
    pub username: Option<String>,
    pub custom_id: Option<String>,
    pub keyauth_credentials: Vec<KeyAuthCredential>,
    pub jwt_secrets: Vec<JwtSecret>,
    pub basicauth_credentials: Vec<BasicAuthCredential>,
    pub acls: Vec<Acl>,
    pub tags: Vec<String>,
}

/// A key-auth credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyAuthCredential {
    pub id: Uuid,
    pub key: String,
    pub ttl: Option<u64>,
    pub tags: Vec<String>,
}

/// A jwt credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JwtSecret {
    pub id: Uuid,
    pub key: String,
    pub secret: Option<String>,
    pub rsa_public_key: Option<String>,
    pub algorithm: String,
    pub tags: Vec<String>,
}

/// A basic-auth credential; `password` holds Kong's `sha1(password .. consumer_id)` hex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BasicAuthCredential {
    pub id: Uuid,
    pub username: String,
    pub password: String,
    pub tags: Vec<String>,
}

/// An ACL group membership.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acl {
    pub id: Uuid,
    pub group: String,
    pub tags: Vec<String>,
}

/// A plugin instance at its scope (all of service/route/consumer `None` means global).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plugin {
    pub id: Uuid,
    pub name: String,
    pub instance_name: Option<String>,
    pub service: Option<Uuid>,
    pub route: Option<Uuid>,
    pub consumer: Option<Uuid>,
    /// The plugin's `config`, validated and with every default filled in
    /// ([`crate::plugins::PluginConfig::to_value`]); [`crate::plugins::PluginConfig::parse`]
    /// types it again. Written with sorted keys (canonical for the content hash).
    #[serde(serialize_with = "crate::digest::sorted_keys")]
    pub config: serde_json::Value,
    pub protocols: Vec<Protocol>,
    pub enabled: bool,
    pub tags: Vec<String>,
}

/// A TLS certificate the proxy's TLS listener serves, and the server names it serves it for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    pub id: Uuid,
    /// PEM: the leaf certificate first, then its intermediates.
    pub cert: String,
    /// PEM private key of `cert`.
    pub key: String,
    /// A second chain and key of another key type (an ECDSA pair beside an RSA one), for
    /// clients that cannot use the first.
    pub cert_alt: Option<String>,
    pub key_alt: Option<String>,
    pub snis: Vec<Sni>,
    pub tags: Vec<String>,
}

/// A server name served with a certificate: exact (`api.example.com`), a leftmost wildcard
/// (`*.example.com`), a rightmost one (`example.*`), or `*` for every name no other SNI takes
/// (the listener's default certificate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sni {
    pub id: Uuid,
    /// Lowercased.
    pub name: String,
    pub tags: Vec<String>,
}

/// A CA certificate (PEM, exactly one, with the CA basic constraint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaCertificate {
    pub id: Uuid,
    pub cert: String,
    pub tags: Vec<String>,
}
