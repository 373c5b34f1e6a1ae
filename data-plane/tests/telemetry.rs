//! Traces and the access log, end to end: OTLP collectors run in-process (a tonic server for
//! OTLP/gRPC, a hyper server decoding OTLP/HTTP protobuf, both with the OpenTelemetry proto
//! types), requests go through a real data plane to a real upstream,
//! and the tests read what the collector received, what the upstream saw and what the access
//! log holds.

#[path = "support/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use harness::{get, Gateway, Upstream};
use http::StatusCode;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use portico_data_plane::telemetry::access_log::Target;
use portico_data_plane::telemetry::TelemetryOptions;
use tokio::sync::mpsc;

/// A span as received, with its resource's attributes and the export's headers (gRPC
/// metadata or HTTP headers).
#[derive(Debug, Clone)]
struct Received {
    span: Span,
    resource: HashMap<String, String>,
    headers: http::HeaderMap,
}

impl Received {
    fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    fn attr(&self, key: &str) -> Option<String> {
        attr(&self.span.attributes, key)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            Value::BoolValue(b) => Some(b.to_string()),
            Value::DoubleValue(d) => Some(d.to_string()),
            _ => None,
        }
    })
}

struct Collector {
    tx: mpsc::UnboundedSender<Received>,
    /// How long each export takes to answer: a collector that keeps the exporter waiting.
    delay: Duration,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        tokio::time::sleep(self.delay).await;
        let headers = request.metadata().clone().into_headers();
        forward(&self.tx, request.into_inner(), &headers);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Sends every span of `export` to `tx`.
fn forward(
    tx: &mpsc::UnboundedSender<Received>,
    export: ExportTraceServiceRequest,
    headers: &http::HeaderMap,
) {
    for rs in export.resource_spans {
        let resource: HashMap<String, String> = rs
            .resource
            .map(|r| {
                r.attributes
                    .iter()
                    .filter_map(|kv| Some((kv.key.clone(), attr(&r.attributes, &kv.key)?)))
                    .collect()
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                let _ = tx.send(Received {
                    span,
                    resource: resource.clone(),
                    headers: headers.clone(),
                });
            }
        }
    }
}

/// An OTLP/HTTP (protobuf) collector on 127.0.0.1:0 and the spans it receives on `/v1/traces`.
async fn http_collector() -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    use http_body_util::BodyExt;
    use prost::Message;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let bytes = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let status = match (
                                parts.uri.path(),
                                ExportTraceServiceRequest::decode(bytes),
                            ) {
                                ("/v1/traces", Ok(export)) => {
                                    forward(&tx, export, &parts.headers);
                                    http::StatusCode::OK
                                }
                                _ => http::StatusCode::BAD_REQUEST,
                            };
                            let body = ExportTraceServiceResponse::default().encode_to_vec();
                            let mut resp = http::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(body),
                            ));
                            *resp.status_mut() = status;
                            resp.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static("application/x-protobuf"),
                            );
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    });
    (addr, rx)
}

/// An OTLP/gRPC collector on 127.0.0.1:0 and the spans it receives.
async fn collector() -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    slow_collector(Duration::ZERO).await
}

/// A collector that answers each export `delay` after receiving it.
async fn slow_collector(delay: Duration) -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector { tx, delay }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, rx)
}

/// Waits (at most 10 s) until `n` spans of `trace_id` have arrived.
async fn spans_of(
    rx: &mut mpsc::UnboundedReceiver<Received>,
    trace_id: &str,
    n: usize,
) -> Vec<Received> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(s)) if s.trace_id() == trace_id => got.push(s),
            Ok(Some(_)) => {}
            _ => panic!(
                "only {} of {n} spans of trace {trace_id} arrived: {got:#?}",
                got.len()
            ),
        }
    }
    got
}

fn config(upstream: &Upstream) -> String {
    format!(
        "_format_version: \"3.0\"
services:
  - name: orders
    url: http://{}
    routes:
      - name: list-orders
        paths: [/orders]
",
        upstream.addr
    )
}

