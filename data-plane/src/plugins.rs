//! The plugin pipeline: one trait with explicit phases, a closed registry of the plugins this
//! build runs, Kong's execution order (one table, [`PRIORITY`]) and Kong's precedence (which
//! config of a plugin applies to a request: [`chain`]).
//!
//! Instances are built once per snapshot from the typed config the loader validated
//! (`portico_common::plugins::PluginConfig`); the request path only walks a prebuilt chain.
//!
//! Adding a plugin touches a fixed list of places (CONTRIBUTING.md, "Adding a plugin"): its
//! config in `common/src/plugins/`, its behaviour in `plugins/<name>.rs` implementing
//! [`Plugin`], one variant in [`Instance`] (the compiler then lists every `match` to extend),
//! its row in [`PRIORITY`], and its tests.

pub mod acl;
pub mod basic_auth;
pub mod chain;
pub mod circuit_breaker;
pub mod correlation_id;
pub mod forward_auth;
pub mod ip_restriction;
pub mod jwt;
pub mod key_auth;
pub mod opentelemetry;
pub mod prometheus;
pub mod rate_limiting;
pub mod request_size_limiting;
pub mod request_termination;

use std::borrow::Cow;
use std::future::Future;
use std::net::IpAddr;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use portico_common::plugins::PluginConfig;
use portico_common::snapshot::{Consumer, Route, Service, Snapshot};
use uuid::Uuid;

use crate::consumers::Consumers;
use crate::pool::Pools;
use crate::response::{error_response, ErrorFormat, ProxyBody};
use crate::upstream_body::UpstreamBody;

pub use chain::{Chain, Chains};

/// Kong's PRIORITY of each plugin Portico runs (higher runs first; equal priorities run by name
/// descending, K:kong/db/dao/plugins.lua). Kong's numbers are kept so a Kong user's mental model
/// (and any plugin ordering they rely on) carries over. The reason column is why the position
/// is right, not just Kong's say-so.
pub const PRIORITY: &[(&str, i32, &str)] = &[
    (
        "correlation-id",
        100001,
        "first, as in Kong: every later plugin, the upstream and every answer (also a refusal) \
         can carry the id",
    ),
    (
        "jwt",
        1450,
        "authentication first: every later plugin may depend on who the consumer is",
    ),
    (
        "key-auth",
        1250,
        "authentication; after jwt as in Kong, so with `anonymous` set on both a valid JWT wins",
    ),
    (
        "basic-auth",
        1100,
        "authentication; the last of the three, as in Kong",
    ),
    (
        "forward-auth",
        1000,
        "Portico's own: external authentication after the built-in ones (so their consumer is \
         known to it) and before ip-restriction and acl, like Kong's ldap-auth/hmac-auth band",
    ),
    (
        "ip-restriction",
        990,
        "after authentication as in Kong (it does not need the consumer, but a consumer-scoped \
         ip-restriction must resolve after auth), before any plugin that does work",
    ),
    (
        "request-size-limiting",
        951,
        "before acl as in Kong: an oversized body is refused before any authorisation work, \
         and before anything reads the body",
    ),
    (
        "acl",
        950,
        "authorisation needs the authenticated consumer and its groups, so after every auth \
         plugin",
    ),
    (
        "rate-limiting",
        910,
        "after authentication and acl (Kong's place): limits count per consumer, and requests \
         refused earlier do not use up the allowance",
    ),
    (
        "circuit-breaker",
        900,
        "Portico's own, after rate-limiting (in Kong's response-ratelimiting slot): fail fast \
         only for requests that would otherwise have gone upstream",
    ),
    (
        "opentelemetry",
        14,
        "Kong's place, late among the plugins: the proxy starts the trace before any plugin \
         runs (the chain hands it the pipeline), so the position only orders its header \
         clearing after every plugin that reads the client's headers",
    ),
    (
        "prometheus",
        13,
        "Kong's place, with the loggers: it does no work per request (metrics are recorded \
         once the response is known) and its per_consumer switch is read when the config is \
         compiled, after auth plugins have named the consumer",
    ),
    (
        "request-termination",
        2,
        "last, as in Kong: a consumer-scoped termination can only resolve once auth has run, \
         and a terminated request has still passed every check in front of it",
    ),
];

/// The priority of `name` (plugins Portico does not run sort last).
pub fn priority(name: &str) -> i32 {
    PRIORITY
        .iter()
        .find(|(n, _, _)| *n == name)
        .map_or(i32::MIN, |(_, p, _)| *p)
}

