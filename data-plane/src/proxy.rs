//! The request path: canonicalise, route, rewrite headers, pick a target, send upstream with
//! timeouts and safe retries, and stream the response back.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{HeaderName, HeaderValue, HOST, SERVER, VIA};
use http::{Method, Request, Response, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use portico_common::path::{canonicalize_with, Options as PathOptions};

use crate::balancer::hashing::{HashRequest, RequestKey};
use crate::balancer::{self, Picked};
use crate::error::{ProxyError, UpstreamError};
use crate::h1;
use crate::headers::{self, Forwarding};
use crate::metrics::Observed;
use crate::plugins::{Ctx, Flow, Outcome, Req};
use crate::pool::{EndpointPool, Sender};
use crate::response::{error_response, ErrorFormat, ProxyBody, TimedBody};
use crate::router::RouteRequest;
use crate::runtime::{CompiledService, Destination, Runtime};
use crate::state::Shared;
use crate::telemetry::trace::{
    AttemptSpan, RequestFacts, RequestText, RequestTrace, RouteAttrs, Tracing,
};
use crate::telemetry::{LogStart, Tail};
use crate::upstream_body::{ResponseBody, UpstreamBody};
use futures_util::future::Either;
use futures_util::FutureExt as _;

/// What the listener knows about a downstream connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
    /// The server name the client sent in its TLS handshake, lowercased.
    pub sni: Option<Arc<str>>,
    /// The peer address and local port as forwarding header values, made once.
    pub fwd: headers::ConnHeaders,
}

impl ConnInfo {
    /// A plain-TCP connection from `peer` to `local`.
    pub fn new(peer: SocketAddr, local: SocketAddr) -> Self {
        ConnInfo {
            peer,
            local,
            tls: false,
            sni: None,
            fwd: headers::ConnHeaders::new(peer.ip(), local.port()),
        }
    }
}

