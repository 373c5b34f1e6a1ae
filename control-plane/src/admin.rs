//! The admin listener: the admin gRPC service (for the CLI) and the REST API (Kong-style) on
//! one port. A request with `content-type: application/grpc*` goes to tonic; anything else to
//! the REST handler. The bearer token, when set, is checked here once for both.

pub mod grpc;
pub mod rest;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use portico_proto::v1::admin_server::AdminServer;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::body::Body;
use tonic::codegen::Service;

use crate::discovery::wait_true;
use crate::state::ControlPlane;

/// How long in-flight admin requests may run after shutdown is signalled.
const DRAIN: Duration = Duration::from_secs(10);

/// Routes admin requests; cheap to clone per connection.
#[derive(Clone)]
pub(crate) struct AdminRouter {
    cp: ControlPlane,
    grpc: AdminServer<grpc::AdminService>,
    token: Option<Arc<str>>,
}

impl AdminRouter {
    pub(crate) fn new(cp: ControlPlane, token: Option<String>) -> Self {
        AdminRouter {
            // Configs can be large (10,000 routes is a normal size); tonic's 4 MiB default
            // would refuse them before validation could say anything useful.
            grpc: AdminServer::new(grpc::AdminService::new(cp.clone()))
                .max_decoding_message_size(rest::MAX_BODY)
                .max_encoding_message_size(usize::MAX),
            cp,
            token: token.map(Arc::from),
        }
    }

    async fn route(self, req: Request<Incoming>) -> Response<Body> {
        let is_grpc = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        if let Some(token) = &self.token {
            if !authorized(req.headers(), token) {
                tracing::debug!(path = %req.uri().path(), grpc = is_grpc, "admin request without a valid token");
                return if is_grpc {
                    tonic::Status::unauthenticated(
                        "missing or wrong admin token: send 'authorization: Bearer <token>'",
                    )
                    .into_http()
                } else {
                    let mut resp = rest::json(
                        StatusCode::UNAUTHORIZED,
                        &serde_json::json!({ "message": "Unauthorized" }),
                    );
                    resp.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        http::HeaderValue::from_static("Bearer"),
                    );
                    resp.map(Body::new)
                };
            }
        }
        if is_grpc {
            let mut svc = self.grpc.clone();
            match svc.call(req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            }
        } else {
            rest::handle(&self.cp, req).await.map(Body::new)
        }
    }
}

/// Whether `Authorization: Bearer <token>` matches, in constant time.
fn authorized(headers: &http::HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let prefix = b"Bearer ";
    if value.len() < prefix.len() || !value[..prefix.len()].eq_ignore_ascii_case(prefix) {
        return false;
    }
    // ct_eq on slices of different lengths is false without comparing contents; the token's
    // length is not a secret worth hiding.
    value[prefix.len()..].ct_eq(token.as_bytes()).into()
}

/// Serves the admin listener until `shutdown` turns true, then drains for up to 10 s.
pub(crate) async fn serve(
    listener: TcpListener,
    router: AdminRouter,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Responses go out as several small writes (headers, body, trailers):
                    // without this, Nagle holds each one for the client's delayed ACK (~40 ms).
                    let _ = stream.set_nodelay(true);
                    let router = router.clone();
                    let svc = hyper::service::service_fn(move |req| {
                        let router = router.clone();
                        async move { Ok::<_, Infallible>(router.route(req).await) }
                    });
                    let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(peer = %peer, error = %e, "admin connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning on a failing accept.
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = wait_true(&mut shutdown) => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("admin connections still open after the drain timeout; closing them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_check() {
        let mut h = http::HeaderMap::new();
        assert!(!authorized(&h, "s3cret"));
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorized(&h, "s3cret"));
        h.insert(header::AUTHORIZATION, "bearer s3cret".parse().unwrap());
        assert!(authorized(&h, "s3cret"));
        for bad in [
            "Bearer s3cre",
            "Bearer s3crett",
            "Basic s3cret",
            "s3cret",
            "Bearer ",
        ] {
            h.insert(header::AUTHORIZATION, bad.parse().unwrap());
            assert!(!authorized(&h, "s3cret"), "{bad}");
        }
    }
}
