//! Prometheus metrics of the control plane, served on the admin listener's `/metrics` (behind
//! the admin token like every admin call).
//!
//! The propagation histogram is the only state kept between scrapes: it is fed when a data plane
//! ACKs a version. The fleet's states and each group's version are read at scrape time from
//! the fleet registry and the store, so they are never stale and cost nothing in between.

use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::fleet::NodeState;
use crate::state::ControlPlane;

/// The content type of the OpenMetrics exposition.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the Prometheus text exposition (what `promtool check metrics` reads).
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Apply-to-ACK buckets in seconds: a local fleet ACKs in milliseconds, a struggling one in
/// minutes.
const PROPAGATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Every state a data plane can be in, one series each per group.
const STATES: [NodeState; 5] = [
    NodeState::InSync,
    NodeState::Applying,
    NodeState::Lagging,
    NodeState::Nacked,
    NodeState::Disconnected,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    group: String,
    state: &'static str,
}

type HistogramFamily = Family<GroupLabels, Histogram, fn() -> Histogram>;

fn propagation_histogram() -> Histogram {
    Histogram::new(PROPAGATION_BUCKETS)
}

/// The control plane's metric state.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    propagation: HistogramFamily,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// An empty propagation histogram, registered under the `portico_cp_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portico_cp");
        let propagation: HistogramFamily = Family::new_with_constructor(propagation_histogram);
        registry.register_with_unit(
            "config_propagation",
            "Time from a version's apply on the control plane to a data plane's ACK of it",
            Unit::Seconds,
            propagation.clone(),
        );
        Metrics {
            registry,
            propagation,
        }
    }

    /// A data plane of `group` ACKed `version`. Only the group's live version is timed: an
    /// older one (a slow node catching up through a rollback) has no apply time at hand without
    /// reading the store, and the live one is what operators wait for.
    pub fn acked(&self, cp: &ControlPlane, group: &str, version: u64) {
        let Some(record) = cp.current(group).filter(|r| r.version == version) else {
            return;
        };
        let Ok(applied) = humantime::parse_rfc3339(&record.applied_at) else {
            return;
        };
        // A clock step backwards would give a negative time: count it as 0 rather than lose it.
        let secs = SystemTime::now()
            .duration_since(applied)
            .map_or(0.0, |d| d.as_secs_f64());
        self.propagation
            .get_or_create(&GroupLabels {
                group: group.to_owned(),
            })
            .observe(secs);
    }

    /// Every metric as OpenMetrics text or, when `openmetrics` is false, Prometheus text 0.0.4.
    pub fn render(&self, cp: &ControlPlane, openmetrics: bool) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail; an error would be a bug in a label type.
        if let Err(e) = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)
        {
            tracing::warn!(error = %e, "cannot encode the propagation metrics");
        }
        if let Err(e) = prometheus_client::encoding::text::encode_registry(&mut out, &fleet(cp)) {
            tracing::warn!(error = %e, "cannot encode the fleet metrics");
        }
        if openmetrics {
            let _ = prometheus_client::encoding::text::encode_eof(&mut out);
            out
        } else {
            portico_common::metrics_text::to_prometheus_text(&out)
        }
    }
}

/// The scrape-time gauges: data planes by group and state, and each group's live version.
fn fleet(cp: &ControlPlane) -> Registry {
    let mut reg = Registry::with_prefix("portico_cp");
    let versions = Family::<GroupLabels, Gauge>::default();
    let nodes = Family::<StateLabels, Gauge>::default();
    let mut groups: Vec<String> = Vec::new();
    for r in cp.groups() {
        versions
            .get_or_create(&GroupLabels {
                group: r.group.clone(),
            })
            .set(i64::try_from(r.version).unwrap_or(i64::MAX));
        groups.push(r.group.clone());
    }
    let view = cp.fleet_view(None);
    groups.extend(view.iter().map(|n| n.group.clone()));
    groups.sort();
    groups.dedup();
    // Every state of every group is written, 0 included, so an alert on `nacked > 0` sees the
    // series drop back to 0 rather than vanish.
    for group in groups {
        for state in STATES {
            let n = view
                .iter()
                .filter(|v| v.group == group && v.state == state)
                .count();
            nodes
                .get_or_create(&StateLabels {
                    group: group.clone(),
                    state: state.as_str(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
    reg.register(
        "data_planes",
        "Data planes known to the control plane, by group and state",
        nodes,
    );
    reg.register(
        "config_version",
        "The live config version of each group",
        versions,
    );
    reg
}
