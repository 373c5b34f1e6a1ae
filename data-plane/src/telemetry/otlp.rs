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

use bytes::{Buf, BufMut, Bytes};
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
    /// The request's URI as received (`url.path`); `None` for a request refused before routing.
    pub uri: Option<Uri>,
    pub https: bool,
    /// The host the request was routed by.
    pub host: Option<String>,
    pub client: Option<IpAddr>,
    pub version: Option<Version>,
    pub request_id: Option<HeaderValue>,
    pub route_id: Option<Uuid>,
    /// Route and service labels (config names, or ids when unnamed).
    pub route: Option<Arc<str>>,
    pub service: Option<Arc<str>>,
    pub consumer: Option<String>,
}

/// An ended span, waiting for export.
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
    pub detail: Detail,
}

/// What kind of span, and what it carries.
#[derive(Debug)]
pub enum Detail {
    /// The request's span.
    Server(Box<ServerDetail>),
    /// One upstream attempt.
    Client {
        host: Arc<str>,
        port: u16,
        attempt: u32,
        /// The upstream's status, or what ended the attempt.
        outcome: Result<u16, &'static str>,
    },
}

/// A server span's request and response.
#[derive(Debug)]
pub struct ServerDetail {
    pub facts: RequestFacts,
    pub status: u16,
    pub bytes_out: u64,
    /// The whole response body was sent.
    pub complete: bool,
}

/// Writes `ExportTraceServiceRequest`s. The resource and scope are encoded once; spans are
/// encoded into reused buffers.
pub struct Encoder {
    /// `ResourceSpans.resource` (field and length included).
    resource: Vec<u8>,
    /// `ScopeSpans.scope` (field and length included).
    scope: Vec<u8>,
    /// Every span of the batch, each as a `ScopeSpans.spans` field.
    spans: Vec<u8>,
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
            spans: Vec::new(),
            span: Vec::new(),
            value: String::new(),
        }
    }

    /// The export request carrying `batch`.
    pub fn encode(&mut self, batch: &[SpanRecord]) -> Vec<u8> {
        self.spans.clear();
        for record in batch {
            self.span.clear();
            encode_span(&mut self.span, &mut self.value, record);
            message(&mut self.spans, 2, &self.span);
        }
        let scope_spans = self.scope.len() + self.spans.len();
        let resource_spans = self.resource.len() + field_len(scope_spans);
        let mut out = Vec::with_capacity(field_len(resource_spans));
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(resource_spans as u64, &mut out);
        out.extend_from_slice(&self.resource);
        encode_key(2, WireType::LengthDelimited, &mut out);
        encode_varint(scope_spans as u64, &mut out);
        out.extend_from_slice(&self.scope);
        out.extend_from_slice(&self.spans);
        out
    }
}

/// Bytes a length-delimited field with a one-byte key and `len` bytes of content takes.
fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

fn message(buf: &mut Vec<u8>, tag: u32, content: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(content.len() as u64, buf);
    buf.extend_from_slice(content);
}

fn string(buf: &mut Vec<u8>, tag: u32, value: &[u8]) {
    message(buf, tag, value);
}

/// A `KeyValue` with a string value, as field `tag` (9 in a span, 1 in a resource).
fn attr_str(buf: &mut Vec<u8>, tag: u32, key: &str, value: &[u8]) {
    let any = field_len(value.len());
    let kv = field_len(key.len()) + field_len(any);
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(kv as u64, buf);
    string(buf, 1, key.as_bytes());
    encode_key(2, WireType::LengthDelimited, buf);
    encode_varint(any as u64, buf);
    string(buf, 1, value);
}

