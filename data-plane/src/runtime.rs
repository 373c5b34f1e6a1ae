//! The compiled runtime: everything the request path needs, built once per snapshot off the
//! request path, then published with one `ArcSwap` store. A request loads it once and finishes
//! on it, so a swap never changes config under an in-flight request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use portico_common::snapshot::{Protocol, Snapshot};
use portico_common::ConfigIssue;

use crate::balancer::Balancer;
use crate::pool::{EndpointPool, Pools};
use crate::router::Router;

/// Where a service sends requests.
#[derive(Debug)]
pub enum Destination {
    /// A single host:port.
    Direct {
        pool: Arc<EndpointPool>,
        host_header: HeaderValue,
    },
    /// A service whose host names an upstream.
    Balanced(Arc<Balancer>),
}

/// A service ready for the request path.
#[derive(Debug)]
pub struct CompiledService {
    pub name: String,
    pub destination: Destination,
    pub retries: u32,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
}

/// One compiled config.
#[derive(Debug)]
pub struct Runtime {
    pub snapshot: Arc<Snapshot>,
    pub router: Router,
    /// Index-aligned with `snapshot.services`; `None` for disabled services.
    pub services: Vec<Option<CompiledService>>,
    pub loaded_at: SystemTime,
    /// The control plane's version of this snapshot; 0 for a file-fed config. Kept here, not
    /// beside the `ArcSwap`, so the runtime and its version are published by the same store.
    pub version: u64,
}

/// Plugins this data plane can run. Empty until the plugin pipeline lands: a config that asks
/// for a plugin we would silently skip (an auth plugin, say) is refused rather than served
/// unprotected.
const SUPPORTED_PLUGINS: &[&str] = &[];

impl Runtime {
    /// Compiles `snapshot`, sharing connection pools through `pools`. Errors name the entity.
    pub fn compile(snapshot: Snapshot, pools: &Pools) -> Result<Runtime, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        for (i, p) in snapshot.plugins.iter().enumerate() {
            if p.enabled && !SUPPORTED_PLUGINS.contains(&p.name.as_str()) {
                issues.push(ConfigIssue {
                    path: format!("plugins[{i}] ({})", p.name),
                    message: format!(
                        "plugin '{}' is not available in this Portico build yet; remove it or set \
                         'enabled: false' (Portico refuses to serve a route without a plugin it \
                         was asked to run)",
                        p.name
                    ),
                });
            }
        }

        let upstreams: HashMap<&str, Arc<Balancer>> = snapshot
            .upstreams
            .iter()
            .map(|u| (u.name.as_str(), Arc::new(Balancer::new(u, pools))))
            .collect();

        let mut services = Vec::with_capacity(snapshot.services.len());
        for (i, s) in snapshot.services.iter().enumerate() {
            if !s.enabled {
                services.push(None);
                continue;
            }
            let name = s.name.clone().unwrap_or_else(|| s.id.to_string());
            if !matches!(s.protocol, Protocol::Http) {
                issues.push(ConfigIssue {
                    path: format!("services[{i}] ({name}).protocol"),
                    message: format!(
                        "protocol '{}' is not supported by this data plane yet (only 'http' \
                         upstreams; TLS and gRPC upstreams come with the TLS issue)",
                        s.protocol.as_str()
                    ),
                });
                services.push(None);
                continue;
            }
            let destination = match upstreams.get(s.host.as_str()) {
                Some(b) => Destination::Balanced(Arc::clone(b)),
                None => Destination::Direct {
                    pool: pools.endpoint(&s.host, s.port),
                    host_header: crate::headers::host_header_value(
                        &s.host,
                        s.port,
                        s.protocol.default_port(),
                    ),
                },
            };
            services.push(Some(CompiledService {
                name,
                destination,
                retries: s.retries,
                connect_timeout: Duration::from_millis(s.connect_timeout),
                read_timeout: Duration::from_millis(s.read_timeout),
                write_timeout: Duration::from_millis(s.write_timeout),
            }));
        }

        let router = match Router::new(&snapshot) {
            Ok(r) => Some(r),
            Err(errors) => {
                issues.extend(errors.into_iter().map(|e| ConfigIssue {
                    path: e.path,
                    message: e.message,
                }));
                None
            }
        };
        match router {
            Some(router) if issues.is_empty() => Ok(Runtime {
                snapshot: Arc::new(snapshot),
                router,
                services,
                loaded_at: SystemTime::now(),
                version: 0,
            }),
            _ => Err(issues),
        }
    }
}