/// What a phase decided.
#[derive(Debug)]
pub enum Flow {
    /// Go on with the next plugin, then the upstream.
    Continue,
    /// Answer the client now; nothing reaches the upstream.
    Respond(Reply),
}

/// A response a plugin answers with instead of proxying.
#[derive(Debug)]
pub enum Reply {
    /// Kong's `kong.response.error`: the error template negotiated from `Accept`, with the
    /// request id (KONG.md §0), plus the plugin's headers (e.g. `WWW-Authenticate`).
    Error {
        status: StatusCode,
        message: Cow<'static, str>,
        headers: HeaderMap,
    },
    /// A complete response: Kong's `kong.response.exit` JSON bodies (no request id),
    /// request-termination's configured body, forward-auth relaying its auth service.
    /// Boxed: a streamed body is large and replies are rare next to `Flow::Continue`.
    Response(Box<Response<ProxyBody>>),
}

impl Reply {
    /// `kong.response.error(status, message)`.
    pub fn error(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Reply {
        Reply::Error {
            status,
            message: message.into(),
            headers: HeaderMap::new(),
        }
    }

    /// `kong.response.exit(status, body)` with a JSON body, written as given.
    pub fn json(status: StatusCode, body: &serde_json::Value) -> Reply {
        Reply::Response(Box::new(crate::response::json_response(status, body)))
    }

    /// Adds a header to the reply.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Reply {
        match &mut self {
            Reply::Error { headers, .. } => {
                headers.insert(name, value);
            }
            Reply::Response(r) => {
                r.headers_mut().insert(name, value);
            }
        }
        self
    }

    /// The response the client gets.
    pub fn into_response(self, request_id: &str, format: ErrorFormat) -> Response<ProxyBody> {
        match self {
            Reply::Error {
                status,
                message,
                headers,
            } => {
                let mut resp = error_response(status, &message, request_id, format);
                resp.headers_mut().extend(headers);
                resp
            }
            Reply::Response(r) => *r,
        }
    }
}

/// The request as plugins see it in the access phase. What they change goes upstream.
pub struct Req<'a> {
    pub method: &'a Method,
    /// The canonical path (what routing matched).
    pub path: &'a str,
    /// The request target as the client sent it.
    pub uri: &'a Uri,
    /// The client's headers, minus the identity headers no client may set; the upstream gets
    /// what is left here after the chain.
    pub headers: &'a mut HeaderMap,
    /// The raw query string the upstream gets (without `?`); rewritten when a plugin hides a
    /// credential passed in it.
    pub query: Option<Cow<'a, str>>,
    /// The request body; [`Req::body_bytes`] buffers it for the plugins that read it.
    pub body: &'a mut UpstreamBody,
    /// The client address (after trusted-proxy X-Forwarded-For resolution).
    pub client_ip: IpAddr,
    /// Whether the client reached us over TLS (or a trusted proxy said so).
    pub https: bool,
    /// The routing host (lowercase, no port).
    pub host: &'a str,
    pub request_id: &'a HeaderValue,
}

/// Why a request body could not be read for a plugin.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    #[error("reading the request body: {0}")]
    Read(#[from] hyper::Error),
}

