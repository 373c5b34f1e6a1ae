//! Traces: a server span per request and a client span per upstream attempt, continuing the
//! client's W3C trace context and handing it on upstream, exported over OTLP.
//!
//! The request path does not go through the OpenTelemetry SDK's tracer: a span here is a few
//! ids, a start time and its attributes, and only a sampled span allocates anything. When it
//! ends it is queued, without blocking, on a bounded channel (the export task turns it into
//! the SDK's export record, [`SpanData`]); past [`QUEUE`] spans it is dropped and counted. One task per pipeline, on the
//! proxy's runtime, hands batches to `opentelemetry-otlp`'s exporter: it is woken once a batch
//! is full (one wake-up per `max_batch` spans, not per span) and otherwise drains what is queued
//! every [`DRAIN_EVERY`]. A dead collector costs that task a failed export and one log line a
//! minute, nothing on the request path.
//!
//! Ids come from the SDK's random generator and the sampling decision is the SDK's
//! `ParentBased(TraceIdRatioBased(rate))`: a client's own decision in `traceparent` is followed,
//! and otherwise the trace id decides, so every node of a trace agrees.
//!
//! Two sources of a [`Tracing`]: the node's `--otlp-endpoint` (OTLP/gRPC), and Kong's
//! `opentelemetry` plugin (OTLP/HTTP protobuf, its `traces_endpoint`), which takes precedence
//! for the routes it applies to.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanExporter, SpanLinks,
};
use opentelemetry_sdk::Resource;
use tokio::sync::{mpsc, oneshot};

/// W3C trace-context headers.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Ended spans that may wait for the exporter; past this, spans are dropped (counted). Room
/// for several batches: exports are sent one at a time, and at 100% sampling a node ends
/// tens of thousands of spans a second while one export is in flight.
pub const QUEUE: usize = 16 * 1024;

/// Attributes a server span carries at most (request, route, consumer and response).
const SERVER_ATTRIBUTES: usize = 14;

/// How often the export task drains the queue.
pub const DRAIN_EVERY: Duration = Duration::from_millis(200);

/// Where spans go and how many are kept.
#[derive(Debug, Clone, PartialEq)]
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

