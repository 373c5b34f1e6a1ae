//! circuit-breaker (Portico's own): stops sending requests to a service that keeps failing, so
//! a struggling upstream gets room to recover and clients get a fast answer instead of a slow
//! timeout.
//!
//! One circuit per service the instance sees (a global or route-scoped instance keeps one per
//! service behind it):
//!
//! ```text
//!   closed ──threshold failures within window_size──▶ open ──timeout──▶ half-open
//!     ▲                                                ▲                  │ one probe
//!     └──────────────── probe succeeded ───────────────┼──────────────────┤
//!                                                      └─ probe failed ───┘
//! ```
//!
//! A failure is an upstream status in `failure_statuses`, or an exchange that produced no
//! usable answer at all (connect error, timeout, invalid response: 5xx the proxy made up). A
//! body refused as too large (413) is the client's doing and does not count.
//!
//! The request path is lock-free: the circuits live in a copy-on-write map (`ArcSwap`, written
//! only the first time a service is seen), each circuit's state and its timestamp share one
//! atomic word so every transition is one compare-and-swap, and recent failures sit in a
//! fixed ring of `threshold` timestamps allocated once per circuit. A closed circuit costs a
//! map lookup and one atomic load per request, and no allocation.
//!
//! The circuits outlive config swaps: a rebuilt instance with the same plugin id shares its
//! predecessor's registry, so an open circuit stays open across a reload.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use http::header::{HeaderValue, RETRY_AFTER};
use http::StatusCode;
use portico_common::plugins::circuit_breaker::Config;
use portico_common::snapshot::Service;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{BuildEnv, Ctx, Flow, Instance, Outcome, Plugin, Reply, Req};

/// The circuit-breaker plugin.
#[derive(Debug)]
pub struct CircuitBreaker {
    registry: Arc<Registry>,
    window_ms: u64,
    timeout_ms: u64,
    /// `failure_statuses` as a bit set over 0..640, so the check allocates nothing.
    failure_statuses: [u64; 10],
    error_status: StatusCode,
    error_message: String,
}

/// Where a circuit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Requests go through; failures are counted.
    Closed,
    /// Requests are answered at once, without the upstream.
    Open,
    /// One probe request is in flight; the others are answered at once.
    HalfOpen,
}

impl State {
    /// The state's name on `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// One circuit, as `/status` shows it.
#[derive(Debug, Clone)]
pub struct CircuitStatus {
    pub service_id: Uuid,
    /// The service's name (its id when it has none).
    pub service: String,
    pub state: State,
    /// Failures still within the window.
    pub failures: u32,
    /// When the circuit last opened; `None` while closed.
    pub opened_at: Option<SystemTime>,
}

impl CircuitStatus {
    /// The `/status` JSON of this circuit of plugin `plugin_id`.
    pub fn to_json(&self, plugin_id: Uuid) -> Value {
        json!({
            "plugin_id": plugin_id,
            "service_id": self.service_id,
            "service": self.service,
            "state": self.state.as_str(),
            "failures": self.failures,
            "opened_at": self
                .opened_at
                .map(|t| humantime::format_rfc3339_millis(t).to_string()),
        })
    }
}

/// The circuits of one plugin instance, shared by its successors.
#[derive(Debug)]
struct Registry {
    /// Timestamps are milliseconds since `epoch` (plus one, so 0 means "none").
    epoch: Instant,
    /// Wall-clock time at `epoch`, to show timestamps on `/status`.
    epoch_wall: SystemTime,
    /// The ring size of every circuit here (the config's `threshold`).
    threshold: usize,
    circuits: ArcSwap<HashMap<Uuid, Arc<Circuit>>>,
}

/// One service's circuit.
#[derive(Debug)]
struct Circuit {
    service_id: Uuid,
    name: String,
    /// `(timestamp << 2) | tag`: the state and when it was entered (opened, or the probe
    /// admitted), changed together by compare-and-swap.
    word: AtomicU64,
    /// When the circuit last opened (for `/status` only).
    opened_at: AtomicU64,
    /// The last `threshold` failure timestamps, oldest at `next % threshold`.
    ring: Box<[AtomicU64]>,
    next: AtomicUsize,
}

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;

fn pack(ts: u64, tag: u64) -> u64 {
    (ts << 2) | tag
}

fn tag(word: u64) -> u64 {
    word & 3
}

fn ts(word: u64) -> u64 {
    word >> 2
}

impl Registry {
    fn new(threshold: usize) -> Registry {
        Registry {
            epoch: Instant::now(),
            epoch_wall: SystemTime::now(),
            threshold,
            circuits: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    /// Milliseconds since the epoch, never 0.
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX >> 3) + 1
    }

