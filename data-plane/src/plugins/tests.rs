use portico_common::plugins::PluginConfig;

use super::*;

/// Kong's PRIORITY numbers (KONG.md §3.1), so a Kong user's ordering carries over.
#[test]
fn priorities_are_kongs_and_the_table_is_in_execution_order() {
    let expected = [
        ("correlation-id", 100001),
        ("jwt", 1450),
        ("key-auth", 1250),
        ("basic-auth", 1100),
        ("forward-auth", 1000),
        ("ip-restriction", 990),
        ("request-size-limiting", 951),
        ("acl", 950),
        ("rate-limiting", 910),
        ("circuit-breaker", 900),
        ("opentelemetry", 14),
        ("prometheus", 13),
        ("request-termination", 2),
    ];
    let table: Vec<(&str, i32)> = PRIORITY.iter().map(|(n, p, _)| (*n, *p)).collect();
    assert_eq!(table, expected);
    for (name, _, reason) in PRIORITY {
        assert!(!reason.is_empty(), "{name} needs a reason for its position");
    }
}

#[test]
fn every_plugin_the_loader_accepts_has_a_priority() {
    for name in PluginConfig::NAMES {
        assert!(
            PRIORITY.iter().any(|(n, _, _)| n == name),
            "{name} is missing from PRIORITY"
        );
    }
    assert_eq!(PRIORITY.len(), PluginConfig::NAMES.len());
}

#[test]
fn query_args_are_found_decoded_and_removed_without_touching_the_others() {
    let mut body = UpstreamBody::Empty;
    let mut headers = HeaderMap::new();
    let uri: Uri = "/x?a=1&apikey=s%20ecret&b=2&api%6Bey=again"
        .parse()
        .unwrap();
    let id = HeaderValue::from_static("id");
    let mut req = Req {
        method: &Method::GET,
        path: "/x",
        uri: &uri,
        headers: &mut headers,
        query: uri.query().map(Cow::Borrowed),
        body: &mut body,
        client_ip: "127.0.0.1".parse().unwrap(),
        https: false,
        host: "h",
        request_id: &id,
    };
    let (value, repeated) = req.query_arg("apikey").unwrap();
    assert_eq!(value, "s ecret");
    assert!(repeated, "an encoded duplicate name is still a duplicate");
    req.remove_query_arg("apikey");
    assert_eq!(req.query.as_deref(), Some("a=1&b=2"));
    req.remove_query_arg("a");
    req.remove_query_arg("b");
    assert_eq!(req.query, None);
}
