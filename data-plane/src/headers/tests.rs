use super::*;

fn trusted(v: &[&str]) -> TrustedIps {
    TrustedIps::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
}

#[test]
fn connection_listed_headers_are_removed_but_ours_survive() {
    let mut h = HeaderMap::new();
    h.insert(
        "connection",
        HeaderValue::from_static("close, X-Forwarded-For, x-secret"),
    );
    h.insert("x-secret", HeaderValue::from_static("1"));
    h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    h.insert("upgrade", HeaderValue::from_static("h2c"));
    h.insert(
        "http2-settings",
        HeaderValue::from_static("AAMAAABkAAQAAP__"),
    );
    let conn = ConnHeaders::new("192.0.2.7".parse().unwrap(), 8000);
    let f = Forwarding {
        peer: "192.0.2.7".parse().unwrap(),
        trusted: false,
        scheme: "http",
        host: "example.com",
        port: 8000,
        path: "/a",
        prefix: None,
        peer_header: &conn.peer,
        port_header: &conn.port,
    };
    let via = HeaderValue::from_static("1.1 portico");
    forward_request_headers(&mut h, &f, f.peer, &via);
    assert!(h.get("x-secret").is_none());
    assert!(h.get("keep-alive").is_none());
    assert!(h.get("upgrade").is_none());
    assert!(h.get("http2-settings").is_none());
    assert!(h.get("connection").is_none());
    assert_eq!(h["x-forwarded-for"], "192.0.2.7");
    assert_eq!(h["x-real-ip"], "192.0.2.7");
    assert_eq!(h["via"], "1.1 portico");
}

#[test]
fn untrusted_forwarding_headers_are_replaced_trusted_ones_kept() {
    let mk = || {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("127.0.0.1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        h.insert(
            "forwarded",
            HeaderValue::from_static("for=127.0.0.1;proto=https"),
        );
        h.insert("x-consumer-id", HeaderValue::from_static("admin"));
        h
    };
    let via = HeaderValue::from_static("1.1 portico");
    let conn = ConnHeaders::new("10.1.2.3".parse().unwrap(), 8000);
    let mut f = Forwarding {
        peer: "10.1.2.3".parse().unwrap(),
        trusted: false,
        scheme: "http",
        host: "api.example.com",
        port: 8000,
        path: "/x",
        prefix: Some("/svc"),
        peer_header: &conn.peer,
        port_header: &conn.port,
    };
    let mut h = mk();
    strip_client_identity(&mut h);
    forward_request_headers(&mut h, &f, f.peer, &via);
    assert_eq!(h["x-forwarded-for"], "10.1.2.3");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "api.example.com");
    assert_eq!(h["x-forwarded-port"], "8000");
    assert_eq!(h["x-forwarded-prefix"], "/svc");
    assert_eq!(h["x-real-ip"], "10.1.2.3");
    assert!(h.get("forwarded").is_none());
    assert!(
        h.get("x-consumer-id").is_none(),
        "identity headers are never taken from clients"
    );

    f.trusted = true;
    let mut h = mk();
    strip_client_identity(&mut h);
    forward_request_headers(&mut h, &f, "127.0.0.1".parse().unwrap(), &via);
    assert_eq!(h["x-forwarded-for"], "127.0.0.1, 10.1.2.3");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "evil.example");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert!(h.get("x-consumer-id").is_none());
}

