//! The REST admin API, Kong-flavoured: `POST /config` takes a declarative file like Kong's
//! DB-less endpoint (201 / 400 with every error), the entity listings answer
//! `{"data": [...]}` from the live snapshot, `GET /clustering/data-planes` shows the fleet.
//! Listings never show credential secrets (key-auth keys, jwt secrets, basic-auth hashes).

use std::time::SystemTime;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use crate::admin::grpc::millis_since;
use crate::fleet::{fill_lag, NodeState, NodeView};
use crate::state::{ApplyError, ControlPlane, DEFAULT_GROUP};

/// Largest accepted config body (Kong's `cluster_max_payload` default is 16 MiB compressed).
pub(crate) const MAX_BODY: usize = 64 * 1024 * 1024;

/// The entity listings served from the live snapshot.
const ENTITIES: [&str; 5] = ["services", "routes", "consumers", "plugins", "upstreams"];

/// A JSON response.
pub(crate) fn json(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

fn message(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    json(status, &json!({ "message": msg }))
}

fn error_response(e: &ApplyError) -> Response<Full<Bytes>> {
    match e {
        ApplyError::NoSuchGroup(_) | ApplyError::NoSuchVersion { .. } => {
            message(StatusCode::NOT_FOUND, &e.to_string())
        }
        ApplyError::InvalidGroup(_) => message(StatusCode::BAD_REQUEST, &e.to_string()),
        ApplyError::Invalid(errors) => json(
            StatusCode::BAD_REQUEST,
            &json!({
                "message": "declarative config is invalid",
                "errors": errors.errors.iter()
                    .map(|i| json!({ "path": i.path, "message": i.message }))
                    .collect::<Vec<_>>(),
            }),
        ),
        ApplyError::Store(_) | ApplyError::Internal(_) => {
            tracing::error!(error = %e, "admin request failed");
            message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "An unexpected error occurred",
            )
        }
    }
}

/// `key=value` from the query string (values here are group names and flags: no escapes).
fn query_param<'a>(req: &'a Request<Incoming>, key: &str) -> Option<&'a str> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn group_of(req: &Request<Incoming>) -> String {
    match query_param(req, "group") {
        Some(g) if !g.is_empty() => g.to_owned(),
        _ => DEFAULT_GROUP.to_owned(),
    }
}

/// Handles one REST request.
pub(crate) async fn handle(cp: &ControlPlane, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let method = req.method().clone();
    let known = matches!(
        path.as_str(),
        "/status" | "/config" | "/history" | "/clustering/data-planes" | "/metrics"
    ) || ENTITIES.iter().any(|e| path.strip_prefix('/') == Some(e));
    match (&method, path.as_str()) {
        (&Method::GET, "/status") => status(cp),
        (&Method::GET, "/config") => get_config(cp, &group_of(&req)).await,
        (&Method::POST, "/config") => post_config(cp, req).await,
        (&Method::GET, "/history") => history(cp, &group_of(&req)),
        (&Method::GET, "/clustering/data-planes") => data_planes(cp),
        (&Method::GET, "/metrics") => metrics(cp, &req),
        (&Method::GET, p) if known => listing(cp, &group_of(&req), &p[1..]),
        _ if known => message(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
        _ => message(StatusCode::NOT_FOUND, "Not found"),
    }
}

/// The Prometheus exposition: OpenMetrics when the scraper asks for it, Prometheus text
/// otherwise.
fn metrics(cp: &ControlPlane, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    use crate::metrics::{OPENMETRICS, PROMETHEUS_TEXT};
    let openmetrics = req.headers().get_all(header::ACCEPT).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.contains("application/openmetrics-text"))
    });
    let mut resp = Response::new(Full::new(Bytes::from(cp.metrics().render(cp, openmetrics))));
    let ct = if openmetrics {
        OPENMETRICS
    } else {
        PROMETHEUS_TEXT
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(ct));
    resp
}

