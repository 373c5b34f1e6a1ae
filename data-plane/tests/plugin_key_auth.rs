//! key-auth through the real proxy (KONG.md §3.2, §3.3): where the key is looked for, Kong's
//! error bodies, the identity headers the upstream gets, hide_credentials, anonymous.

#[path = "support/harness.rs"]
mod harness;

use bytes::Bytes;
use harness::{get, send, Gateway, Got, Upstream};
use http::Request;
use http_body_util::Full;

const ALICE: &str = "a1a1a1a1-0000-4000-8000-000000000001";
const ALICE_CRED: &str = "c1c1c1c1-0000-4000-8000-000000000001";
const BOB: &str = "b0b0b0b0-0000-4000-8000-000000000002";
const BOB_CRED: &str = "c2c2c2c2-0000-4000-8000-000000000002";
const ANON: &str = "a0a0a0a0-0000-4000-8000-000000000003";

/// A gateway with a route per `(path, key-auth config)` and three consumers: alice (username
/// and custom_id, key `alice-key`), bob (custom_id only, key `bob-key`), anon (no key), plus
/// `old-key` whose ttl (absolute Unix time 1000) has long passed.
async fn gateway(up: &Upstream, routes: &[(&str, &str)]) -> Gateway {
    let mut yaml = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://{}\n    routes:\n",
        up.addr
    );
    for (i, (path, config)) in routes.iter().enumerate() {
        yaml.push_str(&format!(
            "      - name: r{i}\n        paths: [\"{path}\"]\n        plugins:\n          - name: key-auth\n            config: {config}\n"
        ));
    }
    yaml.push_str(&format!(
        "consumers:
  - id: {ALICE}
    username: alice
    custom_id: alice-001
    keyauth_credentials:
      - id: {ALICE_CRED}
        key: alice-key
      - key: old-key
        ttl: 1000
  - id: {BOB}
    custom_id: bob-002
    keyauth_credentials:
      - id: {BOB_CRED}
        key: bob-key
  - id: {ANON}
    username: anon
"
    ));
    Gateway::start(&yaml).await
}

/// Asserts a `kong.response.error` JSON body (KONG.md §0), request id included.
fn assert_error(got: &Got, status: u16, message: &str) {
    assert_eq!(got.status, status, "{}", got.body);
    assert_eq!(
        got.headers["content-type"],
        "application/json; charset=utf-8"
    );
    let id = got.headers["x-request-id"].to_str().unwrap();
    assert!(!id.is_empty());
    assert_eq!(
        got.body,
        format!("{{\n  \"message\":\"{message}\",\n  \"request_id\":\"{id}\"\n}}")
    );
}

fn assert_401(got: &Got, message: &str, challenge: &str) {
    assert_error(got, 401, message);
    assert_eq!(got.headers["www-authenticate"], challenge);
}

