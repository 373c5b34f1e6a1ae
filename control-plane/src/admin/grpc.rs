//! The admin gRPC service the CLI calls (`admin.proto`). An invalid config is an answer
//! (`accepted: false` with every error), not a gRPC error; unknown groups and versions are
//! `NotFound`. Authentication happens before this service is reached (see `admin::auth`).

use std::time::SystemTime;

use portico_common::ConfigIssue;
use portico_proto::v1::{
    admin_server::Admin, ApplyRequest, ApplyResponse, ConfigDocument, ConfigError, DataPlaneInfo,
    FleetRequest, FleetResponse, GetConfigRequest, GroupInfo, HistoryEntry, HistoryRequest,
    HistoryResponse, RollbackRequest,
};
use tonic::{Request, Response, Status};

use crate::fleet::{fill_lag, NodeView};
use crate::state::{Applied, ApplyError, ControlPlane, DEFAULT_GROUP};
use crate::store::VersionRecord;

/// The `Admin` service.
#[derive(Clone)]
pub struct AdminService {
    cp: ControlPlane,
}

impl AdminService {
    /// A service over `cp`.
    pub fn new(cp: ControlPlane) -> Self {
        AdminService { cp }
    }
}

fn group_or_default(group: &str) -> &str {
    if group.is_empty() {
        DEFAULT_GROUP
    } else {
        group
    }
}

fn to_status(e: ApplyError) -> Status {
    match e {
        ApplyError::NoSuchGroup(_) | ApplyError::NoSuchVersion { .. } => {
            Status::not_found(e.to_string())
        }
        ApplyError::InvalidGroup(_) | ApplyError::Invalid(_) => {
            Status::invalid_argument(e.to_string())
        }
        ApplyError::Store(_) | ApplyError::Internal(_) => {
            tracing::error!(error = %e, "admin request failed");
            Status::internal(e.to_string())
        }
    }
}

fn config_errors(issues: &[ConfigIssue]) -> Vec<ConfigError> {
    issues
        .iter()
        .map(|i| ConfigError {
            path: i.path.clone(),
            message: i.message.clone(),
        })
        .collect()
}

/// Maps an apply/rollback result: invalid configs become `accepted: false`.
fn apply_response(
    group: &str,
    result: Result<Applied, ApplyError>,
) -> Result<ApplyResponse, Status> {
    match result {
        Ok(a) => Ok(ApplyResponse {
            accepted: true,
            group: a.record.group.clone(),
            version: a.record.version,
            hash: a.record.hash.clone(),
            unchanged: a.unchanged,
            summary: a.record.summary.clone(),
            errors: Vec::new(),
        }),
        Err(ApplyError::Invalid(errors)) => Ok(ApplyResponse {
            accepted: false,
            group: group.to_owned(),
            errors: config_errors(&errors.errors),
            ..Default::default()
        }),
        Err(e) => Err(to_status(e)),
    }
}

fn document(r: &VersionRecord) -> ConfigDocument {
    ConfigDocument {
        group: r.group.clone(),
        version: r.version,
        hash: r.hash.clone(),
        applied_at: r.applied_at.clone(),
        config_text: r.config_text.clone(),
        snapshot_json: r.snapshot.get().as_bytes().to_vec(),
    }
}

/// The wire form of a registry entry (with its lag filled by `fleet::fill_lag`), at `now`.
pub fn data_plane_info(n: &NodeView, now: SystemTime) -> DataPlaneInfo {
    DataPlaneInfo {
        node_id: n.node_id.clone(),
        group: n.group.clone(),
        address: n.address.clone(),
        build_version: n.build_version.clone(),
        connected_since: humantime::format_rfc3339_millis(n.connected_since).to_string(),
        last_seen: humantime::format_rfc3339_millis(n.last_seen).to_string(),
        serving_version: n.serving_version,
        serving_hash: n.serving_hash.clone(),
        state: n.state.as_str().to_owned(),
        nacked_version: n.nacked.as_ref().map_or(0, |x| x.version),
        nack_errors: n
            .nacked
            .as_ref()
            .map(|x| config_errors(&x.errors))
            .unwrap_or_default(),
        last_apply_micros: n.last_apply_micros,
        active_connections: n.active_connections,
        propagation_micros: n
            .propagation
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        behind_versions: n.behind_versions,
        out_of_sync_since: n
            .out_of_sync_since
            .map(|t| humantime::format_rfc3339_millis(t).to_string())
            .unwrap_or_default(),
        out_of_sync_for_ms: n.out_of_sync_since.map_or(0, |t| millis_since(t, now)),
    }
}

/// Milliseconds from `t` to `now` (0 if `t` is later).
pub(crate) fn millis_since(t: SystemTime, now: SystemTime) -> u64 {
    now.duration_since(t)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn apply(
        &self,
        request: Request<ApplyRequest>,
    ) -> Result<Response<ApplyResponse>, Status> {
        let req = request.into_inner();
        let group = group_or_default(&req.group);
        let result = self.cp.apply(group, req.config_text).await;
        apply_response(group, result).map(Response::new)
    }

    async fn get_config(
        &self,
        request: Request<GetConfigRequest>,
    ) -> Result<Response<ConfigDocument>, Status> {
        let req = request.into_inner();
        let group = group_or_default(&req.group);
        let record = self.cp.get(group, req.version).await.map_err(to_status)?;
        Ok(Response::new(document(&record)))
    }

    async fn history(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        let req = request.into_inner();
        let group = group_or_default(&req.group);
        let entries = self
            .cp
            .history(group)
            .map_err(to_status)?
            .into_iter()
            .map(|m| HistoryEntry {
                version: m.version,
                hash: m.hash,
                applied_at: m.applied_at,
                summary: m.summary,
                origin: m.origin,
            })
            .collect();
        Ok(Response::new(HistoryResponse {
            group: group.to_owned(),
            entries,
        }))
    }

    async fn rollback(
        &self,
        request: Request<RollbackRequest>,
    ) -> Result<Response<ApplyResponse>, Status> {
        let req = request.into_inner();
        let group = group_or_default(&req.group);
        if req.version == 0 {
            return Err(Status::invalid_argument("rollback needs a version (got 0)"));
        }
        let result = self.cp.rollback(group, req.version).await;
        apply_response(group, result).map(Response::new)
    }

    async fn fleet(
        &self,
        request: Request<FleetRequest>,
    ) -> Result<Response<FleetResponse>, Status> {
        let req = request.into_inner();
        let filter = (!req.group.is_empty()).then_some(req.group.as_str());
        let groups = self
            .cp
            .groups()
            .iter()
            .filter(|r| filter.is_none_or(|g| r.group == g))
            .map(|r| GroupInfo {
                group: r.group.clone(),
                version: r.version,
                hash: r.hash.clone(),
                applied_at: r.applied_at.clone(),
            })
            .collect();
        let mut nodes = self.cp.fleet_view(filter);
        fill_lag(&mut nodes, |g| self.cp.history(g).ok());
        let now = SystemTime::now();
        let data_planes = nodes.iter().map(|n| data_plane_info(n, now)).collect();
        Ok(Response::new(FleetResponse {
            groups,
            data_planes,
        }))
    }
}
