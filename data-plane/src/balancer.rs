//! An upstream's balancer (KONG.md §1.5): weighted round-robin, least-connections or
//! consistent-hashing over the targets, skipping unhealthy ones, lock-free on the request path.
//!
//! Round-robin expands the weights at compile time into a "wheel": the order nginx's smooth
//! weighted round-robin would produce over one full cycle, so a pick is one atomic increment and
//! an index. Least-connections scans the targets from a rotating start (ties go round-robin).
//! Consistent-hashing looks the request's key up on a ring ([`hashing`]). None of the three
//! allocates per request. Weight 0 takes a target out of rotation.
//!
//! Health ([`health`]) lives inside the balancer, which [`crate::runtime::Runtime::recompile`]
//! reuses while its upstream is unchanged: counters, health and pools survive config swaps.

pub mod hashing;
pub mod health;

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use portico_common::snapshot::Upstream;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::pool::{EndpointPool, Pools};
use hashing::{HashRequest, KeySpec, RequestKey, Ring};
use health::{Event, TargetHealth};

/// Longest wheel we build; larger weight sums are scaled down proportionally (like Kong's
/// `slots`, which bounds its ring the same way).
const MAX_WHEEL: u64 = 65_536;

/// One target, ready to receive requests.
#[derive(Debug)]
pub struct BalancedTarget {
    pub pool: Arc<EndpointPool>,
    /// The `Host` header value for this target when the route does not preserve the host.
    pub host_header: http::HeaderValue,
    /// `host:port` as configured.
    pub address: String,
    pub weight: u32,
    /// Health and counters, shared with the active prober.
    pub health: TargetHealth,
    /// Requests picked for this target and not yet answered (least-connections' measure).
    in_flight: AtomicU32,
}

/// The part of a balancer the active prober shares.
#[derive(Debug)]
pub(crate) struct Inner {
    name: String,
    targets: Vec<BalancedTarget>,
    checks: health::Config,
    /// Sum of the weights of healthy targets, for `healthchecks.threshold`.
    healthy_weight: AtomicU64,
    total_weight: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    RoundRobin,
    LeastConnections,
    ConsistentHashing,
}

/// A compiled upstream.
#[derive(Debug)]
pub struct Balancer {
    pub name: String,
    inner: Arc<Inner>,
    algorithm: Algorithm,
    /// Round-robin order (also the fallback of hashing without a key).
    wheel: Vec<u32>,
    /// Indexes of targets with weight, for least-connections.
    weighted: Vec<u32>,
    next: AtomicUsize,
    ring: Ring,
    keys: Option<KeySpec>,
    /// Dropping the balancer drops this, which stops its active prober.
    _stop: Option<watch::Sender<()>>,
}

/// How one attempt at a target went, for the passive health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The target answered with this status.
    Status(u16),
    /// Connecting failed, or the connection broke before a response.
    TcpFailure,
    /// Connecting or waiting for the response timed out.
    Timeout,
}

/// A picked target; counts as in flight until dropped.
#[derive(Debug)]
pub struct Picked<'a> {
    balancer: &'a Balancer,
    index: usize,
}

impl<'a> Picked<'a> {
    /// The target.
    pub fn target(&self) -> &'a BalancedTarget {
        &self.balancer.inner.targets[self.index]
    }

    /// Feeds the passive health checks with how the attempt went.
    pub fn report(&self, outcome: Outcome) {
        self.balancer.report(self.index, outcome);
    }
}