    /// The same circuits (state kept, failures forgotten) with rings of a new size: what a
    /// config change of `threshold` gets.
    fn resized(&self, threshold: usize) -> Registry {
        let circuits = self
            .circuits
            .load()
            .iter()
            .map(|(id, c)| {
                let fresh = Circuit::new(c.service_id, c.name.clone(), threshold);
                fresh
                    .word
                    .store(c.word.load(Ordering::Acquire), Ordering::Release);
                fresh
                    .opened_at
                    .store(c.opened_at.load(Ordering::Relaxed), Ordering::Relaxed);
                (*id, Arc::new(fresh))
            })
            .collect();
        Registry {
            epoch: self.epoch,
            epoch_wall: self.epoch_wall,
            threshold,
            circuits: ArcSwap::from_pointee(circuits),
        }
    }
}

impl Circuit {
    fn new(service_id: Uuid, name: String, threshold: usize) -> Circuit {
        Circuit {
            service_id,
            name,
            word: AtomicU64::new(pack(0, CLOSED)),
            opened_at: AtomicU64::new(0),
            ring: (0..threshold.max(1)).map(|_| AtomicU64::new(0)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// Records a failure at `now`; true when it makes `threshold` failures within `window`.
    /// Exact for sequential failures; two failures racing on the ring's boundary may trip it
    /// one failure early, which is harmless for a breaker.
    fn record_failure(&self, now: u64, window: u64) -> bool {
        let n = self.ring.len();
        let i = self.next.fetch_add(1, Ordering::AcqRel);
        self.ring[i % n].store(now, Ordering::Release);
        let oldest = self.ring[(i + 1) % n].load(Ordering::Acquire);
        oldest != 0 && now.saturating_sub(oldest) < window
    }

    /// Failures still within `window` of `now`.
    fn failures(&self, now: u64, window: u64) -> u32 {
        let live = self
            .ring
            .iter()
            .map(|t| t.load(Ordering::Relaxed))
            .filter(|&t| t != 0 && now.saturating_sub(t) < window)
            .count();
        u32::try_from(live).unwrap_or(u32::MAX)
    }

    fn forget_failures(&self) {
        for t in self.ring.iter() {
            t.store(0, Ordering::Relaxed);
        }
    }
}

impl Plugin for CircuitBreaker {
    const NAME: &'static str = "circuit-breaker";
    type Config = Config;

    fn build(config: Config, env: &BuildEnv<'_>) -> Result<Self, String> {
        let error_status = StatusCode::from_u16(config.error_status)
            .map_err(|_| format!("error_status {} is not an HTTP status", config.error_status))?;
        let threshold = usize::try_from(config.threshold)
            .map_err(|_| format!("threshold {} is too large", config.threshold))?;
        let registry = match env.previous {
            Some(Instance::CircuitBreaker(prev)) if prev.registry.threshold == threshold => {
                Arc::clone(&prev.registry)
            }
            Some(Instance::CircuitBreaker(prev)) => Arc::new(prev.registry.resized(threshold)),
            _ => Arc::new(Registry::new(threshold)),
        };
        let mut failure_statuses = [0u64; 10];
        for s in config.failure_statuses {
            let s = usize::from(s);
            if let Some(word) = failure_statuses.get_mut(s / 64) {
                *word |= 1 << (s % 64);
            }
        }
        Ok(CircuitBreaker {
            registry,
            window_ms: u64::from(config.window_size) * 1000,
            timeout_ms: u64::from(config.timeout) * 1000,
            failure_statuses,
            error_status,
            error_message: config.error_message,
        })
    }

    async fn access<'r>(&'r self, _req: &mut Req<'_>, ctx: &mut Ctx<'r>) -> Flow {
        let Some(service) = ctx.service else {
            return Flow::Continue;
        };
        let circuits = self.circuits_with(service);
        let Some(circuit) = circuits.get(&service.id) else {
            return Flow::Continue;
        };
        let now = self.registry.now();
        loop {
            let word = circuit.word.load(Ordering::Acquire);
            if tag(word) == CLOSED {
                return Flow::Continue;
            }
            // Open: fail fast until `timeout` passed since it opened. Half-open: fail fast
            // while the probe is out; a probe that never reports back (its client went away,
            // a later plugin answered it) is replaced after another `timeout`.
            let since = now.saturating_sub(ts(word));
            if since < self.timeout_ms {
                let wait = if tag(word) == OPEN {
                    self.timeout_ms - since
                } else {
                    1000
                };
                return Flow::Respond(self.reject(wait));
            }
            let probe = pack(now, HALF_OPEN);
            if circuit
                .word
                .compare_exchange(word, probe, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                if tag(word) == OPEN {
                    tracing::info!(plugin = Self::NAME, service = %circuit.name, "circuit half-open: letting one probe request through");
                } else {
                    tracing::warn!(plugin = Self::NAME, service = %circuit.name, "circuit probe never reported back; letting another through");
                }
                return Flow::Continue;
            }
            // Another request moved the circuit first: look again.
        }
    }

    fn log(&self, outcome: Outcome, ctx: &Ctx<'_>) {
        let Some(service) = ctx.service else {
            return;
        };
        let circuits = self.registry.circuits.load();
        let Some(circuit) = circuits.get(&service.id) else {
            return;
        };
        let failed = match outcome {
            Outcome::Status(status) => self.is_failure(status),
            Outcome::Failed { status, .. } => status.is_server_error(),
        };
        let now = self.registry.now();
        let word = circuit.word.load(Ordering::Acquire);
        match tag(word) {
            CLOSED if failed => {
                let tripped = circuit.record_failure(now, self.window_ms);
                if tripped && self.open(circuit, word, now) {
                    tracing::warn!(plugin = Self::NAME, service = %circuit.name, threshold = circuit.ring.len(), window_s = self.window_ms / 1000, timeout_s = self.timeout_ms / 1000, "circuit opened: failing fast");
                }
            }
            // The probe's answer (or that of a request let through before the circuit opened,
            // which is as fresh a sign of the upstream's health).
            HALF_OPEN if failed => {
                let reopened = self.open(circuit, word, now);
                if reopened {
                    tracing::warn!(plugin = Self::NAME, service = %circuit.name, timeout_s = self.timeout_ms / 1000, "circuit probe failed: open again");
                }
            }
            HALF_OPEN => {
                // Old failures must not trip the closed circuit again at once. Nothing records
                // failures while half-open, so clearing first loses none.
                circuit.forget_failures();
                if circuit
                    .word
                    .compare_exchange(word, pack(now, CLOSED), Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    circuit.opened_at.store(0, Ordering::Relaxed);
                    tracing::info!(plugin = Self::NAME, service = %circuit.name, "circuit closed: probe succeeded");
                }
            }
            // Closed with a success, or open: answers of requests let through before the
            // circuit opened change nothing.
            _ => {}
        }
    }
}

impl CircuitBreaker {
    /// Every circuit this instance keeps (one per service it has seen).
    pub fn states(&self) -> Vec<CircuitStatus> {
        let now = self.registry.now();
        let wall =
            |ts: u64| (ts != 0).then(|| self.registry.epoch_wall + Duration::from_millis(ts - 1));
        self.registry
            .circuits
            .load()
            .values()
            .map(|c| {
                let state = match tag(c.word.load(Ordering::Acquire)) {
                    CLOSED => State::Closed,
                    OPEN => State::Open,
                    _ => State::HalfOpen,
                };
                CircuitStatus {
                    service_id: c.service_id,
                    service: c.name.clone(),
                    state,
                    failures: c.failures(now, self.window_ms),
                    opened_at: match state {
                        State::Closed => None,
                        _ => wall(c.opened_at.load(Ordering::Relaxed)),
                    },
                }
            })
            .collect()
    }

    /// The circuit map, with one for `service` added the first time it is seen.
    fn circuits_with(
        &self,
        service: &Service,
    ) -> arc_swap::Guard<Arc<HashMap<Uuid, Arc<Circuit>>>> {
        let circuits = self.registry.circuits.load();
        if circuits.contains_key(&service.id) {
            return circuits;
        }
        drop(circuits);
        let name = service
            .name
            .clone()
            .unwrap_or_else(|| service.id.to_string());
        let threshold = self.registry.threshold;
        self.registry.circuits.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.entry(service.id)
                .or_insert_with(|| Arc::new(Circuit::new(service.id, name.clone(), threshold)));
            next
        });
        self.registry.circuits.load()
    }

