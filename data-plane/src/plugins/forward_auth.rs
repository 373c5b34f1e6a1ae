//! forward-auth (Portico's own; the contract of Traefik's forwardAuth and nginx's
//! auth_request): every request is first shown to an auth service, as a `GET` to `url` with the
//! client's headers and where the request was going:
//!
//! | header               | value                                                      |
//! |----------------------|------------------------------------------------------------|
//! | `X-Forwarded-Method` | the client's method                                        |
//! | `X-Forwarded-Proto`  | `http` or `https`, as the request reached Portico          |
//! | `X-Forwarded-Host`   | the routing host (lowercase, no port)                      |
//! | `X-Forwarded-Uri`    | the request target as the client sent it (path and query)  |
//! | `X-Forwarded-For`    | the client IP, after trusted-proxy resolution              |
//! | `X-Request-Id`       | the request's id, to correlate both logs                   |
//! | `X-Consumer-*`, ...  | the consumer a built-in auth plugin already authenticated  |
//!
//! The client's own forwarding headers are never passed on (the auth service would believe
//! them), nor hop-by-hop headers, framing (`Content-Length`, `Transfer-Encoding`, `Expect`) or
//! `Host` (the auth service gets its own). The body stays with the upstream request.
//!
//! The answer decides:
//! - **2xx**: the request goes on; each header of `auth_response_headers` is copied from the
//!   auth response onto the upstream request, replacing the client's value, and removed when
//!   the auth response lacks it, so a client can never supply `X-User-Id` itself.
//! - **any other status** (3xx login redirects, 401, 403, ...): returned to the client as it
//!   was: status, headers (minus hop-by-hop), body.
//! - **no answer within `timeout`** (connect, send, headers and body): 503 "The authentication
//!   service is timing out".
//! - **unreachable, connection error, malformed answer** (a 1xx as the final answer, a body
//!   cut short, or one over [`MAX_BODY`], whatever the status: an answer is read whole before
//!   it counts): 500 "An unexpected error occurred", as Traefik and nginx's auth_request do.
//!
//! Both failures fail closed: nothing reaches the upstream unless the auth service said 2xx.
//! Calls reuse the proxy's own connection pools, keyed by the auth service's `host:port`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use portico_common::plugins::forward_auth::Config;

use super::{BuildEnv, Ctx, Flow, Plugin, Reply, Req};
use crate::headers::{host_header_value, strip_hop_by_hop};
use crate::pool::EndpointPool;
use crate::response::ProxyBody;
use crate::upstream_body::UpstreamBody;

/// The largest auth-service body relayed to a client (login pages and JSON errors are far
/// smaller); a bigger one is treated as a malformed answer rather than buffered or cut.
pub const MAX_BODY: usize = 64 * 1024;

/// How many dead pooled connections one call may skip before opening a new one (the auth
/// service closing idle keep-alive connections must not become client errors).
const MAX_STALE_SKIPS: u32 = 4;

/// Client headers an auth service would take for Portico's own statements about the request:
/// the proxy's forwarding headers plus the two only forward-auth sends.
const FORWARD_AUTH_ONLY: [HeaderName; 2] = [
    HeaderName::from_static("x-forwarded-method"),
    HeaderName::from_static("x-forwarded-uri"),
];

/// The forward-auth plugin.
#[derive(Debug)]
pub struct ForwardAuth {
    pool: Arc<EndpointPool>,
    host_header: HeaderValue,
    /// Origin-form target of the auth request (`url`'s path and query).
    target: Uri,
    timeout: Duration,
    /// `auth_request_headers`; `None` sends every client header.
    request_headers: Option<Vec<HeaderName>>,
    /// `auth_response_headers`.
    response_headers: Vec<HeaderName>,
}

/// Why the auth service gave no usable answer.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("timed out")]
    Timeout,
    #[error("connecting: {0}")]
    Connect(crate::error::ProxyError),
    #[error("request failed: {0}")]
    Http(hyper::Error),
    #[error("informational status {0} as a final answer")]
    Informational(StatusCode),
    #[error("response body larger than {MAX_BODY} bytes")]
    BodyTooLarge,
    #[error("reading the response body: {0}")]
    Body(String),
}