impl Drop for Picked<'_> {
    fn drop(&mut self) {
        self.target().in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Balancer {
    /// Builds the balancer of `upstream`, with target pools from `pools`, and starts its
    /// active health checks when configured (inside a tokio runtime).
    pub fn new(upstream: &Upstream, pools: &Pools) -> Self {
        Balancer::with_transport(upstream, pools, None, false)
    }

    /// A balancer over `upstream` whose targets are spoken to over `tls` and, with `http2`,
    /// HTTP/2 (an `https`, `grpc` or `grpcs` service naming the upstream).
    pub fn with_transport(
        upstream: &Upstream,
        pools: &Pools,
        tls: Option<&Arc<crate::tls::UpstreamTls>>,
        http2: bool,
    ) -> Self {
        let default_port = if tls.is_some() { 443 } else { 80 };
        let targets: Vec<BalancedTarget> = upstream
            .targets
            .iter()
            .map(|t| {
                let host = upstream.host_header.as_deref().unwrap_or(&t.host);
                BalancedTarget {
                    pool: pools.endpoint_for(&t.host, t.port, tls, http2),
                    host_header: crate::headers::host_header_value(host, t.port, default_port),
                    address: t.target.clone(),
                    weight: t.weight,
                    health: TargetHealth::default(),
                    in_flight: AtomicU32::new(0),
                }
            })
            .collect();
        let weighted: Vec<u32> = (0..targets.len() as u32)
            .filter(|&i| targets[i as usize].weight > 0)
            .collect();
        let weights: Vec<u64> = weighted
            .iter()
            .map(|&i| u64::from(targets[i as usize].weight))
            .collect();
        let wheel = build_wheel(&weights)
            .into_iter()
            .map(|k| weighted[k as usize])
            .collect();
        let keys = KeySpec::new(upstream);
        let algorithm = if upstream.algorithm == "consistent-hashing" || !keys.is_none() {
            Algorithm::ConsistentHashing
        } else if upstream.algorithm == "least-connections" {
            Algorithm::LeastConnections
        } else {
            Algorithm::RoundRobin
        };
        let (ring, keys) = if algorithm == Algorithm::ConsistentHashing && !keys.is_none() {
            let points: Vec<(u32, &str, u32)> = weighted
                .iter()
                .map(|&i| {
                    let t = &targets[i as usize];
                    (i, t.address.as_str(), t.weight)
                })
                .collect();
            (Ring::new(&points, upstream.slots), Some(keys))
        } else {
            (Ring::default(), None)
        };
        let total_weight = weights.iter().sum();
        let checks = health::Config::parse(&upstream.healthchecks);
        let inner = Arc::new(Inner {
            name: upstream.name.clone(),
            targets,
            healthy_weight: AtomicU64::new(total_weight),
            total_weight,
            checks,
        });
        let stop = inner.checks.active_enabled().then(|| {
            let (tx, rx) = watch::channel(());
            health::spawn(Arc::clone(&inner), rx);
            tx
        });
        Balancer {
            name: upstream.name.clone(),
            inner,
            algorithm,
            wheel,
            weighted,
            next: AtomicUsize::new(0),
            ring,
            keys,
            _stop: stop,
        }
    }

    /// The next target for a request without a hash key (round-robin order for round-robin
    /// and hashing upstreams); `None` when no target is available.
    pub fn pick(&self) -> Option<&BalancedTarget> {
        self.pick_for(&RequestKey::default(), 0).map(|p| p.target())
    }

    /// The hash key of `req` (meaningful for consistent-hashing upstreams only).
    pub fn key(&self, req: &HashRequest<'_>) -> RequestKey {
        match &self.keys {
            Some(k) => k.key(req),
            None => RequestKey::default(),
        }
    }

    /// The target for attempt `attempt` (0 = first) of a request with `key`, among healthy
    /// targets; `None` when none is available or the healthy weight is under the threshold.
    pub fn pick_for(&self, key: &RequestKey, attempt: u32) -> Option<Picked<'_>> {
        let inner = &*self.inner;
        if !self.serving() {
            return None;
        }
        let healthy = |i: usize| inner.targets[i].health.is_healthy();
        let index = match (self.algorithm, key.hash) {
            (Algorithm::ConsistentHashing, Some(hash)) if !self.ring.is_empty() => {
                // A retry moves to another point of the ring, so it can reach another target.
                let hash = if attempt == 0 {
                    hash
                } else {
                    hashing::mix(hash ^ u64::from(attempt))
                };
                self.ring.walk(hash).find(|&i| healthy(i))
            }
            (Algorithm::LeastConnections, _) => self.least_connections(),
            _ => self.round_robin(),
        }?;
        inner.targets[index]
            .in_flight
            .fetch_add(1, Ordering::Relaxed);
        Some(Picked {
            balancer: self,
            index,
        })
    }

    fn round_robin(&self) -> Option<usize> {
        let len = self.wheel.len();
        if len == 0 {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|k| self.wheel[(n.wrapping_add(k)) % len] as usize)
            .find(|&i| self.inner.targets[i].health.is_healthy())
    }

    /// Fewest in-flight requests per unit of weight; the scan starts one further each time so
    /// ties go round-robin.
    fn least_connections(&self) -> Option<usize> {
        let len = self.weighted.len();
        if len == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(usize, u64, u64)> = None;
        for k in 0..len {
            let i = self.weighted[(start.wrapping_add(k)) % len] as usize;
            let t = &self.inner.targets[i];
            if !t.health.is_healthy() {
                continue;
            }
            let load = u64::from(t.in_flight.load(Ordering::Relaxed)) + 1;
            let weight = u64::from(t.weight);
            // load/weight < best_load/best_weight, without division.
            match best {
                Some((_, bl, bw)) if load * bw >= bl * weight => {}
                _ => best = Some((i, load, weight)),
            }
        }
        best.map(|(i, _, _)| i)
    }

    /// True unless `healthchecks.threshold` says the healthy weight is too small to serve.
    fn serving(&self) -> bool {
        let inner = &*self.inner;
        let threshold = inner.checks.threshold;
        threshold <= 0.0
            || inner.healthy_weight.load(Ordering::Acquire) as f64 * 100.0
                >= threshold * inner.total_weight as f64
    }

    /// Passive health check: applies `outcome` of an attempt at target `index`.
    fn report(&self, index: usize, outcome: Outcome) {
        let passive = &self.inner.checks.passive;
        if passive.limits == health::Limits::default() {
            return;
        }
        let event = match outcome {
            Outcome::Status(_) if passive.tcp_only => None,
            Outcome::Status(s) => {
                health::classify(s, &passive.healthy_statuses, &passive.unhealthy_statuses)
            }
            Outcome::TcpFailure => Some(Event::TcpFailure),
            Outcome::Timeout => Some(Event::Timeout),
        };
        if let Some(event) = event {
            health::apply(&self.inner, index, event, &passive.limits, "passive");
        }
    }

    /// The `/status` view: algorithm, whether the upstream serves, each target's health.
    pub fn status(&self) -> Value {
        let inner = &*self.inner;
        let off = inner.checks.off();
        let targets: Vec<Value> = inner
            .targets
            .iter()
            .map(|t| {
                let c = t.health.counters();
                let health = if t.weight == 0 {
                    "disabled"
                } else if off {
                    "healthchecks_off"
                } else if c.healthy {
                    "healthy"
                } else {
                    "unhealthy"
                };
                json!({
                    "address": t.address,
                    "weight": t.weight,
                    "health": health,
                    "in_flight": t.in_flight.load(Ordering::Relaxed),
                    "counters": {
                        "successes": c.successes,
                        "http_failures": c.http_failures,
                        "tcp_failures": c.tcp_failures,
                        "timeouts": c.timeouts,
                    },
                })
            })
            .collect();
        json!({
            "algorithm": match self.algorithm {
                Algorithm::RoundRobin => "round-robin",
                Algorithm::LeastConnections => "least-connections",
                Algorithm::ConsistentHashing => "consistent-hashing",
            },
            "healthy": self.serving() && targets.iter().any(|t| t["health"] != "unhealthy" && t["health"] != "disabled"),
            "targets": targets,
        })
    }

    /// Number of targets in rotation (weight above 0, healthy or not).
    pub fn len(&self) -> usize {
        self.weighted.len()
    }

    /// True when no target is in rotation.
    pub fn is_empty(&self) -> bool {
        self.weighted.is_empty()
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Smooth weighted round-robin sequence over one cycle (sum of reduced weights).
fn build_wheel(weights: &[u64]) -> Vec<u32> {
    if weights.is_empty() {
        return Vec::new();
    }
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let mut w: Vec<u64> = weights.iter().map(|x| x / g).collect();
    let sum: u64 = w.iter().sum();
    if sum > MAX_WHEEL {
        w = w.iter().map(|x| ((x * MAX_WHEEL) / sum).max(1)).collect();
    }
    let total: i64 = w.iter().map(|&x| x as i64).sum();
    let mut current = vec![0i64; w.len()];
    let mut wheel = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        wheel.push(best as u32);
    }
    wheel
}

#[cfg(test)]
mod tests;
