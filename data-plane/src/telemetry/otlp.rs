//! OTLP trace export: ended spans, as the proxy recorded them, encoded straight into an OTLP
//! `ExportTraceServiceRequest` and sent over gRPC (tonic) or HTTP/protobuf (hyper).
//!
//! Why not `opentelemetry-otlp`'s exporter: it takes the SDK's `SpanData`, whose attributes
//! are `KeyValue`s built per span, and converts each one into owned protobuf strings before
//! encoding, one export at a time (CONTRIBUTING.md has the telemetry_overhead figures before
//! and after). Here a span stays what the proxy knew (a method, a `Uri`, shared route
//! labels, numbers) until the export task writes its attributes into the request buffer, with
//! no allocation per attribute. The wire format is the one `opentelemetry-proto` defines; the
//! tests decode what is written here with its prost types.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use http_body_util::{BodyExt, Full};
use opentelemetry::trace::{SpanId, TraceId, TraceState};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use uuid::Uuid;

use super::trace::{OtlpProtocol, TraceExport};
use crate::metrics::method_label;

/// gRPC method of OTLP trace export.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// OTLP `Span.flags`: bit 8 says whether the parent is remote is known, bit 9 that it is.
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;
/// OTLP `SpanKind`.
const KIND_SERVER: u64 = 2;
const KIND_CLIENT: u64 = 3;
/// OTLP `Status.StatusCode.STATUS_CODE_ERROR`.
const STATUS_ERROR: u64 = 2;

/// What a server span says about its request. The proxy fills it with what it already holds
/// (clones of reference-counted values, copies of small ones); the export task turns it into
/// attributes.
#[derive(Debug, Default)]
pub struct RequestFacts {
    pub method: Method,
    /// The path, routing host and request id.
    pub text: RequestText,
    pub https: bool,
    pub client: Option<IpAddr>,
    pub version: Option<Version>,
    /// The matched route's id and labels.
    pub route: Option<RouteAttrs>,
    pub consumer: Option<String>,
}

/// A route's span attributes (its id, and its route and service labels: config names, or ids
/// when unnamed), encoded once per route and shared by its requests' spans.
#[derive(Debug, Clone)]
pub struct RouteAttrs {
    /// The route label, for the span's name.
    name: Option<Arc<str>>,
    encoded: Arc<[u8]>,
}

impl RouteAttrs {
    pub fn new(id: Uuid, route: Option<&Arc<str>>, service: Option<&str>) -> Self {
        let mut buf = Vec::new();
        let mut text = [0u8; 36];
        let id = id.hyphenated().encode_lower(&mut text);
        attr_str(&mut buf, 9, "portico.route.id", id.as_bytes());
        if let Some(r) = route {
            attr_str(&mut buf, 9, "portico.route.name", r.as_bytes());
        }
        if let Some(s) = service.filter(|s| !s.is_empty()) {
            attr_str(&mut buf, 9, "portico.service.name", s.as_bytes());
        }
        RouteAttrs {
            name: route.cloned(),
            encoded: Arc::from(buf),
        }
    }
}

/// A span's copies of the request's path as received (without the query: `url.path`; none
/// for a request refused before routing), the host it was routed by and its request id, in
/// one allocation. Copies, not the request's `Uri` and header values: those share the
/// connection's read buffer, and a span waiting for export would keep the buffer from being
/// reused (hyper then allocates a new one for the next request: 8 KB a request, and slab
/// churn in the allocator).
#[derive(Debug, Default)]
pub struct RequestText {
    text: Box<[u8]>,
    /// Where the path and the host end in `text`; the request id is the rest.
    path_end: usize,
    host_end: usize,
    /// Which of the three there are.
    has: [bool; 3],
}

impl RequestText {
    pub fn new(path: Option<&str>, host: Option<&str>, request_id: Option<&[u8]>) -> Self {
        let (p, h, r) = (
            path.unwrap_or_default().as_bytes(),
            host.unwrap_or_default().as_bytes(),
            request_id.unwrap_or_default(),
        );
        let mut text = Vec::with_capacity(p.len() + h.len() + r.len());
        text.extend_from_slice(p);
        text.extend_from_slice(h);
        text.extend_from_slice(r);
        RequestText {
            text: text.into_boxed_slice(),
            path_end: p.len(),
            host_end: p.len() + h.len(),
            has: [path.is_some(), host.is_some(), request_id.is_some()],
        }
    }

