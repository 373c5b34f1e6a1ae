//! The discovery server: one bidirectional stream per data plane (see `discovery.proto`).
//!
//! Per stream, one task runs a small state machine:
//! - wait for `Hello` (node id, group, what it serves); register in the fleet;
//! - whenever nothing is in flight and the group's live version differs from what the node
//!   serves, send one `Update` with a fresh nonce (versions that go live meanwhile coalesce:
//!   after the Ack only the newest is sent);
//! - an `Ack` with the in-flight nonce makes that version the node's; a `Nack` parks the
//!   version: it is not sent again on this stream (nor after a reconnect of the same node)
//!   until a newer version exists;
//! - `Status` refreshes the registry; the end of the stream marks the node disconnected.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use portico_common::ConfigIssue;
use portico_proto::v1::{
    control_plane_message, data_plane_message, discovery_server::Discovery, ControlPlaneMessage,
    DataPlaneMessage, Update,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::fleet::{Hello, Nacked};
use crate::state::{ControlPlane, Published, DEFAULT_GROUP};
use crate::store::valid_group;

/// How long a new stream may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// The `Discovery` service.
#[derive(Clone)]
pub struct DiscoveryService {
    cp: ControlPlane,
    shutdown: watch::Receiver<bool>,
}

impl DiscoveryService {
    /// A service over `cp`; open streams end when `shutdown` turns true (so a graceful server
    /// shutdown is not held up by streams that would otherwise last forever).
    pub fn new(cp: ControlPlane, shutdown: watch::Receiver<bool>) -> Self {
        DiscoveryService { cp, shutdown }
    }
}

type Outbound = Pin<Box<dyn Stream<Item = Result<ControlPlaneMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Discovery for DiscoveryService {
    type StreamStream = Outbound;

    async fn stream(
        &self,
        request: Request<Streaming<DataPlaneMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let peer = request.remote_addr();
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Err(_) => return Err(Status::deadline_exceeded("no Hello within 30s")),
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => return Err(Status::invalid_argument("stream closed before Hello")),
            Ok(Ok(Some(msg))) => match msg.kind {
                Some(data_plane_message::Kind::Hello(h)) => h,
                _ => {
                    return Err(Status::invalid_argument(
                        "the first message on a discovery stream must be Hello",
                    ))
                }
            },
        };
        if hello.node_id.is_empty() {
            return Err(Status::invalid_argument("Hello.node_id is required"));
        }
        let group = if hello.group.is_empty() {
            DEFAULT_GROUP.to_owned()
        } else {
            hello.group.clone()
        };
        if !valid_group(&group) {
            return Err(Status::invalid_argument(format!(
                "invalid group name '{group}': use 1-63 characters a-z, 0-9, '_' and '-'"
            )));
        }
        let live = self
            .cp
            .subscribe(&group)
            .map_err(|e| Status::internal(e.to_string()))?;
        let hello = Hello {
            node_id: hello.node_id,
            group,
            build_version: hello.build_version,
            address: peer,
            serving_version: hello.serving_version,
            serving_hash: hello.serving_hash,
        };
        let (epoch, parked) = self.cp.fleet().connect(hello.clone());
        tracing::info!(
            node_id = %hello.node_id,
            group = %hello.group,
            peer = ?peer,
            build_version = %hello.build_version,
            serving_version = hello.serving_version,
            "data plane connected"
        );
        let (tx, rx) = mpsc::channel(2);
        let session = Session {
            cp: self.cp.clone(),
            serving: (hello.serving_version, hello.serving_hash.clone()),
            hello,
            epoch,
            parked: parked.map(|n| (n.version, n.hash)),
            in_flight: None,
            whole_only: false,
            tx,
        };
        tokio::spawn(session.run(inbound, live, self.shutdown.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

struct InFlight {
    nonce: String,
    version: u64,
    hash: String,
    /// Sent as a delta (a resync NACK then means "send it whole", not "refused").
    delta: bool,
}

struct Session {
    cp: ControlPlane,
    hello: Hello,
    epoch: u64,
    /// What the node serves, as far as its acks (or its Hello) tell.
    serving: (u64, String),
    /// The version/hash the node refused; not sent again.
    parked: Option<(u64, String)>,
    in_flight: Option<InFlight>,
    /// The node asked for a whole snapshot after a delta it could not apply; no deltas until
    /// it has acknowledged one.
    whole_only: bool,
    tx: mpsc::Sender<Result<ControlPlaneMessage, Status>>,
}

/// Why a session ended.
enum End {
    Closed,
    Error(Status),
    Shutdown,
}

impl Session {
    async fn run(
        mut self,
        mut inbound: Streaming<DataPlaneMessage>,
        mut live: watch::Receiver<Option<Arc<Published>>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let end = loop {
            // Not held across the wait below: the apply path frees a replaced publication off
            // the async workers, which it can only do when it holds the last reference.
            let current = live.borrow_and_update().clone();
            let sent = self.maybe_send(current.as_deref()).await;
            drop(current);
            if let Err(end) = sent {
                break end;
            }
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(msg)) => self.on_message(msg),
                    Ok(None) => break End::Closed,
                    Err(status) => break End::Error(status),
                },
                changed = live.changed() => {
                    if changed.is_err() {
                        // The channel lives as long as the control plane; treat as shutdown.
                        break End::Shutdown;
                    }
                }
                _ = wait_true(&mut shutdown) => break End::Shutdown,
            }
        };
        let node_id = &self.hello.node_id;
        match &end {
            End::Closed => {
                tracing::info!(node_id = %node_id, group = %self.hello.group, "data plane disconnected")
            }
            End::Error(status) => {
                tracing::info!(node_id = %node_id, group = %self.hello.group, error = %status.message(), "data plane stream failed")
            }
            End::Shutdown => {
                tracing::debug!(node_id = %node_id, "closing discovery stream for shutdown")
            }
        }
        if let End::Shutdown = end {
            let _ = self
                .tx
                .send(Err(Status::unavailable("control plane shutting down")))
                .await;
        }
        self.cp.fleet().disconnected(node_id, self.epoch);
    }

    /// Sends the live version if nothing is in flight and the node neither serves nor refused it.
    async fn maybe_send(&mut self, live: Option<&Published>) -> Result<(), End> {
        let Some(live) = live else {
            return Ok(()); // no config yet: the data plane stays not-ready
        };
        if self.in_flight.is_some() {
            return Ok(()); // coalesce: the newest is sent after the ack
        }
        let target = (live.version, live.hash.clone());
        if self.serving == target || self.parked.as_ref() == Some(&target) {
            return Ok(());
        }
        let nonce = uuid::Uuid::new_v4().to_string();
        // A node serving the version this one replaced gets only what changed.
        let delta = live.delta.as_ref().filter(|d| {
            !self.whole_only && self.serving.0 == d.base_version && self.serving.1 == d.base_hash
        });
        let mut update = Update {
            nonce: nonce.clone(),
            group: live.group.clone(),
            version: live.version,
            hash: live.hash.clone(),
            ..Update::default()
        };
        match delta {
            Some(d) => {
                update.base_version = d.base_version;
                update.base_hash = d.base_hash.clone();
                update.delta_json = d.json.clone();
            }
            None => update.snapshot_json = live.snapshot_json.clone(),
        }
        let msg = ControlPlaneMessage {
            kind: Some(control_plane_message::Kind::Update(update)),
        };
        if self.tx.send(Ok(msg)).await.is_err() {
            return Err(End::Closed);
        }
        tracing::debug!(
            node_id = %self.hello.node_id,
            group = %live.group,
            config_version = live.version,
            nonce = %nonce,
            delta_entities = delta.map(|d| d.entities),
            "update sent"
        );
        self.cp
            .fleet()
            .sent(&self.hello.node_id, self.epoch, live.version);
        self.in_flight = Some(InFlight {
            nonce,
            version: live.version,
            hash: live.hash.clone(),
            delta: delta.is_some(),
        });
        Ok(())
    }

    fn on_message(&mut self, msg: DataPlaneMessage) {
        let node_id = self.hello.node_id.clone();
        let cp = self.cp.clone();
        let fleet = cp.fleet();
        match msg.kind {
            Some(data_plane_message::Kind::Ack(ack)) => {
                let Some(flight) = self.take_in_flight(&ack.nonce) else {
                    tracing::debug!(node_id = %node_id, nonce = %ack.nonce, "ack for an unknown nonce ignored");
                    fleet.seen(&node_id, self.epoch);
                    return;
                };
                tracing::info!(node_id = %node_id, group = %self.hello.group, config_version = flight.version, apply_micros = ack.apply_micros, "data plane applied config");
                // The version's apply time on the control plane, while it is the live one (as
                // the propagation histogram times it); otherwise the fleet times from the send.
                let published = cp
                    .current(&self.hello.group)
                    .filter(|r| r.version == flight.version)
                    .and_then(|r| humantime::parse_rfc3339(&r.applied_at).ok());
                fleet.acked(
                    &node_id,
                    self.epoch,
                    flight.version,
                    &flight.hash,
                    ack.apply_micros,
                    published,
                );
                cp.metrics().acked(&cp, &self.hello.group, flight.version);
                self.serving = (flight.version, flight.hash);
                self.parked = None;
                self.whole_only = false;
            }
            Some(data_plane_message::Kind::Nack(nack)) => {
                let Some(flight) = self.take_in_flight(&nack.nonce) else {
                    tracing::debug!(node_id = %node_id, nonce = %nack.nonce, "nack for an unknown nonce ignored");
                    fleet.seen(&node_id, self.epoch);
                    return;
                };
                let errors: Vec<ConfigIssue> = nack
                    .errors
                    .into_iter()
                    .map(|e| ConfigIssue::new(e.path, e.message))
                    .collect();
                let joined = errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                if nack.resync && flight.delta {
                    // Not a refusal: the node could not apply the delta to what it serves.
                    // The next send is the whole snapshot.
                    tracing::info!(
                        node_id = %node_id,
                        group = %self.hello.group,
                        config_version = flight.version,
                        reason = %joined,
                        "data plane asked for the whole snapshot instead of a delta"
                    );
                    self.whole_only = true;
                    fleet.seen(&node_id, self.epoch);
                    return;
                }
                tracing::warn!(
                    node_id = %node_id,
                    group = %self.hello.group,
                    config_version = flight.version,
                    errors = %joined,
                    "data plane refused config; version parked until a newer one is applied"
                );
                fleet.nacked(
                    &node_id,
                    self.epoch,
                    Nacked {
                        version: flight.version,
                        hash: flight.hash.clone(),
                        errors,
                    },
                    nack.apply_micros,
                );
                self.parked = Some((flight.version, flight.hash));
            }
            Some(data_plane_message::Kind::Status(status)) => {
                fleet.status(&node_id, self.epoch, &status);
            }
            Some(data_plane_message::Kind::Hello(_)) => {
                tracing::debug!(node_id = %node_id, "repeated Hello ignored");
                fleet.seen(&node_id, self.epoch);
            }
            None => fleet.seen(&node_id, self.epoch),
        }
    }

    fn take_in_flight(&mut self, nonce: &str) -> Option<InFlight> {
        if self.in_flight.as_ref().is_some_and(|f| f.nonce == nonce) {
            self.in_flight.take()
        } else {
            None
        }
    }
}

/// Resolves once `rx` holds `true` (or its sender is gone).
pub(crate) async fn wait_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}
