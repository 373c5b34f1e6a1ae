//! The fleet registry: what the control plane knows about every data plane that has connected
//! (who, where, which version it serves, what is in flight, what it refused).
//!
//! Each discovery stream owns one entry while it is the newest stream of its node: a stream
//! registers with an epoch, and updates from an older stream of the same node id (a half-open
//! connection the node already replaced) are ignored. A node's state is derived when read,
//! against the group's live version, so it is never stale after an apply; so is its lag (how
//! many versions behind, since when: [`fill_lag`]), from the group's history.
//!
//! Propagation time, per node: from the control plane storing the version the node serves (or
//! from the node's first connect, if later) to the node's ACK of it, as
//! `portico_cp_config_propagation_seconds` times it; from the send when the version's apply
//! time is not at hand.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use portico_common::ConfigIssue;
use serde::Serialize;

use crate::store::VersionMeta;

/// A data plane's state as shown by `Fleet` and `/clustering/data-planes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Serves the group's live version.
    InSync,
    /// An update is in flight.
    Applying,
    /// Refused a version; that version is parked until a newer one exists.
    Nacked,
    /// The stream is gone; the entry is kept with its last_seen.
    Disconnected,
    /// Connected, not serving the live version, nothing in flight.
    Lagging,
}

impl NodeState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::InSync => "in_sync",
            NodeState::Applying => "applying",
            NodeState::Nacked => "nacked",
            NodeState::Disconnected => "disconnected",
            NodeState::Lagging => "lagging",
        }
    }
}

/// A refused version and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nacked {
    pub version: u64,
    pub hash: String,
    pub errors: Vec<ConfigIssue>,
}

/// What `Hello` says.
#[derive(Debug, Clone)]
pub struct Hello {
    pub node_id: String,
    pub group: String,
    pub build_version: String,
    pub address: Option<SocketAddr>,
    pub serving_version: u64,
    pub serving_hash: String,
}

#[derive(Debug, Clone)]
struct Entry {
    hello: Hello,
    epoch: u64,
    connected: bool,
    connected_since: SystemTime,
    last_seen: SystemTime,
    serving_version: u64,
    serving_hash: String,
    in_flight: Option<u64>,
    /// When the in-flight update was sent.
    sent_at: Option<SystemTime>,
    /// How long the version it serves took to reach it: (version, duration).
    propagation: Option<(u64, Duration)>,
    /// First connect of this node id since the control plane started (kept across
    /// reconnects): a node is not counted out of sync for longer than the control plane knew it.
    first_seen: SystemTime,
    nacked: Option<Nacked>,
    last_apply_micros: u64,
    active_connections: u64,
}

/// One data plane, as read from the registry.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub node_id: String,
    pub group: String,
    /// The peer address of its stream ("" when unknown).
    pub address: String,
    pub build_version: String,
    pub connected_since: SystemTime,
    pub last_seen: SystemTime,
    pub serving_version: u64,
    pub serving_hash: String,
    pub state: NodeState,
    pub nacked: Option<Nacked>,
    pub last_apply_micros: u64,
    pub active_connections: u64,
    /// First connect of this node id since the control plane started.
    pub first_seen: SystemTime,
    /// How long the version it serves took to propagate to it, when this control plane saw it
    /// ACK that version.
    pub propagation: Option<Duration>,
    /// Versions of its group newer than the one it serves (0 when it serves the live one);
    /// filled by [`fill_lag`].
    pub behind_versions: u64,
    /// Since when it has not served the live version; filled by [`fill_lag`].
    pub out_of_sync_since: Option<SystemTime>,
}

/// How long a disconnected data plane stays listed: Kong's `cluster_data_plane_purge_delay`
/// default (14 days).
pub const DEFAULT_PURGE_DELAY: Duration = Duration::from_secs(14 * 24 * 3600);

/// The registry.
#[derive(Debug)]
pub struct Fleet {
    inner: Mutex<Inner>,
    /// Disconnected entries last seen longer ago than this are forgotten (an autoscaled fleet
    /// would otherwise list every node that ever existed).
    purge_delay: Duration,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet::new(DEFAULT_PURGE_DELAY)
    }
}

