//! The one proxy error type. Every way a request can fail maps here, exhaustively, to the status
//! code and Kong message the client sees, to who failed, and to whether another attempt is safe.

use http::StatusCode;

/// Who caused a failure (for logs and, later, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something we refuse.
    Downstream,
    /// The upstream could not be reached or misbehaved.
    Upstream,
    /// Our own configuration or state.
    Internal,
}

/// Everything that can end a proxied request with an error response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("no route matched")]
    NoRoute,
    #[error("route accepts https only")]
    HttpsRequired,
    #[error("route accepts https only; redirecting")]
    HttpsRedirect { code: u16, location: String },
    #[error("gRPC route requested over HTTP/1")]
    Http2Required,
    #[error("gRPC route requested without a gRPC content type")]
    NotGrpc,
    #[error("route has no service")]
    NoService,
    #[error("no configuration loaded")]
    NotReady,
    #[error("no healthy target in the upstream")]
    NoPeer,
    #[error("name resolution failed for {0}")]
    Resolve(String),
    #[error("connecting upstream timed out")]
    ConnectTimeout,
    #[error("connecting upstream failed: {0}")]
    Connect(std::io::Error),
    #[error("upstream did not answer within read_timeout")]
    ReadTimeout,
    #[error("upstream request failed: {0}")]
    Upstream(UpstreamError),
    #[error("internal error: {0}")]
    Internal(&'static str),
    #[error("request body larger than the route's size limit")]
    PayloadTooLarge,
}

impl ProxyError {
    /// The status code the client receives (KONG.md §0, §2.4).
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::HttpsRequired | ProxyError::Http2Required => StatusCode::UPGRADE_REQUIRED,
            ProxyError::HttpsRedirect { code, .. } => {
                StatusCode::from_u16(*code).unwrap_or(StatusCode::PERMANENT_REDIRECT)
            }
            ProxyError::NotGrpc => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProxyError::NoService | ProxyError::NotReady | ProxyError::NoPeer => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Resolve(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ConnectTimeout | ProxyError::ReadTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Connect(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Upstream(e) if is_timeout(e) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The message of the JSON error body, Kong's wording where Kong has one.
    pub fn client_message(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(m) => m,
            ProxyError::NoRoute => "no Route matched with those values",
            ProxyError::HttpsRequired => "Please use HTTPS protocol",
            ProxyError::HttpsRedirect { .. } => "Moved",
            ProxyError::Http2Required => "Please use HTTP2 protocol",
            ProxyError::NotGrpc => "Non-gRPC request matched gRPC route",
            ProxyError::NoService => "no Service found with those values",
            ProxyError::NotReady => "no configuration available",
            ProxyError::NoPeer => "failure to get a peer from the ring-balancer",
            ProxyError::Resolve(_) => "name resolution failed",
            ProxyError::ConnectTimeout | ProxyError::ReadTimeout => {
                "The upstream server is timing out"
            }
            ProxyError::Connect(_) => "An invalid response was received from the upstream server",
            ProxyError::Upstream(e) if is_timeout(e) => "The upstream server is timing out",
            ProxyError::Upstream(_) => "An invalid response was received from the upstream server",
            ProxyError::Internal(_) => "An unexpected error occurred",
            ProxyError::PayloadTooLarge => "Request size limit exceeded",
        }
    }

    /// Who failed.
    pub fn side(&self) -> Side {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::NoRoute
            | ProxyError::HttpsRequired
            | ProxyError::HttpsRedirect { .. }
            | ProxyError::Http2Required
            | ProxyError::NotGrpc
            | ProxyError::PayloadTooLarge => Side::Downstream,
            ProxyError::NoService | ProxyError::NotReady | ProxyError::Internal(_) => {
                Side::Internal
            }
            ProxyError::NoPeer
            | ProxyError::Resolve(_)
            | ProxyError::ConnectTimeout
            | ProxyError::Connect(_)
            | ProxyError::ReadTimeout
            | ProxyError::Upstream(_) => Side::Upstream,
        }
    }
}

/// A failed exchange with an upstream, from either HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// hyper's client (streamed request bodies, TLS and HTTP/2 upstreams, WebSocket).
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    /// The request task's own HTTP/1.1 client ([`crate::h1`]).
    #[error(transparent)]
    H1(#[from] crate::h1::Error),
}

/// Classifies a failed upstream exchange: a request body that outgrew its size limit while
/// streaming is the client's fault (413), anything else the upstream's.
pub fn upstream_failure(e: UpstreamError) -> ProxyError {
    if body_too_large(&e) {
        return ProxyError::PayloadTooLarge;
    }
    ProxyError::Upstream(e)
}

/// Whether an upstream exchange failed because the request body outgrew its size limit.
pub fn body_too_large(e: &UpstreamError) -> bool {
    let UpstreamError::Hyper(e) = e else {
        // Only streamed bodies have a limit to outgrow, and those go through hyper.
        return false;
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<crate::upstream_body::BodyTooLarge>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Whether an upstream error is a timeout: hyper's own, or an I/O timeout underneath it (the
/// write timeout on the upstream socket surfaces as `io::ErrorKind::TimedOut`).
fn is_timeout(e: &UpstreamError) -> bool {
    let e = match e {
        UpstreamError::H1(e) => return e.is_timeout(),
        UpstreamError::Hyper(e) => e,
    };
    if e.is_timeout() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        source = s.source();
    }
    false
}
