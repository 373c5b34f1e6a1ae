//! Traces: a server span per request and a client span per upstream attempt, continuing the
//! client's W3C trace context and handing it on upstream, exported over OTLP.
//!
//! The request path does not go through the OpenTelemetry SDK's tracer: a span here is a few
//! ids, a start time and, when sampled, what the proxy already knew about the request
//! ([`RequestFacts`]: a method, one copy of the path, host and request id, shared route
//! labels). The upstream attempts' spans are kept on the request's [`RequestTrace`], and when
//! the request ends it is queued with them, as one record, without blocking, on a small bounded
//! channel; past [`QUEUE`] requests it is dropped and counted. One task per pipeline, on the
//! proxy's runtime, encodes batches straight into OTLP protobuf, in the buffer that is sent
//! ([`super::otlp`]), and sends up to [`IN_FLIGHT`] at once; the rest waits encoded, up to
//! [`BACKLOG_SPANS`]. The task is woken once a batch is full (one wake-up per `max_batch`
//! spans, not per span) and otherwise drains what is queued every [`DRAIN_EVERY`]. A dead
//! collector costs that task a failed export and one log line a minute, nothing on the request
//! path.
//!
//! Ids come from the SDK's random generator and the sampling decision is the SDK's
//! `ParentBased(TraceIdRatioBased(rate))`: a client's own decision in `traceparent` is followed,
//! and otherwise the trace id decides, so every node of a trace agrees.
//!
//! Two sources of a [`Tracing`]: the node's `--otlp-endpoint` (OTLP/gRPC), and Kong's
//! `opentelemetry` plugin (OTLP/HTTP protobuf, its `traces_endpoint`), which takes precedence
//! for the routes it applies to.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceId, TraceState};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tokio::sync::{mpsc, oneshot};

use super::otlp::{AttemptRecord, Encoder, ServerDetail, SpanRecord, Transport};
pub use super::otlp::{RequestFacts, RequestText, RouteAttrs};

