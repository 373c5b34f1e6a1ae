//! `portico echo`: a tiny HTTP upstream that answers every request with JSON describing what it
//! received (method, path, query, headers, body size). The quickstart tour proxies to it, and it
//! is a fixed, cheap upstream for load tests. A `bytes=N` query argument (at most 8 MiB) asks
//! for a body of N bytes instead, for download benchmarks.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Echo server options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "PORTICO_ECHO_LISTEN", default_value = "127.0.0.1:9080")]
    pub listen: SocketAddr,
}

/// Serves until SIGTERM/SIGINT.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (echo): {e}", args.listen))?;
    let mut shutdown = super::shutdown_on_signals();
    tokio::select! {
        _ = serve(listener) => {}
        _ = shutdown.changed() => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Serves the echo service on `listener` forever.
pub async fn serve(listener: TcpListener) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(addr = %addr, "echo listening");
    }
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service_fn(echo))
                .await;
        });
    }
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    // Count the body without keeping it, so a large upload costs no memory.
    let mut body = body;
    let mut size = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => size += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    if let Some(n) = requested_bytes(parts.uri.query()) {
        let mut resp = Response::new(Full::new(filler().slice(..n)));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/octet-stream"),
        );
        return Ok(resp);
    }
    let doc = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": size,
    });
    let mut resp = Response::new(Full::new(Bytes::from(
        serde_json::to_vec_pretty(&doc).unwrap_or_default(),
    )));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// Largest body `bytes=N` returns.
const MAX_BYTES: usize = 8 * 1024 * 1024;

/// `N` of a `bytes=N` query argument, capped at [`MAX_BYTES`].
fn requested_bytes(query: Option<&str>) -> Option<usize> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("bytes="))
        .and_then(|n| n.parse::<usize>().ok())
        .map(|n| n.min(MAX_BYTES))
}

/// One shared buffer every sized body is a slice of (no copy per response).
fn filler() -> Bytes {
    static FILLER: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    FILLER
        .get_or_init(|| Bytes::from(vec![b'x'; MAX_BYTES]))
        .clone()
}

#[cfg(test)]
mod tests {
    use super::requested_bytes;

    #[test]
    fn sized_bodies_are_asked_for_with_a_query_argument() {
        assert_eq!(requested_bytes(Some("bytes=1048576")), Some(1_048_576));
        assert_eq!(requested_bytes(Some("a=1&bytes=10")), Some(10));
        assert_eq!(
            requested_bytes(Some("bytes=999999999999")),
            Some(8 * 1024 * 1024)
        );
        assert_eq!(requested_bytes(Some("bytes=x")), None);
        assert_eq!(requested_bytes(None), None);
    }
}