/// Header names of Portico's own response headers.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const UPSTREAM_LATENCY: HeaderName = HeaderName::from_static("x-portico-upstream-latency");
pub const PROXY_LATENCY: HeaderName = HeaderName::from_static("x-portico-proxy-latency");
pub const RESPONSE_LATENCY: HeaderName = HeaderName::from_static("x-portico-response-latency");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Handles one downstream request. Never fails: every error becomes a response.
#[allow(clippy::manual_async_fn)] // on purpose: see the comment in the body
pub fn handle(
    req: Request<Incoming>,
    conn: ConnInfo,
    shared: Arc<Shared>,
) -> impl Future<Output = Response<ProxyBody>> {
    // An async block, not an async fn: an async fn copies its arguments into locals, and its
    // future then holds each twice (this future is copied into its box once per request).
    async move {
        let shared: &Shared = &shared;
        let start = Instant::now();
        shared.stats.requests_total.fetch_add(1, Ordering::Relaxed);
        let _active = ActiveRequest::enter(&shared.stats.requests_active);
        let request_id = shared.ids.for_request(req.headers());
        let format = if ErrorFormat::is_grpc(&req) {
            ErrorFormat::Grpc
        } else {
            ErrorFormat::from_accept(req.headers().get(http::header::ACCEPT))
        };
        let method = req.method().clone();
        let bytes_in = req.body().size_hint().exact();
        let telemetry = &shared.telemetry;
        // Wall-clock time only for a log line or a span to carry.
        let started_at =
            (telemetry.access_log.is_some() || telemetry.tracing.is_some()).then(SystemTime::now);
        let log_start = telemetry.access_log.as_ref().map(|log| LogStart {
            log: Arc::clone(log),
            started_at: started_at.unwrap_or_else(SystemTime::now),
            request_id: request_id.clone(),
            method: method.clone(),
            uri: req.uri().clone(),
            host: req.headers().get(HOST).cloned(),
            version: req.version(),
            bytes_in: bytes_in.unwrap_or(0),
        });
        let mut observed = Observed::default();
        observed.started_at = started_at;
        observed.logging = log_start.is_some();
        observed.parent = telemetry
            .tracing
            .as_ref()
            .and_then(|_| Tracing::extract(req.headers()));

        let mut resp = match proxy(
            req,
            &conn,
            shared,
            &request_id,
            start,
            format,
            &mut observed,
        )
        .await
        {
            Ok(resp) => resp,
            Err(err) => {
                let status = err.status();
                if status.is_server_error() {
                    tracing::warn!(request_id = ?request_id, error = %err, side = ?err.side(), "request failed");
                } else {
                    tracing::debug!(request_id = ?request_id, error = %err, "request refused");
                }
                let id = request_id.to_str().unwrap_or("");
                let mut resp = error_response(status, err.client_message(), id, format);
                match &err {
                    ProxyError::HttpsRequired => {
                        let h = resp.headers_mut();
                        h.insert(
                            http::header::CONNECTION,
                            HeaderValue::from_static("Upgrade"),
                        );
                        h.insert(
                            http::header::UPGRADE,
                            HeaderValue::from_static("TLS/1.2, HTTP/1.1"),
                        );
                    }
                    ProxyError::HttpsRedirect { location, .. } => {
                        if let Ok(loc) = HeaderValue::from_str(location) {
                            resp.headers_mut().insert(http::header::LOCATION, loc);
                        }
                    }
                    // A request refused as malformed (framing, Host, path) ends its connection:
                    // whatever follows it on the wire was framed by rules we just refused, and
                    // reading it as the next request is how smuggled requests get through
                    // (SECURITY.md §2.3 item 1).
                    ProxyError::BadRequest(_) => {
                        resp.headers_mut()
                            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    _ => {}
                }
                let h = resp.headers_mut();
                std::mem::take(&mut observed.response_headers).set_on(h);
                h.insert(SERVER, shared.server.clone());
                h.insert(
                    RESPONSE_LATENCY,
                    headers::millis_value(start.elapsed().as_millis() as u64),
                );
                resp
            }
        };
        // Unique to each response: over HTTP/2, HPACK sends it as a never-indexed literal
        // instead of adding it to the connection's table, where it would only evict entries
        // that repeat (Via, Server, small latencies). HTTP/1.1 ignores the flag.
        let mut request_id = request_id;
        request_id.set_sensitive(true);
        resp.headers_mut().insert(REQUEST_ID, request_id);
        // A request the node traces that ended before a route was chosen still gets its span.
        if let (None, Some(t)) = (&observed.trace, &telemetry.tracing) {
            let mut trace = t.start_request(
                observed.parent.as_ref(),
                started_at.unwrap_or_else(SystemTime::now),
            );
            if trace.is_sampled() {
                trace.describe(RequestFacts {
                    method: method.clone(),
                    text: RequestText::new(
                        None,
                        None,
                        resp.headers().get(&REQUEST_ID).map(HeaderValue::as_bytes),
                    ),
                    ..RequestFacts::default()
                });
            }
            observed.trace = Some(trace);
        }
        if let Some((name, value)) = observed.trace.as_ref().and_then(|t| t.response_header()) {
            resp.headers_mut().insert(name, value);
        }
        let egress = telemetry.metrics.then(|| {
            shared
                .metrics
                .record(&observed, &method, &resp, start.elapsed(), bytes_in)
        });
        let tail = (log_start.is_some() || observed.trace.is_some()).then(|| {
            Box::new(Tail {
                status: resp.status().as_u16(),
                peer: conn.peer.ip(),
                start,
                log: log_start.map(|s| (s, std::mem::take(&mut observed.facts))),
                trace: observed.trace.take(),
            })
        });
        match resp.body_mut() {
            ProxyBody::Upstream(body) => {
                body.end.egress = egress;
                body.end.tail = tail;
            }
            full => {
                let n = full.size_hint().exact().unwrap_or(0);
                if let Some(c) = egress.filter(|_| n > 0) {
                    c.inc_by(n);
                }
                if let Some(tail) = tail {
                    tail.finish(n, true);
                }
            }
        }
        resp
    }
}

/// Counts a request as active until dropped, also when the client goes away mid-request and
/// hyper drops the handler.
struct ActiveRequest<'a>(&'a std::sync::atomic::AtomicU64);

impl<'a> ActiveRequest<'a> {
    fn enter(counter: &'a std::sync::atomic::AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(counter)
    }
}

impl Drop for ActiveRequest<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Validates the request's host: HTTP/1.1 carries exactly one Host, and an absolute-form target
/// or HTTP/2 `:authority` agrees with it (SECURITY.md §1.4 item 11). Returns the host as the
/// client sent it (for `preserve_host`).
fn original_host(
    headers: &http::HeaderMap,
    uri: &Uri,
    version: Version,
) -> Result<Option<HeaderValue>, ProxyError> {
    let mut hosts = headers.get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("Duplicate Host header"));
    }
    match (header, uri.authority()) {
        (Some(h), Some(a)) if !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()) => Err(
            ProxyError::BadRequest("Host header does not match the request target"),
        ),
        (Some(h), _) => Ok(Some(h.clone())),
        (None, Some(a)) => HeaderValue::from_str(a.as_str())
            .map(Some)
            .map_err(|_| ProxyError::BadRequest("Invalid Host header")),
        (None, None) if version == Version::HTTP_11 => {
            Err(ProxyError::BadRequest("Missing Host header"))
        }
        (None, None) => Ok(None),
    }
}

