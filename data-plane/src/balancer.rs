//! Weighted round-robin over an upstream's targets, lock-free on the request path.
//!
//! At compile time the weights are expanded into a "wheel": the order nginx's smooth weighted
//! round-robin would produce over one full cycle. Picking is then one atomic increment and an
//! index. Weight 0 takes a target out of rotation (KONG.md §1.5).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use portico_common::snapshot::Upstream;

use crate::pool::{EndpointPool, Pools};

/// Longest wheel we build; larger weight sums are scaled down proportionally (like Kong's
/// `slots`, which bounds its ring the same way).
const MAX_WHEEL: u64 = 65_536;

/// One target, ready to receive requests.
#[derive(Debug)]
pub struct BalancedTarget {
    pub pool: Arc<EndpointPool>,
    /// The `Host` header value for this target when the route does not preserve the host.
    pub host_header: http::HeaderValue,
}

/// A compiled upstream.
#[derive(Debug)]
pub struct Balancer {
    pub name: String,
    targets: Vec<BalancedTarget>,
    wheel: Vec<u32>,
    next: AtomicUsize,
}

impl Balancer {
    /// Builds the balancer of `upstream`, with target pools from `pools`.
    pub fn new(upstream: &Upstream, pools: &Pools) -> Self {
        let mut targets = Vec::new();
        let mut weights = Vec::new();
        for t in upstream.targets.iter().filter(|t| t.weight > 0) {
            let host = upstream.host_header.as_deref().unwrap_or(&t.host);
            let port = t.port;
            targets.push(BalancedTarget {
                pool: pools.endpoint(&t.host, port),
                host_header: crate::headers::host_header_value(host, port, 80),
            });
            weights.push(u64::from(t.weight));
        }
        let wheel = build_wheel(&weights);
        Balancer {
            name: upstream.name.clone(),
            targets,
            wheel,
            next: AtomicUsize::new(0),
        }
    }

    /// The next target in weighted order; `None` when no target has weight.
    pub fn pick(&self) -> Option<&BalancedTarget> {
        if self.wheel.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let idx = self.wheel[n % self.wheel.len()];
        self.targets.get(idx as usize)
    }

    /// Number of targets in rotation.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// True when no target is in rotation.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
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
mod tests {
    use super::build_wheel;

    #[test]
    fn wheel_follows_weights_and_interleaves() {
        let wheel = build_wheel(&[300, 100]);
        assert_eq!(wheel.len(), 4);
        assert_eq!(wheel.iter().filter(|&&i| i == 0).count(), 3);
        // Smooth: the light target is not starved to the end of the cycle in a burst pattern.
        let wheel = build_wheel(&[5, 1, 1]);
        assert_eq!(wheel, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn huge_weights_are_scaled_not_dropped() {
        let wheel = build_wheel(&[65_535, 65_534, 1]);
        assert!(wheel.len() as u64 <= super::MAX_WHEEL + 3);
        assert!(
            wheel.contains(&2),
            "a weight-1 target keeps at least one slot"
        );
    }
}
