//! basic-auth through the real proxy (KONG.md §3.2, §3.5): header precedence, Kong's single
//! 401, the identity headers, hide_credentials, anonymous, and auth plugins OR-ed by anonymous.

#[path = "support/harness.rs"]
mod harness;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use harness::{get, Gateway, Got, Upstream};

const ALICE: &str = "a1a1a1a1-0000-4000-8000-000000000001";
const BOB: &str = "b0b0b0b0-0000-4000-8000-000000000002";
const ANON: &str = "a0a0a0a0-0000-4000-8000-000000000003";

const CONSUMERS: &str = "consumers:
  - id: a1a1a1a1-0000-4000-8000-000000000001
    username: alice
    custom_id: alice-001
    basicauth_credentials:
      - username: alice-login
        password: \"s3cret:with colon\"
    keyauth_credentials:
      - key: alice-key
  - id: b0b0b0b0-0000-4000-8000-000000000002
    username: bob
    basicauth_credentials:
      - username: bob-login
        password: hunter2
  - id: a0a0a0a0-0000-4000-8000-000000000003
    username: anon
";

/// A gateway with one route per `(path, plugins YAML list items)`.
async fn gateway(up: &Upstream, routes: &[(&str, &str)]) -> Gateway {
    let mut yaml = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://{}\n    routes:\n",
        up.addr
    );
    for (i, (path, plugins)) in routes.iter().enumerate() {
        yaml.push_str(&format!(
            "      - name: r{i}\n        paths: [\"{path}\"]\n        plugins:\n{plugins}"
        ));
    }
    yaml.push_str(CONSUMERS);
    Gateway::start(&yaml).await
}

