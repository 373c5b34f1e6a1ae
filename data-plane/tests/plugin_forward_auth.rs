//! forward-auth through the real proxy: an in-process auth service decides from the token in
//! `Authorization`, a recording upstream shows what got through.

#[path = "support/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use bytes::Bytes;
use harness::{get, send, Gateway, Seen, Upstream};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A gateway with routes `/api` (forward-auth with `config`) and `/open` (no plugin).
async fn gateway(up: &Upstream, config: &str) -> Gateway {
    Gateway::start(&format!(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://{}\n    routes:\n      \
         - name: api\n        paths: [\"/api\"]\n        plugins:\n          - name: forward-auth\n            \
         config: {config}\n      - name: open\n        paths: [\"/open\"]\n",
        up.addr
    ))
    .await
}

fn reply(status: u16, headers: &[(&'static str, &str)], body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    for (k, v) in headers {
        r.headers_mut().append(*k, v.parse().unwrap());
    }
    r
}

/// The auth service: `Bearer good` is user 42 (admin), `Bearer anon` passes without an
/// identity, `Bearer login` is sent to a login page, `Bearer banned` is forbidden, anything
/// else is unauthorized.
async fn auth_service() -> Upstream {
    Upstream::start(|seen: Seen| async move {
        let token = seen
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        match token.as_str() {
            "Bearer good" => reply(
                200,
                &[
                    ("x-user-id", "42"),
                    ("x-user-role", "admin"),
                    ("x-other", "no"),
                ],
                "ok",
            ),
            "Bearer anon" => reply(204, &[], ""),
            "Bearer login" => reply(302, &[("location", "https://login.test/?next=%2Fapi")], ""),
            "Bearer banned" => reply(
                403,
                &[("content-type", "text/plain"), ("x-reason", "banned")],
                "you are banned",
            ),
            _ => reply(
                401,
                &[
                    (
                        "www-authenticate",
                        "Bearer realm=\"portico\", error=\"invalid_token\"",
                    ),
                    ("content-type", "application/json"),
                    ("set-cookie", "a=1"),
                    ("set-cookie", "b=2"),
                    ("connection", "x-secret-hop"),
                    ("x-secret-hop", "hop"),
                ],
                "{\"error\":\"invalid token\"}",
            ),
        }
    })
    .await
}

fn config(auth: &Upstream, extra: &str) -> String {
    format!(
        "{{url: \"http://{}/verify?realm=a\", auth_response_headers: [X-User-Id, X-User-Role]{extra}}}",
        auth.addr
    )
}

#[tokio::test]
async fn a_2xx_lets_the_request_through_with_the_identity_headers() {
    let (auth, up) = (auth_service().await, Upstream::echo("u").await);
    let gw = gateway(&up, &config(&auth, "")).await;
    let got = get(&gw.url("/api/things"), &[("authorization", "Bearer good")]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, "u /things");
    let seen = up.last();
    assert_eq!(seen.headers["x-user-id"], "42");
    assert_eq!(seen.headers["x-user-role"], "admin");
    assert!(
        !seen.headers.contains_key("x-other"),
        "only auth_response_headers are copied"
    );
    assert_eq!(
        seen.headers["authorization"], "Bearer good",
        "the client's headers stay"
    );
}

#[tokio::test]
async fn a_client_cannot_supply_the_identity_headers_itself() {
    let (auth, up) = (auth_service().await, Upstream::echo("u").await);
    let gw = gateway(&up, &config(&auth, "")).await;
    let forged = [
        ("authorization", "Bearer good"),
        ("x-user-id", "1"),
        ("x-user-role", "root"),
    ];
    assert_eq!(get(&gw.url("/api"), &forged).await.status, 200);
    let seen = up.last();
    let ids: Vec<_> = seen.headers.get_all("x-user-id").iter().collect();
    assert_eq!(ids, ["42"], "replaced, not appended");
    assert_eq!(seen.headers["x-user-role"], "admin");

    // The auth service vouches for no user: the client's values are removed, not kept.
    let forged = [
        ("authorization", "Bearer anon"),
        ("x-user-id", "1"),
        ("x-user-role", "root"),
    ];
    assert_eq!(get(&gw.url("/api"), &forged).await.status, 200);
    let seen = up.last();
    assert!(!seen.headers.contains_key("x-user-id"));
    assert!(!seen.headers.contains_key("x-user-role"));
}

#[tokio::test]
async fn refusals_are_relayed_as_the_auth_service_wrote_them() {
    let (auth, up) = (auth_service().await, Upstream::echo("u").await);
    let gw = gateway(&up, &config(&auth, "")).await;

    let got = get(&gw.url("/api"), &[("authorization", "Bearer wrong")]).await;
    assert_eq!(got.status, 401);
    assert_eq!(got.body, "{\"error\":\"invalid token\"}");
    assert_eq!(
        got.headers["www-authenticate"],
        "Bearer realm=\"portico\", error=\"invalid_token\""
    );
    assert_eq!(got.headers["content-type"], "application/json");
    let cookies: Vec<_> = got.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert!(
        !got.headers.contains_key("x-secret-hop"),
        "headers the auth service's Connection names are hop-by-hop"
    );
    assert!(got.headers.contains_key("x-request-id"));

    let got = get(&gw.url("/api"), &[("authorization", "Bearer banned")]).await;
    assert_eq!(got.status, 403);
    assert_eq!(got.body, "you are banned");
    assert_eq!(got.headers["x-reason"], "banned");

    let got = get(&gw.url("/api"), &[("authorization", "Bearer login")]).await;
    assert_eq!(got.status, 302);
    assert_eq!(got.headers["location"], "https://login.test/?next=%2Fapi");

    assert_eq!(up.count(), 0, "the upstream never saw a refused request");
    assert_eq!(
        get(&gw.url("/open"), &[]).await.status,
        200,
        "other routes skip auth"
    );
    assert_eq!(auth.count(), 3);
}

#[tokio::test]
async fn the_auth_service_learns_what_the_request_was() {
    let (auth, up) = (auth_service().await, Upstream::echo("u").await);
    let gw = gateway(&up, &config(&auth, "")).await;
    let req = Request::post(gw.url("/api/orders/7?expand=items&x=%20y"))
        .header("authorization", "Bearer good")
        .header("cookie", "session=abc")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-host", "evil.test")
        .header("x-forwarded-uri", "/open")
        .header("x-forwarded-method", "GET")
        .header("connection", "x-drop-me")
        .header("x-drop-me", "1")
        .body(Full::new(Bytes::from_static(b"{\"qty\":3}")))
        .unwrap();
    let got = send(req).await;
    assert_eq!(got.status, 200);

    let a = auth.last();
    assert_eq!(a.method, "GET");
    assert_eq!(a.uri, "/verify?realm=a");
    assert_eq!(a.body_len, 0, "the body is the upstream's");
    assert!(!a.headers.contains_key("content-length"));
    assert_eq!(a.headers["host"], auth.addr.to_string().as_str());
    assert_eq!(a.headers["x-forwarded-method"], "POST");
    assert_eq!(a.headers["x-forwarded-proto"], "http");
    assert_eq!(a.headers["x-forwarded-host"], "127.0.0.1");
    assert_eq!(
        a.headers["x-forwarded-uri"],
        "/api/orders/7?expand=items&x=%20y"
    );
    assert_eq!(
        a.headers["x-forwarded-for"], "127.0.0.1",
        "the client's own is dropped"
    );
    assert_eq!(a.headers["authorization"], "Bearer good");
    assert_eq!(a.headers["cookie"], "session=abc");
    assert!(
        !a.headers.contains_key("x-drop-me"),
        "hop-by-hop never forwarded"
    );
    assert!(!a.headers.contains_key("connection"));
    let one = |name: &str| a.headers.get_all(name).iter().count();
    assert_eq!(one("x-forwarded-uri"), 1);
    assert_eq!(one("x-forwarded-host"), 1);

    let seen = up.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(
        seen.body_len, 9,
        "the upstream still gets the client's body"
    );
    assert_eq!(seen.headers["x-request-id"], a.headers["x-request-id"]);
}

#[tokio::test]
async fn auth_request_headers_limits_what_the_auth_service_sees() {
    let (auth, up) = (auth_service().await, Upstream::echo("u").await);
    let gw = gateway(
        &up,
        &config(&auth, ", auth_request_headers: [Authorization]"),
    )
    .await;
    let headers = [
        ("authorization", "Bearer good"),
        ("cookie", "session=abc"),
        ("x-custom", "1"),
    ];
    assert_eq!(get(&gw.url("/api"), &headers).await.status, 200);
    let a = auth.last();
    assert_eq!(a.headers["authorization"], "Bearer good");
    assert!(!a.headers.contains_key("cookie"));
    assert!(!a.headers.contains_key("x-custom"));
    assert_eq!(
        a.headers["x-forwarded-uri"], "/api",
        "Portico's own headers still go"
    );
    assert_eq!(
        up.last().headers["cookie"],
        "session=abc",
        "the upstream gets them all"
    );
}

#[tokio::test]
async fn an_auth_service_that_never_answers_is_a_503_within_the_timeout() {
    let up = Upstream::echo("u").await;
    let auth = Upstream::start(|_| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        reply(200, &[], "")
    })
    .await;
    let gw = gateway(&up, &config(&auth, ", timeout: 300")).await;
    let start = Instant::now();
    let got = get(&gw.url("/api"), &[("authorization", "Bearer good")]).await;
    let took = start.elapsed();
    assert_eq!(got.status, 503);
    assert_eq!(
        got.json()["message"],
        "The authentication service is timing out"
    );
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_silent_listener_times_out_too() {
    // Accepts the connection and reads, but never writes: the response-header wait is bounded.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    let up = Upstream::echo("u").await;
    let cfg = format!("{{url: \"http://{addr}/\", timeout: 200}}");
    let gw = gateway(&up, &cfg).await;
    let got = get(&gw.url("/api"), &[]).await;
    assert_eq!(got.status, 503);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn an_unreachable_auth_service_fails_closed_with_500() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let up = Upstream::echo("u").await;
    let gw = gateway(&up, &format!("{{url: \"http://{closed}/verify\"}}")).await;
    let got = get(&gw.url("/api"), &[("authorization", "Bearer good")]).await;
    assert_eq!(got.status, 500);
    assert_eq!(got.json()["message"], "An unexpected error occurred");
    assert!(got.json()["request_id"].is_string());
    assert_eq!(up.count(), 0);
}

/// An auth "service" that writes `answer` to every connection and closes it.
async fn raw_auth(answer: &'static [u8]) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_malformed_or_oversized_answer_fails_closed_with_500() {
    let up = Upstream::echo("u").await;
    let garbage = raw_auth(b"this is not HTTP\r\n\r\n").await;
    let gw = gateway(&up, &format!("{{url: \"http://{garbage}/\"}}")).await;
    assert_eq!(get(&gw.url("/api"), &[]).await.status, 500);

    // 401 with a body over the 64 KiB cap: refused, not relayed cut short.
    let big = Upstream::start(|_| async { reply(401, &[], &"x".repeat(70 * 1024)) }).await;
    let gw = gateway(&up, &format!("{{url: \"http://{}/\"}}", big.addr)).await;
    let got = get(&gw.url("/api"), &[]).await;
    assert_eq!(got.status, 500);
    assert_eq!(got.json()["message"], "An unexpected error occurred");

    // A 2xx whose body is cut short is no answer either.
    let cut = raw_auth(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc").await;
    let gw = gateway(&up, &format!("{{url: \"http://{cut}/\"}}")).await;
    assert_eq!(get(&gw.url("/api"), &[]).await.status, 500);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn keep_alive_connections_to_the_auth_service_are_reused() {
    let (auth, up) = (auth_service().await, Upstream::echo("u").await);
    let gw = gateway(&up, &config(&auth, "")).await;
    for _ in 0..5 {
        let got = get(&gw.url("/api"), &[("authorization", "Bearer good")]).await;
        assert_eq!(got.status, 200);
    }
    assert_eq!(auth.count(), 5);
    let pool = gw.shared.pools.endpoint("127.0.0.1", auth.addr.port());
    assert_eq!(pool.opened(), 1, "one connection served every auth call");
}

#[tokio::test]
async fn a_consumer_a_built_in_plugin_authenticated_is_named_to_the_auth_service() {
    let (auth, up) = (auth_service().await, Upstream::echo("u").await);
    let gw = Gateway::start(&format!(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://{}\n    routes:\n      \
         - name: api\n        paths: [\"/api\"]\n        plugins:\n          - name: key-auth\n          \
         - name: forward-auth\n            config: {}\nconsumers:\n  - username: alice\n    \
         keyauth_credentials:\n      - key: alice-key\n",
        up.addr,
        config(&auth, "")
    ))
    .await;
    let headers = [
        ("apikey", "alice-key"),
        ("authorization", "Bearer good"),
        ("x-consumer-username", "mallory"),
    ];
    assert_eq!(get(&gw.url("/api"), &headers).await.status, 200);
    let a = auth.last();
    assert_eq!(
        a.headers["x-consumer-username"], "alice",
        "key-auth ran first"
    );
    assert!(a.headers.contains_key("x-consumer-id"));
    assert_eq!(up.last().headers["x-user-id"], "42");

    // Without a key, key-auth refuses before the auth service is asked.
    let got = get(&gw.url("/api"), &[("authorization", "Bearer good")]).await;
    assert_eq!(got.status, 401);
    assert_eq!(auth.count(), 1);
}
