//! What the data plane tells about each request besides metrics: the access log and traces.
//!
//! Both are completed when the response body ends (or is dropped), not when its head is sent,
//! so a streamed response is logged with the bytes it really sent and its span lasts as long as
//! the response: [`Tail`] rides on the response body and finishes there.

pub mod access_log;
pub mod otlp;
pub mod trace;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Method, Uri, Version};
use prometheus_client::metrics::counter::Counter;

use crate::pool::EndpointPool;
use access_log::{AccessLog, Entry, Latencies};
use trace::{OtlpProtocol, RequestTrace, TraceExport, Tracing};

/// Kong's default `tracing_sampling_rate`.
pub const DEFAULT_SAMPLING_RATE: f64 = 0.01;

/// Telemetry options of a data plane (`portico dp` flags).
#[derive(Debug, Clone)]
pub struct TelemetryOptions {
    /// `--access-log`: where access-log lines go; `None` is off.
    pub access_log: Option<access_log::Target>,
    /// `--otlp-endpoint`: OTLP/gRPC collector for every request's trace.
    pub otlp_endpoint: Option<String>,
    /// `--tracing-sampling-rate`: for `--otlp-endpoint`, and for `opentelemetry` plugins that
    /// leave `sampling_rate` unset (Kong's `tracing_sampling_rate`).
    pub sampling_rate: f64,
    /// `service.instance.id` of the spans.
    pub node_id: String,
    /// `--metrics`: record per-request Prometheus metrics (node gauges are always served).
    pub metrics: bool,
}

impl Default for TelemetryOptions {
    fn default() -> Self {
        TelemetryOptions {
            metrics: true,
            access_log: None,
            otlp_endpoint: None,
            sampling_rate: DEFAULT_SAMPLING_RATE,
            node_id: String::new(),
        }
    }
}

/// The running access log and node-level tracing.
#[derive(Debug)]
pub struct Telemetry {
    pub access_log: Option<Arc<AccessLog>>,
    /// The `--otlp-endpoint` pipeline.
    pub tracing: Option<Arc<Tracing>>,
    pub sampling_rate: f64,
    pub node_id: String,
    /// Per-request metrics are recorded.
    pub metrics: bool,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            metrics: true,
            access_log: None,
            tracing: None,
            sampling_rate: DEFAULT_SAMPLING_RATE,
            node_id: String::new(),
        }
    }
}

impl Telemetry {
    /// Opens the access log and builds the node's trace pipeline. Runs inside the runtime.
    pub fn start(opts: &TelemetryOptions) -> Result<Telemetry, String> {
        if !(0.0..=1.0).contains(&opts.sampling_rate) {
            return Err(format!(
                "--tracing-sampling-rate must be between 0 and 1, got {}",
                opts.sampling_rate
            ));
        }
        let access_log = match &opts.access_log {
            Some(target) => Some(Arc::new(
                AccessLog::open(target).map_err(|e| format!("--access-log: {e}"))?,
            )),
            None => None,
        };
        let tracing = match &opts.otlp_endpoint {
            Some(endpoint) => {
                check_endpoint(endpoint).map_err(|e| format!("--otlp-endpoint: {e}"))?;
                Some(Arc::new(
                    Tracing::new(TraceExport {
                        endpoint: endpoint.clone(),
                        protocol: OtlpProtocol::Grpc,
                        headers: Vec::new(),
                        resource: Vec::new(),
                        sampling_rate: opts.sampling_rate,
                        timeout: Duration::from_secs(5),
                        max_batch: 512,
                        response_header: None,
                        node_id: opts.node_id.clone(),
                    })
                    .map_err(|e| format!("--otlp-endpoint: {e}"))?,
                ))
            }
            None => None,
        };
        Ok(Telemetry {
            metrics: opts.metrics,
            access_log,
            tracing,
            sampling_rate: opts.sampling_rate,
            node_id: opts.node_id.clone(),
        })
    }

    /// Waits for the access log's queued lines to be written and the node's queued spans to be
    /// exported (at shutdown), each for at most two seconds.
    pub async fn flush(&self) {
        if let Some(log) = &self.access_log {
            let log = Arc::clone(log);
            let _ = tokio::task::spawn_blocking(move || log.flush(Duration::from_secs(2))).await;
        }
        if let Some(tracing) = &self.tracing {
            tracing.flush(Duration::from_secs(2)).await;
        }
    }
}

