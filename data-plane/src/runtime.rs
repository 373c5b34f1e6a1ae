//! The compiled runtime: everything the request path needs, built once per snapshot off the
//! request path, then published with one `ArcSwap` store. A request loads it once and finishes
//! on it, so a swap never changes config under an in-flight request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use portico_common::snapshot::{Protocol, Snapshot, Upstream};
use portico_common::ConfigIssue;
use uuid::Uuid;

use crate::balancer::Balancer;
use crate::consumers::Consumers;
use crate::plugins::{BuildEnv, Chains, Enabled};
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
    /// `grpc`/`grpcs`: requests go over HTTP/2 with an absolute URI of this scheme.
    pub http2: Option<http::uri::Scheme>,
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
    /// Each route's plugin chain.
    pub plugins: Chains,
    /// Credential lookups for the auth plugins.
    pub consumers: Consumers,
    /// The TLS listener's certificates, by server name.
    pub certs: crate::tls::CertStore,
    pub loaded_at: SystemTime,
    /// The control plane's version of this snapshot; 0 for a file-fed config. Kept here, not
    /// beside the `ArcSwap`, so the runtime and its version are published by the same store.
    pub version: u64,
    /// Index-aligned with `snapshot.upstreams`; what [`Runtime::recompile`] reuses.
    balancers: Vec<Arc<Balancer>>,
    /// Balancers of `https`/`grpc`/`grpcs` services over an upstream, by upstream id and
    /// transport (HTTP version and TLS settings key): an upstream's targets spoken to over TLS
    /// or HTTP/2 need their own pools. Reused like the others.
    tls_balancers: HashMap<(Uuid, String), (Arc<Upstream>, Arc<Balancer>)>,
}

impl Runtime {
    /// Compiles `snapshot`, sharing connection pools through `pools`. Errors name the entity.
    pub fn compile(snapshot: Snapshot, pools: &Pools) -> Result<Runtime, Vec<ConfigIssue>> {
        let enabled = Enabled::default();
        Runtime::build(snapshot, &BuildEnv::new(pools, &enabled), None)
    }

    /// Compiles `snapshot` for the data plane `shared` (its pools and its `--plugins`),
    /// reusing from `previous` as [`Runtime::recompile`] does.
    pub fn compile_for(
        snapshot: Snapshot,
        shared: &crate::state::Shared,
        previous: Option<&Runtime>,
    ) -> Result<Runtime, Vec<ConfigIssue>> {
        let env = BuildEnv::new(&shared.pools, &shared.plugins).with_telemetry(&shared.telemetry);
        Runtime::build(snapshot, &env, previous)
    }

    /// Compiles `snapshot` as [`Runtime::compile`] does, with the same result, reusing from
    /// `previous` (the runtime being served) what did not change: the matchers of unchanged
    /// routes, compiled regexes by pattern text, and the balancers of unchanged upstreams (so
    /// their rotation carries on). Entities are matched by id, wherever they moved in the
    /// lists. A one-route change to a 10,000-route config costs a few milliseconds instead of
    /// a full compile.
    pub fn recompile(
        snapshot: Snapshot,
        pools: &Pools,
        previous: &Runtime,
    ) -> Result<Runtime, Vec<ConfigIssue>> {
        let enabled = Enabled::default();
        Runtime::build(snapshot, &BuildEnv::new(pools, &enabled), Some(previous))
    }