/// The host used for routing: lowercased, port and trailing dot removed.
fn routing_host(original: Option<&HeaderValue>) -> Result<Cow<'_, str>, ProxyError> {
    let Some(raw) = original else {
        return Ok(Cow::Borrowed(""));
    };
    let raw = raw
        .to_str()
        .map_err(|_| ProxyError::BadRequest("Invalid Host header"))?;
    let without_port = strip_port(raw);
    let trimmed = without_port.strip_suffix('.').unwrap_or(without_port);
    Ok(if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    })
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port -> v6
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

pub(crate) fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[allow(clippy::manual_async_fn)] // on purpose: see `handle`
fn proxy<'a>(
    req: Request<Incoming>,
    conn: &'a ConnInfo,
    shared: &'a Shared,
    request_id: &'a HeaderValue,
    start: Instant,
    format: ErrorFormat,
    observed: &'a mut Observed,
) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + 'a {
    // An async block for the reason given at `handle`.
    async move {
        let Some(rt) = shared.runtime.load_full() else {
            return Err(ProxyError::NotReady);
        };
        let rt: &Runtime = &rt;

        // Only plain `chunked` framing is accepted (hyper accepts `gzip, chunked` and friends, which
        // other hops may read differently: SECURITY.md §2.3 item 1).
        if let Some(te) = req.headers().get(http::header::TRANSFER_ENCODING) {
            if !te.as_bytes().eq_ignore_ascii_case(b"chunked") {
                return Err(ProxyError::BadRequest("Unsupported Transfer-Encoding"));
            }
        }

        headers::check_singletons(req.headers())?;
        if req.version() == Version::HTTP_2 {
            headers::check_h2_values(req.headers())?;
        }

        let (mut parts, body) = req.into_parts();
        let upgrade = websocket_upgrade(&mut parts);
        let original = original_host(&parts.headers, &parts.uri, parts.version)?;
        let host = routing_host(original.as_ref())?;
        let orig_uri = std::mem::take(&mut parts.uri);
        let path_options = PathOptions {
            allow_semicolons: shared.limits.allow_path_semicolons,
            ..PathOptions::default()
        };
        let path = canonicalize_with(orig_uri.path(), path_options)
            .map_err(|_| ProxyError::BadRequest("Invalid request path"))?;

        let peer_ip = conn.peer.ip();
        let trusted = shared.trusted.contains(peer_ip);
        let https = conn.tls
            || (trusted
                && parts
                    .headers
                    .get(&X_FORWARDED_PROTO)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https")));
        let mut m = rt
            .router
            .find(&RouteRequest {
                method: parts.method.as_str(),
                host: &host,
                port: conn.local.port(),
                path: &path,
                headers: &parts.headers,
                https,
                sni: conn.sni.as_deref(),
            })
            .ok_or(ProxyError::NoRoute)?;
        let route = &rt.snapshot.routes[m.route_index];
        observed.matched(&shared.metrics, rt, m.route_index);
        if m.https_required {
            // Kong: 426 by default, or a redirect to the same URL over https.
            return Err(match route.https_redirect_status_code {
                426 => ProxyError::HttpsRequired,
                code => ProxyError::HttpsRedirect {
                    code,
                    location: format!(
                        "https://{host}{}",
                        orig_uri.path_and_query().map_or("/", |pq| pq.as_str())
                    ),
                },
            });
        }
        if m.grpc_only {
            if parts.version != Version::HTTP_2 {
                return Err(ProxyError::Http2Required);
            }
            let grpc = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
            if !grpc {
                return Err(ProxyError::NotGrpc);
            }
        }
        let client_ip = headers::client_ip(&parts.headers, peer_ip, &shared.trusted);
        let chain = rt.plugins.for_route(m.route_index);
        // The route's `opentelemetry` plugin traces it; otherwise the node's --otlp-endpoint does.
        if let Some(tracing) = chain.tracing().or(shared.telemetry.tracing.as_ref()) {
            let parent = match observed.parent.take() {
                Some(p) => Some(p),
                // The node does not trace, so the client's context was not read yet.
                None if shared.telemetry.tracing.is_none() => Tracing::extract(&parts.headers),
                None => None,
            };
            let mut trace = tracing.start_request(
                parent.as_ref(),
                // Only a route's own `opentelemetry` plugin traces a request the node does not.
                observed
                    .started_at
                    .unwrap_or_else(|| SystemTime::now() - start.elapsed()),
            );
            if trace.is_sampled() {
                let route_attrs = observed
                    .route_attrs()
                    .unwrap_or_else(|| RouteAttrs::new(route.id, None, None));
                trace.describe(RequestFacts {
                    method: parts.method.clone(),
                    // Copies: the path and a client's own X-Request-Id share the connection's
                    // read buffer.
                    text: RequestText::new(
                        Some(orig_uri.path()),
                        Some(&host),
                        Some(request_id.as_bytes()),
                    ),
                    https,
                    client: Some(client_ip),
                    version: Some(parts.version),
                    route: Some(route_attrs),
                    consumer: None,
                });
            }
            observed.trace = Some(trace);
        }
        if observed.logging {
            observed.facts.client_ip = Some(client_ip);
            observed.facts.route = observed.route_labels();
        }
        let mut body = if body.is_end_stream() {
            UpstreamBody::Empty
        } else {
            UpstreamBody::Client(body)
        };
        // Identity headers are the auth plugins' to set: a client's own never get through.
        headers::strip_client_identity(&mut parts.headers);
        let mut query = orig_uri.query().map(Cow::Borrowed);
        let mut ctx = Ctx::new(&rt.snapshot, &rt.consumers);
        ctx.route = Some(route);
        ctx.service = m
            .service_index
            .and_then(|i| rt.snapshot.services.get(i))
            .map(|s| &**s);
        if !chain.is_empty() {
            let mut req = Req {
                method: &parts.method,
                path: &path,
                uri: &orig_uri,
                headers: &mut parts.headers,
                query: query.take(),
                body: &mut body,
                client_ip,
                https,
                host: &host,
                request_id,
            };
            let flow = chain.access(&mut req, &mut ctx).await;
            observed.identified(&shared.metrics, rt, ctx.consumer);
            if let Flow::Respond(reply) = flow {
                observed.plugin_reply = true;
                let id = request_id.to_str().unwrap_or("");
                let mut resp = reply.into_response(id, format);
                let h = resp.headers_mut();
                h.insert(SERVER, shared.server.clone());
                std::mem::take(&mut ctx.response_headers).add_missing_to(h);
                return Ok(resp);
            }
            ctx.identity_headers(req.headers);
            query = req.query;
            // The consumer's name is copied only for a span or a log line to carry.
            if let Some(consumer) = ctx
                .consumer
                .filter(|_| observed.trace.is_some() || observed.logging)
            {
                let name = consumer
                    .username
                    .clone()
                    .unwrap_or_else(|| consumer.id.to_string());
                if let Some(t) = observed.trace.as_mut().filter(|t| t.is_sampled()) {
                    t.set_consumer(name.clone());
                }
                if observed.logging {
                    observed.facts.consumer = Some(name);
                }
            }
        }

        let Some(service) = m
            .service_index
            .and_then(|i| rt.services.get(i))
            .and_then(Option::as_ref)
        else {
            observed.response_headers = std::mem::take(&mut ctx.response_headers);
            return Err(ProxyError::NoService);
        };
        let service: &CompiledService = service;

        // Upstream target: origin-form path + the client's query string (as plugins left it).
        let pq = match &query {
            Some(q) => format!("{}?{}", m.upstream_path, q),
            None => std::mem::take(&mut m.upstream_path),
        };
        // From the string's own buffer: no copy.
        parts.uri = Uri::from_maybe_shared(bytes::Bytes::from(pq))
            .map_err(|_| ProxyError::BadRequest("Invalid request target"))?;
        // The balancer's hash key, read from the request as the client (and plugins) left it.
        let hash_key = match &service.destination {
            Destination::Balanced(b) => b.key(&HashRequest {
                consumer: ctx.consumer.map(|c| c.id),
                client_ip,
                headers: &parts.headers,
                path: &path,
                query: parts.uri.query(),
            }),
            Destination::Direct { .. } => RequestKey::default(),
        };

        let forwarding = Forwarding {
            peer: peer_ip,
            trusted,
            scheme: if https { "https" } else { "http" },
            host: &host,
            port: conn.local.port(),
            path: &path,
            prefix: m.stripped_prefix.as_deref(),
            peer_header: &conn.fwd.peer,
            port_header: &conn.fwd.port,
        };
        let preserved_host = if route.preserve_host {
            original.clone()
        } else {
            None
        };
        // gRPC needs `te: trailers` end to end (HTTP/2 allows TE with no other value).
        let te_trailers = service.http2.is_some()
            && parts
                .headers
                .get(http::header::TE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
        // A bodiless idempotent request can be rebuilt for another attempt even after the upstream
        // saw it. A request with a body is retried only while the body is provably unsent. The
        // copy is of the client's headers, before the proxy's own are added (they are added again
        // to a rebuilt request): fewer entries, and none of the values made for this request,
        // whose first clone would allocate.
        let template = (service.retries > 0
            && is_idempotent(&parts.method)
            && matches!(body, UpstreamBody::Empty))
        .then(|| Template {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        });
        let upgrade_protocol = upgrade.as_ref().map(|up| &up.protocol);
        let finish_headers = |h: &mut http::HeaderMap| {
            headers::forward_request_headers(h, &forwarding, client_ip, &shared.via);
            if te_trailers {
                h.insert(http::header::TE, HeaderValue::from_static("trailers"));
            }
            if let Some(protocol) = upgrade_protocol {
                // Hop-by-hop, so stripped above; a WebSocket handshake needs them on the next hop.
                h.insert(
                    http::header::CONNECTION,
                    HeaderValue::from_static("upgrade"),
                );
                h.insert(http::header::UPGRADE, protocol.clone());
            }
            h.insert(REQUEST_ID, request_id.clone());
        };
        finish_headers(&mut parts.headers);
        parts.version = if service.http2.is_some() {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };

        // hyper's client sends GET/HEAD with a body of unknown length as *no body*; keep the
        // body by framing it explicitly (SECURITY.md §5.4 item 4).
        if matches!(body, UpstreamBody::Client(_) | UpstreamBody::Limited { .. })
            && body.size_hint().exact().is_none()
            && matches!(parts.method, Method::GET | Method::HEAD | Method::CONNECT)
        {
            parts.headers.insert(
                http::header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }

        // Lent, not moved: an async fn's by-value arguments are stored twice in its future.
        let mut request = Some(Request::from_parts(parts, body));
        let upstream_start = Instant::now();
        let proxy_latency = upstream_start - start;
        let mut attempts = Attempts::default();
        let result = send_with_retries(
            &mut request,
            service,
            preserved_host,
            template
                .as_ref()
                .map(|t| (t, &finish_headers as &(dyn Fn(&mut http::HeaderMap) + Sync))),
            hash_key,
            observed.trace.as_mut(),
            &mut attempts,
            upgrade.is_some(),
        )
        .await;
        let upstream_latency = upstream_start.elapsed();
        observed.upstream_latency = Some(upstream_latency);
        if observed.logging {
            observed.facts.tries = attempts.tries;
            observed.facts.upstream = attempts.last;
            observed.facts.upstream_latency = Some(upstream_latency);
            observed.facts.proxy_latency = Some(proxy_latency);
        }
        if !chain.is_empty() {
            let outcome = match &result {
                Ok(resp) => Outcome::Status(resp.status()),
                Err(e) => Outcome::Failed {
                    status: e.status(),
                    timeout: e.status() == http::StatusCode::GATEWAY_TIMEOUT,
                },
            };
            chain.log(outcome, &ctx, https);
        }
        if result.is_err() {
            observed.response_headers = std::mem::take(&mut ctx.response_headers);
        }
        let mut resp = result?;

        if let Some(up) = upgrade.filter(|_| resp.status() == http::StatusCode::SWITCHING_PROTOCOLS)
        {
            // The upstream took the upgrade: answer 101 with its handshake headers and join the
            // two connections. The tunnel is its own task, on no runtime config: a config swap
            // never closes it.
            let upstream = hyper::upgrade::on(&mut resp);
            let (mut parts, _) = resp.into_parts();
            std::mem::take(&mut ctx.response_headers).set_on(&mut parts.headers);
            parts.headers.append(VIA, shared.via.clone());
            tokio::spawn(tunnel(up.client, upstream, service.name.clone()));
            return Ok(Response::from_parts(
                parts,
                ProxyBody::full(bytes::Bytes::new()),
            ));
        }

        let (mut parts, body) = resp.into_parts();
        // Via, the two latencies and the request id: the map grows once, not on each insert.
        parts.headers.reserve(4 + ctx.response_headers.len());
        std::mem::take(&mut ctx.response_headers).set_on(&mut parts.headers);
        headers::strip_hop_by_hop(&mut parts.headers);
        parts.headers.append(VIA, shared.via.clone());
        parts.headers.insert(
            UPSTREAM_LATENCY,
            headers::millis_value(upstream_latency.as_millis() as u64),
        );
        parts.headers.insert(
            PROXY_LATENCY,
            headers::millis_value(proxy_latency.as_millis() as u64),
        );
        let body = ProxyBody::Upstream(TimedBody::new(body, service.read_timeout));
        Ok(Response::from_parts(parts, body))
    }
}

/// How many dead pooled connections one request may skip before giving up; a pool full of
/// connections the upstream closed while idle must not turn into client errors.
const MAX_STALE_SKIPS: u32 = 8;

/// What a request that may be sent again is rebuilt from: the client's request line and
/// headers as plugins left them, before the proxy added its own.
struct Template {
    method: Method,
    uri: Uri,
    headers: http::HeaderMap,
}

/// Adds the proxy's own headers to an upstream request's (a rebuilt one's too).
type FinishHeaders<'a> = dyn Fn(&mut http::HeaderMap) + Sync + 'a;

/// What the attempts of one request did, for the access log.
#[derive(Debug, Default)]
struct Attempts {
    /// Requests written (or tried) upstream.
    tries: u32,
    /// The endpoint of the last attempt.
    last: Option<std::sync::Arc<EndpointPool>>,
}

/// A WebSocket handshake the proxy passes through: the `Upgrade` value to send upstream and
/// the client connection's side of the upgrade.
struct Upgrade {
    protocol: HeaderValue,
    client: hyper::upgrade::OnUpgrade,
}

/// An HTTP/1.1 `GET` asking to switch to `websocket` (`Connection: upgrade`). Only WebSocket
/// goes through: any other `Upgrade` (`h2c` above all, SECURITY.md §2.3) is dropped as a
/// hop-by-hop header and the request is served as plain HTTP/1.1.
fn websocket_upgrade(parts: &mut http::request::Parts) -> Option<Upgrade> {
    if parts.version != Version::HTTP_11 || parts.method != Method::GET {
        return None;
    }
    let protocol = parts.headers.get(http::header::UPGRADE)?;
    if !protocol.as_bytes().eq_ignore_ascii_case(b"websocket") {
        return None;
    }
    let asks = parts
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !asks {
        return None;
    }
    let protocol = protocol.clone();
    let client = parts.extensions.remove::<hyper::upgrade::OnUpgrade>()?;
    Some(Upgrade { protocol, client })
}

/// Copies bytes both ways between an upgraded client and upstream until either side closes.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    service: String,
) {
    let (client, upstream) = match tokio::join!(client, upstream) {
        (Ok(c), Ok(u)) => (c, u),
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!(service = %service, error = %e, "WebSocket upgrade did not complete");
            return;
        }
    };
    let mut client = hyper_util::rt::TokioIo::new(client);
    let mut upstream = hyper_util::rt::TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(service = %service, error = %e, "WebSocket connection ended");
    }
}

