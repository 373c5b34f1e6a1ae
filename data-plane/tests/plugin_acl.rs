//! acl through the real proxy (KONG.md §3.6): allow and deny lists over key-auth consumers,
//! Kong's 401/403 split, the groups header, and clients trying to claim groups themselves.

#[path = "support/harness.rs"]
mod harness;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use harness::{get, Gateway, Got, Upstream};

const CONSUMERS: &str = "consumers:
  - username: admin
    keyauth_credentials:
      - key: admin-key
    acls:
      - group: admins
      - group: staff
  - username: user
    keyauth_credentials:
      - key: user-key
    acls:
      - group: users
  - username: loner
    keyauth_credentials:
      - key: loner-key
    basicauth_credentials:
      - username: loner
        password: pw
  - username: anon
  - username: guest
    acls:
      - group: guests
";

/// One route per `(path, plugins YAML list items)`.
async fn gateway(up: &Upstream, routes: &[(&str, String)]) -> Gateway {
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

fn plugin(name: &str, config: &str) -> String {
    format!("          - name: {name}\n            config: {config}\n")
}

fn key_auth_and_acl(acl: &str) -> String {
    plugin("key-auth", "{}") + &plugin("acl", acl)
}

fn assert_error(got: &Got, status: u16, message: &str) {
    assert_eq!(got.status, status, "{}", got.body);
    let id = got.headers["x-request-id"].to_str().unwrap();
    assert_eq!(
        got.body,
        format!("{{\n  \"message\":\"{message}\",\n  \"request_id\":\"{id}\"\n}}")
    );
    assert!(!got.headers.contains_key("www-authenticate"));
}

fn assert_forbidden(got: &Got) {
    assert_error(got, 403, "You cannot consume this service");
}

#[tokio::test]
async fn allow_lets_members_in_and_sends_their_groups() {
    let up = Upstream::echo("u").await;
    let gw = gateway(
        &up,
        &[
            ("/allow", key_auth_and_acl("{ allow: [staff, other] }")),
            (
                "/hidden",
                key_auth_and_acl("{ allow: [staff], hide_groups_header: true }"),
            ),
        ],
    )
    .await;

    let got = get(&gw.url("/allow"), &[("apikey", "admin-key")]).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let seen = up.last().headers;
    assert_eq!(seen["x-consumer-groups"], "admins, staff");
    assert_eq!(seen["x-consumer-username"], "admin");
    assert!(!seen.contains_key("x-authenticated-groups"));

    assert_forbidden(&get(&gw.url("/allow"), &[("apikey", "user-key")]).await);
    // A consumer without groups under an allow list: 403, it has a credential.
    assert_forbidden(&get(&gw.url("/allow"), &[("apikey", "loner-key")]).await);
    assert_eq!(up.count(), 1);

    let got = get(&gw.url("/hidden"), &[("apikey", "admin-key")]).await;
    assert_eq!(got.status, 200);
    assert!(!up.last().headers.contains_key("x-consumer-groups"));
}

#[tokio::test]
async fn deny_refuses_listed_groups_only() {
    let up = Upstream::echo("u").await;
    let gw = gateway(&up, &[("/deny", key_auth_and_acl("{ deny: [admins] }"))]).await;

    assert_forbidden(&get(&gw.url("/deny"), &[("apikey", "admin-key")]).await);
    let got = get(&gw.url("/deny"), &[("apikey", "user-key")]).await;
    assert_eq!(got.status, 200);
    assert_eq!(up.last().headers["x-consumer-groups"], "users");
    // No groups: nothing to deny, and no (empty) groups header.
    let got = get(&gw.url("/deny"), &[("apikey", "loner-key")]).await;
    assert_eq!(got.status, 200);
    assert!(!up.last().headers.contains_key("x-consumer-groups"));
}

#[tokio::test]
async fn a_client_cannot_claim_groups() {
    let up = Upstream::echo("u").await;
    let gw = gateway(
        &up,
        &[
            ("/allow", key_auth_and_acl("{ allow: [admins] }")),
            ("/acl-only", plugin("acl", "{ allow: [admins] }")),
        ],
    )
    .await;
    let forged = [
        ("x-consumer-groups", "admins"),
        ("x-authenticated-groups", "admins"),
    ];
    let mut headers = vec![("apikey", "user-key")];
    headers.extend(forged);
    assert_forbidden(&get(&gw.url("/allow"), &headers).await);
    // Without any auth plugin, forged headers are still nobody: 401.
    assert_error(
        &get(&gw.url("/acl-only"), &forged).await,
        401,
        "Unauthorized",
    );
    assert_eq!(up.count(), 0);

    // An allowed consumer's upstream sees its real groups, not the client's.
    let mut headers = vec![("apikey", "admin-key"), ("x-consumer-groups", "root")];
    headers.push(("x-authenticated-groups", "root"));
    assert_eq!(get(&gw.url("/allow"), &headers).await.status, 200);
    let seen = up.last().headers;
    assert_eq!(seen["x-consumer-groups"], "admins, staff");
    assert_eq!(seen.get_all("x-consumer-groups").iter().count(), 1);
    assert!(!seen.contains_key("x-authenticated-groups"));
}

#[tokio::test]
async fn the_anonymous_consumer_is_judged_by_its_own_groups() {
    let up = Upstream::echo("u").await;
    let gw = gateway(
        &up,
        &[
            (
                "/anon",
                plugin("key-auth", "{ anonymous: anon }") + &plugin("acl", "{ allow: [users] }"),
            ),
            (
                "/guest",
                plugin("key-auth", "{ anonymous: guest }")
                    + &plugin("acl", "{ allow: [users, guests] }"),
            ),
            (
                "/guest-denied",
                plugin("key-auth", "{ anonymous: guest }") + &plugin("acl", "{ deny: [guests] }"),
            ),
        ],
    )
    .await;

    // Anonymous with no groups under an allow list: no credential, so 401.
    assert_error(&get(&gw.url("/anon"), &[]).await, 401, "Unauthorized");
    assert_eq!(
        get(&gw.url("/anon"), &[("apikey", "user-key")])
            .await
            .status,
        200
    );

    let got = get(&gw.url("/guest"), &[]).await;
    assert_eq!(got.status, 200);
    let seen = up.last().headers;
    assert_eq!(seen["x-consumer-groups"], "guests");
    assert_eq!(seen["x-anonymous-consumer"], "true");

    assert_forbidden(&get(&gw.url("/guest-denied"), &[]).await);
    assert_eq!(
        get(&gw.url("/guest-denied"), &[("apikey", "user-key")])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn acl_after_two_auth_plugins_or_ed_by_anonymous() {
    let up = Upstream::echo("u").await;
    let chain = plugin("key-auth", "{ anonymous: anon }")
        + &plugin("basic-auth", "{ anonymous: anon }")
        + &plugin("acl", "{ deny: [admins] }");
    let gw = gateway(&up, &[("/or", chain)]).await;

    let loner = format!("Basic {}", STANDARD.encode("loner:pw"));
    let got = get(&gw.url("/or"), &[("authorization", &loner)]).await;
    assert_eq!(got.status, 200);
    assert_eq!(up.last().headers["x-consumer-username"], "loner");
    assert_eq!(up.last().headers["x-credential-identifier"], "loner");

    assert_forbidden(&get(&gw.url("/or"), &[("apikey", "admin-key")]).await);
    let got = get(&gw.url("/or"), &[("apikey", "user-key")]).await;
    assert_eq!(got.status, 200);
    assert_eq!(up.last().headers["x-consumer-groups"], "users");

    // Neither: the anonymous consumer, which no deny list names.
    let got = get(&gw.url("/or"), &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(up.last().headers["x-consumer-username"], "anon");
}