    pub fn path(&self) -> Option<&[u8]> {
        self.has[0].then(|| &self.text[..self.path_end])
    }

    pub fn host(&self) -> Option<&[u8]> {
        self.has[1].then(|| &self.text[self.path_end..self.host_end])
    }

    pub fn request_id(&self) -> Option<&[u8]> {
        self.has[2].then(|| &self.text[self.host_end..])
    }
}

/// An ended request's server span and its attempts' client spans, waiting for export.
#[derive(Debug)]
pub struct SpanRecord {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// `SpanId::INVALID` for a root span.
    pub parent_span_id: SpanId,
    pub parent_remote: bool,
    pub trace_state: TraceState,
    pub start: SystemTime,
    pub end: SystemTime,
    pub detail: Box<ServerDetail>,
}

impl SpanRecord {
    /// Spans this record exports: the server span and one per attempt.
    pub fn spans(&self) -> usize {
        1 + self.detail.attempts.len()
    }
}

/// One upstream attempt: a client span, child of its request's server span.
#[derive(Debug)]
pub struct AttemptRecord {
    pub span_id: SpanId,
    pub start: SystemTime,
    pub end: SystemTime,
    pub host: Arc<str>,
    pub port: u16,
    pub attempt: u32,
    /// The upstream's status, or what ended the attempt.
    pub outcome: Result<u16, &'static str>,
}

/// A server span's request and response, and the attempts made upstream.
#[derive(Debug)]
pub struct ServerDetail {
    pub facts: RequestFacts,
    pub status: u16,
    pub bytes_out: u64,
    /// The whole response body was sent.
    pub complete: bool,
    pub attempts: Vec<AttemptRecord>,
}

/// Writes `ExportTraceServiceRequest`s. The resource and scope are encoded once; spans are
/// encoded into reused buffers.
pub struct Encoder {
    /// `ResourceSpans.resource` (field and length included).
    resource: Vec<u8>,
    /// `ScopeSpans.scope` (field and length included).
    scope: Vec<u8>,
    /// How many bytes the last batch's spans took: the next buffer's capacity.
    last_len: usize,
    /// One span's message.
    span: Vec<u8>,
    /// An attribute value being formatted.
    value: String,
}

impl Encoder {
    pub fn new(resource: &[(&str, &str)]) -> Encoder {
        let mut attrs = Vec::new();
        for (k, v) in resource {
            attr_str(&mut attrs, 1, k, v.as_bytes());
        }
        let mut scope_msg = Vec::new();
        string(&mut scope_msg, 1, b"portico");
        string(&mut scope_msg, 2, env!("CARGO_PKG_VERSION").as_bytes());
        let (mut res, mut scope) = (Vec::new(), Vec::new());
        message(&mut res, 1, &attrs);
        message(&mut scope, 1, &scope_msg);
        Encoder {
            resource: res,
            scope,
            last_len: 0,
            span: Vec::new(),
            value: String::new(),
        }
    }

    /// The export request carrying `batch`, behind gRPC's 5-byte message prefix when `grpc`.
    /// The spans are written once, into the buffer that is sent: after room for the
    /// request's head (whose lengths depend on them), which is then written right before them.
    pub fn encode(&mut self, batch: &[SpanRecord], grpc: bool) -> Bytes {
        // gRPC prefix, two keys, two lengths of at most 5 bytes, the resource and the scope.
        let room = 5 + 2 * (1 + 5) + self.resource.len() + self.scope.len();
        let mut out = Vec::with_capacity(room + self.last_len);
        out.resize(room, 0);
        for record in batch {
            self.span.clear();
            encode_server(&mut self.span, &mut self.value, record);
            message(&mut out, 2, &self.span);
            for attempt in &record.detail.attempts {
                self.span.clear();
                encode_client(&mut self.span, record, attempt);
                message(&mut out, 2, &self.span);
            }
        }
        self.last_len = out.len() - room;
        let scope_spans = self.scope.len() + self.last_len;
        let resource_spans = self.resource.len() + field_len(scope_spans);
        let mut head = Vec::with_capacity(room);
        if grpc {
            // Not compressed, then the message's length (big-endian u32).
            head.push(0);
            let len = u32::try_from(field_len(resource_spans)).unwrap_or(u32::MAX);
            head.extend_from_slice(&len.to_be_bytes());
        }
        encode_key(1, WireType::LengthDelimited, &mut head);
        encode_varint(resource_spans as u64, &mut head);
        head.extend_from_slice(&self.resource);
        encode_key(2, WireType::LengthDelimited, &mut head);
        encode_varint(scope_spans as u64, &mut head);
        head.extend_from_slice(&self.scope);
        let begin = room - head.len();
        out[begin..room].copy_from_slice(&head);
        Bytes::from(out).slice(begin..)
    }
}

