//! The hostile-request corpus of SECURITY.md §2.4 over raw TCP: request smuggling probes
//! (Content-Length with Transfer-Encoding, obfuscated and duplicated framing headers, obs-fold,
//! bare line ends, malformed chunked bodies), malformed request lines and headers, limits, and
//! h2c upgrade abuse. Each probe that could desynchronise a parser carries a second request for
//! `/smuggled` where a confused hop would start reading; the upstream must never see it, nor a
//! framing header it could read differently from the gateway.

#[path = "support/harness.rs"]
mod harness;

use std::time::Duration;

use harness::{Gateway, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

/// Everything the gateway answers on one connection to `bytes`, until it closes or goes quiet.
async fn exchange(addr: std::net::SocketAddr, bytes: Vec<u8>) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The gateway may answer and close before reading everything; that is fine.
    let _ = s.write_all(&bytes).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_millis(700), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status codes of every response in `text`, in order.
fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.")
        .filter_map(|(i, _)| text[i..].split(' ').nth(1)?.parse().ok())
        .filter(|s| (100..600).contains(s))
        .collect()
}

/// A gateway with one catch-all route to `up`.
async fn catch_all(up: &Upstream) -> Gateway {
    Gateway::start(&format!(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://{}\n    routes:\n      - paths: [\"/\"]\n",
        up.addr
    ))
    .await
}

struct Probe {
    name: String,
    bytes: Vec<u8>,
    /// Acceptable status of the first response.
    first: &'static [u16],
}

fn post(headers: &str, body: &str) -> Vec<u8> {
    format!("POST /p HTTP/1.1\r\nHost: a\r\n{headers}\r\n{body}{SMUGGLED}").into_bytes()
}