impl Req<'_> {
    /// The whole request body, buffered (at most `limit` bytes) and kept for the upstream.
    /// Only plugins that must read the body call this (key-auth with `key_in_body`); every
    /// other request streams.
    pub async fn body_bytes(&mut self, limit: usize) -> Result<Bytes, BodyError> {
        match std::mem::replace(self.body, UpstreamBody::Empty) {
            UpstreamBody::Empty => Ok(Bytes::new()),
            UpstreamBody::Buffered(b) => {
                let bytes = b.unwrap_or_default();
                *self.body = UpstreamBody::Buffered(Some(bytes.clone()));
                Ok(bytes)
            }
            UpstreamBody::Limited {
                inner,
                limit: max,
                seen,
            } => {
                // A size limit already applies: read no further than it allows.
                let left = usize::try_from(max.saturating_sub(seen)).unwrap_or(usize::MAX);
                let limited = http_body_util::Limited::new(inner, limit.min(left));
                let bytes = match limited.collect().await {
                    Ok(c) => c.to_bytes(),
                    Err(e) => {
                        return Err(match e.downcast::<hyper::Error>() {
                            Ok(h) => BodyError::Read(*h),
                            Err(_) => BodyError::TooLarge(limit.min(left)),
                        })
                    }
                };
                *self.body = UpstreamBody::Buffered(Some(bytes.clone()));
                Ok(bytes)
            }
            UpstreamBody::Client(incoming) => {
                let limited = http_body_util::Limited::new(incoming, limit);
                let bytes = match limited.collect().await {
                    Ok(c) => c.to_bytes(),
                    Err(e) => {
                        return Err(match e.downcast::<hyper::Error>() {
                            Ok(h) => BodyError::Read(*h),
                            Err(_) => BodyError::TooLarge(limit),
                        })
                    }
                };
                *self.body = UpstreamBody::Buffered(Some(bytes.clone()));
                Ok(bytes)
            }
        }
    }

    /// The first value of query argument `name` (form-decoded), and whether it appears more
    /// than once.
    pub fn query_arg(&self, name: &str) -> Option<(Cow<'_, str>, bool)> {
        let q = self.query.as_deref()?;
        let mut found = form_urlencoded::parse(q.as_bytes()).filter(|(k, _)| k == name);
        let first = found.next()?.1;
        Some((first, found.next().is_some()))
    }

    /// Removes every occurrence of query argument `name` (hide_credentials).
    pub fn remove_query_arg(&mut self, name: &str) {
        let Some(q) = self.query.as_deref() else {
            return;
        };
        let kept: Vec<&str> = q
            .split('&')
            .filter(|pair| {
                let key = pair.split('=').next().unwrap_or("");
                form_urlencoded::parse(key.as_bytes())
                    .next()
                    .is_none_or(|(k, _)| k != name)
            })
            .collect();
        self.query = (!kept.is_empty()).then(|| Cow::Owned(kept.join("&")));
    }
}

/// Per-request plugin state: who the client is, once an auth plugin said so.
pub struct Ctx<'r> {
    pub snapshot: &'r Snapshot,
    pub consumers: &'r Consumers,
    /// The authenticated (or anonymous) consumer.
    pub consumer: Option<&'r Consumer>,
    /// The credential that authenticated the request; `None` for the anonymous consumer.
    pub credential: Option<Credential<'r>>,
    /// The anonymous consumer stands in for a failed authentication.
    pub anonymous: bool,
    /// Groups an external authenticator vouched for (X-Authenticated-Groups).
    pub authenticated_groups: Option<Vec<String>>,
    /// The matched route (set by the proxy before the chain runs).
    pub route: Option<&'r Route>,
    /// The route's service, if it has one.
    pub service: Option<&'r Service>,
    /// Headers plugins add to the response the client gets, proxied or not (Kong's
    /// `kong.response.set_header` in access: rate-limit headers, say).
    pub response_headers: ResponseHeaders,
}

/// Headers plugins set on the client's response: a handful at most, so a list. A `HeaderMap`
/// would hash every name twice, here and again when it is merged into the response.
#[derive(Debug, Default)]
pub struct ResponseHeaders(Vec<(HeaderName, HeaderValue)>);

impl ResponseHeaders {
    /// Sets `name` to `value`, replacing what a plugin set before (Kong's `set_header`).
    pub fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// Room for `n` more headers.
    pub fn reserve(&mut self, n: usize) {
        self.0.reserve(n);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets each header on `headers`, replacing the upstream's values of the same name.
    pub fn set_on(self, headers: &mut HeaderMap) {
        for (name, value) in self.0 {
            headers.insert(name, value);
        }
    }

    /// Adds the headers `headers` lacks (on a plugin's own reply, which keeps its own).
    pub fn add_missing_to(self, headers: &mut HeaderMap) {
        for (name, value) in self.0 {
            headers.entry(name).or_insert(value);
        }
    }
}

/// The credential that authenticated a request; its identifier goes upstream in
/// `X-Credential-Identifier` (KONG.md §3.2).
#[derive(Debug, Clone, Copy)]
pub enum Credential<'r> {
    /// key-auth sends the credential's id.
    Id(Uuid),
    /// jwt sends the secret's key, basic-auth the username.
    Name(&'r str),
}

impl<'r> Ctx<'r> {
    /// A request nobody has authenticated yet.
    pub fn new(snapshot: &'r Snapshot, consumers: &'r Consumers) -> Self {
        Ctx {
            snapshot,
            consumers,
            consumer: None,
            credential: None,
            anonymous: false,
            authenticated_groups: None,
            route: None,
            service: None,
            response_headers: ResponseHeaders::default(),
        }
    }

