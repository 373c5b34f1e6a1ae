//! Helpers on the snapshot types (kept apart from `snapshot.rs`, which is the contract):
//! protocol parsing, the one-line summary, the content hash and the canonical JSON writer used
//! for content-derived ids.

use serde_json::Value;

use crate::digest::Digests;
use std::collections::BTreeMap;

use uuid::Uuid;

use crate::snapshot::{Protocol, Route, Service, Snapshot};

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

impl Service {
    /// A service with Kong's defaults (http to `host:80`, path `/`, 5 retries, 60 s timeouts,
    /// enabled); tests and benchmarks fill in the rest.
    pub fn with_defaults(id: Uuid, host: &str) -> Service {
        Service {
            id,
            name: None,
            protocol: Protocol::Http,
            host: host.to_owned(),
            port: 80,
            path: None,
            retries: 5,
            connect_timeout: 60_000,
            write_timeout: 60_000,
            read_timeout: 60_000,
            enabled: true,
            tags: vec![],
            tls_verify: None,
            ca_certificates: vec![],
            client_certificate: None,
        }
    }
}

impl Route {
    /// A route with Kong's defaults (http and https, `strip_path`, `path_handling: v0`, 426 for
    /// plain HTTP on an https-only route, buffering on) that matches nothing yet; tests and
    /// benchmarks fill in what they match on.
    pub fn with_defaults(id: Uuid) -> Route {
        Route {
            id,
            name: None,
            service: None,
            protocols: vec![Protocol::Http, Protocol::Https],
            methods: vec![],
            hosts: vec![],
            paths: vec![],
            headers: BTreeMap::new(),
            strip_path: true,
            preserve_host: false,
            regex_priority: 0,
            path_handling: "v0".into(),
            https_redirect_status_code: 426,
            request_buffering: true,
            response_buffering: true,
            tags: vec![],
            snis: vec![],
        }
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
        let line = format!(
            "{}, {}, {} ({}), {} ({}), {}",
            count(self.services.len(), "service"),
            count(self.routes.len(), "route"),
            count(self.upstreams.len(), "upstream"),
            count(targets, "target"),
            count(self.consumers.len(), "consumer"),
            count(credentials, "credential"),
            count(self.plugins.len(), "plugin"),
        );
        if self.certificates.is_empty() {
            line
        } else {
            format!("{line}, {}", count(self.certificates.len(), "certificate"))
        }
    }

    /// The content hash of everything but `hash` itself: `Digests::of(self).root(..)`, see
    /// [`crate::digest`]. Callers that keep the digests (to build or apply a
    /// [`crate::delta::Delta`]) should compute them once and call [`Digests::root`] instead.
    pub fn compute_hash(&self) -> String {
        Digests::of(self).root(&self.source_format_version)
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
