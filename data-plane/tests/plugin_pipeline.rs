//! The plugin pipeline through the proxy: Kong's precedence (one config per plugin name, the
//! most specific scope wins, consumer scopes resolved only after authentication) and Kong's
//! execution order (KONG.md §3.1).

#[path = "support/harness.rs"]
mod harness;

use harness::{get, Gateway, Upstream};
use portico_data_plane::runtime::Runtime;

/// request-termination answering `status` with `message`, as YAML flow mapping fields.
fn stop(status: u16, message: &str) -> String {
    format!(
        "name: request-termination, config: {{ status_code: {status}, message: \"{message}\" }}"
    )
}

#[tokio::test]
async fn the_most_specific_scope_wins_and_only_one_config_runs() {
    let up = Upstream::echo("a").await;
    let url = format!("http://{}", up.addr);
    let yaml = format!(
        r#"_format_version: "3.0"
services:
  - name: s1
    url: {url}
    plugins:
      - {{ {service} }}
    routes:
      - {{ name: both, paths: [/both] }}
      - {{ name: route, paths: [/route], plugins: [{{ {route} }}] }}
      - {{ name: service, paths: [/service] }}
  - name: s2
    url: {url}
    routes:
      - {{ name: global, paths: [/global] }}
plugins:
  - {{ {global} }}
  - {{ {both}, route: both, service: s1 }}
"#,
        service = stop(403, "service"),
        route = stop(403, "route"),
        global = stop(403, "global"),
        both = stop(403, "route+service"),
    );
    let gw = Gateway::start(&yaml).await;
    for (path, expected) in [
        ("/both", "route+service"),
        ("/route", "route"),
        ("/service", "service"),
        ("/global", "global"),
    ] {
        let got = get(&gw.url(path), &[]).await;
        assert_eq!(got.status, 403, "{path}");
        assert_eq!(got.json()["message"], expected, "{path}");
    }
    assert_eq!(up.count(), 0);
    gw.stop().await;
}

#[tokio::test]
async fn consumer_scoped_configs_apply_after_authentication_with_kongs_precedence() {
    let up = Upstream::echo("a").await;
    let url = format!("http://{}", up.addr);
    // alice has her own request-termination; bob has none. key-auth authenticates both.
    let yaml = format!(
        r#"_format_version: "3.0"
services:
  - name: s
    url: {url}
    plugins:
      - name: key-auth
    routes:
      - {{ name: plain, paths: [/plain] }}
      - {{ name: route, paths: [/route], plugins: [{{ {route} }}] }}
      - {{ name: both, paths: [/both] }}
consumers:
  - username: alice
    keyauth_credentials: [{{ key: alice-key }}]
    plugins:
      - {{ {alice} }}
  - username: bob
    keyauth_credentials: [{{ key: bob-key }}]
plugins:
  - {{ {both}, route: both, service: s }}
"#,
        route = stop(403, "route"),
        alice = stop(451, "consumer"),
        both = stop(403, "route+service"),
    );
    let gw = Gateway::start(&yaml).await;
    let with = |key: &'static str| [("apikey", key)];

    // A consumer config applies once key-auth has named the consumer.
    let got = get(&gw.url("/plain"), &with("alice-key")).await;
    assert_eq!(
        (got.status.as_u16(), got.json()["message"].as_str()),
        (451, Some("consumer"))
    );
    let got = get(&gw.url("/plain"), &with("bob-key")).await;
    assert_eq!(got.status, 200, "bob has no termination: {}", got.body);
    assert_eq!(up.count(), 1);

    // Consumer (level 5) beats route (6) ...
    let got = get(&gw.url("/route"), &with("alice-key")).await;
    assert_eq!(got.json()["message"], "consumer");
    let got = get(&gw.url("/route"), &with("bob-key")).await;
    assert_eq!(got.json()["message"], "route");
    // ... but loses to route+service (4), as in Kong.
    let got = get(&gw.url("/both"), &with("alice-key")).await;
    assert_eq!(got.json()["message"], "route+service");

    // Unauthenticated: key-auth answers first; no termination config is consulted.
    let got = get(&gw.url("/plain"), &[]).await;
    assert_eq!(got.status, 401);
    assert_eq!(got.json()["message"], "No API key found in request");
    assert_eq!(up.count(), 1);
    gw.stop().await;
}

#[test]
fn plugins_that_identify_the_consumer_cannot_be_scoped_to_one() {
    // Kong's `no_consumer`: such a config could never apply, since the plugin runs before the
    // consumer is known, so it is refused rather than silently ignored.
    for name in ["key-auth", "jwt", "basic-auth", "acl", "forward-auth"] {
        let config = match name {
            "acl" => "{ allow: [staff] }",
            "forward-auth" => "{ url: \"http://127.0.0.1:9/auth\" }",
            _ => "{}",
        };
        let yaml = format!(
            "_format_version: \"3.0\"\nconsumers:\n  - username: alice\n    plugins:\n      - {{ name: {name}, config: {config} }}\n"
        );
        let err = portico_common::load_str(&yaml, &|_| None).expect_err(name);
        assert!(
            err.errors
                .iter()
                .any(|e| e.path == "consumers[0].plugins[0].consumer"
                    && e.message.starts_with("value must be null")),
            "{name}: {err:?}"
        );
    }
}

#[tokio::test]
async fn a_route_runs_its_plugins_in_kongs_priority_order() {
    let yaml = r#"_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:9
    routes:
      - name: r
        paths: [/]
        plugins:
          - { name: request-termination }
          - { name: acl, config: { allow: [staff] } }
          - { name: ip-restriction, config: { allow: [127.0.0.1] } }
          - { name: basic-auth }
          - { name: key-auth }
          - { name: jwt }
"#;
    let loaded = portico_common::load_str(yaml, &|_| None).unwrap();
    let rt = Runtime::compile(loaded.snapshot, &Default::default()).unwrap();
    assert_eq!(
        rt.plugins.for_route(0).names(),
        [
            "jwt",
            "key-auth",
            "basic-auth",
            "ip-restriction",
            "acl",
            "request-termination"
        ]
    );
}

#[tokio::test]
async fn disabled_plugins_and_plugins_for_other_protocols_do_not_run() {
    let up = Upstream::echo("a").await;
    let yaml = format!(
        r#"_format_version: "3.0"
services:
  - name: s
    url: http://{}
    routes:
      - name: off
        paths: [/off]
        plugins: [{{ name: request-termination, enabled: false }}]
      - name: tls-only
        paths: [/tls-only]
        plugins: [{{ name: request-termination, protocols: [https] }}]
      - name: on
        paths: [/on]
        plugins: [{{ name: request-termination, protocols: [http] }}]
"#,
        up.addr
    );
    let gw = Gateway::start(&yaml).await;
    assert_eq!(get(&gw.url("/off"), &[]).await.status, 200);
    assert_eq!(get(&gw.url("/tls-only"), &[]).await.status, 200);
    let got = get(&gw.url("/on"), &[]).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.json()["message"], "Service unavailable");
    assert_eq!(up.count(), 2);
    gw.stop().await;
}
