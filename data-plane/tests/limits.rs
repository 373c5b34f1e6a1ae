//! What one client can hold of the proxy listener (`server::Limits`), over real sockets: a
//! connection cap, a deadline for the request head (slowloris) that also closes idle
//! keep-alive connections, and a bound on the head's size.

#[path = "support/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::{raw, Gateway, Upstream};
use portico_data_plane::server::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn catch_all(up: &Upstream) -> String {
    format!(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://{}\n    routes:\n      - paths: [\"/\"]\n",
        up.addr
    )
}

/// Reads until the peer closes; `None` when it is still open after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// One keep-alive request on `s`; returns the status line.
async fn request(s: &mut TcpStream) -> String {
    s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_and_the_open_ones_keep_working() {
    let up = Upstream::echo("u").await;
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let gw = Gateway::start_with_limits(&catch_all(&up), limits).await;
    let mut a = TcpStream::connect(gw.addr).await.unwrap();
    let mut b = TcpStream::connect(gw.addr).await.unwrap();
    assert!(request(&mut a).await.starts_with("HTTP/1.1 200"));
    assert!(request(&mut b).await.starts_with("HTTP/1.1 200"));

    // The third is accepted by the kernel and closed by the gateway without an answer.
    let mut c = TcpStream::connect(gw.addr).await.unwrap();
    let _ = c.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let answer = closed_within(&mut c, Duration::from_secs(5))
        .await
        .expect("the connection over the limit is closed");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert_eq!(up.count(), 2);

    // The open ones are unaffected, and a freed slot is reusable.
    assert!(request(&mut a).await.starts_with("HTTP/1.1 200"));
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = raw(
            gw.addr,
            b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        if got.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_head_is_cut_off() {
    let up = Upstream::echo("u").await;
    let limits = Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let gw = Gateway::start_with_limits(&catch_all(&up), limits).await;

    // Slowloris: a head that trickles in and never ends.
    let mut slow = TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut cut = false;
    for i in 0..40 {
        if slow
            .write_all(format!("X-Drip-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            cut = true;
            break;
        }
        if closed_within(&mut slow, Duration::from_millis(100))
            .await
            .is_some()
        {
            cut = true;
            break;
        }
    }
    assert!(cut, "still open after {:?}", started.elapsed());
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(up.count(), 0);

    // An idle keep-alive connection is closed after the same time.
    let mut idle = TcpStream::connect(gw.addr).await.unwrap();
    assert!(request(&mut idle).await.starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut idle, Duration::from_secs(5))
            .await
            .is_some(),
        "an idle keep-alive connection stayed open"
    );
}

#[tokio::test]
async fn a_head_over_the_size_limit_is_431_and_never_forwarded() {
    let up = Upstream::echo("u").await;
    let limits = Limits {
        max_header_bytes: 16 * 1024,
        ..Limits::default()
    };
    let gw = Gateway::start_with_limits(&catch_all(&up), limits).await;
    let big = format!(
        "GET /x HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "v".repeat(20 * 1024)
    );
    let got = raw(gw.addr, big.as_bytes()).await;
    assert!(got.starts_with("HTTP/1.1 431"), "{got}");
    // Just under the limit passes.
    let fits = format!(
        "GET /x HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "v".repeat(12 * 1024)
    );
    let got = raw(gw.addr, fits.as_bytes()).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn idle_http2_connections_are_closed_but_not_while_a_stream_is_open() {
    // An upstream that takes longer to answer than the idle bound.
    let up = Upstream::start(|seen: harness::Seen| async move {
        if seen.uri.contains("slow") {
            tokio::time::sleep(Duration::from_millis(1200)).await;
        }
        http::Response::new(http_body_util::Full::new(bytes::Bytes::from("ok")))
    })
    .await;
    let limits = Limits {
        header_read_timeout: Duration::from_millis(400),
        ..Limits::default()
    };
    let gw = Gateway::start_with_limits(&catch_all(&up), limits).await;

    // HTTP/2 slowloris: a connection that never opens a stream is closed.
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    silent
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(5))
            .await
            .is_some(),
        "an HTTP/2 connection with no stream stayed open"
    );

    // A stream that outlives the bound keeps the connection; once idle, it is closed.
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let driver = tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}/slow", gw.addr))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let started = Instant::now();
    let resp = send
        .send_request(req)
        .await
        .expect("the slow stream completes");
    assert_eq!(resp.status(), http::StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(1200));
    let ended = tokio::time::timeout(Duration::from_secs(5), driver).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection stayed open");
}