/// Bytes a length-delimited field with a one-byte key and `len` bytes of content takes.
fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// A varint. Lengths, kinds and small numbers take one byte, so that case skips prost's loop
/// (it was a sixth of what tracing added per request, in instructions).
#[inline]
fn varint(value: u64, buf: &mut Vec<u8>) {
    if value < 0x80 {
        buf.push(value as u8);
    } else if value < 0x4000 {
        // A span's length, most often.
        buf.extend_from_slice(&[(value as u8) | 0x80, (value >> 7) as u8]);
    } else {
        encode_varint(value, buf);
    }
}

/// The key of field `tag` (below 16, so one byte) with wire type `wire`.
#[inline]
fn key(tag: u32, wire: WireType, buf: &mut Vec<u8>) {
    debug_assert!(tag < 16, "a one-byte key");
    buf.push(((tag << 3) | wire as u32) as u8);
}

#[inline(always)]
fn message(buf: &mut Vec<u8>, tag: u32, content: &[u8]) {
    key(tag, WireType::LengthDelimited, buf);
    varint(content.len() as u64, buf);
    buf.extend_from_slice(content);
}

#[inline(always)]
fn string(buf: &mut Vec<u8>, tag: u32, value: &[u8]) {
    message(buf, tag, value);
}

/// A `KeyValue` with a string value, as field `tag` (9 in a span, 1 in a resource). Inlined:
/// each caller's name is a constant, so its copy is a few moves, not a `memcpy` call.
#[inline(always)]
fn attr_str(buf: &mut Vec<u8>, tag: u32, name: &str, value: &[u8]) {
    let any = field_len(value.len());
    let kv = field_len(name.len()) + field_len(any);
    buf.reserve(field_len(kv));
    key(tag, WireType::LengthDelimited, buf);
    varint(kv as u64, buf);
    string(buf, 1, name.as_bytes());
    key(2, WireType::LengthDelimited, buf);
    varint(any as u64, buf);
    string(buf, 1, value);
}

/// A span attribute with an integer value (inlined, as [`attr_str`]).
#[inline(always)]
fn attr_int(buf: &mut Vec<u8>, name: &str, value: i64) {
    let any = 1 + encoded_len_varint(value as u64);
    let kv = field_len(name.len()) + field_len(any);
    buf.reserve(field_len(kv));
    key(9, WireType::LengthDelimited, buf);
    varint(kv as u64, buf);
    string(buf, 1, name.as_bytes());
    key(2, WireType::LengthDelimited, buf);
    varint(any as u64, buf);
    key(3, WireType::Varint, buf);
    varint(value as u64, buf);
}

/// Nanoseconds since the Unix epoch (in u64 arithmetic: good until 2554).
fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| {
        d.as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos()))
    })
}

/// What every span starts with: ids, trace state, parent, flags, name, kind and times.
struct Head<'a> {
    span_id: SpanId,
    parent: SpanId,
    remote: bool,
    name: &'a [u8],
    kind: u64,
    start: SystemTime,
    end: SystemTime,
}

fn span_head(buf: &mut Vec<u8>, trace: &SpanRecord, h: Head<'_>) {
    string(buf, 1, &trace.trace_id.to_bytes());
    string(buf, 2, &h.span_id.to_bytes());
    let state = trace.trace_state.header();
    if !state.is_empty() {
        string(buf, 3, state.as_bytes());
    }
    if h.parent != SpanId::INVALID {
        string(buf, 4, &h.parent.to_bytes());
    }
    // Only sampled spans are recorded.
    let mut flags = 0x01 | FLAG_HAS_IS_REMOTE;
    if h.remote {
        flags |= FLAG_IS_REMOTE;
    }
    encode_key(16, WireType::ThirtyTwoBit, buf);
    buf.put_u32_le(flags);
    string(buf, 5, h.name);
    key(6, WireType::Varint, buf);
    varint(h.kind, buf);
    key(7, WireType::SixtyFourBit, buf);
    buf.put_u64_le(nanos(h.start));
    key(8, WireType::SixtyFourBit, buf);
    buf.put_u64_le(nanos(h.end));
}