#[derive(Debug, Default)]
struct Inner {
    next_epoch: u64,
    nodes: BTreeMap<String, Entry>,
}

impl Fleet {
    /// An empty registry forgetting disconnected nodes after `purge_delay`.
    pub fn new(purge_delay: Duration) -> Self {
        Fleet {
            inner: Mutex::default(),
            purge_delay,
        }
    }

    /// Registers a new stream for `hello.node_id`, replacing any earlier entry, and returns its
    /// epoch plus the version this node refused before (still parked if nothing newer exists).
    pub fn connect(&self, hello: Hello) -> (u64, Option<Nacked>) {
        let mut inner = self.lock();
        inner.next_epoch += 1;
        let epoch = inner.next_epoch;
        let now = SystemTime::now();
        // A refusal survives a reconnect of the same node in the same group, so a crash-looping
        // data plane is not fed the same bad version on every reconnect. A different build may
        // accept it (an upgrade that adds the missing plugin), so it gets a fresh chance.
        let previous = inner.nodes.get(&hello.node_id);
        let nacked = previous
            .filter(|e| {
                e.hello.group == hello.group && e.hello.build_version == hello.build_version
            })
            .and_then(|e| e.nacked.clone());
        // A node resuming with the version it ACKed before keeps that version's propagation time.
        let propagation = previous
            .filter(|e| {
                e.hello.group == hello.group
                    && e.serving_version == hello.serving_version
                    && e.serving_hash == hello.serving_hash
            })
            .and_then(|e| e.propagation);
        let first_seen = previous.map_or(now, |e| e.first_seen);
        let entry = Entry {
            serving_version: hello.serving_version,
            serving_hash: hello.serving_hash.clone(),
            hello: hello.clone(),
            epoch,
            connected: true,
            connected_since: now,
            last_seen: now,
            in_flight: None,
            sent_at: None,
            propagation,
            first_seen,
            nacked: nacked.clone(),
            last_apply_micros: 0,
            active_connections: 0,
        };
        inner.nodes.insert(hello.node_id, entry);
        (epoch, nacked)
    }

    /// Applies `f` to the entry of `node_id` if `epoch` is still its newest stream.
    fn update(&self, node_id: &str, epoch: u64, f: impl FnOnce(&mut Entry)) {
        let mut inner = self.lock();
        if let Some(entry) = inner.nodes.get_mut(node_id).filter(|e| e.epoch == epoch) {
            entry.last_seen = SystemTime::now();
            f(entry);
        }
    }

    /// An update was sent.
    pub fn sent(&self, node_id: &str, epoch: u64, version: u64) {
        self.update(node_id, epoch, |e| {
            e.in_flight = Some(version);
            e.sent_at = Some(e.last_seen);
        });
    }

    /// The node applied `version`, which the control plane published at `published` (its
    /// apply time, when known; otherwise the propagation is timed from the send).
    pub fn acked(
        &self,
        node_id: &str,
        epoch: u64,
        version: u64,
        hash: &str,
        micros: u64,
        published: Option<SystemTime>,
    ) {
        self.update(node_id, epoch, |e| {
            let now = e.last_seen;
            // Timed from when this node could first have had it: a node that joins today did
            // not take a month to receive last month's version.
            let first_seen = e.first_seen;
            e.propagation = published
                .map(|p| p.max(first_seen))
                .or(e.sent_at)
                .map(|start| {
                    // A clock step backwards would make it negative: count it as 0.
                    (version, now.duration_since(start).unwrap_or_default())
                });
            e.in_flight = None;
            e.sent_at = None;
            e.serving_version = version;
            e.serving_hash = hash.to_owned();
            e.last_apply_micros = micros;
            // A newer version replaced the refused one.
            e.nacked = None;
        });
    }