/// One route plugin item.
fn plugin(name: &str, config: &str) -> String {
    format!("          - name: {name}\n            config: {config}\n")
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

fn assert_error(got: &Got, status: u16, message: &str) {
    assert_eq!(got.status, status, "{}", got.body);
    let id = got.headers["x-request-id"].to_str().unwrap();
    assert!(!id.is_empty());
    assert_eq!(
        got.body,
        format!("{{\n  \"message\":\"{message}\",\n  \"request_id\":\"{id}\"\n}}")
    );
}

fn assert_401(got: &Got, realm: &str) {
    assert_error(got, 401, "Unauthorized");
    assert_eq!(
        got.headers["www-authenticate"],
        format!("Basic realm=\"{realm}\"").as_str()
    );
}

#[tokio::test]
async fn every_failure_is_the_same_401() {
    let up = Upstream::echo("u").await;
    let gw = gateway(
        &up,
        &[
            ("/b", &plugin("basic-auth", "{}")),
            ("/realm", &plugin("basic-auth", "{ realm: api }")),
        ],
    )
    .await;
    let wrong_password = basic("alice-login", "s3cret");
    let unknown_user = basic("nobody", "hunter2");
    let no_colon = format!("Basic {}", STANDARD.encode("alice-login"));
    for auth in [
        wrong_password.as_str(),
        unknown_user.as_str(),
        no_colon.as_str(),
        "Basic !!not-base64!!",
        "Basic",
        "Bearer YWxpY2UtbG9naW46czNjcmV0OndpdGggY29sb24=",
        "BASIC YWxpY2UtbG9naW46czNjcmV0OndpdGggY29sb24=",
    ] {
        assert_401(
            &get(&gw.url("/b"), &[("authorization", auth)]).await,
            "service",
        );
    }
    assert_401(&get(&gw.url("/b"), &[]).await, "service");
    assert_401(&get(&gw.url("/realm"), &[]).await, "api");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_valid_password_sends_the_consumer_upstream() {
    let up = Upstream::echo("u").await;
    let gw = gateway(&up, &[("/b", &plugin("basic-auth", "{}"))]).await;
    let auth = basic("alice-login", "s3cret:with colon");
    let got = get(
        &gw.url("/b"),
        &[
            ("authorization", auth.as_str()),
            ("x-consumer-username", "bob"),
            ("x-anonymous-consumer", "true"),
        ],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let seen = up.last().headers;
    assert_eq!(seen["x-consumer-id"], ALICE);
    assert_eq!(seen["x-consumer-custom-id"], "alice-001");
    assert_eq!(seen["x-consumer-username"], "alice");
    // basic-auth identifies the credential by its username.
    assert_eq!(seen["x-credential-identifier"], "alice-login");
    assert!(!seen.contains_key("x-anonymous-consumer"));
    // Not hidden by default.
    assert_eq!(seen["authorization"], auth.as_str());

    // Kong's pattern: `\s*[Bb]asic\s*`, padding optional.
    let raw = STANDARD.encode("bob-login:hunter2");
    for auth in [
        format!("  basic   {raw}"),
        format!("Basic{raw}"),
        format!("Basic {}", raw.trim_end_matches('=')),
    ] {
        let got = get(&gw.url("/b"), &[("authorization", auth.as_str())]).await;
        assert_eq!(got.status, 200, "{auth}");
        assert_eq!(up.last().headers["x-consumer-id"], BOB);
        assert!(!up.last().headers.contains_key("x-consumer-custom-id"));
    }
}

#[tokio::test]
async fn proxy_authorization_comes_first() {
    let up = Upstream::echo("u").await;
    let gw = gateway(&up, &[("/b", &plugin("basic-auth", "{}"))]).await;
    let alice = basic("alice-login", "s3cret:with colon");
    let bob = basic("bob-login", "hunter2");

    let got = get(
        &gw.url("/b"),
        &[("proxy-authorization", &bob), ("authorization", &alice)],
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(up.last().headers["x-consumer-id"], BOB);

    // An unknown user in Proxy-Authorization falls back to Authorization...
    let nobody = basic("nobody", "x");
    let got = get(
        &gw.url("/b"),
        &[("proxy-authorization", &nobody), ("authorization", &alice)],
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(up.last().headers["x-consumer-id"], ALICE);
    let got = get(
        &gw.url("/b"),
        &[
            ("proxy-authorization", "garbage"),
            ("authorization", &alice),
        ],
    )
    .await;
    assert_eq!(got.status, 200);

    // ...but a known user with a wrong password does not.
    let bob_wrong = basic("bob-login", "nope");
    assert_401(
        &get(
            &gw.url("/b"),
            &[
                ("proxy-authorization", &bob_wrong),
                ("authorization", &alice),
            ],
        )
        .await,
        "service",
    );
}

#[tokio::test]
async fn hide_credentials_removes_the_header_used() {
    let up = Upstream::echo("u").await;
    let gw = gateway(
        &up,
        &[("/b", &plugin("basic-auth", "{ hide_credentials: true }"))],
    )
    .await;
    let alice = basic("alice-login", "s3cret:with colon");
    let got = get(&gw.url("/b"), &[("authorization", &alice), ("x-keep", "1")]).await;
    assert_eq!(got.status, 200);
    let seen = up.last().headers;
    assert!(!seen.contains_key("authorization"));
    assert_eq!(seen["x-keep"], "1");

    let got = get(&gw.url("/b"), &[("proxy-authorization", &alice)]).await;
    assert_eq!(got.status, 200);
    assert!(!up.last().headers.contains_key("proxy-authorization"));
}

#[tokio::test]
async fn anonymous_present_and_missing() {
    let up = Upstream::echo("u").await;
    let gw = gateway(
        &up,
        &[
            ("/anon", &plugin("basic-auth", "{ anonymous: anon }")),
            ("/ghost", &plugin("basic-auth", "{ anonymous: ghost }")),
        ],
    )
    .await;
    let wrong = basic("alice-login", "wrong");
    let got = get(&gw.url("/anon"), &[("authorization", &wrong)]).await;
    assert_eq!(got.status, 200);
    let seen = up.last().headers;
    assert_eq!(seen["x-consumer-id"], ANON);
    assert_eq!(seen["x-anonymous-consumer"], "true");
    assert!(!seen.contains_key("x-credential-identifier"));

    assert_error(
        &get(&gw.url("/ghost"), &[]).await,
        500,
        "anonymous consumer ghost is configured but doesn't exist",
    );
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn two_auth_plugins_with_anonymous_are_a_logical_or() {
    let up = Upstream::echo("u").await;
    let both =
        plugin("key-auth", "{ anonymous: anon }") + &plugin("basic-auth", "{ anonymous: anon }");
    let gw = gateway(&up, &[("/or", &both)]).await;

    // key-auth (priority 1250) succeeds: basic-auth is skipped, even with a bad password.
    let bad = basic("bob-login", "nope");
    let got = get(
        &gw.url("/or"),
        &[("apikey", "alice-key"), ("authorization", &bad)],
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(up.last().headers["x-consumer-id"], ALICE);

    // key-auth fails (anonymous), basic-auth succeeds: bob, not anonymous.
    let bob = basic("bob-login", "hunter2");
    let got = get(&gw.url("/or"), &[("authorization", &bob)]).await;
    assert_eq!(got.status, 200);
    let seen = up.last().headers;
    assert_eq!(seen["x-consumer-id"], BOB);
    assert_eq!(seen["x-credential-identifier"], "bob-login");
    assert!(!seen.contains_key("x-anonymous-consumer"));

    // Both fail: the anonymous consumer.
    let got = get(&gw.url("/or"), &[("apikey", "nope")]).await;
    assert_eq!(got.status, 200);
    assert_eq!(up.last().headers["x-consumer-id"], ANON);
    assert_eq!(up.last().headers["x-anonymous-consumer"], "true");
}