/// W3C trace-context headers.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Ended requests (each a server span and its attempts) that may wait for the export task;
/// past this, their spans are dropped (counted). The task is woken at every `max_batch`
/// spans and encodes what is queued at once, so this holds a few batches; a slow collector's
/// slack is the encoded backlog ([`BACKLOG_SPANS`]). Small, because every request writes the
/// next slot: a ring of several MB is cold memory on every send.
pub const QUEUE: usize = 1024;

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
    queue: SyncSender<SpanRecord>,
    /// Spans queued since the export task last took a batch, and its wake-up.
    pending: Arc<Pending>,
    flushes: mpsc::UnboundedSender<oneshot::Sender<()>>,
    /// `TraceIdRatioBased`'s bound: a new trace is sampled when the upper 63 bits of its id's
    /// low half are below it.
    threshold: u64,
    /// Sample every new trace (a rate of 1).
    always: bool,
    ids: RandomIdGenerator,
    /// Sampled spans lost: dropped when the queue was full, or in a failed export.
    dropped: Arc<AtomicU64>,
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
        let transport = {
            let _guard = runtime.enter();
            Transport::new(&export)?
        };
        let mut resource = vec![
            ("service.name", "portico"),
            ("service.version", env!("CARGO_PKG_VERSION")),
            ("service.instance.id", export.node_id.as_str()),
        ];
        // A configured attribute replaces a default of the same name.
        for (k, v) in &export.resource {
            match resource.iter_mut().find(|(name, _)| *name == k.as_str()) {
                Some(slot) => slot.1 = v.as_str(),
                None => resource.push((k.as_str(), v.as_str())),
            }
        }
        let encoder = Encoder::new(&resource);
        let dropped = Arc::new(AtomicU64::new(0));
        let (queue, spans) = sync_channel(QUEUE);
        let (flushes, flush_rx) = mpsc::unbounded_channel();
        let pending = Arc::new(Pending {
            count: AtomicUsize::new(0),
            batch: export.max_batch.max(1),
            full: tokio::sync::Notify::new(),
            slot_free: tokio::sync::Notify::new(),
        });
        runtime.spawn(
            Exporting {
                transport,
                encoder,
                max_batch: export.max_batch.max(1),
                pending: Arc::clone(&pending),
                slots: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT as usize)),
                backlog: std::collections::VecDeque::new(),
                backlog_spans: 0,
                outcome: Arc::new(Outcome {
                    endpoint: export.endpoint.clone(),
                    timeout: export.timeout,
                    failing: std::sync::atomic::AtomicBool::new(false),
                    last_warned: std::sync::Mutex::new(None),
                    lost: Arc::clone(&dropped),
                }),
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
            dropped,
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

    /// Starts the request's server span under `parent`, dated `start`. What it says about the
    /// request is recorded only when sampled ([`RequestTrace::is_sampled`]).
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
            ids: Ids {
                trace_id,
                span_id: self.ids.new_span_id(),
                sampled,
                trace_state,
            },
            parent_span_id,
            parent_remote: remote,
            start,
            detail: None,
            attempts: Vec::new(),
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

    /// Queues an ended span; drops it (counted) when the exporter is behind.
    fn end(&self, span: SpanRecord) {
        let n = span.spans();
        match self.queue.try_send(span) {
            Ok(()) => {
                // Every full batch's worth wakes the task, also while it is busy exporting (the
                // wake-up is kept for when it is done), so the queue is drained as fast as the
                // collector takes it rather than every DRAIN_EVERY.
                let p = &self.pending;
                let before = p.count.fetch_add(n, Ordering::Relaxed);
                if before / p.batch != (before + n) / p.batch {
                    p.full.notify_one();
                }
            }
            Err(TrySendError::Full(_)) => {
                if self.dropped.fetch_add(n as u64, Ordering::Relaxed) == 0 {
                    tracing::warn!(endpoint = %self.export.endpoint, "the trace exporter is behind; dropping spans");
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }

    /// Sampled spans lost: dropped because the exporter was behind, or sent in an export the
    /// collector did not take.
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
    /// An export ended and freed its slot.
    slot_free: tokio::sync::Notify,
}

/// A valid trace context received from the client.
#[derive(Debug, Clone)]
pub struct Parent(SpanContext);

/// What identifies a span and its trace.
#[derive(Debug)]
struct Ids {
    trace_id: TraceId,
    span_id: SpanId,
    sampled: bool,
    trace_state: TraceState,
}

/// Exports a pipeline keeps in flight at once: a collector's round trip then does not cap
/// how fast spans leave (one at a time, a 10 ms round trip caps 512-span batches at about
/// 51,000 spans a second).
const IN_FLIGHT: u32 = 4;

/// Spans that may wait, encoded, for an export slot while [`IN_FLIGHT`] exports are out;
/// past this, new batches are dropped (counted). The queue of ended requests stays small
/// (it is cycled through on every request, so it should stay in cache) and the slack for a
/// slow collector is kept here, as compact protobuf.
const BACKLOG_SPANS: usize = 16 * 1024;

/// The export task of one pipeline.
struct Exporting {
    transport: Transport,
    encoder: Encoder,
    max_batch: usize,
    pending: Arc<Pending>,
    /// Permits for exports in flight.
    slots: Arc<tokio::sync::Semaphore>,
    outcome: Arc<Outcome>,
    /// Encoded batches waiting for a permit, and their span counts.
    backlog: std::collections::VecDeque<(bytes::Bytes, usize)>,
    backlog_spans: usize,
}

/// How the pipeline's exports went, shared by the exports in flight.
struct Outcome {
    endpoint: String,
    timeout: Duration,
    /// The last export failed.
    failing: std::sync::atomic::AtomicBool,
    /// When "cannot export" was last logged.
    last_warned: std::sync::Mutex<Option<std::time::Instant>>,
    /// The pipeline's lost-span count.
    lost: Arc<AtomicU64>,
}

impl Exporting {
    /// Drains the queue every [`DRAIN_EVERY`], on full batches, when an export ends and on
    /// flush requests, until the [`Tracing`] is dropped; then exports what is left and waits
    /// for it.
    async fn run(
        mut self,
        mut spans: Receiver<SpanRecord>,
        mut flushes: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    ) {
        let mut tick = tokio::time::interval(DRAIN_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut waiting = Vec::new();
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.pending.full.notified() => {}
                done = flushes.recv() => waiting.extend(done),
                () = self.pending.slot_free.notified() => {
                    // An export ended: the backlog may go on, but a partial batch waits.
                    self.send_backlog();
                    continue;
                }
            }
            while let Ok(done) = flushes.try_recv() {
                waiting.push(done);
            }
            let closed = self.drain(&mut spans, &mut batch);
            self.send_backlog();
            if closed || !waiting.is_empty() {
                // Everything encoded goes out, then every export in flight has finished once
                // all permits are free.
                self.send_backlog_waiting().await;
                let _all = self.slots.acquire_many(IN_FLIGHT).await;
            }
            for done in waiting.drain(..) {
                let _ = done.send(());
            }
            if closed {
                return;
            }
        }
    }

    /// Encodes everything queued, in batches of about `max_batch` spans, into the backlog;
    /// returns whether the queue is closed.
    fn drain(&mut self, spans: &mut Receiver<SpanRecord>, batch: &mut Vec<SpanRecord>) -> bool {
        let grpc = self.transport.grpc();
        loop {
            let (closed, count) = take_batch(spans, self.max_batch, batch);
            self.pending.count.fetch_sub(count, Ordering::Relaxed);
            if !batch.is_empty() {
                let body = self.encoder.encode(batch, grpc);
                batch.clear();
                if self.backlog_spans + count > BACKLOG_SPANS {
                    if self.outcome.lost.fetch_add(count as u64, Ordering::Relaxed) == 0 {
                        tracing::warn!(endpoint = %self.outcome.endpoint, "the trace exporter is behind; dropping spans");
                    }
                } else {
                    self.backlog_spans += count;
                    self.backlog.push_back((body, count));
                }
            }
            if closed || count < self.max_batch {
                return closed;
            }
        }
    }

    /// Sends backlogged batches while export slots are free.
    fn send_backlog(&mut self) {
        while !self.backlog.is_empty() {
            let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
                return;
            };
            self.send_next(permit);
        }
    }

    /// Sends every backlogged batch, waiting for slots (at a flush and at the end).
    async fn send_backlog_waiting(&mut self) {
        while !self.backlog.is_empty() {
            let Ok(permit) = Arc::clone(&self.slots).acquire_owned().await else {
                return;
            };
            self.send_next(permit);
        }
    }

    /// Sends the oldest backlogged batch with `permit`.
    fn send_next(&mut self, permit: tokio::sync::OwnedSemaphorePermit) {
        if let Some((body, count)) = self.backlog.pop_front() {
            self.backlog_spans -= count;
            self.send(body, count, permit);
        }
    }

    /// One export, in its own task; its end wakes the export task for the backlog.
    fn send(&self, body: bytes::Bytes, count: usize, permit: tokio::sync::OwnedSemaphorePermit) {
        let send = self.transport.send(body);
        let outcome = Arc::clone(&self.outcome);
        let pending = Arc::clone(&self.pending);
        tokio::spawn(async move {
            let result = match tokio::time::timeout(outcome.timeout, send).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {:?}", outcome.timeout)),
            };
            outcome.report(result, count);
            drop(permit);
            pending.slot_free.notify_one();
        });
    }
}