    fn is_failure(&self, status: StatusCode) -> bool {
        let s = usize::from(status.as_u16());
        self.failure_statuses
            .get(s / 64)
            .is_some_and(|w| w & (1 << (s % 64)) != 0)
    }

    /// Opens the circuit if it is still in `word`; false when another request moved it first.
    fn open(&self, circuit: &Circuit, word: u64, now: u64) -> bool {
        let opened = circuit
            .word
            .compare_exchange(word, pack(now, OPEN), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if opened {
            circuit.opened_at.store(now, Ordering::Relaxed);
        }
        opened
    }

    /// The fast answer of an open circuit, with `Retry-After` (whole seconds, rounded up).
    fn reject(&self, wait_ms: u64) -> Reply {
        Reply::error(self.error_status, self.error_message.clone()).with_header(
            RETRY_AFTER,
            HeaderValue::from(wait_ms.div_ceil(1000).max(1)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_counts_failures_within_the_window_only() {
        let c = Circuit::new(Uuid::nil(), "s".into(), 3);
        assert!(!c.record_failure(1_000, 500));
        assert!(!c.record_failure(1_100, 500));
        // The third failure trips only when the first is still within the window.
        assert!(!c.record_failure(1_600, 500));
        assert_eq!(c.failures(1_600, 500), 1, "1,100 is exactly one window old");
        assert!(!c.record_failure(1_700, 500));
        assert_eq!(c.failures(1_700, 500), 2);
        assert!(c.record_failure(1_800, 500));
        assert_eq!(c.failures(1_800, 500), 3);
        c.forget_failures();
        assert_eq!(c.failures(1_800, 500), 0);
        assert!(!c.record_failure(1_900, 500));
    }

    #[test]
    fn a_threshold_of_one_trips_on_the_first_failure() {
        let c = Circuit::new(Uuid::nil(), "s".into(), 1);
        assert!(c.record_failure(5, 1000));
    }

    #[test]
    fn state_and_timestamp_share_one_word() {
        let w = pack(123_456_789, HALF_OPEN);
        assert_eq!((ts(w), tag(w)), (123_456_789, HALF_OPEN));
    }
}