impl Plugin for ForwardAuth {
    const NAME: &'static str = "forward-auth";
    type Config = Config;

    fn build(config: Config, env: &BuildEnv<'_>) -> Result<Self, String> {
        let (host, port, target) = endpoint(&config.url)?;
        let names = |list: &[String], field: &str| -> Result<Vec<HeaderName>, String> {
            list.iter()
                .map(|n| {
                    HeaderName::from_bytes(n.as_bytes())
                        .map_err(|_| format!("{field}: '{n}' is not a header name"))
                })
                .collect()
        };
        let request_headers = match config.auth_request_headers.as_slice() {
            [] => None,
            list => Some(names(list, "auth_request_headers")?),
        };
        Ok(ForwardAuth {
            pool: env.pools.endpoint(&host, port),
            host_header: host_header_value(&host, port, 80),
            target,
            timeout: Duration::from_millis(config.timeout),
            request_headers,
            response_headers: names(&config.auth_response_headers, "auth_response_headers")?,
        })
    }

    async fn access<'r>(&'r self, req: &mut Req<'_>, ctx: &mut Ctx<'r>) -> Flow {
        let request = self.auth_request(req, ctx);
        // Boxed: the call's state (a client connection and its request) is several KB, and every
        // route's plugin-chain future would otherwise be that large whether or not it uses
        // this plugin.
        let answer = match tokio::time::timeout(self.timeout, Box::pin(self.call(request))).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return self.failed(&e),
            Err(_elapsed) => return self.failed(&CallError::Timeout),
        };
        let (parts, body) = answer.into_parts();
        if parts.status.is_success() {
            for name in &self.response_headers {
                req.headers.remove(name);
                for v in parts.headers.get_all(name) {
                    req.headers.append(name.clone(), v.clone());
                }
            }
            return Flow::Continue;
        }
        let mut resp = Response::new(ProxyBody::full(body));
        *resp.status_mut() = parts.status;
        *resp.headers_mut() = parts.headers;
        strip_hop_by_hop(resp.headers_mut());
        // The body was re-read whole; hyper frames it from its real length.
        resp.headers_mut().remove(CONTENT_LENGTH);
        tracing::debug!(
            plugin = Self::NAME,
            status = parts.status.as_u16(),
            "auth service refused the request"
        );
        Flow::Respond(Reply::Response(Box::new(resp)))
    }
}