    /// Kong's `set_consumer`: the request is now this consumer's.
    pub fn authenticate(&mut self, consumer: &'r Consumer, credential: Credential<'r>) {
        self.consumer = Some(consumer);
        self.credential = Some(credential);
        self.anonymous = false;
    }

    /// A failed authentication with `anonymous` configured: the request continues as that
    /// consumer, or fails with Kong's 500 when it does not exist (KONG.md §3.2).
    pub fn authenticate_anonymous(&mut self, reference: &str) -> Flow {
        match self.consumers.find(self.snapshot, reference) {
            Some(c) => {
                self.consumer = Some(c);
                self.credential = None;
                self.anonymous = true;
                Flow::Continue
            }
            None => Flow::Respond(Reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("anonymous consumer {reference} is configured but doesn't exist"),
            )),
        }
    }

    /// Writes the identity headers the upstream gets (KONG.md §3.2). Clients' own were
    /// removed before the chain ran, so an absent value stays absent.
    pub fn identity_headers(&self, headers: &mut HeaderMap) {
        let Some(c) = self.consumer else {
            return;
        };
        let mut set = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        };
        // Formatted on the stack: `to_string` would run `fmt` and allocate, twice a request.
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        set("x-consumer-id", c.id.hyphenated().encode_lower(&mut buf));
        if let Some(v) = &c.custom_id {
            set("x-consumer-custom-id", v);
        }
        if let Some(v) = &c.username {
            set("x-consumer-username", v);
        }
        match self.credential {
            Some(Credential::Id(id)) => set(
                "x-credential-identifier",
                id.hyphenated().encode_lower(&mut buf),
            ),
            Some(Credential::Name(n)) => set("x-credential-identifier", n),
            None => {}
        }
        if self.anonymous {
            set("x-anonymous-consumer", "true");
        }
    }
}

/// What building an instance may use besides its config.
#[derive(Clone, Copy)]
pub struct BuildEnv<'a> {
    /// Connection pools, for plugins that call out (forward-auth).
    pub pools: &'a Pools,
    /// The plugins this data plane may run (`--plugins`).
    pub enabled: &'a Enabled,
    /// The id of the plugin entity being built (nil outside [`Chains::build`]).
    pub id: Uuid,
    /// `--tracing-sampling-rate`: what an `opentelemetry` plugin without `sampling_rate` samples.
    pub sampling_rate: f64,
    /// The node id, the `service.instance.id` of the spans an `opentelemetry` plugin exports.
    pub node_id: &'a str,
    /// The instance with this id in the runtime being replaced, if any. State that must
    /// survive a config swap (rate-limit counters, circuit state, a Redis connection) is taken
    /// from it, typically as an `Arc` the new instance shares.
    pub previous: Option<&'a Instance>,
}

impl<'a> BuildEnv<'a> {
    /// An environment for building without a previous runtime, with the default sampling
    /// rate and no node id.
    pub fn new(pools: &'a Pools, enabled: &'a Enabled) -> Self {
        BuildEnv {
            pools,
            enabled,
            id: Uuid::nil(),
            sampling_rate: crate::telemetry::DEFAULT_SAMPLING_RATE,
            node_id: "",
            previous: None,
        }
    }

    /// The same environment with the node's tracing settings (`--tracing-sampling-rate`, node
    /// id) from `telemetry`.
    pub fn with_telemetry(self, telemetry: &'a crate::telemetry::Telemetry) -> Self {
        BuildEnv {
            sampling_rate: telemetry.sampling_rate,
            node_id: &telemetry.node_id,
            ..self
        }
    }
}

/// How the upstream exchange of a request ended, for the `log` phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status (its body may still be streaming).
    Status(StatusCode),
    /// No usable answer: a connect error, a timeout, an invalid response.
    Failed {
        /// The status the client gets instead (502, 503, 504).
        status: StatusCode,
        /// The failure was a timeout (connect or read).
        timeout: bool,
    },
}

/// The plugins a data plane runs: Kong's `plugins` property. `bundled` (the default) is every
/// plugin of this build; a narrower list makes the node refuse (NACK) any config that uses
/// another, as a node of an older build would, instead of serving it without that plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enabled(Option<Vec<&'static str>>);