#[allow(clippy::too_many_arguments)]
async fn send_with_retries(
    request: &mut Option<Request<UpstreamBody>>,
    service: &CompiledService,
    preserved_host: Option<HeaderValue>,
    template: Option<(&Template, &FinishHeaders<'_>)>,
    key: RequestKey,
    mut trace: Option<&mut RequestTrace>,
    attempts: &mut Attempts,
    upgrade: bool,
) -> Result<Response<ResponseBody>, ProxyError> {
    let mut retries_left = service.retries;
    let mut stale_skips = 0;
    let mut attempt = 0;
    loop {
        let peer = pick(service, &key, attempt)?;
        attempt += 1;
        let (pool, host_header) = peer.endpoint();
        // The request stays in its slot: each attempt borrows it (or, over hyper, takes it and
        // gets it back when it was never written).
        let Some(req) = request.as_mut() else {
            return Err(ProxyError::Internal("retry without a request"));
        };
        let host = preserved_host
            .clone()
            .unwrap_or_else(|| host_header.clone());
        match &service.http2 {
            // HTTP/2 carries the host in `:authority`, from an absolute URI.
            Some(scheme) => {
                let authority = http::uri::Authority::try_from(host.as_bytes())
                    .map_err(|_| ProxyError::BadRequest("Invalid Host"))?;
                let mut uri = http::uri::Parts::default();
                uri.scheme = Some(scheme.clone());
                uri.authority = Some(authority);
                uri.path_and_query = req.uri().path_and_query().cloned();
                *req.uri_mut() =
                    Uri::from_parts(uri).map_err(|_| ProxyError::Internal("upstream URI"))?;
                req.headers_mut().remove(HOST);
            }
            None => {
                req.headers_mut().insert(HOST, host);
            }
        }
        attempts.tries += 1;
        attempts.last = Some(std::sync::Arc::clone(pool));
        // Each attempt is a span, and the upstream continues the trace from it.
        let span = trace
            .as_deref()
            .map(|t| t.attempt(attempt, pool.host_shared(), pool.port(), req.headers_mut()));
        let mut end = |span: Option<AttemptSpan>, result: Result<u16, &'static str>| {
            if let (Some(s), Some(t)) = (span, trace.as_deref_mut()) {
                t.end_attempt(s, result);
            }
        };

        // A WebSocket handshake gets a connection of its own: it becomes the tunnel. A request
        // whose body is known, to an endpoint in the clear, goes over the task's own HTTP/1.1
        // client; the rest over hyper's.
        let native = !upgrade && pool.is_native() && h1::can_send(req);
        let idle = if native {
            pool.checkout_native().map(Link::H1)
        } else if upgrade {
            None
        } else {
            pool.checkout().map(Link::Hyper)
        };
        let (link, pooled) = match idle {
            Some(l) => (l, true),
            // Boxed: a connect's state (TCP, TLS and HTTP/2 handshakes) is several KB, and
            // this future would otherwise carry it on every request, pooled or not.
            None => match Box::pin(Link::connect(pool, service, upgrade, native)).await {
                Ok(l) => (l, false),
                Err(e) => {
                    end(
                        span,
                        Err(match e {
                            ProxyError::ConnectTimeout => "connect timeout",
                            _ => "connect failed",
                        }),
                    );
                    peer.report(match e {
                        ProxyError::ConnectTimeout => balancer::Outcome::Timeout,
                        _ => balancer::Outcome::TcpFailure,
                    });
                    // Nothing reached the upstream: any request may go to another attempt.
                    if retries_left > 0 {
                        retries_left -= 1;
                        tracing::debug!(service = %service.name, error = %e, "connect failed, retrying");
                        continue;
                    }
                    return Err(e);
                }
            },
        };

        let exchange = match link {
            Link::Hyper(sender) => match request.take() {
                Some(req) => Either::Left(over_hyper(sender, req, request, pool, !upgrade)),
                None => return Err(ProxyError::Internal("retry without a request")),
            },
            Link::H1(conn) => match request.as_ref() {
                Some(req) => Either::Right(over_h1(conn, req, pool, pooled)),
                None => return Err(ProxyError::Internal("retry without a request")),
            },
        };
        let result = tokio::time::timeout(service.read_timeout, exchange).await;
        match result {
            Ok(Ok(mut resp)) => {
                end(span, Ok(resp.status().as_u16()));
                peer.report(balancer::Outcome::Status(resp.status().as_u16()));
                // Kong's hash cookie, made up for a client that had none: appended, so the
                // upstream's own cookies stay.
                if let Some(cookie) = &key.set_cookie {
                    resp.headers_mut()
                        .append(http::header::SET_COOKIE, cookie.clone());
                }
                return Ok(resp);
            }
            // No retry after a timeout: the upstream may still be working on it, and retrying a
            // hung request multiplies the wait and the load.
            Err(_elapsed) => {
                end(span, Err("read timeout"));
                peer.report(balancer::Outcome::Timeout);
                return Err(ProxyError::ReadTimeout);
            }
            Ok(Err(Failure { error, replayable })) => {
                end(span, Err("upstream connection failed"));
                if replayable {
                    // Never written, or written on a pooled connection the upstream had closed:
                    // safe to send elsewhere. A stale pooled connection says nothing about the
                    // target's health.
                    if pooled && stale_skips < MAX_STALE_SKIPS {
                        stale_skips += 1;
                        attempt -= 1;
                        attempts.tries -= 1;
                        continue;
                    }
                    peer.report(balancer::Outcome::TcpFailure);
                    if retries_left > 0 {
                        retries_left -= 1;
                        continue;
                    }
                    return Err(crate::error::upstream_failure(error));
                }
                let err = error;
                // A body cut off at the client's size limit says nothing about the target.
                if !crate::error::body_too_large(&err) {
                    peer.report(balancer::Outcome::TcpFailure);
                }
                if let (Some((t, finish_headers)), true) = (template, retries_left > 0) {
                    retries_left -= 1;
                    let mut r = Request::new(UpstreamBody::Empty);
                    *r.method_mut() = t.method.clone();
                    *r.uri_mut() = t.uri.clone();
                    *r.version_mut() = if service.http2.is_some() {
                        Version::HTTP_2
                    } else {
                        Version::HTTP_11
                    };
                    *r.headers_mut() = t.headers.clone();
                    finish_headers(r.headers_mut());
                    *request = Some(r);
                    tracing::debug!(service = %service.name, error = %err, "idempotent request failed, retrying");
                    continue;
                }
                return Err(crate::error::upstream_failure(err));
            }
        }
    }
}