/// One exporter pipeline: the queue its spans go to and how requests are sampled.
pub struct Tracing {
    queue: SyncSender<Ended>,
    /// Spans queued since the export task last took a batch, and its wake-up.
    pending: Arc<Pending>,
    flushes: mpsc::UnboundedSender<oneshot::Sender<()>>,
    /// `TraceIdRatioBased`'s bound: a new trace is sampled when the upper 63 bits of its id's
    /// low half are below it.
    threshold: u64,
    /// Sample every new trace (a rate of 1).
    always: bool,
    ids: RandomIdGenerator,
    dropped: AtomicU64,
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

impl Tracing {
    /// Builds the exporter and starts its export task. Must run inside a tokio runtime: the
    /// task and the OTLP clients run on it. Dropping the `Tracing` exports what is queued and
    /// ends the task.
    pub fn new(export: TraceExport) -> Result<Tracing, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "tracing needs the tokio runtime".to_owned())?;
        let mut exporter = {
            let _guard = runtime.enter();
            build_exporter(&export)?
        };
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
        exporter.set_resource(
            &Resource::builder_empty()
                .with_attributes(attributes)
                .build(),
        );
        let (queue, spans) = sync_channel(QUEUE);
        let (flushes, flush_rx) = mpsc::unbounded_channel();
        let pending = Arc::new(Pending {
            count: AtomicUsize::new(0),
            batch: export.max_batch.max(1),
            full: tokio::sync::Notify::new(),
        });
        runtime.spawn(
            Exporting {
                exporter,
                endpoint: export.endpoint.clone(),
                timeout: export.timeout,
                max_batch: export.max_batch.max(1),
                failing: false,
                last_warned: None,
                pending: Arc::clone(&pending),
                scope: InstrumentationScope::builder("portico")
                    .with_version(env!("CARGO_PKG_VERSION"))
                    .build(),
            }
            .run(spans, flush_rx),
        );
        let rate = export.sampling_rate.clamp(0.0, 1.0);
        Ok(Tracing {
            queue,
            pending,
            flushes,
            // As the SDK's TraceIdRatioBased computes it.
            threshold: (rate * (1u64 << 63) as f64) as u64,
            always: rate >= 1.0,
            ids: RandomIdGenerator::default(),
            dropped: AtomicU64::new(0),
            response_header: export.response_header.clone(),
            export,
        })
    }

    /// The client's trace context (`traceparent`, `tracestate`); `None` when absent or invalid.
    pub fn extract(headers: &HeaderMap) -> Option<Parent> {
        if !headers.contains_key(&TRACEPARENT) {
            return None;
        }
        let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let sc = cx.span().span_context().clone();
        sc.is_valid().then_some(Parent(sc))
    }

    /// Starts the request's server span under `parent`, dated `start`. The span is named
    /// and given attributes only when sampled ([`RequestTrace::is_sampled`]).
    pub fn start_request(
        self: &Arc<Self>,
        parent: Option<&Parent>,
        start: SystemTime,
    ) -> RequestTrace {
        let (trace_id, parent_span_id, remote, sampled, trace_state) = match parent {
            Some(Parent(sc)) => (
                sc.trace_id(),
                sc.span_id(),
                true,
                sc.is_sampled(),
                sc.trace_state().clone(),
            ),
            None => {
                let id = self.ids.new_trace_id();
                (
                    id,
                    SpanId::INVALID,
                    false,
                    self.samples(id),
                    TraceState::NONE,
                )
            }
        };
        RequestTrace {
            span: Open {
                trace_id,
                span_id: self.ids.new_span_id(),
                parent_span_id,
                parent_remote: remote,
                sampled,
                trace_state,
                start,
                name: Cow::Borrowed(""),
                // Room for the proxy's attributes and the two `finish` adds, so a sampled
                // span's list is allocated once.
                attributes: if sampled {
                    Vec::with_capacity(SERVER_ATTRIBUTES)
                } else {
                    Vec::new()
                },
                status: Status::Unset,
            },
            tracing: Arc::clone(self),
        }
    }

    /// Whether a new trace with this id is sampled.
    fn samples(&self, id: TraceId) -> bool {
        if self.always {
            return true;
        }
        let low = u64::from_be_bytes(id.to_bytes()[8..].try_into().unwrap_or_default());
        (low >> 1) < self.threshold
    }

    /// Queues an ended span; drops it (counted) when the exporter is behind. The export record
    /// is built by the export task: the queue carries the smaller [`Ended`].
    fn end(&self, span: Open, kind: SpanKind, end: SystemTime) {
        match self.queue.try_send(Ended { span, kind, end }) {
            Ok(()) => {
                let p = &self.pending;
                if p.count.fetch_add(1, Ordering::Relaxed) + 1 == p.batch {
                    p.full.notify_one();
                }
            }
            Err(TrySendError::Full(_)) => {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(endpoint = %self.export.endpoint, "the trace exporter is behind; dropping spans");
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Spans dropped because the exporter was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Exports what has been queued so far; waits at most `timeout` (at shutdown).
    pub async fn flush(&self, timeout: Duration) -> bool {
        let (done, wait) = oneshot::channel();
        if self.flushes.send(done).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(timeout, wait).await, Ok(Ok(())))
    }
}

/// How many spans wait, and the export task's wake-up for a full batch.
#[derive(Debug)]
struct Pending {
    count: AtomicUsize,
    batch: usize,
    full: tokio::sync::Notify,
}

/// A valid trace context received from the client.
#[derive(Debug, Clone)]
pub struct Parent(SpanContext);

/// A span that ended, as queued for the export task.
#[derive(Debug)]
struct Ended {
    span: Open,
    kind: SpanKind,
    end: SystemTime,
}

impl Ended {
    fn into_data(self, scope: &InstrumentationScope) -> SpanData {
        let Ended { span, kind, end } = self;
        SpanData {
            span_context: SpanContext::new(
                span.trace_id,
                span.span_id,
                TraceFlags::SAMPLED,
                false,
                span.trace_state,
            ),
            parent_span_id: span.parent_span_id,
            parent_span_is_remote: span.parent_remote,
            span_kind: kind,
            name: span.name,
            start_time: span.start,
            end_time: end,
            attributes: span.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: span.status,
            instrumentation_scope: scope.clone(),
        }
    }
}

/// A span being recorded.
#[derive(Debug)]
struct Open {
    trace_id: TraceId,
    span_id: SpanId,
    parent_span_id: SpanId,
    parent_remote: bool,
    sampled: bool,
    trace_state: TraceState,
    start: SystemTime,
    name: Cow<'static, str>,
    attributes: Vec<KeyValue>,
    status: Status,
}

/// The export task of one pipeline.
struct Exporting {
    exporter: opentelemetry_otlp::SpanExporter,
    endpoint: String,
    timeout: Duration,
    max_batch: usize,
    failing: bool,
    last_warned: Option<std::time::Instant>,
    pending: Arc<Pending>,
    scope: InstrumentationScope,
}

impl Exporting {
    /// Drains the queue every [`DRAIN_EVERY`] and on flush requests, until the [`Tracing`] is
    /// dropped; then exports what is left and shuts the exporter down.
    async fn run(
        mut self,
        mut spans: Receiver<Ended>,
        mut flushes: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    ) {
        let mut tick = tokio::time::interval(DRAIN_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut waiting = Vec::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.pending.full.notified() => {}
                done = flushes.recv() => waiting.extend(done),
            }
            while let Ok(done) = flushes.try_recv() {
                waiting.push(done);
            }
            let closed = self.drain(&mut spans).await;
            for done in waiting.drain(..) {
                let _ = done.send(());
            }
            if closed {
                let _ = self.exporter.shutdown_with_timeout(self.timeout);
                return;
            }
        }
    }

    /// Exports everything queued, in batches; returns whether the queue is closed.
    async fn drain(&mut self, spans: &mut Receiver<Ended>) -> bool {
        loop {
            let (batch, closed) = take_batch(spans, self.max_batch, &self.scope);
            self.pending.count.fetch_sub(batch.len(), Ordering::Relaxed);
            let full = batch.len() == self.max_batch;
            if !batch.is_empty() {
                self.export(batch).await;
            }
            if closed || !full {
                return closed;
            }
        }
    }

    async fn export(&mut self, batch: Vec<SpanData>) {
        let count = batch.len();
        let result = match tokio::time::timeout(self.timeout, self.exporter.export(batch)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        };
        match result {
            Ok(()) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!(endpoint = %self.endpoint, "trace export recovered");
                }
            }
            Err(error) => {
                let first = !std::mem::replace(&mut self.failing, true);
                let quiet = self
                    .last_warned
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(60));
                if first || !quiet {
                    self.last_warned = Some(std::time::Instant::now());
                    tracing::warn!(endpoint = %self.endpoint, %error, spans = count, "cannot export traces; spans are dropped until the collector is reachable (requests are not affected)");
                }
            }
        }
    }
}

