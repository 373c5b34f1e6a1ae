//! WebSocket through the proxy, with a real WebSocket client and server (tokio-tungstenite):
//! echo through an HTTP/1.1 upgrade, the route's auth applied before the upgrade, an open
//! connection surviving a config swap, and `Upgrade: h2c` still refused passage.

#[path = "support/harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use harness::{raw, Gateway};
use portico_data_plane::runtime::Runtime;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket server echoing every text and binary message, prefixed with the path it was
/// opened on.
// tungstenite's handshake callback returns its (large) error response by value.
#[allow(clippy::result_large_err)]
async fn ws_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut path = String::new();
                let callback =
                    |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                        path = req.uri().path().to_owned();
                        Ok(resp)
                    };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    let reply = match msg {
                        Message::Text(t) => Message::text(format!("{path} {t}")),
                        Message::Binary(b) => Message::Binary(b),
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    if ws.send(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn config(up: SocketAddr, plugins: &str) -> String {
    format!(
        "_format_version: \"3.0\"\nservices:\n  - name: ws\n    url: http://{up}\n    routes:\n      - name: ws\n        paths: [/ws]\n{plugins}consumers:\n  - username: alice\n    keyauth_credentials:\n      - key: alice-key\n"
    )
}

async fn open(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::Error,
> {
    let mut req = format!("ws://{}{path}", gw.addr)
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .expect("handshake in time")
    .map(|(ws, _)| ws)
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let up = ws_echo().await;
    let gw = Gateway::start(&config(up, "")).await;
    let mut ws = open(&gw, "/ws/chat", &[])
        .await
        .expect("upgrade through the proxy");
    for i in 0..5 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let got = ws.next().await.unwrap().unwrap();
        // strip_path: the upstream saw the path after the route's prefix.
        assert_eq!(got, Message::text(format!("/chat hello {i}")));
    }
    let big = vec![7u8; 256 * 1024];
    ws.send(Message::Binary(big.clone().into())).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Binary(big.into())
    );
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn auth_runs_before_the_upgrade_and_an_open_socket_survives_a_swap() {
    let up = ws_echo().await;
    let gw = Gateway::start(&config(
        up,
        "        plugins:\n          - name: key-auth\n",
    ))
    .await;
    match open(&gw, "/ws/a", &[]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), http::StatusCode::UNAUTHORIZED)
        }
        other => panic!("expected 401 before any upgrade, got {other:?}"),
    }
    let mut ws = open(&gw, "/ws/a", &[("apikey", "alice-key")])
        .await
        .expect("authenticated upgrade");
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("/a before")
    );

    // The route goes away: new handshakes get 404, the open socket keeps working.
    let loaded = portico_common::load_str(
        "_format_version: \"3.0\"\nservices:\n  - name: other\n    url: http://127.0.0.1:9\n    routes:\n      - paths: [/other]\n",
        &|_| None,
    )
    .unwrap();
    gw.shared
        .swap(Runtime::compile(loaded.snapshot, &gw.shared.pools).unwrap());
    match open(&gw, "/ws/a", &[("apikey", "alice-key")]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), http::StatusCode::NOT_FOUND)
        }
        other => panic!("expected 404 after the swap, got {other:?}"),
    }
    ws.send(Message::text("after")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("/a after"));
}

#[tokio::test]
async fn only_websocket_upgrades_pass() {
    let up = harness::Upstream::echo("up").await;
    let gw = Gateway::start(&format!(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://{}\n    routes:\n      - paths: [/]\n",
        up.addr
    ))
    .await;
    let resp = raw(
        gw.addr,
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = up.last();
    assert!(seen.headers.get("upgrade").is_none());
    assert!(seen.headers.get("http2-settings").is_none());
}
