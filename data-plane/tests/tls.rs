//! TLS termination over real sockets, with certificates made at test time: the certificate
//! chosen by SNI (exact, wildcard, `*`, the listener's default), ALPN h2 and http/1.1,
//! rotation by a config swap while an open connection keeps its certificate, route `snis`,
//! https-only routes, and a client that does not speak TLS.

#[path = "support/harness.rs"]
mod harness;
#[path = "support/pki.rs"]
mod pki;
#[path = "support/tls_client.rs"]
mod tls_client;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use harness::Upstream;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_data_plane::headers::TrustedIps;
use portico_data_plane::tls::DefaultCertificate;
use portico_data_plane::{Listeners, Shared, TlsListener};
use tls_client::{connect, connect_with, connector, get1, http1, leaf_der, pem_block, served_leaf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A data plane with a TLS listener.
struct TlsGateway {
    plain: SocketAddr,
    tls: SocketAddr,
    shared: Arc<Shared>,
    _shutdown: watch::Sender<bool>,
}

impl TlsGateway {
    async fn start(yaml: &str, default: &pki::Leaf) -> TlsGateway {
        let shared = Shared::new(TrustedIps::parse(&[]).unwrap());
        let gw_default = portico_common::tls::parse(&default.cert, &default.key).unwrap();
        let listeners = Listeners {
            proxy: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            status: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            proxy_tls: Some(TlsListener {
                listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
                default: DefaultCertificate(gw_default.key),
            }),
        };
        let plain = listeners.proxy.local_addr().unwrap();
        let tls = listeners
            .proxy_tls
            .as_ref()
            .unwrap()
            .listener
            .local_addr()
            .unwrap();
        let gw = TlsGateway {
            plain,
            tls,
            shared: Arc::clone(&shared),
            _shutdown: watch::channel(false).0,
        };
        gw.apply(yaml);
        let (tx, rx) = watch::channel(false);
        tokio::spawn(portico_data_plane::serve(
            shared,
            listeners,
            rx,
            Duration::from_secs(5),
        ));
        TlsGateway {
            _shutdown: tx,
            ..gw
        }
    }

    /// Swaps in `yaml`, as a reload does.
    fn apply(&self, yaml: &str) {
        harness::apply(&self.shared, yaml);
    }
}

/// A `certificates` entry serving `leaf` for `snis`.
fn cert_entry(leaf: &pki::Leaf, snis: &[&str]) -> String {
    format!(
        "  - cert: {}    key: {}    snis: [{}]\n",
        pem_block(&leaf.cert, 4),
        pem_block(&leaf.key, 4),
        snis.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn config(up: &Upstream, certs: &[String]) -> String {
    format!(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://{}\n    routes:\n      - name: all\n        paths: [/]\ncertificates:\n{}",
        up.addr,
        certs.concat()
    )
}

#[tokio::test]
async fn the_certificate_is_chosen_by_sni_and_unknown_names_get_the_default() {
    let ca = pki::Ca::new("test ca");
    let exact = ca.server(&["a.example.com"]);
    let wild = ca.server(&["*.wild.example.com"]);
    let catch_all = ca.server(&["catchall.example.net"]);
    let default = ca.server(&["default.example.org"]);
    let up = Upstream::echo("up").await;
    let gw = TlsGateway::start(
        &config(
            &up,
            &[
                cert_entry(&exact, &["a.example.com"]),
                cert_entry(&wild, &["*.wild.example.com"]),
            ],
        ),
        &default,
    )
    .await;

    let s = connect(gw.tls, "a.example.com", &ca.pem(), &[]).await;
    assert_eq!(served_leaf(&s), leaf_der(&exact.cert));
    let mut send = http1(s).await;
    let (status, body) = get1(&mut send, "a.example.com", "/hello").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "up /hello"));
    let seen = up.last();
    assert_eq!(seen.headers["x-forwarded-proto"], "https");

    let s = connect(gw.tls, "x.wild.example.com", &ca.pem(), &[]).await;
    assert_eq!(served_leaf(&s), leaf_der(&wild.cert));
    // A leftmost wildcard covers one label, as Kong's lookup does.
    let s = connect(gw.tls, "default.example.org", &ca.pem(), &[]).await;
    assert_eq!(served_leaf(&s), leaf_der(&default.cert), "no SNI takes it");

    // An SNI `*` replaces the listener's default for every name no other SNI takes.
    gw.apply(&config(
        &up,
        &[
            cert_entry(&exact, &["a.example.com"]),
            cert_entry(&catch_all, &["*"]),
        ],
    ));
    let s = connect(gw.tls, "catchall.example.net", &ca.pem(), &[]).await;
    assert_eq!(served_leaf(&s), leaf_der(&catch_all.cert));
    let s = connect(gw.tls, "a.example.com", &ca.pem(), &[]).await;
    assert_eq!(served_leaf(&s), leaf_der(&exact.cert));
}

#[tokio::test]
async fn alpn_offers_h2_and_http1() {
    let ca = pki::Ca::new("test ca");
    let cert = ca.server(&["a.example.com"]);
    let up = Upstream::echo("up").await;
    let gw = TlsGateway::start(
        &config(&up, &[cert_entry(&cert, &["a.example.com"])]),
        &cert,
    )
    .await;

    let s = connect(gw.tls, "a.example.com", &ca.pem(), &[b"h2", b"http/1.1"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    for i in 0..3 {
        let req = Request::get(format!("https://a.example.com/h2/{i}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("up /h2/{i}"));
    }

    let s = connect(gw.tls, "a.example.com", &ca.pem(), &[b"http/1.1"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut send = http1(s).await;
    assert_eq!(
        get1(&mut send, "a.example.com", "/h1").await.0,
        StatusCode::OK
    );

    // TLS 1.2 alone is served too.
    let tls12 = connector(&ca.pem(), &[], &[&rustls::version::TLS12]);
    let s = connect_with(gw.tls, "a.example.com", &tls12).await;
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
}

#[tokio::test]
async fn a_config_swap_rotates_the_certificate_and_open_connections_keep_theirs() {
    let ca = pki::Ca::new("test ca");
    let old = ca.server(&["a.example.com"]);
    let new = ca.server(&["a.example.com"]);
    let up = Upstream::echo("up").await;
    let gw = TlsGateway::start(&config(&up, &[cert_entry(&old, &["a.example.com"])]), &old).await;

    let s = connect(gw.tls, "a.example.com", &ca.pem(), &[]).await;
    assert_eq!(served_leaf(&s), leaf_der(&old.cert));
    let mut open = http1(s).await;
    assert_eq!(
        get1(&mut open, "a.example.com", "/1").await.0,
        StatusCode::OK
    );

    gw.apply(&config(&up, &[cert_entry(&new, &["a.example.com"])]));

    // New handshakes get the new certificate...
    let s = connect(gw.tls, "a.example.com", &ca.pem(), &[]).await;
    assert_eq!(served_leaf(&s), leaf_der(&new.cert));
    // ...and the connection opened before the swap is still served.
    for i in 2..5 {
        let (status, body) = get1(&mut open, "a.example.com", &format!("/{i}")).await;
        assert_eq!((status, body), (StatusCode::OK, format!("up /{i}")));
    }
}

#[tokio::test]
async fn route_snis_and_https_only_routes() {
    let ca = pki::Ca::new("test ca");
    let cert = ca.server(&["a.example.com", "b.example.com"]);
    let a = Upstream::echo("a").await;
    let other = Upstream::echo("other").await;
    let yaml = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: a\n    url: http://{}\n    routes:\n      - name: by-sni\n        protocols: [https]\n        snis: [a.example.com]\n        paths: [/]\n  - name: other\n    url: http://{}\n    routes:\n      - name: secure\n        protocols: [https]\n        paths: [/secure]\n      - name: moved\n        protocols: [https]\n        paths: [/moved]\n        https_redirect_status_code: 301\n      - name: rest\n        paths: [/]\ncertificates:\n{}",
        a.addr,
        other.addr,
        cert_entry(&cert, &["a.example.com", "b.example.com"])
    );
    let gw = TlsGateway::start(&yaml, &cert).await;

    // `by-sni` outranks `rest` (same path, one more field matched) for its server name only.
    let mut send = http1(connect(gw.tls, "a.example.com", &ca.pem(), &[]).await).await;
    assert_eq!(get1(&mut send, "a.example.com", "/x").await.1, "a /x");
    let mut send = http1(connect(gw.tls, "b.example.com", &ca.pem(), &[]).await).await;
    assert_eq!(get1(&mut send, "a.example.com", "/x").await.1, "other /x");
    assert_eq!(
        get1(&mut send, "b.example.com", "/secure/1").await.1,
        "other /1"
    );

    // Over plain HTTP a route's snis are not checked (Kong: `net.protocol != "https" ||
    // tls.sni == ..`), so `by-sni` would take these too: without it, plain HTTP on an
    // https-only route gets 426, or the configured redirect.
    assert_eq!(
        harness::get(&format!("http://{}/moved/x", gw.plain), &[])
            .await
            .status,
        StatusCode::UPGRADE_REQUIRED
    );
    let start = yaml.find("  - name: a\n").unwrap();
    let end = yaml.find("  - name: other\n").unwrap();
    gw.apply(&format!("{}{}", &yaml[..start], &yaml[end..]));
    let r = harness::get(&format!("http://{}/secure/1", gw.plain), &[]).await;
    assert_eq!(r.status, StatusCode::UPGRADE_REQUIRED);
    assert_eq!(r.json()["message"], "Please use HTTPS protocol");
    let r = harness::get(
        &format!("http://{}/moved/x?q=1", gw.plain),
        &[("host", "b.example.com")],
    )
    .await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.headers["location"], "https://b.example.com/moved/x?q=1");
}

#[tokio::test]
async fn a_client_that_does_not_speak_tls_is_dropped_and_the_listener_carries_on() {
    let ca = pki::Ca::new("test ca");
    let cert = ca.server(&["a.example.com"]);
    let up = Upstream::echo("up").await;
    let gw = TlsGateway::start(
        &config(&up, &[cert_entry(&cert, &["a.example.com"])]),
        &cert,
    )
    .await;

    let mut raw = TcpStream::connect(gw.tls).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut buf))
        .await
        .expect("the connection is closed, not left open");
    assert!(read.is_ok() || read.is_err(), "closed or reset");
    assert!(
        !String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"),
        "plain HTTP must not be served on the TLS port"
    );
    assert_eq!(up.count(), 0);

    let mut send = http1(connect(gw.tls, "a.example.com", &ca.pem(), &[]).await).await;
    assert_eq!(
        get1(&mut send, "a.example.com", "/ok").await.0,
        StatusCode::OK
    );
}