/// A span attribute with an integer value.
fn attr_int(buf: &mut Vec<u8>, key: &str, value: i64) {
    let any = 1 + encoded_len_varint(value as u64);
    let kv = field_len(key.len()) + field_len(any);
    encode_key(9, WireType::LengthDelimited, buf);
    encode_varint(kv as u64, buf);
    string(buf, 1, key.as_bytes());
    encode_key(2, WireType::LengthDelimited, buf);
    encode_varint(any as u64, buf);
    encode_key(3, WireType::Varint, buf);
    encode_varint(value as u64, buf);
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn encode_span(buf: &mut Vec<u8>, value: &mut String, r: &SpanRecord) {
    string(buf, 1, &r.trace_id.to_bytes());
    string(buf, 2, &r.span_id.to_bytes());
    let state = r.trace_state.header();
    if !state.is_empty() {
        string(buf, 3, state.as_bytes());
    }
    if r.parent_span_id != SpanId::INVALID {
        string(buf, 4, &r.parent_span_id.to_bytes());
    }
    // Only sampled spans are recorded.
    let mut flags = 0x01 | FLAG_HAS_IS_REMOTE;
    if r.parent_remote {
        flags |= FLAG_IS_REMOTE;
    }
    encode_key(16, WireType::ThirtyTwoBit, buf);
    buf.put_u32_le(flags);
    let mut error: Option<&str> = None;
    match &r.detail {
        Detail::Server(d) => {
            let f = &d.facts;
            // Standard methods by name, anything else `other`, as the metrics label them.
            let method = method_label(&f.method);
            value.clear();
            value.push_str(method);
            if f.uri.is_some() {
                value.push(' ');
                value.push_str(f.route.as_deref().unwrap_or(""));
            }
            string(buf, 5, value.as_bytes());
            encode_key(6, WireType::Varint, buf);
            encode_varint(KIND_SERVER, buf);
            times(buf, r);
            attr_str(buf, 9, "http.request.method", method.as_bytes());
            if let Some(uri) = &f.uri {
                attr_str(buf, 9, "url.path", uri.path().as_bytes());
                let scheme: &[u8] = if f.https { b"https" } else { b"http" };
                attr_str(buf, 9, "url.scheme", scheme);
            }
            if let Some(host) = &f.host {
                attr_str(buf, 9, "server.address", host.as_bytes());
            }
            if let Some(ip) = f.client {
                value.clear();
                let _ = write!(value, "{ip}");
                attr_str(buf, 9, "client.address", value.as_bytes());
            }
            if let Some(v) = f.version {
                attr_str(buf, 9, "network.protocol.version", protocol_version(v));
            }
            if let Some(id) = &f.request_id {
                attr_str(buf, 9, "portico.request_id", id.as_bytes());
            }
            if let Some(id) = f.route_id {
                let mut text = [0u8; 36];
                let id = id.hyphenated().encode_lower(&mut text);
                attr_str(buf, 9, "portico.route.id", id.as_bytes());
            }
            if let Some(r) = &f.route {
                attr_str(buf, 9, "portico.route.name", r.as_bytes());
            }
            if let Some(s) = f.service.as_deref().filter(|s| !s.is_empty()) {
                attr_str(buf, 9, "portico.service.name", s.as_bytes());
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
                error = Some("");
            } else if !d.complete {
                error = Some("response body incomplete");
            }
        }
        Detail::Client {
            host,
            port,
            attempt,
            outcome,
        } => {
            string(buf, 5, b"upstream");
            encode_key(6, WireType::Varint, buf);
            encode_varint(KIND_CLIENT, buf);
            times(buf, r);
            attr_str(buf, 9, "server.address", host.as_bytes());
            attr_int(buf, "server.port", i64::from(*port));
            attr_int(buf, "portico.attempt", i64::from(*attempt));
            match outcome {
                Ok(status) => {
                    attr_int(buf, "http.response.status_code", i64::from(*status));
                    if *status >= 500 {
                        error = Some("");
                    }
                }
                Err(e) => {
                    attr_str(buf, 9, "error.type", e.as_bytes());
                    error = Some(e);
                }
            }
        }
    }
    if let Some(message) = error {
        // Status { message = 2, code = 3 }
        let len = if message.is_empty() {
            0
        } else {
            field_len(message.len())
        } + 2;
        encode_key(15, WireType::LengthDelimited, buf);
        encode_varint(len as u64, buf);
        if !message.is_empty() {
            string(buf, 2, message.as_bytes());
        }
        encode_key(3, WireType::Varint, buf);
        encode_varint(STATUS_ERROR, buf);
    }
}

fn times(buf: &mut Vec<u8>, r: &SpanRecord) {
    encode_key(7, WireType::SixtyFourBit, buf);
    buf.put_u64_le(nanos(r.start));
    encode_key(8, WireType::SixtyFourBit, buf);
    buf.put_u64_le(nanos(r.end));
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
    Grpc {
        client: tonic::client::Grpc<tonic::transport::Channel>,
        metadata: tonic::metadata::MetadataMap,
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
                Ok(Transport::Grpc {
                    client: tonic::client::Grpc::new(channel),
                    metadata,
                })
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

    /// Sends one export request; the error says why the collector did not take it. The
    /// returned future owns clones of the (shared) clients, so several can be in flight.
    pub fn send(
        &self,
        body: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send + 'static {
        let call = match self {
            Transport::Grpc { client, metadata } => {
                let mut request = tonic::Request::new(Bytes::from(body));
                *request.metadata_mut() = metadata.clone();
                Call::Grpc(client.clone(), request)
            }
            Transport::Http {
                client,
                uri,
                headers,
            } => {
                let mut request = http::Request::new(Full::new(Bytes::from(body)));
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
    Grpc(
        tonic::client::Grpc<tonic::transport::Channel>,
        tonic::Request<Bytes>,
    ),
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
            Call::Grpc(mut client, request) => {
                client
                    .ready()
                    .await
                    .map_err(|e| format!("cannot reach the collector: {e}"))?;
                client
                    .unary::<_, (), _>(
                        request,
                        http::uri::PathAndQuery::from_static(EXPORT_PATH),
                        RawCodec,
                    )
                    .await
                    .map(drop)
                    .map_err(|s| format!("{}: {}", s.code(), s.message()))
            }
            Call::Http(client, request) => {
                let response = client.request(request).await.map_err(|e| {
                    let mut msg = e.to_string();
                    let mut source = std::error::Error::source(&e);
                    while let Some(s) = source {
                        let _ = write!(msg, ": {s}");
                        source = s.source();
                    }
                    msg
                })?;
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

/// Sends an already encoded export request and ignores the answer's content (its
/// `partial_success`, when any, is the collector's to log).
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = ();
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<()>, tonic::Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
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
            detail: Detail::Server(Box::new(ServerDetail {
                facts: RequestFacts {
                    method: Method::GET,
                    uri: Some("/items/7?key=secret".parse().unwrap()),
                    https: false,
                    host: Some("api.example.com".into()),
                    client: Some("203.0.113.9".parse().unwrap()),
                    version: Some(Version::HTTP_11),
                    request_id: Some(HeaderValue::from_static("req-1")),
                    route_id: Some(route_id),
                    route: Some("items".into()),
                    service: Some("catalog".into()),
                    consumer: Some("alice".into()),
                },
                status: 502,
                bytes_out: 1234,
                complete: true,
            })),
        };
        let client = SpanRecord {
            trace_id,
            span_id: SpanId::from(0x2222),
            parent_span_id: SpanId::from(0x1111),
            parent_remote: false,
            trace_state: TraceState::NONE,
            start: start + Duration::from_millis(1),
            end: start + Duration::from_millis(2),
            detail: Detail::Client {
                host: "10.0.0.5".into(),
                port: 8080,
                attempt: 2,
                outcome: Err("connect timeout"),
            },
        };
        let mut encoder = Encoder::new(&[("service.name", "portico"), ("team", "edge")]);
        // Twice through the same encoder: its buffers are reused, not appended to.
        let _ = encoder.encode(&[client_clone(&client)]);
        let bytes = encoder.encode(&[server, client]);
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
        assert_eq!(ss.spans.len(), 2);

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
        assert_eq!(c.parent_span_id, SpanId::from(0x1111).to_bytes());
        assert_eq!(c.flags, 0x101);
        assert!(c.trace_state.is_empty());
        assert_eq!(
            (c.name.as_str(), c.kind),
            ("upstream", SpanKind::Client as i32)
        );
        assert_eq!(
            attrs(c),
            [
                ("server.address", "10.0.0.5"),
                ("server.port", "int:8080"),
                ("portico.attempt", "int:2"),
                ("error.type", "connect timeout"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let status = c.status.as_ref().unwrap();
        assert_eq!(
            (status.code, status.message.as_str()),
            (2, "connect timeout")
        );
    }

    /// A root server span of a request refused before routing, and an attempt that answered.
    #[test]
    fn minimal_spans_decode() {
        let start = SystemTime::now();
        let root = SpanRecord {
            trace_id: TraceId::from(7),
            span_id: SpanId::from(8),
            parent_span_id: SpanId::INVALID,
            parent_remote: false,
            trace_state: TraceState::NONE,
            start,
            end: start,
            detail: Detail::Server(Box::new(ServerDetail {
                facts: RequestFacts {
                    method: Method::POST,
                    request_id: Some(HeaderValue::from_static("r")),
                    ..RequestFacts::default()
                },
                status: 404,
                bytes_out: 0,
                complete: false,
            })),
        };
        let bytes = Encoder::new(&[]).encode(&[root]);
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

    fn client_clone(r: &SpanRecord) -> SpanRecord {
        SpanRecord {
            trace_id: r.trace_id,
            span_id: r.span_id,
            parent_span_id: r.parent_span_id,
            parent_remote: r.parent_remote,
            trace_state: r.trace_state.clone(),
            start: r.start,
            end: r.end,
            detail: match &r.detail {
                Detail::Client {
                    host,
                    port,
                    attempt,
                    outcome,
                } => Detail::Client {
                    host: Arc::clone(host),
                    port: *port,
                    attempt: *attempt,
                    outcome: *outcome,
                },
                Detail::Server(_) => unreachable!(),
            },
        }
    }
}
