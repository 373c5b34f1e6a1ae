//! Node-level gauges, read from the shared state when `/metrics` is scraped: a fresh registry per
//! scrape, so nothing here is maintained on the request path and series of removed upstreams or
//! circuits disappear with the config.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::plugins::circuit_breaker::State;
use crate::plugins::Instance;
use crate::runtime::Runtime;
use crate::state::Shared;
use crate::telemetry::trace::Tracing;

/// Target health states, as Kong's `kong_upstream_target_health` lists them: one series per
/// state, 1 for the current one.
const TARGET_STATES: [&str; 4] = ["healthy", "unhealthy", "healthchecks_off", "disabled"];
const CIRCUIT_STATES: [State; 3] = [State::Closed, State::Open, State::HalfOpen];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    upstream: String,
    target: String,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CircuitLabels {
    service: String,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConfigLabels {
    version: u64,
    hash: String,
}

/// The node gauges of `shared` now; `last_apply_micros` is the last control-plane apply.
pub(super) fn node_registry(shared: &Shared, last_apply_micros: u64) -> Registry {
    let mut reg = Registry::with_prefix("portico");
    let rt = shared.runtime.load_full();

    let connections: Gauge = Gauge::default();
    connections.set(gauge_value(&shared.stats.connections_active));
    reg.register(
        "connections_active",
        "Open downstream connections",
        connections,
    );
    let requests: Gauge = Gauge::default();
    requests.set(gauge_value(&shared.stats.requests_active));
    reg.register("requests_active", "Requests being handled", requests);

    let config = Family::<ConfigLabels, Gauge>::default();
    if let Some(rt) = rt.as_deref() {
        config
            .get_or_create(&ConfigLabels {
                version: rt.version,
                hash: rt.snapshot.hash.clone(),
            })
            .set(1);
    }
    reg.register(
        "config_info",
        "The config being served: control-plane version (0 when file-fed) and content hash",
        config,
    );

    // Only a data plane fed by a control plane has these two, as Kong's DP-only gauge.
    if let Some(link) = shared.control_plane.get() {
        let connected: Gauge = Gauge::default();
        connected.set(i64::from(link.connected()));
        reg.register(
            "control_plane_connected",
            "1 while the stream to the control plane is open",
            connected,
        );
        let apply: Gauge<f64, AtomicU64> = Gauge::default();
        apply.set(last_apply_micros as f64 / 1e6);
        reg.register_with_unit(
            "config_last_apply_duration",
            "How long applying the last config from the control plane took",
            Unit::Seconds,
            apply,
        );
    }

    let targets = Family::<TargetLabels, Gauge>::default();
    let circuits = Family::<CircuitLabels, Gauge>::default();
    if let Some(rt) = rt.as_deref() {
        target_health(rt, &targets);
        circuit_states(rt, &circuits);
    }
    reg.register(
        "upstream_target_health",
        "Health of each upstream target: 1 for its current state, 0 for the others",
        targets,
    );
    reg.register(
        "circuit_state",
        "Circuit-breaker state per service: 1 for its current state, 0 for the others",
        circuits,
    );

    // Telemetry that could not keep up: never queued without bound, so dropped and counted.
    if let Some(log) = &shared.telemetry.access_log {
        let dropped: Counter = Counter::default();
        dropped.inc_by(log.dropped());
        reg.register(
            "access_log_dropped",
            "Access-log lines dropped because the writer was behind",
            dropped,
        );
    }
    let mut pipelines: Vec<&Arc<Tracing>> = shared.telemetry.tracing.iter().collect();
    if let Some(rt) = rt.as_deref() {
        for (_, instance) in rt.plugins.instances() {
            if let Instance::Opentelemetry(o) = instance {
                // One pipeline may serve several instances (reused across swaps).
                if !pipelines.iter().any(|p| Arc::ptr_eq(p, o.tracing())) {
                    pipelines.push(o.tracing());
                }
            }
        }
    }
    if !pipelines.is_empty() {
        let dropped: Counter = Counter::default();
        dropped.inc_by(pipelines.iter().map(|p| p.dropped()).sum());
        reg.register(
            "trace_spans_dropped",
            "Sampled spans lost: dropped because the exporter was behind, or in an export the collector did not take",
            dropped,
        );
    }
    reg
}

fn gauge_value(v: &AtomicU64) -> i64 {
    i64::try_from(v.load(Ordering::Relaxed)).unwrap_or(i64::MAX)
}

fn target_health(rt: &Runtime, family: &Family<TargetLabels, Gauge>) {
    for b in rt.balancers() {
        let status = b.status();
        let Some(targets) = status["targets"].as_array() else {
            continue;
        };
        for t in targets {
            let (Some(address), Some(health)) = (t["address"].as_str(), t["health"].as_str())
            else {
                continue;
            };
            for state in TARGET_STATES {
                family
                    .get_or_create(&TargetLabels {
                        upstream: b.name.clone(),
                        target: address.to_owned(),
                        state,
                    })
                    .set(i64::from(state == health));
            }
        }
    }
}

/// One series set per service: when several circuit-breaker instances guard a service, the
/// worst state wins (open over half-open over closed), so label sets never repeat.
fn circuit_states(rt: &Runtime, family: &Family<CircuitLabels, Gauge>) {
    let mut worst: BTreeMap<String, State> = BTreeMap::new();
    for (_, instance) in rt.plugins.instances() {
        let Instance::CircuitBreaker(cb) = instance else {
            continue;
        };
        for s in cb.states() {
            let e = worst.entry(s.service).or_insert(s.state);
            if severity(s.state) > severity(*e) {
                *e = s.state;
            }
        }
    }
    for (service, current) in worst {
        for state in CIRCUIT_STATES {
            family
                .get_or_create(&CircuitLabels {
                    service: service.clone(),
                    state: state.as_str(),
                })
                .set(i64::from(state == current));
        }
    }
}

fn severity(s: State) -> u8 {
    match s {
        State::Closed => 0,
        State::HalfOpen => 1,
        State::Open => 2,
    }
}