async fn post(url: &str, headers: &[(&str, &str)], body: &'static str) -> Got {
    let mut b = Request::post(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(
        b.body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn missing_empty_unknown_and_expired_keys_get_kongs_401s() {
    let up = Upstream::echo("u").await;
    let gw = gateway(&up, &[("/k", "{}"), ("/realm", "{ realm: portico }")]).await;

    assert_401(
        &get(&gw.url("/k"), &[]).await,
        "No API key found in request",
        "Key",
    );
    assert_401(
        &get(&gw.url("/k"), &[("apikey", "")]).await,
        "No API key found in request",
        "Key",
    );
    assert_401(
        &get(&gw.url("/k?apikey="), &[]).await,
        "No API key found in request",
        "Key",
    );
    assert_401(
        &get(&gw.url("/k"), &[("apikey", "nope")]).await,
        "Unauthorized",
        "Key",
    );
    // A key differing only in case or by a prefix is just unknown.
    assert_401(
        &get(&gw.url("/k?apikey=ALICE-KEY"), &[]).await,
        "Unauthorized",
        "Key",
    );
    assert_401(
        &get(&gw.url("/k?apikey=alice-ke"), &[]).await,
        "Unauthorized",
        "Key",
    );
    // ttl is an absolute Unix time in DB-less Kong: 1000 passed in 1970.
    assert_401(
        &get(&gw.url("/k"), &[("apikey", "old-key")]).await,
        "Unauthorized",
        "Key",
    );
    assert_401(
        &get(&gw.url("/realm"), &[]).await,
        "No API key found in request",
        "Key realm=\"portico\"",
    );
    assert_eq!(up.count(), 0);

    // Kong's error templates follow Accept here too.
    let got = get(&gw.url("/k"), &[("accept", "text/plain")]).await;
    assert_eq!(got.status, 401);
    assert!(got
        .body
        .starts_with("No API key found in request\nrequest_id: "));
}

#[tokio::test]
async fn header_and_query_keys_send_the_consumer_upstream() {
    let up = Upstream::echo("u").await;
    let gw = gateway(&up, &[("/k", "{}")]).await;

    // Spoofed identity headers never reach the upstream (KONG.md §3.2).
    let got = get(
        &gw.url("/k"),
        &[
            ("apikey", "alice-key"),
            ("x-consumer-id", "forged"),
            ("x-consumer-groups", "admin"),
            ("x-anonymous-consumer", "true"),
            ("x-credential-identifier", "forged"),
        ],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let seen = up.last().headers;
    assert_eq!(seen["x-consumer-id"], ALICE);
    assert_eq!(seen["x-consumer-custom-id"], "alice-001");
    assert_eq!(seen["x-consumer-username"], "alice");
    assert_eq!(seen["x-credential-identifier"], ALICE_CRED);
    assert!(!seen.contains_key("x-anonymous-consumer"));
    assert!(!seen.contains_key("x-consumer-groups"));
    assert_eq!(seen.get_all("x-consumer-id").iter().count(), 1);
    // hide_credentials is off: the key goes on.
    assert_eq!(seen["apikey"], "alice-key");

    let got = get(
        &gw.url("/k?x=1&apikey=bob-key"),
        &[("x-consumer-username", "alice")],
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = up.last();
    // strip_path (on by default) takes the route prefix off.
    assert_eq!(seen.uri, "/?x=1&apikey=bob-key");
    assert_eq!(seen.headers["x-consumer-id"], BOB);
    assert_eq!(seen.headers["x-consumer-custom-id"], "bob-002");
    assert_eq!(seen.headers["x-credential-identifier"], BOB_CRED);
    // bob has no username: the header is absent, not the client's.
    assert!(!seen.headers.contains_key("x-consumer-username"));
}

#[tokio::test]
async fn key_names_are_tried_in_order_each_in_header_then_query() {
    let up = Upstream::echo("u").await;
    let gw = gateway(&up, &[("/k", "{ key_names: [first, second] }")]).await;

    // `first` in the query beats `second` in a header: names go in order.
    let got = get(&gw.url("/k?first=alice-key"), &[("second", "bob-key")]).await;
    assert_eq!(got.status, 200);
    assert_eq!(up.last().headers["x-consumer-id"], ALICE);
    // For one name the header beats the query.
    let got = get(&gw.url("/k?first=alice-key"), &[("first", "bob-key")]).await;
    assert_eq!(got.status, 200);
    assert_eq!(up.last().headers["x-consumer-id"], BOB);
    // The first string found wins, even when it is wrong and a later name is right.
    assert_401(
        &get(&gw.url("/k?first=wrong"), &[("second", "bob-key")]).await,
        "Unauthorized",
        "Key",
    );
    // `?first` without a value is not a string: the search moves on to `second`.
    let got = get(&gw.url("/k?first&second=bob-key"), &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(up.last().headers["x-consumer-id"], BOB);
    // The default name `apikey` is not looked at.
    assert_401(
        &get(&gw.url("/k?apikey=alice-key"), &[]).await,
        "No API key found in request",
        "Key",
    );

    let gw = gateway(&up, &[("/q", "{ key_in_header: false }")]).await;
    assert_401(
        &get(&gw.url("/q"), &[("apikey", "alice-key")]).await,
        "No API key found in request",
        "Key",
    );
    assert_eq!(get(&gw.url("/q?apikey=alice-key"), &[]).await.status, 200);
    let gw = gateway(&up, &[("/h", "{ key_in_query: false }")]).await;
    assert_401(
        &get(&gw.url("/h?apikey=alice-key"), &[]).await,
        "No API key found in request",
        "Key",
    );
}

#[tokio::test]
async fn repeated_keys_are_duplicates() {
    let up = Upstream::echo("u").await;
    let gw = gateway(&up, &[("/k", "{ key_in_body: true }")]).await;
    let dup = "Duplicate API key found";
    assert_401(
        &get(&gw.url("/k?apikey=alice-key&apikey=alice-key"), &[]).await,
        dup,
        "Key",
    );
    let req = Request::get(gw.url("/k"))
        .header("apikey", "alice-key")
        .header("apikey", "bob-key")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_401(&send(req).await, dup, "Key");
    let form = [("content-type", "application/x-www-form-urlencoded")];
    assert_401(
        &post(&gw.url("/k"), &form, "apikey=a&apikey=b").await,
        dup,
        "Key",
    );
    let json = [("content-type", "application/json")];
    assert_401(
        &post(&gw.url("/k"), &json, r#"{"apikey":["a"]}"#).await,
        dup,
        "Key",
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn keys_in_form_json_and_multipart_bodies() {
    let up = Upstream::echo("u").await;
    let gw = gateway(&up, &[("/k", "{ key_in_body: true }"), ("/off", "{}")]).await;

    let form = [("content-type", "application/x-www-form-urlencoded")];
    let got = post(&gw.url("/k"), &form, "a=1&apikey=alice-key").await;
    assert_eq!(got.status, 200);
    assert_eq!(up.last().headers["x-consumer-id"], ALICE);
    // Not hidden: the body goes on whole.
    assert_eq!(up.last().body_len, "a=1&apikey=alice-key".len());

    let json = [("content-type", "application/json; charset=utf-8")];
    let got = post(&gw.url("/k"), &json, r#"{"apikey":"bob-key","n":1}"#).await;
    assert_eq!(got.status, 200);
    assert_eq!(up.last().headers["x-consumer-id"], BOB);

    let mp = [("content-type", "multipart/form-data; boundary=XyZ")];
    let body =
        "--XyZ\r\nContent-Disposition: form-data; name=\"apikey\"\r\n\r\nalice-key\r\n--XyZ--\r\n";
    let got = post(&gw.url("/k"), &mp, body).await;
    assert_eq!(got.status, 200);
    assert_eq!(up.last().headers["x-consumer-id"], ALICE);

    // A JSON number is not a key; an unknown content type is not read.
    assert_401(
        &post(&gw.url("/k"), &json, r#"{"apikey":12}"#).await,
        "No API key found in request",
        "Key",
    );
    let text = [("content-type", "text/plain")];
    assert_401(
        &post(&gw.url("/k"), &text, "apikey=alice-key").await,
        "No API key found in request",
        "Key",
    );
    // key_in_body is off by default.
    assert_401(
        &post(&gw.url("/off"), &form, "apikey=alice-key").await,
        "No API key found in request",
        "Key",
    );
}

#[tokio::test]
async fn hide_credentials_keeps_the_key_from_the_upstream() {
    let up = Upstream::echo("u").await;
    let gw = gateway(
        &up,
        &[("/k", "{ hide_credentials: true, key_in_body: true }")],
    )
    .await;

    let got = get(&gw.url("/k"), &[("apikey", "alice-key"), ("x-other", "1")]).await;
    assert_eq!(got.status, 200);
    let seen = up.last();
    assert!(!seen.headers.contains_key("apikey"));
    assert_eq!(seen.headers["x-other"], "1");
    assert_eq!(seen.headers["x-consumer-id"], ALICE);

    assert_eq!(
        get(&gw.url("/k?a=1&apikey=alice-key&b=2"), &[])
            .await
            .status,
        200
    );
    assert_eq!(up.last().uri, "/?a=1&b=2");
    assert_eq!(get(&gw.url("/k?apikey=alice-key"), &[]).await.status, 200);
    assert_eq!(up.last().uri, "/");

    // The body loses the field, and only the field; framing follows the new body.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    assert_eq!(
        post(&gw.url("/k"), &form, "a=1&apikey=alice-key&b=2")
            .await
            .status,
        200
    );
    assert_eq!(up.last().body_len, "a=1&b=2".len());
    let json = [("content-type", "application/json")];
    let got = post(
        &gw.url("/k"),
        &json,
        r#"{"x":1.50, "apikey":"alice-key","y":"z"}"#,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(up.last().body_len, r#"{"x":1.50,"y":"z"}"#.len());
    let mp = [("content-type", "multipart/form-data; boundary=B")];
    let body = "--B\r\nContent-Disposition: form-data; name=\"apikey\"\r\n\r\nalice-key\r\n\
                --B\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nv\r\n--B--\r\n";
    assert_eq!(post(&gw.url("/k"), &mp, body).await.status, 200);
    let kept = "--B\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nv\r\n--B--\r\n";
    assert_eq!(up.last().body_len, kept.len());

    // A key found in the header is also stripped from the query and the body.
    assert_eq!(
        post(
            &gw.url("/k?apikey=x"),
            &[("apikey", "alice-key"), form[0]],
            "apikey=y&c=3"
        )
        .await
        .status,
        200
    );
    assert_eq!(up.last().uri, "/");
    assert_eq!(up.last().body_len, "c=3".len());
}

#[tokio::test]
async fn an_oversized_body_is_refused_not_truncated() {
    let up = Upstream::echo("u").await;
    let gw = gateway(&up, &[("/k", "{ key_in_body: true, anonymous: anon }")]).await;
    let big = "a=".to_owned() + &"x".repeat(2 * 1024 * 1024);
    let req = Request::post(gw.url("/k"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(big)))
        .unwrap();
    assert_error(&send(req).await, 413, "Request size limit exceeded");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn anonymous_stands_in_for_a_failed_authentication() {
    let up = Upstream::echo("u").await;
    let gw = gateway(
        &up,
        &[
            ("/anon", "{ anonymous: anon }"),
            ("/by-id", &format!("{{ anonymous: \"{ANON}\" }}")),
            ("/ghost", "{ anonymous: ghost }"),
        ],
    )
    .await;

    for path in ["/anon", "/by-id"] {
        let got = get(&gw.url(path), &[("apikey", "wrong")]).await;
        assert_eq!(got.status, 200, "{}", got.body);
        let seen = up.last().headers;
        assert_eq!(seen["x-consumer-id"], ANON);
        assert_eq!(seen["x-consumer-username"], "anon");
        assert_eq!(seen["x-anonymous-consumer"], "true");
        assert!(!seen.contains_key("x-credential-identifier"));
        assert!(!seen.contains_key("x-consumer-custom-id"));
    }
    // A valid key still authenticates for real.
    let got = get(&gw.url("/anon"), &[("apikey", "alice-key")]).await;
    assert_eq!(got.status, 200);
    assert_eq!(up.last().headers["x-consumer-id"], ALICE);
    assert!(!up.last().headers.contains_key("x-anonymous-consumer"));

    let before = up.count();
    assert_error(
        &get(&gw.url("/ghost"), &[]).await,
        500,
        "anonymous consumer ghost is configured but doesn't exist",
    );
    assert_eq!(up.count(), before);
}

#[tokio::test]
async fn run_on_preflight_false_lets_options_through() {
    let up = Upstream::echo("u").await;
    let gw = gateway(
        &up,
        &[("/pre", "{ run_on_preflight: false }"), ("/k", "{}")],
    )
    .await;
    let options = |path: &str| {
        Request::options(gw.url(path))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let got = send(options("/pre")).await;
    assert_eq!(got.status, 200);
    assert_eq!(up.count(), 1);
    assert!(!up.last().headers.contains_key("x-consumer-id"));
    assert_401(
        &get(&gw.url("/pre"), &[]).await,
        "No API key found in request",
        "Key",
    );
    assert_401(
        &send(options("/k")).await,
        "No API key found in request",
        "Key",
    );
    assert_eq!(up.count(), 1);
}