/// A failed exchange; `replayable` when the request (back in its slot) may go to another
/// connection.
struct Failure {
    error: UpstreamError,
    replayable: bool,
}

/// The connection one attempt goes over.
enum Link {
    /// hyper's client: streamed request bodies, TLS and HTTP/2 upstreams, WebSocket.
    Hyper(Sender),
    /// The request task's own HTTP/1.1 client ([`crate::h1`]).
    H1(Box<h1::Conn>),
}

impl Link {
    /// A new connection to `pool` for the attempt.
    async fn connect(
        pool: &EndpointPool,
        service: &CompiledService,
        upgrade: bool,
        native: bool,
    ) -> Result<Link, ProxyError> {
        if native {
            return pool
                .connect_native(service.connect_timeout, service.write_timeout)
                .await
                .map(Link::H1);
        }
        pool.connect_with(service.connect_timeout, service.write_timeout, upgrade)
            .await
            .map(Link::Hyper)
    }
}

/// Sends `req` over hyper's client and reads the response head; the connection goes back to
/// `pool` at once when `keep` (it takes the next request once this body is read). A request
/// hyper never wrote comes back into `slot`.
///
/// Built with `map`, not an async block: a block would keep the exchange's future twice (its
/// capture, and the copy it awaits), and this state is part of every request's future.
fn over_hyper<'a>(
    mut sender: Sender,
    req: Request<UpstreamBody>,
    slot: &'a mut Option<Request<UpstreamBody>>,
    pool: &'a std::sync::Arc<EndpointPool>,
    keep: bool,
) -> impl Future<Output = Result<Response<ResponseBody>, Failure>> + 'a {
    sender.send(req).map(move |result| match result {
        Ok(resp) => {
            if keep {
                pool.checkin(sender);
            }
            Ok(resp.map(ResponseBody::Hyper))
        }
        Err(mut e) => {
            *slot = e.take_message();
            Err(Failure {
                replayable: slot.is_some(),
                error: e.into_error().into(),
            })
        }
    })
}