fn status(cp: &ControlPlane) -> Response<Full<Bytes>> {
    let groups: Vec<Value> = cp
        .groups()
        .iter()
        .map(|r| {
            json!({
                "group": r.group, "version": r.version, "hash": r.hash,
                "applied_at": r.applied_at, "summary": r.summary,
            })
        })
        .collect();
    let nodes = cp.fleet_view(None);
    let mut counts = Map::new();
    counts.insert("total".into(), json!(nodes.len()));
    for state in [
        NodeState::InSync,
        NodeState::Applying,
        NodeState::Nacked,
        NodeState::Lagging,
        NodeState::Disconnected,
    ] {
        let n = nodes.iter().filter(|n| n.state == state).count();
        counts.insert(state.as_str().into(), json!(n));
    }
    json(
        StatusCode::OK,
        &json!({
            "version": env!("CARGO_PKG_VERSION"),
            "groups": groups,
            "data_planes": counts,
        }),
    )
}

async fn get_config(cp: &ControlPlane, group: &str) -> Response<Full<Bytes>> {
    match cp.get(group, 0).await {
        Ok(r) => {
            let mut snapshot = r.snapshot.to_value();
            redact_snapshot(&mut snapshot);
            json(
                StatusCode::OK,
                &json!({
                    "group": r.group, "version": r.version, "hash": r.hash,
                    "applied_at": r.applied_at, "origin": r.origin, "summary": r.summary,
                    "config": r.config_text, "snapshot": snapshot,
                }),
            )
        }
        Err(e) => error_response(&e),
    }
}

async fn post_config(cp: &ControlPlane, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let group = group_of(&req);
    let check_hash = matches!(query_param(&req, "check_hash"), Some("1" | "true"));
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return message(
                StatusCode::PAYLOAD_TOO_LARGE,
                "config body too large (limit 64 MiB)",
            )
        }
        Err(e) => {
            return message(
                StatusCode::BAD_REQUEST,
                &format!("cannot read request body: {e}"),
            )
        }
    };
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return message(StatusCode::BAD_REQUEST, "config body is not UTF-8");
    };
    let text = if is_json {
        unwrap_kong_envelope(text)
    } else {
        text
    };
    match cp.apply(&group, text).await {
        Ok(a) if check_hash && a.unchanged => {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            resp
        }
        Ok(a) => json(
            StatusCode::CREATED,
            &json!({
                "group": a.record.group, "version": a.record.version, "hash": a.record.hash,
                "unchanged": a.unchanged, "summary": a.record.summary,
                "warnings": a.warnings.iter()
                    .map(|w| json!({ "path": w.path, "message": w.message }))
                    .collect::<Vec<_>>(),
            }),
        ),
        Err(e) => error_response(&e),
    }
}

/// Kong's `POST /config` takes `{"config": "<text>"}` (or `{"config": {...}}`) as JSON; a
/// JSON body without that key is the declarative config itself.
fn unwrap_kong_envelope(text: String) -> String {
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(mut map))
            if map.contains_key("config") && !map.contains_key("_format_version") =>
        {
            match map.remove("config") {
                Some(Value::String(s)) => s,
                Some(other) => other.to_string(),
                None => text,
            }
        }
        _ => text,
    }
}

fn history(cp: &ControlPlane, group: &str) -> Response<Full<Bytes>> {
    match cp.history(group) {
        Ok(entries) => json(StatusCode::OK, &json!({ "group": group, "data": entries })),
        Err(e) => error_response(&e),
    }
}

fn data_planes(cp: &ControlPlane) -> Response<Full<Bytes>> {
    let mut nodes = cp.fleet_view(None);
    fill_lag(&mut nodes, |g| cp.history(g).ok());
    let now = SystemTime::now();
    let data: Vec<Value> = nodes.iter().map(|n| node_json(n, now)).collect();
    json(StatusCode::OK, &json!({ "data": data, "next": null }))
}

