//! The status listener: `GET /status` (config, uptime, counters) and `GET /status/ready`
//! (503 until a config is live or while draining, then 200), as Kong's status API, and
//! `GET /metrics` (Prometheus).

use std::sync::atomic::Ordering;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::response::{json_response, ProxyBody};
use crate::state::Shared;

/// Answers one status request.
pub fn handle(req: &Request<Incoming>, shared: &Shared) -> Response<ProxyBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"message": "Method not allowed"}),
        );
    }
    match req.uri().path() {
        "/status" => json_response(StatusCode::OK, &status(shared)),
        "/status/ready" => ready(shared),
        "/metrics" => metrics(req, shared),
        _ => json_response(StatusCode::NOT_FOUND, &json!({"message": "Not found"})),
    }
}

/// The Prometheus exposition: OpenMetrics when the scraper asks for it (Prometheus does),
/// Prometheus text 0.0.4 otherwise.
fn metrics(req: &Request<Incoming>, shared: &Shared) -> Response<ProxyBody> {
    let openmetrics = req.headers().get_all(http::header::ACCEPT).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.contains("application/openmetrics-text"))
    });
    let body = shared.metrics.render(shared, openmetrics);
    let mut resp = Response::new(ProxyBody::full(body));
    let ct = if openmetrics {
        crate::metrics::OPENMETRICS
    } else {
        crate::metrics::PROMETHEUS_TEXT
    };
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ct),
    );
    resp
}

fn ready(shared: &Shared) -> Response<ProxyBody> {
    if shared.draining.load(Ordering::Relaxed) {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"message": "draining"}),
        );
    }
    match shared.runtime.load().as_ref() {
        Some(_) => json_response(StatusCode::OK, &json!({"message": "ready"})),
        None => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"message": "no configuration available (configuration hash is not initialized)"}),
        ),
    }
}

fn status(shared: &Shared) -> serde_json::Value {
    let rt = shared.runtime.load_full();
    let config = rt.as_ref().map(|rt| {
        let s = &rt.snapshot;
        json!({
            "hash": s.hash,
            "loaded_at": humantime::format_rfc3339_seconds(rt.loaded_at).to_string(),
            "services": s.services.len(),
            "routes": s.routes.len(),
            "upstreams": s.upstreams.len(),
            "consumers": s.consumers.len(),
            "plugins": s.plugins.len(),
        })
    });
    let circuits = rt.as_deref().map_or_else(Vec::new, circuits);
    let last_errors = shared
        .reloads
        .last_errors
        .lock()
        .map(|e| e.clone())
        .unwrap_or_default();
    let st = &shared.stats;
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "ready": rt.is_some() && !shared.draining.load(Ordering::Relaxed),
        "uptime_seconds": shared.started.elapsed().as_secs(),
        "config": config,
        "control_plane": shared.control_plane.get().map(|l| l.to_json(rt.as_deref())),
        "reloads": {
            "succeeded": shared.reloads.succeeded.load(Ordering::Relaxed),
            "failed": shared.reloads.failed.load(Ordering::Relaxed),
            "last_errors": last_errors,
        },
        "connections": {
            "active": st.connections_active.load(Ordering::Relaxed),
            "total": st.connections_total.load(Ordering::Relaxed),
        },
        "requests": {
            "active": st.requests_active.load(Ordering::Relaxed),
            "total": st.requests_total.load(Ordering::Relaxed),
        },
        "upstreams": rt.as_deref().map(upstreams),
        "circuits": circuits,
    })
}

/// Every circuit of every circuit-breaker instance of the live runtime, by service name.
fn circuits(rt: &crate::runtime::Runtime) -> Vec<serde_json::Value> {
    let mut all: Vec<(String, serde_json::Value)> = rt
        .plugins
        .instances()
        .filter_map(|(id, instance)| match instance {
            crate::plugins::Instance::CircuitBreaker(cb) => Some((id, cb)),
            _ => None,
        })
        .flat_map(|(id, cb)| {
            cb.states()
                .into_iter()
                .map(move |s| (s.service.clone(), s.to_json(id)))
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all.into_iter().map(|(_, v)| v).collect()
}

/// Each upstream's balancer and target health, by upstream name.
fn upstreams(rt: &crate::runtime::Runtime) -> serde_json::Map<String, serde_json::Value> {
    rt.balancers()
        .iter()
        .map(|b| (b.name.clone(), b.status()))
        .collect()
}