    fn build(
        snapshot: Snapshot,
        env: &BuildEnv<'_>,
        previous: Option<&Runtime>,
    ) -> Result<Runtime, Vec<ConfigIssue>> {
        let pools = env.pools;
        let mut issues = Vec::new();
        // Plugins are few: rebuilt on every compile, also a recompile, so an instance never
        // outlives the config it was built from (state that must live on is taken from
        // `previous` by the plugin, see `BuildEnv::previous`).
        let plugins = match Chains::build(&snapshot, env, previous.map(|rt| &rt.plugins)) {
            Ok(c) => c,
            Err(errors) => {
                issues.extend(errors);
                Chains::default()
            }
        };
        let consumers = Consumers::new(&snapshot);
        let certs = match crate::tls::CertStore::build(&snapshot, previous.map(|rt| &rt.certs)) {
            Ok(c) => c,
            Err(errors) => {
                issues.extend(errors);
                crate::tls::CertStore::default()
            }
        };

        let previous_balancers: HashMap<Uuid, (&Upstream, &Arc<Balancer>)> = previous
            .map(|rt| {
                rt.snapshot
                    .upstreams
                    .iter()
                    .zip(&rt.balancers)
                    .map(|(u, b)| (u.id, (&**u, b)))
                    .collect()
            })
            .unwrap_or_default();
        let balancers: Vec<Arc<Balancer>> = snapshot
            .upstreams
            .iter()
            .map(|u| match previous_balancers.get(&u.id) {
                Some((old, b)) if *old == &**u => Arc::clone(b),
                _ => Arc::new(Balancer::new(u, pools)),
            })
            .collect();
        let upstreams: HashMap<&str, &Arc<Balancer>> = snapshot
            .upstreams
            .iter()
            .zip(&balancers)
            .map(|(u, b)| (u.name.as_str(), b))
            .collect();

        let mut services = Vec::with_capacity(snapshot.services.len());
        let mut tls_balancers = HashMap::new();
        for (i, s) in snapshot.services.iter().enumerate() {
            if !s.enabled {
                services.push(None);
                continue;
            }
            let name = s.name.clone().unwrap_or_else(|| s.id.to_string());
            let tls = match s.protocol {
                Protocol::Http | Protocol::Grpc => None,
                Protocol::Https | Protocol::Grpcs => {
                    match crate::tls::UpstreamTls::for_service(s, &snapshot) {
                        Ok(t) => Some(Arc::new(t)),
                        Err(message) => {
                            issues.push(ConfigIssue {
                                path: format!("services[{i}] ({name})"),
                                message,
                            });
                            services.push(None);
                            continue;
                        }
                    }
                }
                other => {
                    issues.push(ConfigIssue {
                        path: format!("services[{i}] ({name}).protocol"),
                        message: format!(
                            "protocol '{}' is not supported by this data plane yet (only 'http', \
                             'https', 'grpc' and 'grpcs' upstreams)",
                            other.as_str()
                        ),
                    });
                    services.push(None);
                    continue;
                }
            };
            let http2 = matches!(s.protocol, Protocol::Grpc | Protocol::Grpcs);
            // Targets spoken to over TLS or HTTP/2 need pools (and so a balancer) of their own.
            let balanced = snapshot
                .upstreams
                .iter()
                .find(|u| u.name == s.host)
                .filter(|_| tls.is_some() || http2);
            let destination = match (upstreams.get(s.host.as_str()), balanced) {
                (Some(_), Some(u)) => {
                    let transport = format!(
                        "{}|{}",
                        if http2 { "h2" } else { "h1" },
                        tls.as_ref().map(|t| t.key.as_str()).unwrap_or_default()
                    );
                    let key = (u.id, transport);
                    let reused = previous
                        .and_then(|rt| rt.tls_balancers.get(&key))
                        .filter(|(old, _)| **old == **u)
                        .cloned();
                    let (u, b) = reused.unwrap_or_else(|| {
                        let b = Balancer::with_transport(u, pools, tls.as_ref(), http2);
                        (Arc::clone(u), Arc::new(b))
                    });
                    tls_balancers.insert(key, (u, Arc::clone(&b)));
                    Destination::Balanced(b)
                }
                (Some(&b), _) => Destination::Balanced(Arc::clone(b)),
                (None, _) => Destination::Direct {
                    pool: pools.endpoint_for(&s.host, s.port, tls.as_ref(), http2),
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
                http2: http2.then(|| {
                    if tls.is_some() {
                        http::uri::Scheme::HTTPS
                    } else {
                        http::uri::Scheme::HTTP
                    }
                }),
                retries: s.retries,
                connect_timeout: Duration::from_millis(s.connect_timeout),
                read_timeout: Duration::from_millis(s.read_timeout),
                write_timeout: Duration::from_millis(s.write_timeout),
            }));
        }

        let router = match previous {
            Some(rt) => Router::recompile(&snapshot, &rt.router, &rt.snapshot),
            None => Router::new(&snapshot),
        };
        let router = match router {
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
                plugins,
                consumers,
                certs,
                loaded_at: SystemTime::now(),
                version: 0,
                balancers,
                tls_balancers,
            }),
            _ => Err(issues),
        }
    }

    /// The balancers of `snapshot.upstreams`, index-aligned (for `/status`).
    pub fn balancers(&self) -> &[Arc<Balancer>] {
        &self.balancers
    }
}

#[cfg(test)]
mod tests {
    use portico_common::snapshot::{shared, Route, Service, Snapshot, Target, Upstream};
    use uuid::Uuid;

    use super::*;

    fn service(n: u128, host: &str) -> Service {
        Service {
            name: Some(format!("svc{n}")),
            port: 80,
            path: None,
            ..Service::with_defaults(Uuid::from_u128(0x5e00 + n), host)
        }
    }

