//! Traces: a server span per request and a client span per upstream attempt, continuing the
//! client's W3C trace context and handing it on upstream, exported over OTLP.
//!
//! Spans are built with the OpenTelemetry SDK. Ending one hands it to the SDK's batch
//! processor, a dedicated thread fed by a bounded channel: the request path never waits on the
//! exporter, and a full queue drops spans instead of growing. Exports run on the proxy's tokio
//! runtime (the OTLP clients need it), driven from that thread; a dead collector costs retries
//! on that thread and one log line, nothing on the request path.
//!
//! Two sources of a [`Tracing`]: the node's `--otlp-endpoint` (OTLP/gRPC), and Kong's
//! `opentelemetry` plugin (OTLP/HTTP protobuf, its `traces_endpoint`), which takes precedence
//! for the routes it applies to.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData,
    SpanExporter,
};
use opentelemetry_sdk::Resource;

/// W3C trace-context headers.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Where spans go and how many are kept.
#[derive(Debug, Clone)]
pub struct TraceExport {
    /// OTLP endpoint: `http://collector:4317` for gRPC, the full
    /// `http://collector:4318/v1/traces` URL for HTTP.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Headers (HTTP) or metadata (gRPC) sent with every export (authentication tokens).
    pub headers: Vec<(String, String)>,
    /// Resource attributes on top of `service.name=portico`, `service.version`,
    /// `service.instance.id`.
    pub resource: Vec<(String, String)>,
    /// Probability of sampling a request without a sampled parent (0.0 to 1.0); a client's
    /// own sampling decision in `traceparent` is followed.
    pub sampling_rate: f64,
    /// Deadline of one export.
    pub timeout: Duration,
    /// Spans a batch carries at most.
    pub max_batch: usize,
    /// Kong's `http_response_header_for_traceid`: answer the trace id in this header.
    pub response_header: Option<HeaderName>,
    /// The node id (`service.instance.id`).
    pub node_id: String,
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

/// One exporter pipeline and its tracer.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    response_header: Option<HeaderName>,
    /// What the pipeline was built from, to reuse it across config swaps when unchanged.
    pub export: TraceExport,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing")
            .field("endpoint", &self.export.endpoint)
            .finish_non_exhaustive()
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        // Flushes what is queued; bounded by the export timeout.
        let _ = self
            .provider
            .shutdown_with_timeout(self.export.timeout.min(Duration::from_secs(2)));
    }
}

impl Tracing {
    /// Builds the exporter, batch processor and tracer. Must run where a tokio runtime is
    /// reachable (`Handle::try_current`): exports run on it.
    pub fn new(export: TraceExport) -> Result<Tracing, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "tracing needs the tokio runtime".to_owned())?;
        let exporter = {
            // The OTLP clients capture the runtime when built.
            let _guard = runtime.enter();
            build_exporter(&export)?
        };
        let exporter = OnRuntime {
            inner: Arc::new(exporter),
            runtime,
            endpoint: export.endpoint.clone(),
            failing: AtomicBool::new(false),
            last_warned: AtomicU64::new(0),
        };
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(8192)
                    .with_max_export_batch_size(export.max_batch.max(1))
                    .with_scheduled_delay(Duration::from_millis(500))
                    .build(),
            )
            .build();
        let mut attributes = vec![
            KeyValue::new("service.name", "portico"),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", export.node_id.clone()),
        ];
        attributes.extend(
            export
                .resource
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        );
        let resource = Resource::builder_empty()
            .with_attributes(attributes)
            .build();
        let rate = export.sampling_rate.clamp(0.0, 1.0);
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                rate,
            ))))
            .with_resource(resource)
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("portico");
        Ok(Tracing {
            provider,
            tracer,
            response_header: export.response_header.clone(),
            export,
        })
    }

    /// The client's trace context (`traceparent`, `tracestate`), or an empty context.
    pub fn extract(headers: &HeaderMap) -> Context {
        if !headers.contains_key(TRACEPARENT) {
            return Context::new();
        }
        TraceContextPropagator::new().extract(&HeaderExtractor(headers))
    }

    /// Starts the request's server span under `parent`, dated `start`.
    pub fn start_request(
        self: &Arc<Self>,
        parent: &Context,
        start: SystemTime,
        name: String,
        attributes: Vec<KeyValue>,
    ) -> RequestTrace {
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, parent);
        RequestTrace {
            cx: parent.with_span(span),
            tracing: Arc::clone(self),
        }
    }
}

/// Exports spans on the tokio runtime, whichever thread asks, and reports a failing collector
/// once (and again at most once a minute) instead of once per batch.
struct OnRuntime {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
    endpoint: String,
    failing: AtomicBool,
    /// Seconds since the epoch of the last warning.
    last_warned: AtomicU64,
}

