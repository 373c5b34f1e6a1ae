//! correlation-id through the proxy (KONG.md §3.13): kept from the client or generated, sent
//! upstream, echoed on request.

#[path = "support/harness.rs"]
mod harness;

use harness::{get, Gateway, Upstream};

fn yaml(up: &Upstream, routes: &str) -> String {
    format!(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://{}\n    routes:\n{routes}",
        up.addr
    )
}

/// One route on `/` with correlation-id configured by `config` (a YAML flow mapping).
fn route(config: &str) -> String {
    format!(
        "      - paths: [\"/\"]\n        plugins:\n          - name: correlation-id\n            config: {config}\n"
    )
}

#[tokio::test]
async fn a_missing_id_is_generated_per_request_and_sent_upstream_only() {
    let up = Upstream::echo("u").await;
    let gw = Gateway::start(&yaml(&up, &route("{}"))).await;
    let got = get(&gw.url("/a"), &[]).await;
    assert_eq!(got.status, 200);
    assert!(
        got.headers.get("kong-request-id").is_none(),
        "not echoed by default"
    );
    let first = up.last().headers["kong-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    // uuid#counter: the process's UUID, then a counter.
    let (uuid, n) = first.split_once('#').expect("uuid#counter");
    assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{first}");
    let n: u64 = n.parse().expect("counter");

    get(&gw.url("/b"), &[]).await;
    let second = up.last().headers["kong-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let (uuid2, n2) = second.split_once('#').unwrap();
    assert_eq!(uuid2, uuid, "same process, same prefix");
    assert!(n2.parse::<u64>().unwrap() > n, "{first} then {second}");
    gw.stop().await;
}

#[tokio::test]
async fn the_clients_id_is_kept_and_an_empty_one_replaced() {
    let up = Upstream::echo("u").await;
    let gw = Gateway::start(&yaml(
        &up,
        &route("{ header_name: X-Correlation-ID, generator: uuid }"),
    ))
    .await;
    get(&gw.url("/"), &[("x-correlation-id", "abc-123")]).await;
    assert_eq!(up.last().headers["x-correlation-id"], "abc-123");

    get(&gw.url("/"), &[("x-correlation-id", "")]).await;
    let generated = up.last().headers["x-correlation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
    gw.stop().await;
}

#[tokio::test]
async fn echo_downstream_returns_the_id_also_on_an_answer_a_plugin_gives() {
    let up = Upstream::echo("u").await;
    let routes = "      - paths: [\"/ok\"]\n        plugins:\n          - { name: correlation-id, config: { echo_downstream: true, generator: tracker } }\n      - paths: [\"/blocked\"]\n        plugins:\n          - { name: correlation-id, config: { echo_downstream: true } }\n          - { name: request-termination, config: { status_code: 403, message: no } }\n";
    let gw = Gateway::start(&yaml(&up, routes)).await;

    let got = get(&gw.url("/ok"), &[]).await;
    let echoed = got.headers["kong-request-id"].to_str().unwrap().to_owned();
    assert_eq!(up.last().headers["kong-request-id"], echoed.as_str());
    assert!(
        echoed.contains("-127.0.0.1-"),
        "tracker ids name the client: {echoed}"
    );

    let got = get(&gw.url("/blocked"), &[("kong-request-id", "mine")]).await;
    assert_eq!(got.status, 403);
    assert_eq!(got.headers["kong-request-id"], "mine");
    assert_eq!(up.count(), 1, "the blocked request never went upstream");
    gw.stop().await;
}

#[tokio::test]
async fn the_echoed_id_is_also_on_the_proxys_own_error_page() {
    // A service on a port nobody listens on: the proxy answers 502 itself.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://{closed}\n    retries: 0\n    routes:\n      - paths: [\"/\"]\n        plugins:\n          - {{ name: correlation-id, config: {{ echo_downstream: true }} }}\n"
    );
    let gw = Gateway::start(&yaml).await;
    let got = get(&gw.url("/"), &[("kong-request-id", "trace-me")]).await;
    assert_eq!(got.status, 502, "{}", got.body);
    assert_eq!(got.headers["kong-request-id"], "trace-me");
    gw.stop().await;
}

#[test]
fn bad_config_is_refused_with_the_field_path() {
    let load = |config: &str| {
        portico_common::load_str(
            &format!("_format_version: \"3.0\"\nplugins:\n  - name: correlation-id\n    config: {config}\n"),
            &|_| None,
        )
        .expect_err(config)
    };
    let e = load("{ header_name: \"bad header\" }");
    assert!(
        e.errors
            .iter()
            .any(|i| i.path == "plugins[0].config.header_name"),
        "{e}"
    );
    let e = load("{ generator: snowflake }");
    assert!(
        e.errors
            .iter()
            .any(|i| i.path.starts_with("plugins[0].config")),
        "{e}"
    );
}