impl Enabled {
    /// Parses Kong's syntax: `bundled`, `off` (none), and plugin names, combined.
    pub fn parse(items: &[String]) -> Result<Enabled, String> {
        let mut names: Vec<&'static str> = Vec::new();
        for item in items.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
            match item {
                "bundled" => return Ok(Enabled(None)),
                "off" => {}
                name => match PluginConfig::NAMES.iter().find(|n| **n == name) {
                    Some(n) => names.push(n),
                    None => {
                        return Err(format!(
                            "unknown plugin '{name}' (expected 'bundled', 'off' or any of: {})",
                            PluginConfig::NAMES.join(", ")
                        ))
                    }
                },
            }
        }
        Ok(Enabled(Some(names)))
    }

    /// Whether `name` may run here.
    pub fn allows(&self, name: &str) -> bool {
        self.0.as_ref().is_none_or(|list| list.contains(&name))
    }
}

/// One plugin's behaviour. Instances are built once per snapshot; the request path calls the
/// phases. Every phase defaults to doing nothing.
pub trait Plugin: Sized + Send + Sync {
    /// The plugin's name in config.
    const NAME: &'static str;
    /// Its typed, validated config (`portico_common::plugins`).
    type Config;

    /// Builds the instance; an error names what is wrong (the caller adds the entity path).
    fn build(config: Self::Config, env: &BuildEnv<'_>) -> Result<Self, String>;

    /// The access phase: before the request goes upstream, in [`PRIORITY`] order.
    fn access<'r>(
        &'r self,
        req: &mut Req<'_>,
        ctx: &mut Ctx<'r>,
    ) -> impl Future<Output = Flow> + Send {
        let _ = (req, ctx);
        std::future::ready(Flow::Continue)
    }

    /// The log phase: once the upstream exchange ended (response headers received, or the
    /// attempt failed), for the plugins whose access phase ran and let the request through.
    /// Must not block: record and return.
    fn log(&self, outcome: Outcome, ctx: &Ctx<'_>) {
        let _ = (outcome, ctx);
    }
}

/// The closed registry: every plugin this build runs. An exhaustive `match` on it is how the
/// compiler lists what a new plugin still needs.
#[derive(Debug)]
pub enum Instance {
    KeyAuth(key_auth::KeyAuth),
    Jwt(jwt::Jwt),
    BasicAuth(basic_auth::BasicAuth),
    Acl(acl::Acl),
    IpRestriction(ip_restriction::IpRestriction),
    RequestTermination(request_termination::RequestTermination),
    ForwardAuth(forward_auth::ForwardAuth),
    RateLimiting(rate_limiting::RateLimiting),
    RequestSizeLimiting(request_size_limiting::RequestSizeLimiting),
    CircuitBreaker(circuit_breaker::CircuitBreaker),
    CorrelationId(correlation_id::CorrelationId),
    Opentelemetry(opentelemetry::Opentelemetry),
    Prometheus(prometheus::Prometheus),
}

impl Instance {
    /// Builds the instance for a validated config.
    pub fn build(config: PluginConfig, env: &BuildEnv<'_>) -> Result<Instance, String> {
        Ok(match config {
            PluginConfig::KeyAuth(c) => Instance::KeyAuth(key_auth::KeyAuth::build(c, env)?),
            PluginConfig::Jwt(c) => Instance::Jwt(jwt::Jwt::build(c, env)?),
            PluginConfig::BasicAuth(c) => {
                Instance::BasicAuth(basic_auth::BasicAuth::build(c, env)?)
            }
            PluginConfig::Acl(c) => Instance::Acl(acl::Acl::build(c, env)?),
            PluginConfig::IpRestriction(c) => {
                Instance::IpRestriction(ip_restriction::IpRestriction::build(c, env)?)
            }
            PluginConfig::RequestTermination(c) => Instance::RequestTermination(
                request_termination::RequestTermination::build(c, env)?,
            ),
            PluginConfig::ForwardAuth(c) => {
                Instance::ForwardAuth(forward_auth::ForwardAuth::build(c, env)?)
            }
            PluginConfig::RateLimiting(c) => {
                Instance::RateLimiting(rate_limiting::RateLimiting::build(c, env)?)
            }
            PluginConfig::RequestSizeLimiting(c) => Instance::RequestSizeLimiting(
                request_size_limiting::RequestSizeLimiting::build(c, env)?,
            ),
            PluginConfig::CircuitBreaker(c) => {
                Instance::CircuitBreaker(circuit_breaker::CircuitBreaker::build(c, env)?)
            }
            PluginConfig::CorrelationId(c) => {
                Instance::CorrelationId(correlation_id::CorrelationId::build(c, env)?)
            }
            PluginConfig::Opentelemetry(c) => {
                Instance::Opentelemetry(opentelemetry::Opentelemetry::build(c, env)?)
            }
            PluginConfig::Prometheus(c) => {
                Instance::Prometheus(prometheus::Prometheus::build(c, env)?)
            }
        })
    }