fn probes() -> Vec<Probe> {
    let bad: &[u16] = &[400];
    // CL+TE: hyper frames by TE, drops CL and closes after answering; refusing is fine too.
    let cl_te: &[u16] = &[200, 400];
    let mut p = vec![
        Probe {
            name: "CL then TE".to_owned(),
            bytes: post(
                "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            first: cl_te,
        },
        Probe {
            name: "TE then CL".to_owned(),
            bytes: post(
                "Transfer-Encoding: chunked\r\nContent-Length: 6\r\n",
                "0\r\n\r\n",
            ),
            first: cl_te,
        },
        Probe {
            name: "CL+TE, CL covering the smuggled request".to_owned(),
            bytes: post(
                &format!(
                    "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                    5 + SMUGGLED.len()
                ),
                "0\r\n\r\n",
            ),
            first: cl_te,
        },
    ];
    for te in [
        "Transfer-Encoding: xchunked",
        "Transfer-Encoding: chunked\x0b",
        "Transfer-Encoding: chunked\x0c",
        "Transfer-Encoding : chunked",
        "Transfer-Encoding\t: chunked",
        "Transfer-Encoding: chunked, identity",
        "Transfer-Encoding: identity, chunked",
        "Transfer-Encoding: chunked, chunked",
        "Transfer-Encoding: gzip, chunked",
        "Transfer-Encoding: chunked;q=1",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
        "X: a\r\n Transfer-Encoding: chunked",
        "Transfer-Encoding:\x00chunked",
    ] {
        p.push(Probe {
            name: te.to_owned(),
            bytes: post(&format!("{te}\r\n"), "0\r\n\r\n"),
            first: bad,
        });
    }
    p.push(Probe {
        name: "TE on HTTP/1.0".to_owned(),
        bytes: format!(
            "POST /p HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
        )
        .into_bytes(),
        first: bad,
    });
    for cl in [
        "+5",
        "-0",
        "0x5",
        "5 5",
        "5,5",
        "5, 6",
        "",
        "18446744073709551616",
    ] {
        p.push(Probe {
            name: format!("Content-Length: {cl}"),
            bytes: post(&format!("Content-Length: {cl}\r\n"), "hello"),
            first: bad,
        });
    }
    p.push(Probe {
        name: "two different Content-Lengths".to_owned(),
        bytes: post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello"),
        first: bad,
    });
    p.push(Probe {
        name: "Content-Length with a tab before the colon".to_owned(),
        bytes: post("Content-Length\t: 5\r\n", "hello"),
        first: bad,
    });
    // Malformed chunked bodies: the head may already be forwarded, the body never completes;
    // the answer is an error of some kind, and nothing after it is read as a request.
    for body in [
        "5\nhello\r\n0\r\n\r\n",
        "5;\nhello\r\n0\r\n\r\n",
        "5\rhello\r\n0\r\n\r\n",
        "0\n\r\n",
        "FFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n",
        "-1\r\nhello\r\n0\r\n\r\n",
        "0x5\r\nhello\r\n0\r\n\r\n",
        // Not here: NUL inside a chunk extension (`5;a\0b`). hyper accepts it and discards
        // the extension; the body is re-framed upstream, so gateway and upstream agree, but a
        // hop in front that stops at the NUL would not. Left to hyper (noted in the issue).
    ] {
        p.push(Probe {
            name: format!("chunked body {body:?}"),
            bytes: post("Transfer-Encoding: chunked\r\n", body),
            first: &[400, 502],
        });
    }
    for (name, raw) in [
        (
            "empty header name",
            "GET /p HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n",
        ),
        (
            "NUL in a header value",
            "GET /p HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
        ),
        (
            "CR in a header value",
            "GET /p HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
        ),
        (
            "space in a header name",
            "GET /p HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
        ),
        (
            "obs-fold",
            "GET /p HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        ),
        (
            "tab in the request line",
            "GET\t/p HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "two spaces in the request line",
            "GET  /p HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        ("HTTP/1.2", "GET /p HTTP/1.2\r\nHost: a\r\n\r\n"),
        ("HTTP/0.9", "GET /p\r\n\r\n"),
        ("missing Host", "GET /p HTTP/1.1\r\n\r\n"),
        ("two Hosts", "GET /p HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        (
            "absolute form disagreeing with Host",
            "GET http://b/p HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
    ] {
        p.push(Probe {
            name: name.to_owned(),
            bytes: format!("{raw}{SMUGGLED}").into_bytes(),
            first: &[400, 505],
        });
    }
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    p.push(Probe {
        name: "150 headers".to_owned(),
        bytes: format!("GET /p HTTP/1.1\r\nHost: a\r\n{many}\r\n").into_bytes(),
        first: &[431],
    });
    p.push(Probe {
        name: "64 KiB URI".to_owned(),
        bytes: format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(65_536)).into_bytes(),
        // The 64 KiB head limit is reached first (431); hyper's own URI bound is 414.
        first: &[414, 431],
    });
    p
}

#[tokio::test]
async fn smuggling_probes_never_reach_the_upstream_as_a_second_request() {
    let up = Upstream::echo("u").await;
    let gw = catch_all(&up).await;
    let probes = probes();
    let answers =
        futures_util::future::join_all(probes.iter().map(|p| exchange(gw.addr, p.bytes.clone())))
            .await;
    let mut failures = Vec::new();
    for (probe, answer) in probes.iter().zip(&answers) {
        let got = statuses(answer);
        match got.first() {
            Some(s) if probe.first.contains(s) => {}
            _ => failures.push(format!(
                "{:?}: got {got:?}, expected first {:?}",
                probe.name, probe.first
            )),
        }
        // A refused request is the last one on its connection: nothing after it is parsed.
        if got.len() > 1 {
            failures.push(format!(
                "{:?}: {} responses on one connection: {got:?}",
                probe.name,
                got.len()
            ));
        }
    }
    let seen = up.seen.lock().unwrap();
    for s in seen.iter() {
        if s.uri.contains("smuggled") {
            failures.push(format!("the upstream saw {} {}", s.method, s.uri));
        }
        for name in ["transfer-encoding", "content-length"] {
            if s.headers.get_all(name).iter().count() > 1 {
                failures.push(format!("the upstream saw two {name} headers"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `Upgrade: h2c` is never honoured or passed on: the request is served over HTTP/1.1 and the
/// upstream sees neither the upgrade nor its settings.
#[tokio::test]
async fn h2c_upgrade_requests_are_served_as_http1_and_stripped() {
    let up = Upstream::echo("u").await;
    let gw = catch_all(&up).await;
    let answer = exchange(
        gw.addr,
        b"GET /p HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
            .to_vec(),
    )
    .await;
    assert_eq!(statuses(&answer), [200], "{answer}");
    let seen = up.last();
    assert_eq!(seen.uri, "/p");
    for name in ["upgrade", "http2-settings", "connection"] {
        assert!(
            !seen.headers.contains_key(name),
            "{name} reached the upstream"
        );
    }
}

/// A header name with `_` (which some servers read as `-`: `Transfer_Encoding`,
/// `X_Forwarded_For`) never reaches the upstream, as nginx (and so Kong) drops them by default.
#[tokio::test]
async fn underscored_header_names_are_not_forwarded() {
    let up = Upstream::echo("u").await;
    let gw = catch_all(&up).await;
    let answer = exchange(
        gw.addr,
        b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\nX_Forwarded_For: 10.0.0.1\r\nX-Ok: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            .to_vec(),
    )
    .await;
    assert_eq!(statuses(&answer), [200], "{answer}");
    let seen = up.last();
    assert_eq!(seen.headers["x-ok"], "1");
    for name in ["transfer_encoding", "x_forwarded_for"] {
        assert!(
            !seen.headers.contains_key(name),
            "{name} reached the upstream"
        );
    }
}

/// Over HTTP/2 a value may start or end with whitespace (h2 lets it through); one HTTP/1.1
/// reader trims it and another does not, so the gateway refuses it.
#[tokio::test]
async fn http2_values_with_surrounding_whitespace_are_refused() {
    use bytes::Bytes;
    use http_body_util::Full;
    let up = Upstream::echo("u").await;
    let gw = catch_all(&up).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let send = |value: &'static str| {
        let client = client.clone();
        let url = gw.url("/p");
        async move {
            let req = http::Request::get(url)
                .header("x-role", http::HeaderValue::from_static(value))
                .body(Full::new(Bytes::new()))
                .unwrap();
            client.request(req).await.unwrap().status().as_u16()
        }
    };
    assert_eq!(send("admin").await, 200);
    assert_eq!(send(" admin").await, 400);
    assert_eq!(send("admin\t").await, 400);
    assert_eq!(up.count(), 1);
    assert_eq!(up.last().headers["x-role"], "admin");
}