/// An OTLP endpoint is an http URL with a host (TLS to the collector is not built yet).
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let uri: Uri = endpoint
        .parse()
        .map_err(|e| format!("'{endpoint}' is not a URL: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http"), Some(_)) => Ok(()),
        (Some("https"), Some(_)) => Err(format!(
            "'{endpoint}': TLS to the collector is not supported yet; send to a local collector or agent over http://"
        )),
        _ => Err(format!("'{endpoint}' must be an http:// URL with a host")),
    }
}

/// What the access log needs that only the start of the request knew.
#[derive(Debug)]
pub struct LogStart {
    pub log: Arc<AccessLog>,
    pub started_at: SystemTime,
    pub request_id: HeaderValue,
    pub method: Method,
    pub uri: Uri,
    pub host: Option<HeaderValue>,
    pub version: Version,
    pub bytes_in: u64,
}

/// What the proxy learned on the way, for the access log.
#[derive(Debug, Default)]
pub struct LogFacts {
    pub client_ip: Option<IpAddr>,
    pub route: Option<(Arc<str>, Arc<str>)>,
    pub consumer: Option<String>,
    pub upstream: Option<Arc<EndpointPool>>,
    pub tries: u32,
    pub upstream_latency: Option<Duration>,
    pub proxy_latency: Option<Duration>,
}

/// The end of a request: counted, logged and its span ended when the response body is done.
#[derive(Debug)]
pub struct Tail {
    pub status: u16,
    /// The connection's peer (the client ip when no trusted proxy said otherwise).
    pub peer: IpAddr,
    pub start: Instant,
    pub log: Option<(LogStart, LogFacts)>,
    pub trace: Option<RequestTrace>,
}

impl Tail {
    /// Completes the request: `bytes_out` body bytes were sent, all of them when `complete`.
    pub fn finish(self, bytes_out: u64, complete: bool) {
        let peer = self.peer;
        let elapsed = self.start.elapsed();
        let mut hex = [0u8; 32];
        let trace_id = self
            .trace
            .as_ref()
            .filter(|t| t.is_sampled())
            .map(|t| t.trace_id_hex(&mut hex));
        if let Some((start, facts)) = &self.log {
            let route = facts.route.as_ref();
            start.log.write(&Entry {
                time: start.started_at,
                request_id: start.request_id.to_str().unwrap_or(""),
                client_ip: facts.client_ip.unwrap_or(peer),
                method: start.method.as_str(),
                host: start
                    .host
                    .as_ref()
                    .and_then(|h| h.to_str().ok())
                    .or_else(|| start.uri.host())
                    .unwrap_or(""),
                path: start.uri.path(),
                protocol: protocol(start.version),
                status: self.status,
                route: route.map_or("", |r| &r.0),
                service: route.map_or("", |r| &r.1),
                consumer: facts.consumer.as_deref(),
                upstream_addr: facts.upstream.as_ref().map(|p| &**p.address()),
                tries: facts.tries,
                latency_ms: Latencies {
                    request: elapsed,
                    upstream: facts.upstream_latency,
                    proxy: facts.proxy_latency.unwrap_or(elapsed),
                },
                bytes_in: start.bytes_in,
                bytes_out,
                incomplete: !complete,
                trace_id,
            });
        }
        if let Some(trace) = self.trace {
            trace.finish(self.status, bytes_out, complete, elapsed);
        }
    }
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// Counts egress bytes of a streamed body and runs its [`Tail`] when the body ends.
#[derive(Debug, Default)]
pub struct BodyEnd {
    pub sent: u64,
    pub egress: Option<Counter>,
    pub tail: Option<Box<Tail>>,
}

impl BodyEnd {
    /// The body ended (`complete`) or was dropped early.
    pub fn done(&mut self, complete: bool) {
        if let Some(c) = self.egress.take() {
            if self.sent > 0 {
                c.inc_by(self.sent);
            }
        }
        if let Some(tail) = self.tail.take() {
            tail.finish(self.sent, complete);
        }
    }
}