    /// The plugin's name.
    pub fn name(&self) -> &'static str {
        match self {
            Instance::KeyAuth(_) => key_auth::KeyAuth::NAME,
            Instance::Jwt(_) => jwt::Jwt::NAME,
            Instance::BasicAuth(_) => basic_auth::BasicAuth::NAME,
            Instance::Acl(_) => acl::Acl::NAME,
            Instance::IpRestriction(_) => ip_restriction::IpRestriction::NAME,
            Instance::RequestTermination(_) => request_termination::RequestTermination::NAME,
            Instance::ForwardAuth(_) => forward_auth::ForwardAuth::NAME,
            Instance::RateLimiting(_) => rate_limiting::RateLimiting::NAME,
            Instance::RequestSizeLimiting(_) => request_size_limiting::RequestSizeLimiting::NAME,
            Instance::CircuitBreaker(_) => circuit_breaker::CircuitBreaker::NAME,
            Instance::CorrelationId(_) => correlation_id::CorrelationId::NAME,
            Instance::Opentelemetry(_) => opentelemetry::Opentelemetry::NAME,
            Instance::Prometheus(_) => prometheus::Prometheus::NAME,
        }
    }

    /// The trace pipeline of an `opentelemetry` instance.
    pub fn tracing(&self) -> Option<&std::sync::Arc<crate::telemetry::trace::Tracing>> {
        match self {
            Instance::Opentelemetry(p) => Some(p.tracing()),
            _ => None,
        }
    }

    /// Whether a `prometheus` instance counts requests by consumer.
    pub fn per_consumer(&self) -> bool {
        matches!(self, Instance::Prometheus(p) if p.per_consumer())
    }

    /// Runs the log phase.
    pub fn log(&self, outcome: Outcome, ctx: &Ctx<'_>) {
        match self {
            Instance::KeyAuth(p) => p.log(outcome, ctx),
            Instance::Jwt(p) => p.log(outcome, ctx),
            Instance::BasicAuth(p) => p.log(outcome, ctx),
            Instance::Acl(p) => p.log(outcome, ctx),
            Instance::IpRestriction(p) => p.log(outcome, ctx),
            Instance::RequestTermination(p) => p.log(outcome, ctx),
            Instance::ForwardAuth(p) => p.log(outcome, ctx),
            Instance::RateLimiting(p) => p.log(outcome, ctx),
            Instance::RequestSizeLimiting(p) => p.log(outcome, ctx),
            Instance::CircuitBreaker(p) => p.log(outcome, ctx),
            Instance::CorrelationId(p) => p.log(outcome, ctx),
            Instance::Opentelemetry(p) => p.log(outcome, ctx),
            Instance::Prometheus(p) => p.log(outcome, ctx),
        }
    }

    /// Runs the access phase.
    pub async fn access<'r>(&'r self, req: &mut Req<'_>, ctx: &mut Ctx<'r>) -> Flow {
        match self {
            Instance::KeyAuth(p) => p.access(req, ctx).await,
            Instance::Jwt(p) => p.access(req, ctx).await,
            Instance::BasicAuth(p) => p.access(req, ctx).await,
            Instance::Acl(p) => p.access(req, ctx).await,
            Instance::IpRestriction(p) => p.access(req, ctx).await,
            Instance::RequestTermination(p) => p.access(req, ctx).await,
            Instance::ForwardAuth(p) => p.access(req, ctx).await,
            Instance::RateLimiting(p) => p.access(req, ctx).await,
            Instance::RequestSizeLimiting(p) => p.access(req, ctx).await,
            Instance::CircuitBreaker(p) => p.access(req, ctx).await,
            Instance::CorrelationId(p) => p.access(req, ctx).await,
            Instance::Opentelemetry(p) => p.access(req, ctx).await,
            Instance::Prometheus(p) => p.access(req, ctx).await,
        }
    }
}

#[cfg(test)]
mod tests;