impl Outcome {
    fn report(&self, result: Result<(), String>, count: usize) {
        match result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(endpoint = %self.endpoint, "trace export recovered");
                }
            }
            Err(error) => {
                self.lost.fetch_add(count as u64, Ordering::Relaxed);
                let first = !self.failing.swap(true, Ordering::Relaxed);
                let mut last = self
                    .last_warned
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let quiet = last.is_some_and(|t| t.elapsed() < Duration::from_secs(60));
                if first || !quiet {
                    *last = Some(std::time::Instant::now());
                    tracing::warn!(endpoint = %self.endpoint, %error, spans = count, "cannot export traces; spans are dropped until the collector is reachable (requests are not affected)");
                }
            }
        }
    }
}

/// Moves queued requests into `batch` until it holds `max` spans or more; returns whether
/// the queue is closed (the [`Tracing`] dropped) and how many spans were taken.
fn take_batch(
    spans: &Receiver<SpanRecord>,
    max: usize,
    batch: &mut Vec<SpanRecord>,
) -> (bool, usize) {
    let mut count = 0;
    while count < max {
        match spans.try_recv() {
            Ok(record) => {
                count += record.spans();
                batch.push(record);
            }
            Err(TryRecvError::Empty) => return (false, count),
            Err(TryRecvError::Disconnected) => return (true, count),
        }
    }
    (false, count)
}

/// The trace of one request: its server span, the attempts made upstream, and the pipeline
/// they go to. The attempts' spans travel with the server span: one queued record per
/// request.
#[derive(Debug)]
pub struct RequestTrace {
    ids: Ids,
    parent_span_id: SpanId,
    parent_remote: bool,
    start: SystemTime,
    /// What the span says about the request; only for a sampled span.
    detail: Option<Box<ServerDetail>>,
    /// Ended attempts (sampled traces only).
    attempts: Vec<AttemptRecord>,
    tracing: Arc<Tracing>,
}