/// The request's server span.
fn encode_server(buf: &mut Vec<u8>, value: &mut String, r: &SpanRecord) {
    let d = &r.detail;
    let f = &d.facts;
    // Standard methods by name, anything else `other`, as the metrics label them.
    let method = method_label(&f.method);
    value.clear();
    value.push_str(method);
    if f.text.path().is_some() {
        value.push(' ');
        value.push_str(
            f.route
                .as_ref()
                .and_then(|r| r.name.as_deref())
                .unwrap_or(""),
        );
    }
    span_head(
        buf,
        r,
        Head {
            span_id: r.span_id,
            parent: r.parent_span_id,
            remote: r.parent_remote,
            name: value.as_bytes(),
            kind: KIND_SERVER,
            start: r.start,
            end: r.end,
        },
    );
    attr_str(buf, 9, "http.request.method", method.as_bytes());
    if let Some(path) = f.text.path() {
        attr_str(buf, 9, "url.path", path);
        let scheme: &[u8] = if f.https { b"https" } else { b"http" };
        attr_str(buf, 9, "url.scheme", scheme);
    }
    if let Some(host) = f.text.host() {
        attr_str(buf, 9, "server.address", host);
    }
    if let Some(ip) = f.client {
        let mut text = [0u8; crate::headers::IP_TEXT_MAX];
        attr_str(
            buf,
            9,
            "client.address",
            crate::headers::ip_text(ip, &mut text),
        );
    }
    if let Some(v) = f.version {
        attr_str(buf, 9, "network.protocol.version", protocol_version(v));
    }
    if let Some(id) = f.text.request_id() {
        attr_str(buf, 9, "portico.request_id", id);
    }
    if let Some(r) = &f.route {
        buf.extend_from_slice(&r.encoded);
    }
    if let Some(c) = &f.consumer {
        attr_str(buf, 9, "portico.consumer", c.as_bytes());
    }
    attr_int(buf, "http.response.status_code", i64::from(d.status));
    attr_int(
        buf,
        "http.response.body.size",
        i64::try_from(d.bytes_out).unwrap_or(i64::MAX),
    );
    if d.status >= 500 {
        error_status(buf, "");
    } else if !d.complete {
        error_status(buf, "response body incomplete");
    }
}

/// One attempt's client span, child of the request's server span.
fn encode_client(buf: &mut Vec<u8>, r: &SpanRecord, a: &AttemptRecord) {
    span_head(
        buf,
        r,
        Head {
            span_id: a.span_id,
            parent: r.span_id,
            remote: false,
            name: b"upstream",
            kind: KIND_CLIENT,
            start: a.start,
            end: a.end,
        },
    );
    attr_str(buf, 9, "server.address", a.host.as_bytes());
    attr_int(buf, "server.port", i64::from(a.port));
    attr_int(buf, "portico.attempt", i64::from(a.attempt));
    match a.outcome {
        Ok(status) => {
            attr_int(buf, "http.response.status_code", i64::from(status));
            if status >= 500 {
                error_status(buf, "");
            }
        }
        Err(e) => {
            attr_str(buf, 9, "error.type", e.as_bytes());
            error_status(buf, e);
        }
    }
}

/// `Status { message = 2, code = 3 }` with code ERROR; no message when `message` is empty.
fn error_status(buf: &mut Vec<u8>, message: &str) {
    let len = if message.is_empty() {
        0
    } else {
        field_len(message.len())
    } + 2;
    key(15, WireType::LengthDelimited, buf);
    varint(len as u64, buf);
    if !message.is_empty() {
        string(buf, 2, message.as_bytes());
    }
    key(3, WireType::Varint, buf);
    varint(STATUS_ERROR, buf);
}

fn protocol_version(v: Version) -> &'static [u8] {
    match v {
        Version::HTTP_10 => b"1.0",
        Version::HTTP_2 => b"2",
        Version::HTTP_3 => b"3",
        _ => b"1.1",
    }
}