/// Sends `req` over [`h1`] and reads the response head; the connection rides in the body and
/// goes back to `pool` when the body ends. Built as [`over_hyper`] is.
fn over_h1<'a>(
    conn: Box<h1::Conn>,
    req: &'a Request<UpstreamBody>,
    pool: &'a std::sync::Arc<EndpointPool>,
    pooled: bool,
) -> impl Future<Output = Result<Response<ResponseBody>, Failure>> + 'a {
    h1::send(conn, req, pool, pooled).map(|result| match result {
        Ok(resp) => Ok(resp.map(ResponseBody::H1)),
        Err(f) => Err(Failure {
            error: f.error.into(),
            replayable: f.replayable,
        }),
    })
}

/// Where one attempt goes: a service's single endpoint, or a target its balancer picked.
enum Peer<'a> {
    Direct(&'a std::sync::Arc<EndpointPool>, &'a HeaderValue),
    Balanced(Picked<'a>),
}

impl<'a> Peer<'a> {
    fn endpoint(&self) -> (&'a std::sync::Arc<EndpointPool>, &'a HeaderValue) {
        match self {
            Peer::Direct(pool, host) => (pool, host),
            Peer::Balanced(p) => {
                let t = p.target();
                (&t.pool, &t.host_header)
            }
        }
    }

    fn report(&self, outcome: balancer::Outcome) {
        if let Peer::Balanced(p) = self {
            p.report(outcome);
        }
    }
}

fn pick<'a>(
    service: &'a CompiledService,
    key: &RequestKey,
    attempt: u32,
) -> Result<Peer<'a>, ProxyError> {
    match &service.destination {
        Destination::Direct { pool, host_header } => Ok(Peer::Direct(pool, host_header)),
        Destination::Balanced(b) => b
            .pick_for(key, attempt)
            .map(Peer::Balanced)
            .ok_or(ProxyError::NoPeer),
    }
}
