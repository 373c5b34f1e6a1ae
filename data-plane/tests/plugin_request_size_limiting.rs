//! request-size-limiting through the real proxy (KONG.md §3.11): Kong's statuses and messages
//! for declared lengths, and a chunked body refused while it streams, the upstream never
//! getting a complete request nor more than the limit.

#[path = "support/harness.rs"]
mod harness;

use std::time::Duration;

use harness::{raw, Gateway, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One service to `up` on `/`, with request-size-limiting configured by `config` (YAML flow).
fn yaml(up: &Upstream, config: &str) -> String {
    format!(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://{}\n    routes:\n      \
         - paths: [\"/\"]\n        plugins:\n          - name: request-size-limiting\n            \
         config: {config}\n",
        up.addr
    )
}

/// A POST of `len` bytes with a Content-Length, plus `extra` header lines.
fn post(len: usize, extra: &str) -> Vec<u8> {
    let mut r = format!("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n{extra}\r\n")
        .into_bytes();
    r.extend(std::iter::repeat_n(b'a', len));
    r
}

/// A chunked POST of `chunks` (each sent as one chunk), terminated.
fn chunked(chunks: &[usize]) -> Vec<u8> {
    let mut r = b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for len in chunks {
        r.extend(format!("{len:x}\r\n").into_bytes());
        r.extend(std::iter::repeat_n(b'a', *len));
        r.extend(b"\r\n");
    }
    r.extend(b"0\r\n\r\n");
    r
}

/// The status code and body of a raw HTTP/1.1 response.
fn parse(resp: &str) -> (u16, &str) {
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {resp:?}"));
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body)
}

const TOO_LARGE: &str = r#"{"message":"Request size limit exceeded"}"#;

#[tokio::test]
async fn a_declared_length_over_the_limit_is_413_and_at_the_limit_passes() {
    let up = Upstream::echo("u").await;
    let gw = Gateway::start(&yaml(&up, "{allowed_payload_size: 10, size_unit: bytes}")).await;

    let resp = raw(gw.addr, &post(11, "")).await;
    assert_eq!(
        parse(&resp),
        (413, TOO_LARGE),
        "Kong's exit body: no request_id"
    );
    assert!(resp.contains("content-type: application/json; charset=utf-8"));
    assert_eq!(up.count(), 0, "refused before the upstream");

    let resp = raw(gw.addr, &post(10, "")).await;
    assert_eq!(parse(&resp), (200, "u /up"));
    assert_eq!(up.last().body_len, 10);

    let resp = raw(gw.addr, &post(0, "")).await;
    assert_eq!(parse(&resp).0, 200);
    gw.stop().await;
}

#[tokio::test]
async fn expect_100_continue_over_the_limit_is_417_before_the_body_is_sent() {
    let up = Upstream::echo("u").await;
    let gw = Gateway::start(&yaml(
        &up,
        "{allowed_payload_size: 1, size_unit: kilobytes}",
    ))
    .await;
    // Only the head: a client waiting on 100-continue never sends the body it was refused.
    let head =
        "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect:  100-Continue \r\n\r\n";
    let resp = raw(gw.addr, head.as_bytes()).await;
    assert_eq!(parse(&resp), (417, TOO_LARGE));
    assert!(
        !resp.contains("100 Continue"),
        "no go-ahead for a refused body"
    );
    assert_eq!(up.count(), 0);

    // Within the limit, the same header gets the body through.
    let req = http::Request::post(gw.url("/up"))
        .header("expect", "100-continue")
        .body(http_body_util::Full::new(bytes::Bytes::from(vec![
            b'a';
            1024
        ])))
        .unwrap();
    assert_eq!(harness::send(req).await.status, 200);
    assert_eq!(up.last().body_len, 1024);
    gw.stop().await;
}

#[tokio::test]
async fn units_are_binary() {
    let up = Upstream::echo("u").await;
    for (config, limit) in [
        ("{allowed_payload_size: 3, size_unit: bytes}", 3),
        ("{allowed_payload_size: 2, size_unit: kilobytes}", 2048),
        ("{allowed_payload_size: 1, size_unit: megabytes}", 1_048_576),
        ("{allowed_payload_size: 1}", 1_048_576),
    ] {
        let gw = Gateway::start(&yaml(&up, config)).await;
        assert_eq!(
            parse(&raw(gw.addr, &post(limit, "")).await).0,
            200,
            "{config}"
        );
        assert_eq!(up.last().body_len, limit, "{config}");
        let before = up.count();
        assert_eq!(
            parse(&raw(gw.addr, &post(limit + 1, "")).await),
            (413, TOO_LARGE),
            "{config}"
        );
        assert_eq!(up.count(), before, "{config}");
        gw.stop().await;
    }
}

#[tokio::test]
async fn require_content_length_refuses_411_unless_chunked() {
    let up = Upstream::echo("u").await;
    let gw = Gateway::start(&yaml(
        &up,
        "{allowed_payload_size: 100, size_unit: bytes, require_content_length: true}",
    ))
    .await;
    // Kong's rule as written: no Content-Length and not chunked, body or not.
    let resp = raw(gw.addr, b"GET /up HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(
        parse(&resp),
        (
            411,
            r#"{"message":"A valid Content-Length header is required"}"#
        )
    );
    assert_eq!(up.count(), 0);

    assert_eq!(parse(&raw(gw.addr, &post(5, "")).await).0, 200);
    assert_eq!(parse(&raw(gw.addr, &chunked(&[60, 40])).await).0, 200);
    assert_eq!(up.last().body_len, 100);
    gw.stop().await;

    // Off (the default), the same bodiless GET goes through.
    let gw = Gateway::start(&yaml(&up, "{allowed_payload_size: 100, size_unit: bytes}")).await;
    let resp = raw(gw.addr, b"GET /up HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(parse(&resp).0, 200);
    gw.stop().await;
}

#[tokio::test]
async fn a_chunked_body_exactly_at_the_limit_passes_and_one_byte_more_is_413() {
    let up = Upstream::echo("u").await;
    let gw = Gateway::start(&yaml(
        &up,
        "{allowed_payload_size: 1, size_unit: kilobytes}",
    ))
    .await;
    let resp = raw(gw.addr, &chunked(&[1000, 24])).await;
    assert_eq!(parse(&resp).0, 200, "{resp}");
    assert_eq!(up.last().body_len, 1024);

    let resp = raw(gw.addr, &chunked(&[1000, 25])).await;
    let (status, body) = parse(&resp);
    assert_eq!(status, 413, "{resp}");
    assert!(body.contains("Request size limit exceeded"), "{body}");
    gw.stop().await;
}

#[tokio::test]
async fn a_chunked_body_growing_past_the_limit_is_refused_mid_stream() {
    let up = Upstream::echo("u").await;
    let gw = Gateway::start(&yaml(
        &up,
        "{allowed_payload_size: 1, size_unit: kilobytes}",
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = |n: usize| {
        let mut c = format!("{n:x}\r\n").into_bytes();
        c.extend(std::iter::repeat_n(b'a', n));
        c.extend(b"\r\n");
        c
    };
    s.write_all(&chunk(600)).await.unwrap();
    // Let the first chunk reach the upstream before the body outgrows the limit.
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(&chunk(600)).await.unwrap();
    // The body never ends: the answer can only come from the limit, not from a whole body.
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&out).contains("limit exceeded") {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            other => panic!("no answer ({other:?}): {}", String::from_utf8_lossy(&out)),
        }
    }
    let resp = String::from_utf8_lossy(&out);
    let (status, body) = parse(&resp);
    assert_eq!(status, 413, "{resp}");
    assert!(
        body.contains(r#""message":"Request size limit exceeded""#) && body.contains("request_id"),
        "the proxy's error template: {body}"
    );

    // The upstream got the request's start and at most the limit, never a complete request.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while up.seen.lock().unwrap().len() < up.count() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "upstream still reading"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = up.seen.lock().unwrap().clone();
    assert!(seen.len() <= 1, "{seen:?}");
    for s in &seen {
        assert!(s.body_len <= 1024, "upstream got {} bytes", s.body_len);
    }
    gw.stop().await;
}