impl RequestTrace {
    /// The trace id as 32 hex digits, written into `buf`.
    pub fn trace_id_hex<'a>(&self, buf: &'a mut [u8; 32]) -> &'a str {
        hex_into(&self.ids.trace_id.to_bytes(), buf);
        std::str::from_utf8(buf).unwrap_or("")
    }

    /// Whether spans of this request are recorded and exported (sampled).
    pub fn is_sampled(&self) -> bool {
        self.ids.sampled
    }

    /// Kong's `http_response_header_for_traceid`, with this trace's id.
    pub fn response_header(&self) -> Option<(HeaderName, HeaderValue)> {
        let name = self.tracing.response_header.clone()?;
        let mut hex = [0u8; 32];
        let value = HeaderValue::from_str(self.trace_id_hex(&mut hex)).ok()?;
        Some((name, value))
    }

    /// Records what the server span says about the request (when sampled; callers check
    /// [`is_sampled`](Self::is_sampled) before gathering it).
    pub fn describe(&mut self, facts: RequestFacts) {
        if self.ids.sampled {
            self.detail = Some(Box::new(ServerDetail {
                facts,
                status: 0,
                bytes_out: 0,
                complete: false,
                attempts: Vec::new(),
            }));
        }
    }

    /// The consumer the plugin chain identified.
    pub fn set_consumer(&mut self, name: String) {
        if let Some(d) = &mut self.detail {
            d.facts.consumer = Some(name);
        }
    }

    /// Starts the client span of one upstream attempt and writes `traceparent` (and
    /// `tracestate`) for the upstream into `headers`, naming the attempt as the parent and
    /// replacing whatever the client sent.
    pub fn attempt(
        &self,
        attempt: u32,
        host: &Arc<str>,
        port: u16,
        headers: &mut HeaderMap,
    ) -> AttemptSpan {
        let ids = &self.ids;
        let span_id = self.tracing.ids.new_span_id();
        headers.insert(TRACEPARENT, traceparent(ids.trace_id, span_id, ids.sampled));
        let state = ids.trace_state.header();
        match HeaderValue::from_str(&state) {
            Ok(v) if !state.is_empty() => {
                headers.insert(TRACESTATE, v);
            }
            _ => {
                headers.remove(&TRACESTATE);
            }
        }
        AttemptSpan {
            span_id,
            // Unsampled attempts are never recorded: no clock read.
            start: if ids.sampled {
                SystemTime::now()
            } else {
                SystemTime::UNIX_EPOCH
            },
            host: Arc::clone(host),
            port,
            attempt,
        }
    }

    /// Ends an attempt with the upstream's status, or the error that ended it.
    pub fn end_attempt(&mut self, span: AttemptSpan, outcome: Result<u16, &'static str>) {
        if !self.ids.sampled {
            return;
        }
        self.attempts.push(AttemptRecord {
            span_id: span.span_id,
            start: span.start,
            end: SystemTime::now(),
            host: span.host,
            port: span.port,
            attempt: span.attempt,
            outcome,
        });
    }

    /// Ends the server span with the response status, `elapsed` after it started, and queues
    /// it with its attempts.
    pub fn finish(self, status: u16, bytes_out: u64, complete: bool, elapsed: Duration) {
        if !self.ids.sampled {
            return;
        }
        let mut detail = self.detail.unwrap_or_else(|| {
            Box::new(ServerDetail {
                facts: RequestFacts::default(),
                status: 0,
                bytes_out: 0,
                complete: false,
                attempts: Vec::new(),
            })
        });
        detail.status = status;
        detail.bytes_out = bytes_out;
        detail.complete = complete;
        detail.attempts = self.attempts;
        self.tracing.end(SpanRecord {
            trace_id: self.ids.trace_id,
            span_id: self.ids.span_id,
            parent_span_id: self.parent_span_id,
            parent_remote: self.parent_remote,
            trace_state: self.ids.trace_state,
            start: self.start,
            end: self.start + elapsed,
            detail,
        });
    }
}

/// The span of one upstream attempt, until [`RequestTrace::end_attempt`].
#[derive(Debug)]
pub struct AttemptSpan {
    span_id: SpanId,
    start: SystemTime,
    host: Arc<str>,
    port: u16,
    attempt: u32,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex of `bytes` into `out` (twice as long).
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

/// `00-<trace id>-<span id>-<flags>`, hex-encoded into a fixed buffer.
fn traceparent(trace_id: TraceId, span_id: SpanId, sampled: bool) -> HeaderValue {
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex_into(&trace_id.to_bytes(), &mut out[3..35]);
    hex_into(&span_id.to_bytes(), &mut out[36..52]);
    if sampled {
        out[54] = b'1';
    }
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
        let mut hex = [0u8; 32];
        hex_into(&sc.trace_id().to_bytes(), &mut hex);
        assert_eq!(&hex, b"4bf92f3577b34da6a3ce929d0e0e4736");
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
        use opentelemetry::trace::SpanKind;
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