/// Where encoded export requests are sent. One per pipeline, so its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Transport {
    /// Requests go through tonic's channel (connection, HTTP/2, reconnection) as plain HTTP
    /// requests: the encoded batch is the body as it is, with no codec copying it again.
    Grpc {
        channel: tonic::transport::Channel,
        /// `content-type`, `te` and the configured metadata.
        headers: HeaderMap,
    },
    Http {
        client: hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            Full<Bytes>,
        >,
        uri: Uri,
        headers: HeaderMap,
    },
}

impl Transport {
    /// A client for `export.endpoint`; connects on first use. Must run inside the runtime.
    pub fn new(export: &TraceExport) -> Result<Transport, String> {
        let endpoint = &export.endpoint;
        if !endpoint.starts_with("http://") {
            return Err(format!(
                "'{endpoint}': only http:// collectors are supported (TLS to the collector is not built yet; run a local collector or agent)"
            ));
        }
        match export.protocol {
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
                let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
                    .map_err(|e| format!("'{endpoint}' is not a valid OTLP endpoint: {e}"))?
                    .timeout(export.timeout)
                    .connect_timeout(export.timeout)
                    .connect_lazy();
                let mut headers = metadata.into_headers();
                headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/grpc"),
                );
                headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
                Ok(Transport::Grpc { channel, headers })
            }
            OtlpProtocol::HttpProtobuf => {
                let uri: Uri = endpoint
                    .parse()
                    .map_err(|e| format!("'{endpoint}' is not a URL: {e}"))?;
                let mut headers = HeaderMap::new();
                headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-protobuf"),
                );
                for (k, v) in &export.headers {
                    let name = HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| format!("invalid OTLP header name '{k}'"))?;
                    let value = HeaderValue::from_str(v)
                        .map_err(|_| format!("invalid value for OTLP header '{k}'"))?;
                    headers.insert(name, value);
                }
                let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
                connector.set_connect_timeout(Some(export.timeout));
                connector.set_nodelay(true);
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector);
                Ok(Transport::Http {
                    client,
                    uri,
                    headers,
                })
            }
        }
    }

    /// Whether bodies carry gRPC's message prefix ([`Encoder::encode`]'s `grpc`).
    pub fn grpc(&self) -> bool {
        matches!(self, Transport::Grpc { .. })
    }

    /// Sends one export request; the error says why the collector did not take it. The
    /// returned future owns clones of the (shared) clients, so several can be in flight.
    pub fn send(
        &self,
        body: Bytes,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send + 'static {
        let call = match self {
            Transport::Grpc { channel, headers } => {
                let mut request = http::Request::new(tonic::body::Body::new(Full::new(body)));
                *request.method_mut() = Method::POST;
                *request.uri_mut() = Uri::from_static(EXPORT_PATH);
                *request.headers_mut() = headers.clone();
                Call::Grpc(channel.clone(), request)
            }
            Transport::Http {
                client,
                uri,
                headers,
            } => {
                let mut request = http::Request::new(Full::new(body));
                *request.method_mut() = Method::POST;
                *request.uri_mut() = uri.clone();
                *request.headers_mut() = headers.clone();
                Call::Http(client.clone(), request)
            }
        };
        call.run()
    }
}

/// One export request, ready to go (one per batch, so its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Call {
    Grpc(tonic::transport::Channel, http::Request<tonic::body::Body>),
    Http(
        hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            Full<Bytes>,
        >,
        http::Request<Full<Bytes>>,
    ),
}