impl std::fmt::Debug for OnRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnRuntime")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl SpanExporter for OnRuntime {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let inner = Arc::clone(&self.inner);
        let count = batch.len();
        let result = self
            .runtime
            .spawn(async move { inner.export(batch).await })
            .await
            .unwrap_or_else(|e| Err(OTelSdkError::InternalFailure(e.to_string())));
        match &result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(endpoint = %self.endpoint, "trace export recovered");
                }
            }
            Err(e) => {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let first = !self.failing.swap(true, Ordering::Relaxed);
                let last = self.last_warned.load(Ordering::Relaxed);
                if first || now.saturating_sub(last) >= 60 {
                    self.last_warned.store(now, Ordering::Relaxed);
                    tracing::warn!(endpoint = %self.endpoint, error = %e, spans = count, "cannot export traces; spans are dropped until the collector is reachable (requests are not affected)");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

fn build_exporter(export: &TraceExport) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let built = match export.protocol {
        OtlpProtocol::Grpc => {
            let mut metadata = tonic::metadata::MetadataMap::new();
            for (k, v) in &export.headers {
                let key =
                    tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                        .map_err(|_| format!("invalid OTLP header name '{k}'"))?;
                let value = v
                    .parse()
                    .map_err(|_| format!("invalid value for OTLP header '{k}'"))?;
                metadata.insert(key, value);
            }
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(export.endpoint.clone())
                .with_timeout(export.timeout)
                .with_metadata(metadata)
                .build()
        }
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(export.endpoint.clone())
            .with_timeout(export.timeout)
            .with_headers(export.headers.iter().cloned().collect::<HashMap<_, _>>())
            .build(),
    };
    built.map_err(|e| {
        format!(
            "cannot build the OTLP exporter for {}: {e}",
            export.endpoint
        )
    })
}

/// The trace of one request: its server span (in `cx`) and the pipeline it goes to.
#[derive(Debug)]
pub struct RequestTrace {
    cx: Context,
    tracing: Arc<Tracing>,
}

impl RequestTrace {
    /// The trace id, as 32 hex digits.
    pub fn trace_id(&self) -> String {
        self.cx.span().span_context().trace_id().to_string()
    }

    /// Whether spans of this request are recorded and exported (sampled).
    pub fn is_sampled(&self) -> bool {
        self.cx.span().span_context().is_sampled()
    }

    /// Kong's `http_response_header_for_traceid`, with this trace's id.
    pub fn response_header(&self) -> Option<(HeaderName, HeaderValue)> {
        let name = self.tracing.response_header.clone()?;
        let value = HeaderValue::from_str(&self.trace_id()).ok()?;
        Some((name, value))
    }

    /// Adds attributes to the server span (no-op when not sampled).
    pub fn set_attributes(&self, attributes: impl IntoIterator<Item = KeyValue>) {
        let span = self.cx.span();
        if span.is_recording() {
            for kv in attributes {
                span.set_attribute(kv);
            }
        }
    }

    /// Starts the client span of one upstream attempt.
    pub fn attempt(&self, attempt: u32, host: &str, port: u16) -> AttemptSpan {
        let tracer = &self.tracing.tracer;
        let span = tracer
            .span_builder("upstream")
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("server.address", host.to_owned()),
                KeyValue::new("server.port", i64::from(port)),
                KeyValue::new("portico.attempt", i64::from(attempt)),
            ])
            .start_with_context(tracer, &self.cx);
        AttemptSpan { span }
    }

    /// Ends the server span with the response status, dated `end`.
    pub fn finish(self, status: u16, bytes_out: u64, complete: bool, end: SystemTime) {
        let span = self.cx.span();
        if span.is_recording() {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            span.set_attribute(KeyValue::new(
                "http.response.body.size",
                i64::try_from(bytes_out).unwrap_or(i64::MAX),
            ));
            if status >= 500 {
                span.set_status(Status::error(Cow::Borrowed("")));
            } else if !complete {
                span.set_status(Status::error(Cow::Borrowed("response body incomplete")));
            }
        }
        span.end_with_timestamp(end);
    }
}

/// The span of one upstream attempt.
#[derive(Debug)]
pub struct AttemptSpan {
    span: opentelemetry_sdk::trace::Span,
}

impl AttemptSpan {
    /// Writes `traceparent` (and `tracestate`) for the upstream, naming this attempt as the
    /// parent, replacing whatever the client sent.
    pub fn inject(&self, headers: &mut HeaderMap) {
        let sc = self.span.span_context();
        if let Ok(v) = HeaderValue::from_str(&traceparent(sc)) {
            headers.insert(HeaderName::from_static(TRACEPARENT), v);
        }
        let state = sc.trace_state().header();
        match HeaderValue::from_str(&state) {
            Ok(v) if !state.is_empty() => {
                headers.insert(HeaderName::from_static(TRACESTATE), v);
            }
            _ => {
                headers.remove(TRACESTATE);
            }
        }
    }

    /// Ends the attempt with the upstream's status, or the error that ended it.
    pub fn finish(mut self, result: Result<u16, &str>) {
        if self.span.is_recording() {
            match result {
                Ok(status) => {
                    self.span.set_attribute(KeyValue::new(
                        "http.response.status_code",
                        i64::from(status),
                    ));
                    if status >= 500 {
                        self.span.set_status(Status::error(Cow::Borrowed("")));
                    }
                }
                Err(error) => {
                    self.span
                        .set_attribute(KeyValue::new("error.type", error.to_owned()));
                    self.span.set_status(Status::error(error.to_owned()));
                }
            }
        }
        self.span.end();
    }
}

/// `00-<trace id>-<span id>-<flags>`.
fn traceparent(sc: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_a_client_trace_context() {
        let mut h = HeaderMap::new();
        h.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        h.insert(TRACESTATE, HeaderValue::from_static("vendor=1"));
        let cx = Tracing::extract(&h);
        let sc = cx.span().span_context().clone();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(sc.trace_state().header(), "vendor=1");
        assert_eq!(
            traceparent(&sc),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }

    #[test]
    fn malformed_trace_contexts_are_ignored() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            let mut h = HeaderMap::new();
            h.insert(TRACEPARENT, HeaderValue::from_static(bad));
            let cx = Tracing::extract(&h);
            assert!(!cx.span().span_context().is_valid(), "{bad}");
        }
    }
}