impl ForwardAuth {
    /// The request shown to the auth service.
    fn auth_request(&self, req: &Req<'_>, ctx: &Ctx<'_>) -> Request<UpstreamBody> {
        let mut headers = match &self.request_headers {
            None => req.headers.clone(),
            Some(names) => {
                let mut h = HeaderMap::with_capacity(names.len() + 8);
                for name in names {
                    for v in req.headers.get_all(name) {
                        h.append(name.clone(), v.clone());
                    }
                }
                h
            }
        };
        // Hop-by-hop is judged on the client's `Connection`, which only the full map carries:
        // a listed header must not reach the auth service even when it is whitelisted.
        strip_connection_listed(&mut headers, req.headers);
        strip_hop_by_hop(&mut headers);
        for name in [CONTENT_LENGTH, TRANSFER_ENCODING, EXPECT, HOST] {
            headers.remove(name);
        }
        for name in crate::headers::FORWARDING.iter().chain(&FORWARD_AUTH_ONLY) {
            headers.remove(name);
        }
        // Only a consumer a plugin authenticated; clients' own identity headers were removed
        // before the chain ran.
        ctx.identity_headers(&mut headers);

        let set = |h: &mut HeaderMap, name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(name, v);
            }
        };
        set(&mut headers, "x-forwarded-method", req.method.as_str());
        set(
            &mut headers,
            "x-forwarded-proto",
            if req.https { "https" } else { "http" },
        );
        set(&mut headers, "x-forwarded-host", req.host);
        set(
            &mut headers,
            "x-forwarded-uri",
            req.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        );
        set(&mut headers, "x-forwarded-for", &req.client_ip.to_string());
        headers.insert("x-request-id", req.request_id.clone());
        headers.insert(HOST, self.host_header.clone());

        let mut request = Request::new(UpstreamBody::Empty);
        *request.method_mut() = Method::GET;
        *request.uri_mut() = self.target.clone();
        *request.headers_mut() = headers;
        request
    }

    /// One exchange with the auth service, body read (the caller bounds the time).
    async fn call(&self, request: Request<UpstreamBody>) -> Result<Response<Bytes>, CallError> {
        let mut request = request;
        let mut stale_skips = 0;
        let (sender, response) = loop {
            let (mut sender, pooled) = match self.pool.checkout() {
                Some(s) => (s, true),
                None => {
                    let s = self
                        .pool
                        .connect(self.timeout, self.timeout)
                        .await
                        .map_err(CallError::Connect)?;
                    (s, false)
                }
            };
            match sender.send(request).await {
                Ok(resp) => break (sender, resp),
                Err(mut e) => match e.take_message() {
                    // Never written, so safe to send again: the pooled connection had died.
                    Some(unsent) if pooled && stale_skips < MAX_STALE_SKIPS => {
                        stale_skips += 1;
                        request = unsent;
                    }
                    _ => return Err(CallError::Http(e.into_error())),
                },
            }
        };
        if response.status().is_informational() {
            return Err(CallError::Informational(response.status()));
        }
        let (parts, body) = response.into_parts();
        let body = read_capped(body).await?;
        // Only now: a connection whose answer was not read to the end is not reusable.
        self.pool.checkin(sender);
        Ok(Response::from_parts(parts, body))
    }

    /// The fail-closed answer for a call that got no usable response.
    fn failed(&self, e: &CallError) -> Flow {
        // The endpoint only: the URL's query and the client's headers may carry secrets.
        tracing::warn!(
            plugin = Self::NAME,
            auth_service = %format_args!("{}:{}", self.pool.host(), self.pool.port()),
            error = %e,
            "auth service gave no usable answer; refusing the request"
        );
        Flow::Respond(match e {
            CallError::Timeout => Reply::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The authentication service is timing out",
            ),
            _ => Reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "An unexpected error occurred",
            ),
        })
    }
}

/// The auth service's host (IPv6 without brackets), port and origin-form target, from an
/// `http://` URL the loader validated.
fn endpoint(url: &str) -> Result<(String, u16, Uri), String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("url '{url}' is not a valid URL: {e}"))?;
    if !uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("http"))
    {
        return Err(format!("url '{url}' must be an http:// URL"));
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("url '{url}' has no host"))?;
    // `Uri::host` keeps an IPv6 literal's brackets; the pool wants the bare address.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let target: Uri = uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .parse()
        .map_err(|e| format!("url '{url}' has an invalid path: {e}"))?;
    Ok((host.to_owned(), uri.port_u16().unwrap_or(80), target))
}

/// Reads a response body of at most [`MAX_BODY`] bytes. Reading it to the end also lets the
/// connection go back to the pool.
async fn read_capped(body: Incoming) -> Result<Bytes, CallError> {
    match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(CallError::BodyTooLarge),
        Err(e) => Err(CallError::Body(e.to_string())),
    }
}

/// Removes from `headers` every header the client's `Connection` (in `client`) names.
fn strip_connection_listed(headers: &mut HeaderMap, client: &HeaderMap) {
    for v in client.get_all(http::header::CONNECTION) {
        let Ok(s) = v.to_str() else { continue };
        for name in s.split(',').map(str::trim) {
            if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                headers.remove(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn the_endpoint_comes_from_the_url() {
        let (host, port, target) = endpoint("http://auth.internal/verify?a=1").unwrap();
        assert_eq!(
            (host.as_str(), port, target.to_string().as_str()),
            ("auth.internal", 80, "/verify?a=1")
        );
        let (host, port, target) = endpoint("HTTP://[::1]:9000").unwrap();
        assert_eq!(
            (host.as_str(), port, target.to_string().as_str()),
            ("::1", 9000, "/")
        );
        assert!(endpoint("https://auth.internal/").is_err());
        assert!(endpoint("/verify").is_err());
    }
}