    /// The node refused a version.
    pub fn nacked(&self, node_id: &str, epoch: u64, nacked: Nacked, micros: u64) {
        self.update(node_id, epoch, |e| {
            e.in_flight = None;
            e.sent_at = None;
            e.last_apply_micros = micros;
            e.nacked = Some(nacked);
        });
    }

    /// A periodic status report.
    pub fn status(&self, node_id: &str, epoch: u64, status: &portico_proto::v1::Status) {
        self.update(node_id, epoch, |e| {
            e.serving_version = status.serving_version;
            e.serving_hash = status.serving_hash.clone();
            e.active_connections = status.active_connections;
            if status.apply_latency_micros > 0 {
                e.last_apply_micros = status.apply_latency_micros;
            }
        });
    }

    /// Any message arrived (keeps last_seen fresh).
    pub fn seen(&self, node_id: &str, epoch: u64) {
        self.update(node_id, epoch, |_| {});
    }

    /// The stream ended.
    pub fn disconnected(&self, node_id: &str, epoch: u64) {
        self.update(node_id, epoch, |e| {
            e.connected = false;
            e.in_flight = None;
            e.sent_at = None;
        });
    }

    /// Every node (of `group`, when given), with its state derived from `live`: the live
    /// `(version, hash)` of a group, `None` when the group has no config.
    pub fn view(
        &self,
        group: Option<&str>,
        live: impl Fn(&str) -> Option<(u64, String)>,
    ) -> Vec<NodeView> {
        let mut inner = self.lock();
        let now = SystemTime::now();
        inner.nodes.retain(|_, e| {
            e.connected
                || now
                    .duration_since(e.last_seen)
                    .is_ok_and(|idle| idle < self.purge_delay)
        });
        inner
            .nodes
            .values()
            .filter(|e| group.is_none_or(|g| e.hello.group == g))
            .map(|e| {
                let live = live(&e.hello.group);
                NodeView {
                    node_id: e.hello.node_id.clone(),
                    group: e.hello.group.clone(),
                    address: e.hello.address.map(|a| a.to_string()).unwrap_or_default(),
                    build_version: e.hello.build_version.clone(),
                    connected_since: e.connected_since,
                    last_seen: e.last_seen,
                    serving_version: e.serving_version,
                    serving_hash: e.serving_hash.clone(),
                    state: state_of(e, live.as_ref()),
                    nacked: e.nacked.clone(),
                    last_apply_micros: e.last_apply_micros,
                    active_connections: e.active_connections,
                    first_seen: e.first_seen,
                    propagation: e
                        .propagation
                        .filter(|(v, _)| *v == e.serving_version)
                        .map(|(_, d)| d),
                    behind_versions: 0,
                    out_of_sync_since: None,
                }
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The registry holds no invariant a panicking holder could break halfway.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Fills `behind_versions` and `out_of_sync_since` of `nodes` from `history(group)`: the
/// group's versions, newest (live) first, as the store keeps them.
///
/// A node not serving the live version is behind by the number of its group's versions newer
/// than the one it serves (at least 1; at most what the history keeps), and out of sync since the
/// oldest of those was applied, or since the control plane first saw the node if that is later
/// (a node that joins today is not "out of sync for a month").
pub fn fill_lag(nodes: &mut [NodeView], history: impl Fn(&str) -> Option<Vec<VersionMeta>>) {
    let mut cache: BTreeMap<String, Option<Vec<VersionMeta>>> = BTreeMap::new();
    for n in nodes {
        let versions = cache
            .entry(n.group.clone())
            .or_insert_with(|| history(&n.group));
        let Some(versions) = versions.as_deref() else {
            continue;
        };
        let Some(live) = versions.first() else {
            continue; // no config in the group: nothing to be behind
        };
        if n.serving_version == live.version && n.serving_hash == live.hash {
            continue;
        }
        let newer: Vec<&VersionMeta> = versions
            .iter()
            .filter(|m| m.version > n.serving_version)
            .collect();
        n.behind_versions = (newer.len() as u64).max(1);
        let oldest_missed = newer.last().copied().unwrap_or(live);
        n.out_of_sync_since = humantime::parse_rfc3339(&oldest_missed.applied_at)
            .ok()
            .map(|t| t.max(n.first_seen));
    }
}

fn state_of(e: &Entry, live: Option<&(u64, String)>) -> NodeState {
    if !e.connected {
        return NodeState::Disconnected;
    }
    if e.in_flight.is_some() {
        return NodeState::Applying;
    }
    let in_sync = match live {
        Some((version, hash)) => e.serving_version == *version && e.serving_hash == *hash,
        None => e.serving_version == 0 && e.serving_hash.is_empty(),
    };
    if in_sync {
        return NodeState::InSync;
    }
    if e.nacked.is_some() {
        return NodeState::Nacked;
    }
    NodeState::Lagging
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(node_id: &str) -> Hello {
        Hello {
            node_id: node_id.into(),
            group: "default".into(),
            build_version: "test".into(),
            address: None,
            serving_version: 0,
            serving_hash: String::new(),
        }
    }

    #[test]
    fn disconnected_nodes_are_forgotten_after_the_purge_delay_connected_ones_never() {
        let ids = |f: &Fleet| -> Vec<String> {
            f.view(None, |_| None)
                .into_iter()
                .map(|n| n.node_id)
                .collect()
        };
        // Kong's default keeps a disconnected node listed.
        let kept = Fleet::default();
        let (epoch, _) = kept.connect(hello("a"));
        kept.disconnected("a", epoch);
        assert_eq!(ids(&kept), ["a"]);
        assert_eq!(kept.view(None, |_| None)[0].state, NodeState::Disconnected);

        // With no delay, the disconnected node goes at the next read; the connected one stays.
        let fleet = Fleet::new(Duration::ZERO);
        let (a, _) = fleet.connect(hello("a"));
        fleet.connect(hello("b"));
        fleet.disconnected("a", a);
        assert_eq!(ids(&fleet), ["b"]);
    }

    fn meta(version: u64, applied_at: &str) -> VersionMeta {
        VersionMeta {
            version,
            hash: format!("h{version}"),
            applied_at: applied_at.into(),
            origin: "apply".into(),
            summary: String::new(),
        }
    }

    #[test]
    fn lag_counts_the_versions_missed_since_the_first_one_or_since_the_node_was_first_seen() {
        let fleet = Fleet::default();
        let mut on_v1 = hello("on-v1");
        (on_v1.serving_version, on_v1.serving_hash) = (1, "h1".into());
        fleet.connect(on_v1);
        let mut on_v9 = hello("on-v9");
        (on_v9.serving_version, on_v9.serving_hash) = (9, "h9".into());
        fleet.connect(on_v9);
        let mut live = hello("live");
        (live.serving_version, live.serving_hash) = (5, "h5".into());
        fleet.connect(live);
        fleet.connect(hello("new"));
        // Newest first, as the store lists them: v5 and v3 were applied after v1, long ago.
        let history = vec![
            meta(5, "2020-01-03T00:00:00.000Z"),
            meta(3, "2020-01-02T00:00:00.000Z"),
            meta(1, "2020-01-01T00:00:00.000Z"),
        ];
        let mut nodes = fleet.view(None, |_| Some((5, "h5".into())));
        fill_lag(&mut nodes, |_| Some(history.clone()));
        let lag = |id: &str| {
            let n = nodes.iter().find(|n| n.node_id == id).unwrap();
            (n.behind_versions, n.out_of_sync_since, n.first_seen)
        };
        assert_eq!(lag("live"), (0, None, lag("live").2));
        // Missed v3 and v5, but this control plane only knows it since it connected (now).
        let (behind, since, first_seen) = lag("on-v1");
        assert_eq!((behind, since), (2, Some(first_seen)));
        // Serving nothing: every version kept is missed.
        assert_eq!(lag("new").0, 3);
        // Serving a version the group never had (another group's, or a reset store): it still
        // does not serve the live one.
        assert_eq!(lag("on-v9").0, 1);
    }
}