impl Call {
    async fn run(self) -> Result<(), String> {
        match self {
            Call::Grpc(mut channel, request) => {
                use tonic::codegen::Service;
                std::future::poll_fn(|cx| channel.poll_ready(cx))
                    .await
                    .map_err(|e| format!("cannot reach the collector: {}", chain(&e)))?;
                let response = channel
                    .call(request)
                    .await
                    .map_err(|e| format!("cannot reach the collector: {}", chain(&e)))?;
                let (head, body) = response.into_parts();
                if head.status != http::StatusCode::OK {
                    return Err(format!("the collector answered HTTP {}", head.status));
                }
                // The status is in the trailers, or in the head of a trailers-only answer.
                let trailers = body
                    .collect()
                    .await
                    .map_err(|e| format!("the collector's answer broke off: {e}"))?
                    .trailers()
                    .cloned();
                let status = tonic::Status::from_header_map(&head.headers)
                    .or_else(|| trailers.as_ref().and_then(tonic::Status::from_header_map));
                match status {
                    Some(s) if s.code() == tonic::Code::Ok => Ok(()),
                    Some(s) => Err(format!("{}: {}", s.code(), s.message())),
                    None => Err("the collector's answer has no grpc-status".to_owned()),
                }
            }
            Call::Http(client, request) => {
                let response = client.request(request).await.map_err(|e| chain(&e))?;
                let status = response.status();
                // Read the (small) answer so the connection goes back to the pool.
                let _ = response.into_body().collect().await;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("the collector answered {status}"))
                }
            }
        }
    }
}