fn traced(collector: SocketAddr, rate: f64) -> TelemetryOptions {
    TelemetryOptions {
        otlp_endpoint: Some(format!("http://{collector}")),
        sampling_rate: rate,
        node_id: "dp-test-1".into(),
        ..TelemetryOptions::default()
    }
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn spans_continue_the_clients_trace_and_the_upstream_continues_ours() {
    let (addr, mut rx) = collector().await;
    let up = Upstream::echo("orders").await;
    let gw = Gateway::start_with_telemetry(&config(&up), &traced(addr, 1.0)).await;

    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let got = get(
        &gw.url("/orders/42?page=2&key=s3cr3t"),
        &[("traceparent", &traceparent), ("tracestate", "vendor=abc")],
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);

    let spans = spans_of(&mut rx, CLIENT_TRACE, 2).await;
    let root = spans
        .iter()
        .find(|s| s.span.kind == SpanKind::Server as i32)
        .expect("a server span");
    let attempt = spans
        .iter()
        .find(|s| s.span.kind == SpanKind::Client as i32)
        .expect("a client span per upstream attempt");

    // The server span is a child of the client's span; the attempt a child of the server span.
    assert_eq!(root.parent_id(), CLIENT_SPAN);
    assert_eq!(attempt.parent_id(), root.span_id());
    assert_eq!(root.span.name, "GET list-orders");
    assert_eq!(
        root.attr("portico.route.name").as_deref(),
        Some("list-orders")
    );
    assert_eq!(root.attr("portico.service.name").as_deref(), Some("orders"));
    assert_eq!(root.attr("http.request.method").as_deref(), Some("GET"));
    assert_eq!(root.attr("url.path").as_deref(), Some("/orders/42"));
    // The query string (credentials travel there) is never exported.
    for s in &spans {
        let attrs = format!("{:?}", s.span.attributes);
        assert!(!attrs.contains("s3cr3t"), "the query leaked: {attrs}");
    }
    assert_eq!(
        root.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        root.attr("portico.request_id"),
        got.headers
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_owned())
    );
    assert_eq!(
        attempt.attr("server.port"),
        Some(up.addr.port().to_string())
    );
    assert_eq!(
        attempt.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    assert!(root.span.start_time_unix_nano <= attempt.span.start_time_unix_nano);
    assert!(root.span.end_time_unix_nano >= attempt.span.end_time_unix_nano);
    assert_eq!(root.resource["service.name"], "portico");
    assert_eq!(root.resource["service.instance.id"], "dp-test-1");

    // The upstream continues the same trace from the attempt's span, with the client's state.
    let seen = up.last();
    let tp = seen.headers["traceparent"].to_str().unwrap();
    assert_eq!(
        tp,
        format!("00-{CLIENT_TRACE}-{}-01", attempt.span_id()),
        "upstream traceparent"
    );
    assert_eq!(seen.headers["tracestate"], "vendor=abc");
    gw.stop().await;
}

#[tokio::test]
async fn requests_without_a_trace_start_one_and_unrouted_requests_are_traced_too() {
    let (addr, mut rx) = collector().await;
    let up = Upstream::echo("orders").await;
    let gw = Gateway::start_with_telemetry(&config(&up), &traced(addr, 1.0)).await;

    assert_eq!(get(&gw.url("/orders"), &[]).await.status, StatusCode::OK);
    let tp = up.last().headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!((parts[0], parts[3]), ("00", "01"), "{tp}");
    let spans = spans_of(&mut rx, parts[1], 2).await;
    let root = spans
        .iter()
        .find(|s| s.span.kind == SpanKind::Server as i32)
        .unwrap();
    assert!(
        root.span.parent_span_id.is_empty(),
        "a new trace has no parent"
    );

    // No route: a server span with the 404, no attempt.
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let got = get(&gw.url("/nowhere"), &[("traceparent", &traceparent)]).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    let spans = spans_of(&mut rx, CLIENT_TRACE, 1).await;
    assert_eq!(spans[0].span.kind, SpanKind::Server as i32);
    assert_eq!(spans[0].parent_id(), CLIENT_SPAN);
    assert_eq!(
        spans[0].attr("http.response.status_code").as_deref(),
        Some("404")
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_client_that_did_not_sample_is_followed_and_the_context_still_propagates() {
    let (addr, mut rx) = collector().await;
    let up = Upstream::echo("orders").await;
    // Rate 1.0, but the client's flags say "not sampled": nothing is exported.
    let gw = Gateway::start_with_telemetry(&config(&up), &traced(addr, 1.0)).await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00");
    let got = get(&gw.url("/orders"), &[("traceparent", &traceparent)]).await;
    assert_eq!(got.status, StatusCode::OK);
    let tp = up.last().headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        tp.starts_with(&format!("00-{CLIENT_TRACE}-")) && tp.ends_with("-00"),
        "{tp}"
    );
    assert_ne!(
        tp, traceparent,
        "the upstream's parent is the gateway's span"
    );

    // A sampled request afterwards arrives alone: the unsampled one was never exported.
    let sampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    get(&gw.url("/orders"), &[("traceparent", sampled)]).await;
    let mut arrived = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while arrived.len() < 2 {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(s)) => arrived.push(s.trace_id()),
            _ => panic!("the sampled request's spans did not arrive: {arrived:?}"),
        }
    }
    assert!(
        arrived
            .iter()
            .all(|t| t == "0af7651916cd43dd8448eb211c80319c"),
        "{arrived:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_dead_collector_costs_requests_nothing() {
    // A port nothing listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let up = Upstream::echo("orders").await;
    let gw = Gateway::start_with_telemetry(&config(&up), &traced(dead, 1.0)).await;
    for _ in 0..50 {
        let got = get(&gw.url("/orders"), &[]).await;
        assert_eq!(got.status, StatusCode::OK);
    }
    assert_eq!(up.count(), 50);
    // The lost spans are counted where operators look: 50 server and 50 attempt spans.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let lost = spans_dropped(&gw).await;
        if lost == Some(100) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "lost spans not counted: {lost:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.stop().await;
}

/// The lost-span count on `/metrics`.
async fn spans_dropped(gw: &Gateway) -> Option<u64> {
    let got = get(&format!("http://{}/metrics", gw.status), &[]).await;
    got.body
        .lines()
        .find_map(|l| l.strip_prefix("portico_trace_spans_dropped_total "))
        .map(|v| v.trim().parse::<u64>().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_collector_loses_no_spans_while_the_backlog_has_room() {
    // Every export waits 300 ms for its answer: with four in flight, spans end faster than
    // they leave, and more of them than the queue of ended requests holds (1,024).
    let (addr, mut rx) = slow_collector(Duration::from_millis(300)).await;
    let up = Upstream::echo("orders").await;
    let gw = Gateway::start_with_telemetry(&config(&up), &traced(addr, 1.0)).await;
    let clients: Vec<_> = (0..40)
        .map(|_| {
            let url = gw.url("/orders");
            tokio::spawn(async move {
                for _ in 0..50 {
                    assert_eq!(get(&url, &[]).await.status, StatusCode::OK);
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    // 2,000 requests: a server span and an attempt span each, all exported.
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got < 4000 {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(_)) => got += 1,
            _ => panic!(
                "{got} of 4000 spans arrived; dropped: {:?}",
                spans_dropped(&gw).await
            ),
        }
    }
    assert_eq!(spans_dropped(&gw).await, Some(0));
    gw.stop().await;
}

#[tokio::test]
async fn the_access_log_has_one_json_line_per_request_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let up = Upstream::echo("orders").await;
    let yaml = format!(
        "_format_version: \"3.0\"
services:
  - name: orders
    url: http://{}
    routes:
      - name: list-orders
        paths: [/orders]
        plugins:
          - name: key-auth
consumers:
  - username: alice
    keyauth_credentials:
      - key: s3cr3t-k3y-value
",
        up.addr
    );
    let gw = Gateway::start_with_telemetry(
        &yaml,
        &TelemetryOptions {
            access_log: Some(Target::File(path.clone())),
            ..TelemetryOptions::default()
        },
    )
    .await;

    let ok = get(
        &gw.url("/orders/7?apikey=s3cr3t-k3y-value&page=2"),
        &[
            ("authorization", "Bearer another-secret"),
            ("cookie", "session=topsecret"),
        ],
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    let denied = get(&gw.url("/orders"), &[("apikey", "wrong-key-value")]).await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    let missing = get(&gw.url("/nothing"), &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    gw.shared.telemetry.flush().await;
    let text = std::fs::read_to_string(&path).unwrap();
    for secret in [
        "s3cr3t-k3y-value",
        "another-secret",
        "topsecret",
        "wrong-key-value",
        "page=2",
    ] {
        assert!(
            !text.contains(secret),
            "{secret} leaked into the access log:\n{text}"
        );
    }
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 3, "{text}");

    let l = &lines[0];
    assert_eq!(l["status"], 200);
    assert_eq!(l["method"], "GET");
    assert_eq!(l["path"], "/orders/7");
    assert_eq!(l["route"], "list-orders");
    assert_eq!(l["service"], "orders");
    assert_eq!(l["consumer"], "alice");
    assert_eq!(l["client_ip"], "127.0.0.1");
    assert_eq!(l["upstream_addr"], up.addr.to_string());
    assert_eq!(l["tries"], 1);
    assert_eq!(l["protocol"], "HTTP/1.1");
    assert_eq!(l["bytes_out"], ok.body.len());
    assert_eq!(
        l["request_id"],
        ok.headers["x-request-id"].to_str().unwrap()
    );
    let lat = &l["latency_ms"];
    assert!(lat["request"].as_f64().unwrap() >= lat["upstream"].as_f64().unwrap());
    assert!(lat["proxy"].as_f64().unwrap() >= 0.0);
    assert!(l["time"].as_str().unwrap().ends_with('Z'));

    let l = &lines[1];
    assert_eq!(l["status"], 401);
    assert_eq!(l["route"], "list-orders");
    assert_eq!(l["tries"], 0);
    assert!(l.get("consumer").is_none() && l.get("upstream_addr").is_none());

    let l = &lines[2];
    assert_eq!(l["status"], 404);
    assert_eq!(l["route"], "");
    assert_eq!(l["path"], "/nothing");
    // Nothing was dropped, and /metrics says so.
    let metrics = get(&format!("http://{}/metrics", gw.status), &[]).await;
    assert!(
        metrics
            .body
            .lines()
            .any(|l| l == "portico_access_log_dropped_total 0"),
        "{}",
        metrics.body
    );
    gw.stop().await;
}

#[tokio::test]
async fn the_opentelemetry_plugin_traces_its_route_to_its_own_otlp_http_collector() {
    let (addr, mut rx) = http_collector().await;
    let up = Upstream::echo("orders").await;
    // No node pipeline (--otlp-endpoint): only the plugin's route is traced.
    let yaml = format!(
        "_format_version: \"3.0\"
services:
  - name: orders
    url: http://{}
    routes:
      - name: traced
        paths: [/traced]
        plugins:
          - name: opentelemetry
            config:
              traces_endpoint: http://{addr}/v1/traces
              sampling_rate: 1
              headers: {{ X-Otlp-Token: s3cret }}
              resource_attributes: {{ deployment.environment: test }}
              http_response_header_for_traceid: X-Trace-Id
              propagation: {{ extract: [w3c], inject: [preserve], clear: [X-Legacy-Trace] }}
      - name: plain
        paths: [/plain]
",
        up.addr
    );
    let gw = Gateway::start(&yaml).await;

    let plain_trace = "0af7651916cd43dd8448eb211c80319c";
    let plain = get(
        &gw.url("/plain"),
        &[
            (
                "traceparent",
                &format!("00-{plain_trace}-b7ad6b7169203331-01"),
            ),
            ("x-legacy-trace", "kept"),
        ],
    )
    .await;
    assert_eq!(plain.status, StatusCode::OK);
    assert!(plain.headers.get("x-trace-id").is_none());
    assert_eq!(up.last().headers["x-legacy-trace"], "kept");

    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let got = get(
        &gw.url("/traced"),
        &[("traceparent", &traceparent), ("x-legacy-trace", "old")],
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.headers["x-trace-id"], CLIENT_TRACE, "trace id answered");
    let seen = up.last();
    assert!(
        seen.headers["traceparent"]
            .to_str()
            .unwrap()
            .starts_with(&format!("00-{CLIENT_TRACE}-")),
        "the upstream continues the client's trace"
    );
    assert!(
        seen.headers.get("x-legacy-trace").is_none(),
        "propagation.clear"
    );

    // Every span that arrives until the traced request's two have: spans are exported in the
    // order they end, so the earlier plain request's would be among them.
    let mut arrived = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while arrived
        .iter()
        .filter(|s: &&Received| s.trace_id() == CLIENT_TRACE)
        .count()
        < 2
    {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(s)) => arrived.push(s),
            _ => panic!("the traced request's spans did not arrive: {arrived:#?}"),
        }
    }
    assert!(
        arrived.iter().all(|s| s.trace_id() != plain_trace),
        "a route without the plugin is not traced to its collector: {arrived:#?}"
    );
    let root = arrived
        .iter()
        .find(|s| s.trace_id() == CLIENT_TRACE && s.span.kind == SpanKind::Server as i32)
        .expect("a server span");
    assert_eq!(root.parent_id(), CLIENT_SPAN);
    assert_eq!(root.span.name, "GET traced");
    assert_eq!(root.resource["deployment.environment"], "test");
    assert_eq!(root.resource["service.name"], "portico");
    assert_eq!(
        root.headers["x-otlp-token"], "s3cret",
        "configured export header"
    );
    assert!(
        root.headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/x-protobuf")),
        "OTLP/HTTP protobuf: {:?}",
        root.headers
    );
    gw.stop().await;
}
