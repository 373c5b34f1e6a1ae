//! ip-restriction through the real proxy (KONG.md §3.12): clients connect from distinct
//! loopback addresses (127.0.0.x, `::1`, and IPv4-mapped peers on a dual-stack listener), so
//! the address the plugin judges is the TCP peer, not a test shortcut.

#[path = "support/harness.rs"]
mod harness;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use harness::{get, Gateway, Got, Upstream};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use portico_data_plane::headers::TrustedIps;
use portico_data_plane::runtime::Runtime;
use portico_data_plane::{Listeners, Shared};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

/// One catch-all route to `up` with an ip-restriction `config` (YAML flow mapping).
fn yaml(up: &Upstream, config: &str) -> String {
    format!(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://{}\n    routes:\n      \
         - name: r\n        paths: [\"/\"]\n        plugins:\n          - name: ip-restriction\n            \
         config: {config}\n",
        up.addr
    )
}

/// GET `path` on `gw` over a connection whose source address is `from` (any 127.0.0.0/8
/// address is local on Linux, so each test can be a different client).
async fn get_from(from: &str, gw: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Got {
    let from: IpAddr = from.parse().unwrap();
    let socket = match from {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let stream = socket.connect(gw).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut b = Request::get(path).header("host", "gw.test");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = sender
        .send_request(b.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A data plane listening on `[::]` (dual stack): IPv4 clients arrive as `::ffff:a.b.c.d`
/// peers, IPv6 clients as themselves. The harness binds 127.0.0.1 only.
struct DualStack {
    port: u16,
    _shutdown: watch::Sender<bool>,
}

impl DualStack {
    async fn start(yaml: &str) -> DualStack {
        let shared = Shared::new(TrustedIps::default());
        let loaded = portico_common::load_str(yaml, &|_| None).expect("test config is valid");
        let rt = Runtime::compile(loaded.snapshot, &shared.pools).expect("test config compiles");
        shared.swap(rt);
        let listeners = Listeners {
            proxy: TcpListener::bind("[::]:0").await.unwrap(),
            status: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            proxy_tls: None,
        };
        let port = listeners.proxy.local_addr().unwrap().port();
        let (tx, rx) = watch::channel(false);
        tokio::spawn(portico_data_plane::serve(
            Arc::clone(&shared),
            listeners,
            rx,
            Duration::from_secs(1),
        ));
        DualStack {
            port,
            _shutdown: tx,
        }
    }

    fn v4(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn v6(&self) -> SocketAddr {
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, self.port))
    }
}

/// Kong's default refusal: 403 through `kong.response.error`, naming the address.
fn assert_refused(got: &Got, ip: &str) {
    assert_eq!(got.status, 403, "{}", got.body);
    let json = got.json();
    assert_eq!(json["message"], format!("IP address not allowed: {ip}"));
    assert!(
        json["request_id"].is_string(),
        "error template carries the request id"
    );
}

#[tokio::test]
async fn allow_list_lets_only_listed_clients_in() {
    let up = Upstream::echo("u").await;
    let gw = Gateway::start(&yaml(&up, "{allow: [\"127.0.0.2\"]}")).await;
    let ok = get_from("127.0.0.2", gw.addr, "/x", &[]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body, "u /x");
    let refused = get_from("127.0.0.1", gw.addr, "/x", &[]).await;
    assert_refused(&refused, "127.0.0.1");
    assert_eq!(
        up.count(),
        1,
        "the refused request never reached the upstream"
    );
}

#[tokio::test]
async fn deny_list_refuses_listed_clients_only() {
    let up = Upstream::echo("u").await;
    let gw = Gateway::start(&yaml(&up, "{deny: [\"127.0.0.3\"]}")).await;
    assert_refused(&get_from("127.0.0.3", gw.addr, "/", &[]).await, "127.0.0.3");
    assert_eq!(up.count(), 0);
    assert_eq!(get_from("127.0.0.4", gw.addr, "/", &[]).await.status, 200);
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn deny_wins_over_allow() {
    let up = Upstream::echo("u").await;
    let gw = Gateway::start(&yaml(
        &up,
        "{allow: [\"127.0.0.0/8\"], deny: [\"127.0.0.5\", \"127.0.0.6\"]}",
    ))
    .await;
    assert_refused(&get_from("127.0.0.5", gw.addr, "/", &[]).await, "127.0.0.5");
    assert_refused(&get_from("127.0.0.6", gw.addr, "/", &[]).await, "127.0.0.6");
    assert_eq!(get_from("127.0.0.7", gw.addr, "/", &[]).await.status, 200);
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn v4_cidrs_match_their_whole_range_and_nothing_else() {
    let up = Upstream::echo("u").await;
    let gw = Gateway::start(&yaml(&up, "{allow: [\"127.0.0.8/30\", \"127.0.1.0/24\"]}")).await;
    for ip in ["127.0.0.8", "127.0.0.11", "127.0.1.0", "127.0.1.255"] {
        assert_eq!(get_from(ip, gw.addr, "/", &[]).await.status, 200, "{ip}");
    }
    for ip in ["127.0.0.7", "127.0.0.12", "127.0.2.0"] {
        assert_refused(&get_from(ip, gw.addr, "/", &[]).await, ip);
    }
    assert_eq!(up.count(), 4);
}

#[tokio::test]
async fn v6_cidrs_match_v6_clients_and_leave_v4_clients_alone() {
    let up = Upstream::echo("u").await;
    let gw = DualStack::start(&yaml(&up, "{deny: [\"::/126\"]}")).await;
    // `::1` is in `::/126`; an IPv4 client's mapped form (::ffff:127.0.0.1) is not.
    assert_refused(&get_from("::1", gw.v6(), "/", &[]).await, "::1");
    assert_eq!(up.count(), 0);
    assert_eq!(get_from("127.0.0.1", gw.v4(), "/", &[]).await.status, 200);

    let up = Upstream::echo("u").await;
    let gw = DualStack::start(&yaml(&up, "{allow: [\"::1/128\"]}")).await;
    assert_eq!(get_from("::1", gw.v6(), "/", &[]).await.status, 200);
    assert_refused(&get_from("127.0.0.1", gw.v4(), "/", &[]).await, "127.0.0.1");
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn a_mapped_v6_peer_matches_v4_rules() {
    // On a dual-stack listener, 127.0.0.1 arrives as the peer ::ffff:127.0.0.1.
    let up = Upstream::echo("u").await;
    let gw = DualStack::start(&yaml(&up, "{deny: [\"127.0.0.0/8\"]}")).await;
    let got = get_from("127.0.0.1", gw.v4(), "/", &[]).await;
    assert_refused(&got, "127.0.0.1");
    assert_eq!(up.count(), 0);

    let up = Upstream::echo("u").await;
    let gw = DualStack::start(&yaml(&up, "{allow: [\"127.0.0.1\"]}")).await;
    assert_eq!(get_from("127.0.0.1", gw.v4(), "/", &[]).await.status, 200);
    assert_refused(&get_from("::1", gw.v6(), "/", &[]).await, "::1");
}

#[tokio::test]
async fn a_v4_client_does_not_slip_past_a_rule_written_for_its_mapped_form() {
    let up = Upstream::echo("u").await;
    let gw = Gateway::start(&yaml(&up, "{deny: [\"::ffff:127.0.0.0/104\"]}")).await;
    assert_refused(&get_from("127.0.0.9", gw.addr, "/", &[]).await, "127.0.0.9");
    assert_eq!(up.count(), 0);

    let up = Upstream::echo("u").await;
    let gw = Gateway::start(&yaml(&up, "{allow: [\"::ffff:127.0.0.10\"]}")).await;
    assert_eq!(get_from("127.0.0.10", gw.addr, "/", &[]).await.status, 200);
    assert_refused(
        &get_from("127.0.0.11", gw.addr, "/", &[]).await,
        "127.0.0.11",
    );
}

#[tokio::test]
async fn custom_status_and_message() {
    let up = Upstream::echo("u").await;
    let gw = Gateway::start(&yaml(
        &up,
        "{deny: [\"127.0.0.1\"], status: 401, message: \"Go away\"}",
    ))
    .await;
    let got = get(&gw.url("/"), &[]).await;
    assert_eq!(got.status, 401);
    assert_eq!(got.json()["message"], "Go away");
    assert_eq!(
        got.headers["content-type"], "application/json; charset=utf-8",
        "Kong's error template"
    );
    // The error template follows Accept, like every kong.response.error.
    let text = get(&gw.url("/"), &[("accept", "text/plain")]).await;
    assert_eq!(text.status, 401);
    assert!(text.body.contains("Go away"), "{}", text.body);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_spoofed_x_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    let up = Upstream::echo("u").await;
    let gw = Gateway::start(&yaml(&up, "{allow: [\"10.0.0.0/8\"]}")).await;
    for xff in ["10.0.0.1", "10.0.0.1, 10.0.0.2", "[::ffff:10.0.0.1]:80"] {
        let got = get(
            &gw.url("/"),
            &[("x-forwarded-for", xff), ("x-real-ip", "10.0.0.1")],
        )
        .await;
        assert_refused(&got, "127.0.0.1");
    }
    let up2 = Upstream::echo("u").await;
    let gw2 = Gateway::start(&yaml(&up2, "{deny: [\"127.0.0.1\"]}")).await;
    let got = get(&gw2.url("/"), &[("x-forwarded-for", "192.0.2.1")]).await;
    assert_refused(&got, "127.0.0.1");
    assert_eq!(up.count() + up2.count(), 0);
}

#[tokio::test]
async fn x_forwarded_for_from_a_trusted_peer_is_honoured_counting_from_the_right() {
    let up = Upstream::echo("u").await;
    let gw = Gateway::start_trusting(
        &yaml(&up, "{allow: [\"10.0.0.0/8\", \"2001:db8::/32\"]}"),
        &["127.0.0.1"],
    )
    .await;
    assert_eq!(
        get(&gw.url("/"), &[("x-forwarded-for", "10.1.2.3")])
            .await
            .status,
        200
    );
    assert_eq!(
        get(&gw.url("/"), &[("x-forwarded-for", "2001:db8::7")])
            .await
            .status,
        200
    );
    assert_eq!(
        get(&gw.url("/"), &[("x-forwarded-for", "::ffff:10.9.9.9")])
            .await
            .status,
        200,
        "a mapped address in X-Forwarded-For matches the v4 rule"
    );
    assert_eq!(up.count(), 3);
    let got = get(&gw.url("/"), &[("x-forwarded-for", "192.0.2.9")]).await;
    assert_refused(&got, "192.0.2.9");
    // A client prepending an allowed address: the right-most untrusted entry is the client.
    let got = get(&gw.url("/"), &[("x-forwarded-for", "10.0.0.1, 192.0.2.10")]).await;
    assert_refused(&got, "192.0.2.10");
    assert_eq!(up.count(), 3);
}