    fn upstream(n: u128, name: &str, targets: &[(&str, u32)]) -> Upstream {
        Upstream {
            id: Uuid::from_u128(0xa000 + n),
            name: name.into(),
            algorithm: "round-robin".into(),
            hash_on: "none".into(),
            hash_fallback: "none".into(),
            slots: 10_000,
            host_header: None,
            hash_inputs: Default::default(),
            healthchecks: serde_json::Value::Null,
            targets: targets
                .iter()
                .enumerate()
                .map(|(i, (host, weight))| Target {
                    id: Uuid::from_u128(0x7a00 + n * 100 + i as u128),
                    target: format!("{host}:80"),
                    host: (*host).into(),
                    port: 80,
                    weight: *weight,
                    tags: vec![],
                })
                .collect(),
            tags: vec![],
        }
    }

    fn route(n: u128, svc: u128, path: &str) -> Route {
        Route {
            service: Some(Uuid::from_u128(0x5e00 + svc)),
            paths: vec![path.into()],
            ..Route::with_defaults(Uuid::from_u128(n))
        }
    }

    fn balancer(rt: &Runtime, service: usize) -> &Arc<Balancer> {
        match rt.services[service].as_ref().map(|s| &s.destination) {
            Some(Destination::Balanced(b)) => b,
            other => panic!("service {service} is not balanced: {other:?}"),
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            services: shared([
                service(0, "up-a"),
                service(1, "up-b"),
                service(2, "127.0.0.1"),
            ]),
            routes: shared([
                route(1, 0, "/a"),
                route(2, 1, "~/b/\\d+"),
                route(3, 2, "/direct"),
            ]),
            upstreams: shared([
                upstream(1, "up-a", &[("10.0.0.1", 100), ("10.0.0.2", 50)]),
                upstream(2, "up-b", &[("10.0.1.1", 100)]),
            ]),
            ..Snapshot::default()
        }
    }

    #[test]
    fn recompile_reuses_unchanged_balancers_and_matches_compile() {
        let pools = Pools::default();
        let s0 = snapshot();
        let rt0 = Runtime::compile(s0.clone(), &pools).expect("compiles");
        // Advance the wheel: a reused balancer carries on where it was.
        let first = balancer(&rt0, 0)
            .pick()
            .expect("target")
            .pool
            .host()
            .to_owned();

        let mut s1 = s0.clone();
        Arc::make_mut(&mut s1.upstreams[1]).targets[0].weight = 10;
        s1.upstreams.reverse();
        s1.services.swap(0, 2);
        s1.routes.push(Arc::new(route(4, 1, "/b2")));
        let rt1 = Runtime::recompile(s1.clone(), &pools, &rt0).expect("recompiles");
        let fresh = Runtime::compile(s1.clone(), &pools).expect("compiles");

        // svc0 moved to index 2; its upstream is unchanged (and moved too).
        assert!(Arc::ptr_eq(balancer(&rt0, 0), balancer(&rt1, 2)));
        assert!(!Arc::ptr_eq(balancer(&rt0, 1), balancer(&rt1, 1)));
        assert!(!Arc::ptr_eq(balancer(&fresh, 2), balancer(&rt1, 2)));
        let next = balancer(&rt1, 2)
            .pick()
            .expect("target")
            .pool
            .host()
            .to_owned();
        assert_ne!(first, next, "the rotation went on");

        let headers = http::HeaderMap::new();
        for path in ["/a/x", "/b/12", "/b2", "/direct/y", "/none"] {
            let rq = crate::router::RouteRequest {
                method: "GET",
                host: "h",
                port: 8000,
                path,
                headers: &headers,
                https: false,
                sni: None,
            };
            assert_eq!(fresh.router.find(&rq), rt1.router.find(&rq), "{path}");
        }
        assert_eq!(rt1.router.stats().routes_reused, 3);
        assert_eq!(
            rt1.services
                .iter()
                .map(|s| s.as_ref().map(|s| &s.name))
                .collect::<Vec<_>>(),
            fresh
                .services
                .iter()
                .map(|s| s.as_ref().map(|s| &s.name))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn recompile_refuses_what_compile_refuses() {
        let pools = Pools::default();
        let s0 = snapshot();
        let rt0 = Runtime::compile(s0.clone(), &pools).expect("compiles");
        let mut bad = s0;
        Arc::make_mut(&mut bad.routes[0]).paths[0] = "~/bad(".into();
        Arc::make_mut(&mut bad.services[2]).protocol = Protocol::Tcp;
        let a = Runtime::compile(bad.clone(), &pools).expect_err("refused");
        let b = Runtime::recompile(bad, &pools, &rt0).expect_err("refused");
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_eq!(a.len(), 2);
    }
}
