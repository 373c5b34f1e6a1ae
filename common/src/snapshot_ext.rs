//! Helpers on the snapshot types (kept apart from `snapshot.rs`, which is the contract):
//! protocol parsing, the one-line summary and the content hash.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::snapshot::{Protocol, Snapshot};

impl Protocol {
    /// Every protocol name Kong's config accepts, in Kong's order.
    pub const ALL: [Protocol; 10] = [
        Protocol::Http,
        Protocol::Https,
        Protocol::Grpc,
        Protocol::Grpcs,
        Protocol::Tcp,
        Protocol::Tls,
        Protocol::TlsPassthrough,
        Protocol::Udp,
        Protocol::Ws,
        Protocol::Wss,
    ];

    /// Parses a config name (`"http"`, `"tls_passthrough"`); exact, lowercase, like Kong.
    pub fn parse(name: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// Stream (L4) protocols: tcp, tls, tls_passthrough, udp.
    pub fn is_stream(self) -> bool {
        matches!(
            self,
            Protocol::Tcp | Protocol::Tls | Protocol::TlsPassthrough | Protocol::Udp
        )
    }
}

impl Snapshot {
    /// One line for logs and the CLI, e.g.
    /// `2 services, 3 routes, 1 upstream (2 targets), 1 consumer (1 credential), 0 plugins`.
    pub fn summary(&self) -> String {
        let targets: usize = self.upstreams.iter().map(|u| u.targets.len()).sum();
        let credentials: usize = self
            .consumers
            .iter()
            .map(|c| {
                c.keyauth_credentials.len() + c.jwt_secrets.len() + c.basicauth_credentials.len()
            })
            .sum();
        format!(
            "{}, {}, {} ({}), {} ({}), {}",
            count(self.services.len(), "service"),
            count(self.routes.len(), "route"),
            count(self.upstreams.len(), "upstream"),
            count(targets, "target"),
            count(self.consumers.len(), "consumer"),
            count(credentials, "credential"),
            count(self.plugins.len(), "plugin"),
        )
    }

    /// Hex SHA-256 over the canonical JSON of the snapshot with `hash` empty.
    ///
    /// Canonical means object keys sorted at every level, written by us rather than by
    /// `serde_json::to_vec`: `serde_json`'s `preserve_order` feature is unified across the whole
    /// build, so another crate enabling it must not change the hash of the same content.
    pub fn compute_hash(&self) -> String {
        let mut copy = self.clone();
        copy.hash = String::new();
        let value = serde_json::to_value(&copy).unwrap_or(Value::Null);
        let mut out = String::new();
        write_canonical(&value, &mut out);
        hex::encode(Sha256::digest(out.as_bytes()))
    }
}

fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Writes `value` as JSON with object keys in sorted order.
pub(crate) fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}