/// Up to `max` queued spans, and whether the queue is closed (the [`Tracing`] dropped).
fn take_batch(
    spans: &Receiver<Ended>,
    max: usize,
    scope: &InstrumentationScope,
) -> (Vec<SpanData>, bool) {
    let mut batch = Vec::new();
    while batch.len() < max {
        match spans.try_recv() {
            Ok(span) => batch.push(span.into_data(scope)),
            Err(TryRecvError::Empty) => return (batch, false),
            Err(TryRecvError::Disconnected) => return (batch, true),
        }
    }
    (batch, false)
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

/// The trace of one request: its server span and the pipeline it goes to.
#[derive(Debug)]
pub struct RequestTrace {
    span: Open,
    tracing: Arc<Tracing>,
}

impl RequestTrace {
    /// The trace id, as 32 hex digits.
    pub fn trace_id(&self) -> String {
        self.span.trace_id.to_string()
    }

    /// Whether spans of this request are recorded and exported (sampled).
    pub fn is_sampled(&self) -> bool {
        self.span.sampled
    }

    /// Kong's `http_response_header_for_traceid`, with this trace's id.
    pub fn response_header(&self) -> Option<(HeaderName, HeaderValue)> {
        let name = self.tracing.response_header.clone()?;
        let value = HeaderValue::from_str(&self.trace_id()).ok()?;
        Some((name, value))
    }

    /// Names the server span (when sampled).
    pub fn set_name(&mut self, name: impl Into<Cow<'static, str>>) {
        if self.span.sampled {
            self.span.name = name.into();
        }
    }

    /// Adds attributes to the server span. Callers check [`is_sampled`](Self::is_sampled)
    /// before building costly ones; unsampled spans drop them.
    pub fn set_attributes(&mut self, attributes: impl IntoIterator<Item = KeyValue>) {
        if self.span.sampled {
            self.span.attributes.extend(attributes);
        }
    }

    /// Starts the client span of one upstream attempt.
    pub fn attempt(&self, attempt: u32, host: &Arc<str>, port: u16) -> AttemptSpan {
        let span = &self.span;
        let attributes = if span.sampled {
            vec![
                KeyValue::new("server.address", Arc::clone(host)),
                KeyValue::new("server.port", i64::from(port)),
                KeyValue::new("portico.attempt", i64::from(attempt)),
            ]
        } else {
            Vec::new()
        };
        AttemptSpan {
            span: Open {
                trace_id: span.trace_id,
                span_id: self.tracing.ids.new_span_id(),
                parent_span_id: span.span_id,
                parent_remote: false,
                sampled: span.sampled,
                trace_state: span.trace_state.clone(),
                start: SystemTime::now(),
                name: Cow::Borrowed("upstream"),
                attributes,
                status: Status::Unset,
            },
            tracing: Arc::clone(&self.tracing),
        }
    }

    /// Ends the server span with the response status, `elapsed` after it started.
    pub fn finish(self, status: u16, bytes_out: u64, complete: bool, elapsed: Duration) {
        let mut span = self.span;
        if !span.sampled {
            return;
        }
        span.attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        span.attributes.push(KeyValue::new(
            "http.response.body.size",
            i64::try_from(bytes_out).unwrap_or(i64::MAX),
        ));
        if status >= 500 {
            span.status = Status::error(Cow::Borrowed(""));
        } else if !complete {
            span.status = Status::error(Cow::Borrowed("response body incomplete"));
        }
        let end = span.start + elapsed;
        self.tracing.end(span, SpanKind::Server, end);
    }
}

/// The span of one upstream attempt.
#[derive(Debug)]
pub struct AttemptSpan {
    span: Open,
    tracing: Arc<Tracing>,
}

impl AttemptSpan {
    /// Writes `traceparent` (and `tracestate`) for the upstream, naming this attempt as the
    /// parent, replacing whatever the client sent.
    pub fn inject(&self, headers: &mut HeaderMap) {
        let span = &self.span;
        headers.insert(
            TRACEPARENT,
            traceparent(span.trace_id, span.span_id, span.sampled),
        );
        let state = span.trace_state.header();
        match HeaderValue::from_str(&state) {
            Ok(v) if !state.is_empty() => {
                headers.insert(TRACESTATE, v);
            }
            _ => {
                headers.remove(&TRACESTATE);
            }
        }
    }

    /// Ends the attempt with the upstream's status, or the error that ended it.
    pub fn finish(self, result: Result<u16, &str>) {
        let mut span = self.span;
        if !span.sampled {
            return;
        }
        match result {
            Ok(status) => {
                span.attributes.push(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
                if status >= 500 {
                    span.status = Status::error(Cow::Borrowed(""));
                }
            }
            Err(error) => {
                span.attributes
                    .push(KeyValue::new("error.type", error.to_owned()));
                span.status = Status::error(error.to_owned());
            }
        }
        self.tracing.end(span, SpanKind::Client, SystemTime::now());
    }
}

/// `00-<trace id>-<span id>-<flags>`, hex-encoded into a fixed buffer.
fn traceparent(trace_id: TraceId, span_id: SpanId, sampled: bool) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 55];
    let mut at = 0;
    let mut put = |bytes: &[u8], sep: Option<u8>| {
        for b in bytes {
            out[at] = HEX[usize::from(b >> 4)];
            out[at + 1] = HEX[usize::from(b & 0xf)];
            at += 2;
        }
        if let Some(sep) = sep {
            out[at] = sep;
            at += 1;
        }
    };
    put(&[0], Some(b'-'));
    put(&trace_id.to_bytes(), Some(b'-'));
    put(&span_id.to_bytes(), Some(b'-'));
    put(&[u8::from(sampled)], None);
    HeaderValue::from_bytes(&out).expect("hex digits and dashes are a valid header value")
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
        let Parent(sc) = Tracing::extract(&h).expect("a valid context");
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(sc.trace_state().header(), "vendor=1");
        assert_eq!(
            traceparent(sc.trace_id(), sc.span_id(), true),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(
            traceparent(sc.trace_id(), SpanId::from(1), false),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000001-00"
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
            assert!(Tracing::extract(&h).is_none(), "{bad}");
        }
    }

    /// The ratio decision is the SDK's `TraceIdRatioBased`, so nodes running either agree on
    /// which traces are kept.
    #[tokio::test]
    async fn new_traces_are_sampled_as_the_sdk_samples_them() {
        use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};
        for rate in [0.0, 0.01, 0.3, 0.5, 0.99, 1.0] {
            let tracing = Tracing::new(TraceExport {
                endpoint: "http://127.0.0.1:9".into(),
                protocol: OtlpProtocol::Grpc,
                headers: Vec::new(),
                resource: Vec::new(),
                sampling_rate: rate,
                timeout: Duration::from_secs(1),
                max_batch: 16,
                response_header: None,
                node_id: "n".into(),
            })
            .unwrap();
            let sdk = Sampler::TraceIdRatioBased(rate);
            let ids = RandomIdGenerator::default();
            let mut kept = 0;
            for _ in 0..2000 {
                let id = ids.new_trace_id();
                let theirs = sdk
                    .should_sample(None, id, "r", &SpanKind::Server, &[], &[])
                    .decision;
                let ours = tracing.samples(id);
                assert_eq!(
                    ours,
                    theirs == SamplingDecision::RecordAndSample,
                    "rate {rate}"
                );
                kept += usize::from(ours);
            }
            let expected = rate * 2000.0;
            assert!(
                (kept as f64 - expected).abs() <= 100.0,
                "rate {rate}: kept {kept}"
            );
        }
    }
}