/// An error and its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(msg, ": {s}");
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    use prost::Message;

    fn attrs(span: &opentelemetry_proto::tonic::trace::v1::Span) -> Vec<(String, String)> {
        span.attributes
            .iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(s)) => s.clone(),
                    Some(Value::IntValue(i)) => format!("int:{i}"),
                    other => format!("{other:?}"),
                };
                (kv.key.clone(), v)
            })
            .collect()
    }

    /// What is written here decodes, with opentelemetry-proto's own types, into the spans the
    /// proxy recorded.
    #[test]
    fn batches_decode_as_otlp() {
        let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let route_id = Uuid::parse_str("9c4b4f5e-2a56-4d7c-9a38-0f3f3d0e4c11").unwrap();
        let server = SpanRecord {
            trace_id,
            span_id: SpanId::from(0x1111),
            parent_span_id: SpanId::from(0x00f0_67aa_0ba9_02b7),
            parent_remote: true,
            trace_state: "vendor=1".parse().unwrap(),
            start,
            end: start + Duration::from_millis(3),
            detail: Box::new(ServerDetail {
                facts: RequestFacts {
                    method: Method::GET,
                    text: RequestText::new(
                        Some("/items/7"),
                        Some("api.example.com"),
                        Some(b"req-1"),
                    ),
                    https: false,
                    client: Some("203.0.113.9".parse().unwrap()),
                    version: Some(Version::HTTP_11),
                    route: Some(RouteAttrs::new(
                        route_id,
                        Some(&Arc::from("items")),
                        Some("catalog"),
                    )),
                    consumer: Some("alice".into()),
                },
                status: 502,
                bytes_out: 1234,
                complete: true,
                attempts: vec![
                    AttemptRecord {
                        span_id: SpanId::from(0x2222),
                        start: start + Duration::from_millis(1),
                        end: start + Duration::from_millis(2),
                        host: "10.0.0.5".into(),
                        port: 8080,
                        attempt: 1,
                        outcome: Err("connect timeout"),
                    },
                    AttemptRecord {
                        span_id: SpanId::from(0x3333),
                        start: start + Duration::from_millis(2),
                        end: start + Duration::from_millis(3),
                        host: "10.0.0.6".into(),
                        port: 8080,
                        attempt: 2,
                        outcome: Ok(502),
                    },
                ],
            }),
        };
        assert_eq!(server.spans(), 3);
        let mut encoder = Encoder::new(&[("service.name", "portico"), ("team", "edge")]);
        // Twice through the same encoder: its buffers are reused, not appended to.
        let _ = encoder.encode(&[minimal()], false);
        let framed = encoder.encode(&[server], true);
        // gRPC's prefix: not compressed, then the message's length.
        assert_eq!(framed[0], 0);
        let len = u32::from_be_bytes(framed[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, framed.len() - 5);
        let bytes = framed.slice(5..);
        let req = ExportTraceServiceRequest::decode(&bytes[..]).expect("valid OTLP");
        assert_eq!(req.resource_spans.len(), 1);
        let rs = &req.resource_spans[0];
        let resource: Vec<(String, String)> = rs
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(
                |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(s)) => (kv.key.clone(), s.clone()),
                    _ => panic!("string resource attribute"),
                },
            )
            .collect();
        assert_eq!(
            resource,
            [("service.name", "portico"), ("team", "edge")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().unwrap().name, "portico");
        assert_eq!(ss.spans.len(), 3);

        let s = &ss.spans[0];
        assert_eq!(s.trace_id, trace_id.to_bytes());
        assert_eq!(s.span_id, SpanId::from(0x1111).to_bytes());
        assert_eq!(
            s.parent_span_id,
            SpanId::from(0x00f0_67aa_0ba9_02b7).to_bytes()
        );
        assert_eq!(s.trace_state, "vendor=1");
        assert_eq!(s.flags, 0x301);
        assert_eq!(s.name, "GET items");
        assert_eq!(s.kind, SpanKind::Server as i32);
        assert_eq!(s.start_time_unix_nano, 1_700_000_000_123_456_789);
        assert_eq!(s.end_time_unix_nano, 1_700_000_000_126_456_789);
        let want: Vec<(String, String)> = [
            ("http.request.method", "GET"),
            ("url.path", "/items/7"),
            ("url.scheme", "http"),
            ("server.address", "api.example.com"),
            ("client.address", "203.0.113.9"),
            ("network.protocol.version", "1.1"),
            ("portico.request_id", "req-1"),
            ("portico.route.id", "9c4b4f5e-2a56-4d7c-9a38-0f3f3d0e4c11"),
            ("portico.route.name", "items"),
            ("portico.service.name", "catalog"),
            ("portico.consumer", "alice"),
            ("http.response.status_code", "int:502"),
            ("http.response.body.size", "int:1234"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
        assert_eq!(attrs(s), want);
        let status = s.status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, ""));

        let c = &ss.spans[1];
        assert_eq!(c.trace_id, trace_id.to_bytes());
        assert_eq!(c.span_id, SpanId::from(0x2222).to_bytes());
        assert_eq!(c.parent_span_id, SpanId::from(0x1111).to_bytes());
        assert_eq!(c.flags, 0x101);
        // The attempt continues the trace, with its state.
        assert_eq!(c.trace_state, "vendor=1");
        assert_eq!(c.start_time_unix_nano, 1_700_000_000_124_456_789);
        assert_eq!(c.end_time_unix_nano, 1_700_000_000_125_456_789);
        assert_eq!(
            (c.name.as_str(), c.kind),
            ("upstream", SpanKind::Client as i32)
        );
        assert_eq!(
            attrs(c),
            [
                ("server.address", "10.0.0.5"),
                ("server.port", "int:8080"),
                ("portico.attempt", "int:1"),
                ("error.type", "connect timeout"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let status = c.status.as_ref().unwrap();
        assert_eq!(
            (status.code, status.message.as_str()),
            (2, "connect timeout")
        );
        let c = &ss.spans[2];
        assert_eq!(c.parent_span_id, SpanId::from(0x1111).to_bytes());
        assert_eq!(
            attrs(c),
            [
                ("server.address", "10.0.0.6"),
                ("server.port", "int:8080"),
                ("portico.attempt", "int:2"),
                ("http.response.status_code", "int:502"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(c.status.as_ref().map(|s| s.code), Some(2));
    }

    /// The root server span of a request refused before routing.
    fn minimal() -> SpanRecord {
        let start = SystemTime::now();
        SpanRecord {
            trace_id: TraceId::from(7),
            span_id: SpanId::from(8),
            parent_span_id: SpanId::INVALID,
            parent_remote: false,
            trace_state: TraceState::NONE,
            start,
            end: start,
            detail: Box::new(ServerDetail {
                facts: RequestFacts {
                    method: Method::POST,
                    text: RequestText::new(None, None, Some(b"r")),
                    ..RequestFacts::default()
                },
                status: 404,
                bytes_out: 0,
                complete: false,
                attempts: Vec::new(),
            }),
        }
    }

    #[test]
    fn minimal_spans_decode() {
        let bytes = Encoder::new(&[]).encode(&[minimal()], false);
        let req = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
        let s = &req.resource_spans[0].scope_spans[0].spans[0];
        assert!(s.parent_span_id.is_empty());
        assert_eq!(s.name, "POST");
        assert_eq!(
            attrs(s),
            [
                ("http.request.method", "POST"),
                ("portico.request_id", "r"),
                ("http.response.status_code", "int:404"),
                ("http.response.body.size", "int:0"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let status = s.status.as_ref().unwrap();
        assert_eq!(
            (status.code, status.message.as_str()),
            (2, "response body incomplete")
        );
    }
}
