//! The data plane's own HTTP/1.1 upstream client (`h1`) against an upstream that answers with
//! scripted bytes over a real socket: every body framing, connection reuse only after a clean
//! exchange, and malformed or truncated answers.

#[path = "support/harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use harness::{get, raw, send, Gateway};
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the scripted upstream does after writing its answer.
#[derive(Clone, Copy, PartialEq)]
enum Then {
    KeepOpen,
    Close,
}

/// An upstream that answers each request head with the bytes `script` gives for it, and
/// records the connections it accepted and the heads it read.
struct Scripted {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    async fn start(script: fn(&str) -> (Vec<u8>, Then)) -> Scripted {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (c, h) = (Arc::clone(&connections), Arc::clone(&heads));
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let heads = Arc::clone(&h);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        heads.lock().unwrap().push(head.clone());
                        let (answer, then) = script(&head);
                        if s.write_all(&answer).await.is_err() || then == Then::Close {
                            return;
                        }
                    }
                });
            }
        });
        Scripted {
            addr,
            connections,
            heads,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn last_head(&self) -> String {
        self.heads
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

/// The request line's path.
fn path(head: &str) -> &str {
    head.split(' ').nth(1).unwrap_or("")
}

fn answers(head: &str) -> (Vec<u8>, Then) {
    use Then::*;
    let (bytes, then): (&[u8], Then) = match path(head) {
        "/length" => (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", KeepOpen),
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
            KeepOpen,
        ),
        "/to-close" => (b"HTTP/1.1 200 OK\r\nX-Framing: none\r\n\r\nuntil the end", Close),
        "/empty" => (b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", KeepOpen),
        "/interim" => (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone",
            KeepOpen,
        ),
        "/head" => (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", KeepOpen),
        "/closing" => (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
            KeepOpen,
        ),
        "/extra" => (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA", KeepOpen),
        "/http10" => (b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello", KeepOpen),
        "/both" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            KeepOpen,
        ),
        // Answers, then closes without saying so.
        "/then-close" => (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", Close),
        "/conflict" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            KeepOpen,
        ),
        "/switch" => (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            KeepOpen,
        ),
        "/garbage" => (b"HELLO THERE\r\n\r\n", KeepOpen),
        "/nothing" => (b"", Close),
        "/short" => (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", Close),
        "/bad-chunk" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nmore\r\n0\r\n\r\n",
            KeepOpen,
        ),
        "/big-head" => {
            let mut v = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
            v.extend(std::iter::repeat_n(b'a', 70 * 1024));
            v.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
            return (v, KeepOpen);
        }
        "/many-fields" => {
            let mut v = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..120 {
                v.extend_from_slice(format!("X-F{i}: v\r\n").as_bytes());
            }
            v.extend_from_slice(b"Content-Length: 0\r\n\r\n");
            return (v, KeepOpen);
        }
        _ => (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", KeepOpen),
    };
    (bytes.to_vec(), then)
}

async fn gateway(up: &Scripted) -> Gateway {
    Gateway::start(&format!(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://{}\n    retries: 0\n    routes:\n      - paths: [\"/\"]\n",
        up.addr
    ))
    .await
}

#[tokio::test]
async fn every_body_framing_reaches_the_client_whole() {
    let up = Scripted::start(answers).await;
    let gw = gateway(&up).await;

    for (path, status, body) in [
        ("/length", 200, "hello"),
        ("/chunked", 200, "hello, world"),
        ("/to-close", 200, "until the end"),
        ("/empty", 204, ""),
        ("/interim", 201, "done"),
        ("/both", 200, "hello"),
        ("/http10", 200, "hello"),
    ] {
        let got = get(&gw.url(path), &[]).await;
        assert_eq!(got.status, status, "{path}");
        assert_eq!(got.body, body, "{path}");
    }
    let got = get(&gw.url("/interim"), &[]).await;
    assert!(!got.headers.contains_key("link"), "interim fields stay out");

    // HEAD: the length of the body a GET would get, and no body.
    let got = send(
        Request::head(gw.url("/head"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.headers["content-length"], "5");
    assert_eq!(got.body, "");
    // ...and the connection still carries the next request.
    assert_eq!(get(&gw.url("/length"), &[]).await.body, "hello");
}

#[tokio::test]
async fn a_connection_is_reused_only_after_a_clean_exchange() {
    let up = Scripted::start(answers).await;
    let gw = gateway(&up).await;
    let hello = |path: &'static str| {
        let url = gw.url(path);
        async move {
            let got = get(&url, &[]).await;
            assert_eq!(
                (got.status.as_u16(), got.body.as_str()),
                (200, "hello"),
                "{path}"
            );
        }
    };

    for _ in 0..3 {
        hello("/length").await;
    }
    assert_eq!(up.connections(), 1, "keep-alive reuses one connection");
    let (chunked, empty) = (gw.url("/chunked"), gw.url("/empty"));
    assert_eq!(get(&chunked, &[]).await.status, 200);
    assert_eq!(get(&empty, &[]).await.status, 204);
    hello("/length").await;
    assert_eq!(
        up.connections(),
        1,
        "chunked and empty bodies end cleanly too"
    );

    // Each of these ends its connection's use: the next request opens a new one.
    for (n, path) in ["/closing", "/extra", "/http10", "/both", "/then-close"]
        .into_iter()
        .enumerate()
    {
        let got = get(&gw.url(path), &[]).await;
        assert_eq!(got.status, 200, "{path}");
        hello("/length").await;
        assert_eq!(up.connections(), n + 2, "after {path}");
    }
    let got = get(&gw.url("/to-close"), &[]).await;
    assert_eq!(got.body, "until the end");
    hello("/length").await;
    assert_eq!(up.connections(), 7, "after a body read to the close");
}

#[tokio::test]
async fn an_upstream_closing_idle_connections_costs_the_client_nothing() {
    let up = Scripted::start(answers).await;
    let gw = gateway(&up).await;
    // Every answer is followed by a close the gateway learns of only from the socket; the
    // pooled connection is found dead and the request goes on a new one.
    for i in 0..20 {
        let got = get(&gw.url("/then-close"), &[]).await;
        assert_eq!(
            (got.status.as_u16(), got.body.as_str()),
            (200, "hello"),
            "request {i}"
        );
    }
    assert_eq!(up.connections(), 20);
}

#[tokio::test]
async fn malformed_answers_are_502_with_kongs_message() {
    let up = Scripted::start(answers).await;
    let gw = gateway(&up).await;
    for path in [
        "/conflict",
        "/switch",
        "/garbage",
        "/nothing",
        "/big-head",
        "/many-fields",
    ] {
        let got = get(&gw.url(path), &[]).await;
        assert_eq!(got.status, 502, "{path}");
        assert_eq!(
            got.json()["message"],
            "An invalid response was received from the upstream server",
            "{path}"
        );
    }
    // None of those connections is trusted again.
    let before = up.connections();
    assert_eq!(get(&gw.url("/length"), &[]).await.body, "hello");
    assert_eq!(up.connections(), before + 1);
}

#[tokio::test]
async fn a_body_cut_short_reaches_the_client_cut_short() {
    let up = Scripted::start(answers).await;
    let gw = gateway(&up).await;

    // The head promised 10 bytes and 5 came before the close: the client's connection is closed
    // without a complete response (hyper drops what it had not flushed yet, head included).
    let text = raw(
        gw.addr,
        b"GET /short HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    if let Some((head, body)) = text.split_once("\r\n\r\n") {
        assert!(head.contains("content-length: 10"), "{text:?}");
        assert!(body.len() < 10, "{text:?}");
    }

    // A chunked body that goes bad after its first chunk: the client never gets the rest, nor
    // the last chunk that would make it look complete.
    let text = raw(
        gw.addr,
        b"GET /bad-chunk HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(!text.contains("more"), "{text:?}");
    assert!(!text.ends_with("0\r\n\r\n"), "{text:?}");

    // Neither connection is reused, and the next request is whole.
    let before = up.connections();
    assert_eq!(get(&gw.url("/length"), &[]).await.body, "hello");
    assert_eq!(up.connections(), before + 1);
}

#[tokio::test]
async fn requests_are_written_with_the_known_length_of_their_body() {
    let up = Scripted::start(answers).await;
    let gw = gateway(&up).await;

    get(&gw.url("/length?a=1&b=%20"), &[]).await;
    let head = up.last_head().to_ascii_lowercase();
    assert!(
        head.starts_with("get /length?a=1&b=%20 http/1.1\r\n"),
        "{head}"
    );
    assert!(!head.contains("content-length"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");

    // An empty POST says it is empty.
    let got = send(
        Request::post(gw.url("/length"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(got.body, "hello");
    let head = up.last_head().to_ascii_lowercase();
    assert!(head.starts_with("post /length http/1.1\r\n"), "{head}");
    assert!(head.contains("\r\ncontent-length: 0"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
}