fn node_json(n: &NodeView, now: SystemTime) -> Value {
    let ip = n
        .address
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    json!({
        // Kong's field names first, then Portico's.
        "id": n.node_id,
        "ip": ip,
        "version": n.build_version,
        "config_hash": n.serving_hash,
        "node_id": n.node_id,
        "group": n.group,
        "address": n.address,
        "build_version": n.build_version,
        "connected_since": humantime::format_rfc3339_millis(n.connected_since).to_string(),
        "last_seen": humantime::format_rfc3339_millis(n.last_seen).to_string(),
        "serving_version": n.serving_version,
        "serving_hash": n.serving_hash,
        "state": n.state.as_str(),
        "nacked_version": n.nacked.as_ref().map(|x| x.version),
        "nack_errors": n.nacked.as_ref().map(|x| x.errors.iter()
            .map(|e| json!({ "path": e.path, "message": e.message }))
            .collect::<Vec<_>>()).unwrap_or_default(),
        "last_apply_micros": n.last_apply_micros,
        "active_connections": n.active_connections,
        // From the control plane storing the served version to this node's ACK; null when
        // this control plane has not seen the node ACK it.
        "propagation_ms": n.propagation.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3),
        "behind_versions": n.behind_versions,
        "out_of_sync_since": n.out_of_sync_since
            .map(|t| humantime::format_rfc3339_millis(t).to_string()),
        "out_of_sync_for_ms": n.out_of_sync_since.map(|t| millis_since(t, now)),
    })
}

fn listing(cp: &ControlPlane, group: &str, entity: &str) -> Response<Full<Bytes>> {
    if !crate::store::valid_group(group) {
        return error_response(&ApplyError::InvalidGroup(group.to_owned()));
    }
    let Some(record) = cp.current(group) else {
        return error_response(&ApplyError::NoSuchGroup(group.to_owned()));
    };
    let mut snapshot = record.snapshot.to_value();
    redact_snapshot(&mut snapshot);
    let data = snapshot
        .get_mut(entity)
        .map(Value::take)
        .unwrap_or(Value::Array(Vec::new()));
    json(StatusCode::OK, &json!({ "data": data, "next": null }))
}

/// Removes credential secrets from a snapshot's JSON: key-auth keys, jwt secrets, basic-auth
/// password hashes, certificates' private keys, and secret-looking fields of plugin configs
/// (redis passwords and such).
pub(crate) fn redact_snapshot(snapshot: &mut Value) {
    if let Some(Value::Array(certificates)) = snapshot.get_mut("certificates") {
        for certificate in certificates {
            if let Value::Object(map) = certificate {
                map.remove("key");
                map.remove("key_alt");
            }
        }
    }
    if let Some(Value::Array(consumers)) = snapshot.get_mut("consumers") {
        for consumer in consumers {
            strip_field(consumer, "keyauth_credentials", "key");
            strip_field(consumer, "jwt_secrets", "secret");
            strip_field(consumer, "basicauth_credentials", "password");
        }
    }
    if let Some(Value::Array(plugins)) = snapshot.get_mut("plugins") {
        for plugin in plugins {
            if let Some(config) = plugin.get_mut("config") {
                redact_secretish(config);
            }
        }
    }
}

fn strip_field(consumer: &mut Value, list: &str, field: &str) {
    if let Some(Value::Array(items)) = consumer.get_mut(list) {
        for item in items {
            if let Value::Object(map) = item {
                map.remove(field);
            }
        }
    }
}

fn redact_secretish(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let k = k.to_ascii_lowercase();
                let secretish = k.contains("password") || k.contains("secret") || k == "token";
                if secretish && !v.is_null() && !v.is_boolean() {
                    *v = Value::String("<redacted>".into());
                } else {
                    redact_secretish(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_secretish),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // No plugin Portico runs has a secret in its config yet, so no loadable config exercises
    // this; the redaction must be in place before the first one (a redis password) lands.
    #[test]
    fn plugin_config_secrets_are_redacted_at_any_depth() {
        let mut snapshot = json!({"plugins": [{"name": "p", "config": {
            "redis": {"host": "r", "password": "redis-pass-123", "ssl": false},
            "client_secret": "s", "token": "t", "anonymous": null, "hide_credentials": true
        }}]});
        redact_snapshot(&mut snapshot);
        assert_eq!(
            snapshot["plugins"][0]["config"],
            json!({
                "redis": {"host": "r", "password": "<redacted>", "ssl": false},
                "client_secret": "<redacted>", "token": "<redacted>", "anonymous": null,
                "hide_credentials": true
            })
        );
    }
}