#[test]
fn every_header_a_client_may_not_forward_goes_and_the_rest_stays() {
    let mut h = HeaderMap::new();
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "http2-settings",
        "content-length",
        "expect",
        "x-consumer-id",
        "x-consumer-custom-id",
        "x-consumer-username",
        "x-consumer-groups",
        "x-credential-identifier",
        "x-anonymous-consumer",
        "x-authenticated-groups",
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
        "x_forwarded_for",
        "transfer_encoding",
    ]
    .into_iter()
    .chain(FORWARDING.iter().map(HeaderName::as_str))
    {
        h.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_static("client"),
        );
    }
    // Repeated values of a doomed name all go.
    h.append("x-consumer-id", HeaderValue::from_static("again"));
    h.append("accept", HeaderValue::from_static("*/*"));
    h.append("x-keep-me", HeaderValue::from_static("1"));
    h.append("x-keep-me", HeaderValue::from_static("2"));
    let conn = ConnHeaders::new("::ffff:192.0.2.9".parse().unwrap(), 443);
    let f = Forwarding {
        peer: "::ffff:192.0.2.9".parse().unwrap(),
        trusted: false,
        scheme: "https",
        host: "example.com",
        port: 443,
        path: "/p",
        prefix: None,
        peer_header: &conn.peer,
        port_header: &conn.port,
    };
    strip_client_identity(&mut h);
    forward_request_headers(&mut h, &f, f.peer, &HeaderValue::from_static("1.1 portico"));
    let mut left: Vec<(String, String)> = h
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    left.sort();
    let expect: Vec<(String, String)> = [
        ("accept", "*/*"),
        ("via", "1.1 portico"),
        ("x-forwarded-for", "192.0.2.9"),
        ("x-forwarded-host", "example.com"),
        ("x-forwarded-path", "/p"),
        ("x-forwarded-port", "443"),
        ("x-forwarded-proto", "https"),
        ("x-keep-me", "1"),
        ("x-keep-me", "2"),
        ("x-real-ip", "192.0.2.9"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(left, expect);
}

#[test]
fn client_ip_counts_from_the_right_through_trusted_hops() {
    let t = trusted(&["10.0.0.0/8"]);
    let mut h = HeaderMap::new();
    h.append(
        "x-forwarded-for",
        HeaderValue::from_static("1.1.1.1, 203.0.113.9"),
    );
    h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.5"));
    // Peer trusted, 10.0.0.5 trusted, 203.0.113.9 is the first untrusted from the right.
    assert_eq!(
        client_ip(&h, "10.9.9.9".parse().unwrap(), &t),
        "203.0.113.9".parse::<IpAddr>().unwrap()
    );
    // An untrusted peer's XFF is ignored entirely.
    assert_eq!(
        client_ip(&h, "198.51.100.1".parse().unwrap(), &t),
        "198.51.100.1".parse::<IpAddr>().unwrap()
    );
    let mut h = HeaderMap::new();
    h.insert(
        "x-forwarded-for",
        HeaderValue::from_static("[2001:db8::1]:4711"),
    );
    assert_eq!(
        client_ip(&h, "::ffff:10.0.0.1".parse().unwrap(), &t),
        "2001:db8::1".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn trusted_ips_reject_garbage() {
    assert!(TrustedIps::parse(&["not-an-ip".into()]).is_err());
    assert!(trusted(&["::1", "192.168.0.0/16"]).contains("192.168.4.4".parse().unwrap()));
}

#[test]
fn host_header_omits_default_port() {
    assert_eq!(host_header_value("svc.local", 80, 80), "svc.local");
    assert_eq!(host_header_value("svc.local", 8080, 80), "svc.local:8080");
    assert_eq!(host_header_value("::1", 8080, 80), "[::1]:8080");
}

#[test]
fn request_ids_are_propagated_when_sane_and_unique_otherwise() {
    let ids = RequestIds::default();
    let mut h = HeaderMap::new();
    h.insert("x-request-id", HeaderValue::from_static("abc-123"));
    assert_eq!(ids.for_request(&h), "abc-123");
    h.insert("x-request-id", HeaderValue::from_static("has space"));
    let a = ids.for_request(&h);
    let b = ids.for_request(&h);
    assert_ne!(a, b);
    assert_eq!(a.len(), 24);
    // Hex of the process prefix, then of the counter.
    let ids = RequestIds {
        prefix: 0x0a1b_2c3d,
        counter: AtomicU64::new(0xfedc_ba98_7654_3210),
    };
    assert_eq!(ids.fresh(), "0a1b2c3dfedcba9876543210");
    assert_eq!(ids.fresh(), "0a1b2c3dfedcba9876543211");
}

#[test]
fn latency_values_print_milliseconds() {
    for ms in [0, 7, 9, 10, 99, 1234, u64::MAX] {
        assert_eq!(millis_value(ms), ms.to_string().as_str());
    }
}

#[test]
fn ip_text_writes_what_display_writes() {
    let ips = [
        "0.0.0.0",
        "127.0.0.1",
        "10.20.30.40",
        "255.255.255.255",
        "192.168.100.9",
        "::1",
        "2001:db8::ff00:42:8329",
        "::ffff:10.0.0.1",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "::ffff:255.255.255.255",
        "fe80::1",
    ];
    for text in ips {
        let ip: IpAddr = text.parse().unwrap();
        let mut buf = [0u8; IP_TEXT_MAX];
        assert_eq!(ip_text(ip, &mut buf), ip.to_string().as_bytes(), "{text}");
    }
    // Every octet value (one, two and three digits) in every position.
    for o in 0..=255u8 {
        for ip in [
            std::net::Ipv4Addr::new(o, 0, 0, 0),
            std::net::Ipv4Addr::new(1, o, 22, 255),
            std::net::Ipv4Addr::new(100, 9, o, 10),
            std::net::Ipv4Addr::new(0, 255, 99, o),
        ] {
            let ip = IpAddr::V4(ip);
            let mut buf = [0u8; IP_TEXT_MAX];
            assert_eq!(ip_text(ip, &mut buf), ip.to_string().as_bytes(), "{ip}");
        }
    }
}
