//! Typed plugin configs: Kong's defaults filled in, each validation rule refused with its exact
//! path and message, and the loader reporting them under the plugin's place in the file.

use portico_common::plugins::{ip_restriction, jwt, key_auth, PluginConfig};
use portico_common::{load_str, ConfigErrors, ConfigIssue};
use serde_json::{json, Value};

const SUPPORTED: &str = "key-auth, jwt, basic-auth, acl, ip-restriction, request-termination, \
     forward-auth, rate-limiting, request-size-limiting, circuit-breaker, correlation-id, \
     opentelemetry, prometheus";

#[track_caller]
fn parse(name: &str, config: Value) -> PluginConfig {
    PluginConfig::parse(name, &config).unwrap_or_else(|e| panic!("{name} refused: {e:?}"))
}

#[track_caller]
fn refused(name: &str, config: Value) -> Vec<ConfigIssue> {
    match PluginConfig::parse(name, &config) {
        Ok(c) => panic!("{name} {config} should have been refused, got {c:?}"),
        Err(e) => e,
    }
}

/// `config` for plugin `name` is refused with exactly this one issue.
#[track_caller]
fn assert_refused(name: &str, config: Value, path: &str, message: &str) {
    let issues = refused(name, config);
    assert_eq!(
        issues,
        [ConfigIssue::new(path, message)],
        "expected `{path}: {message}`"
    );
}

fn load(yaml: &str) -> Result<portico_common::Loaded, ConfigErrors> {
    load_str(yaml, &|_| None)
}

#[test]
fn defaults_are_kongs() {
    let cases = [
        (
            "key-auth",
            json!({}),
            json!({"key_names": ["apikey"], "hide_credentials": false, "anonymous": null,
                   "key_in_header": true, "key_in_query": true, "key_in_body": false,
                   "run_on_preflight": true, "realm": null}),
        ),
        (
            "jwt",
            json!({}),
            json!({"uri_param_names": ["jwt"], "cookie_names": [], "header_names": ["authorization"],
                   "key_claim_name": "iss", "secret_is_base64": false, "claims_to_verify": [],
                   "maximum_expiration": 0, "anonymous": null, "run_on_preflight": true,
                   "realm": null}),
        ),
        (
            "basic-auth",
            json!({}),
            json!({"anonymous": null, "hide_credentials": false, "realm": "service"}),
        ),
        (
            "acl",
            json!({"allow": ["admins"]}),
            json!({"allow": ["admins"], "deny": null, "hide_groups_header": false,
                   "always_use_authenticated_groups": false}),
        ),
        (
            "ip-restriction",
            json!({"deny": ["10.0.0.1"]}),
            json!({"allow": null, "deny": ["10.0.0.1/32"], "status": null, "message": null}),
        ),
        (
            "request-termination",
            json!({}),
            json!({"status_code": 503, "message": null, "body": null, "content_type": null,
                   "trigger": null, "echo": false}),
        ),
        (
            "forward-auth",
            json!({"url": "http://auth.internal/verify"}),
            json!({"url": "http://auth.internal/verify", "timeout": 5000,
                   "auth_request_headers": [], "auth_response_headers": []}),
        ),
    ];
    for (name, config, expected) in cases {
        let typed = parse(name, config);
        assert_eq!(typed.name(), name);
        assert_eq!(typed.to_value(), expected, "{name}");
        // What the loader stores types back to the same config (the data plane relies on it).
        assert_eq!(parse(name, typed.to_value()), typed, "{name}");
    }
    assert_eq!(
        parse("key-auth", json!({})),
        PluginConfig::KeyAuth(key_auth::Config::default())
    );
    assert_eq!(
        parse("jwt", Value::Null),
        PluginConfig::Jwt(jwt::Config::default())
    );
}

#[test]
fn every_name_parses_and_names_itself() {
    let minimal = |name: &str| match name {
        "acl" => json!({"allow": ["g"]}),
        "ip-restriction" => json!({"allow": ["::1"]}),
        "forward-auth" => json!({"url": "http://a"}),
        "rate-limiting" => json!({"minute": 5}),
        "opentelemetry" => json!({"traces_endpoint": "http://collector:4318/v1/traces"}),
        _ => json!({}),
    };
    for name in PluginConfig::NAMES {
        assert_eq!(parse(name, minimal(name)).name(), *name);
    }
}

#[test]
fn null_means_the_default() {
    assert_eq!(
        parse(
            "key-auth",
            json!({"key_names": null, "hide_credentials": null, "realm": null})
        ),
        PluginConfig::KeyAuth(key_auth::Config::default())
    );
}

#[test]
fn substituted_strings_are_read_as_numbers_and_booleans() {
    let yaml = "_format_version: \"3.0\"\nplugins:\n- name: request-termination\n  config: {status_code: \"${CODE}\", echo: \"${ECHO}\"}\n";
    let env = |n: &str| match n {
        "CODE" => Some("404".to_owned()),
        "ECHO" => Some("true".to_owned()),
        _ => None,
    };
    let config = &load_str(yaml, &env).unwrap().snapshot.plugins[0].config;
    assert_eq!(
        (&config["status_code"], &config["echo"]),
        (&json!(404), &json!(true))
    );
}

#[test]
fn the_loader_stores_the_normalized_config() {
    let s = load("_format_version: \"3.0\"\nplugins:\n- name: ip-restriction\n  config:\n    allow: [10.0.0.0/8, \"::1\"]\n    status: 401\n")
        .unwrap()
        .snapshot;
    assert_eq!(
        s.plugins[0].config,
        json!({"allow": ["10.0.0.0/8", "::1/128"], "deny": null, "status": 401, "message": null})
    );
}

#[test]
fn unknown_and_unsupported_names() {
    assert_refused(
        "nope",
        json!({}),
        "name",
        &format!("plugin 'nope' does not exist (supported: {SUPPORTED})"),
    );
    for kong in [
        "cors",
        "request-transformer",
        "response-transformer",
        "proxy-cache",
        "zipkin",
        "http-log",
    ] {
        assert_refused(
            kong,
            json!({"anything": 1}),
            "name",
            &format!("plugin '{kong}' is not supported by Portico yet (supported: {SUPPORTED})"),
        );
    }
}

#[test]
fn the_loader_prefixes_the_plugin_path() {
    let e = load("_format_version: \"3.0\"\nservices:\n- name: s\n  host: h\n  routes:\n  - paths: [/]\n    plugins:\n    - name: key-auth\n      config: {key_names: [apikey, \"x y\"]}\n  plugins:\n  - name: cors\nplugins:\n- name: nope\n- name: acl\n").unwrap_err();
    let expected = [
        (
            "services[0].routes[0].plugins[0].config.key_names[1]",
            "bad header name 'x y', allowed characters are A-Z, a-z, 0-9, '_', and '-'".to_owned(),
        ),
        (
            "services[0].plugins[0].name",
            format!("plugin 'cors' is not supported by Portico yet (supported: {SUPPORTED})"),
        ),
        (
            "plugins[0].name",
            format!("plugin 'nope' does not exist (supported: {SUPPORTED})"),
        ),
        (
            "plugins[1].config",
            "at least one of these fields must be non-empty: 'config.allow', 'config.deny'"
                .to_owned(),
        ),
    ];
    for (path, message) in &expected {
        assert!(e.has(path, message), "missing `{path}: {message}` in:\n{e}");
    }
    assert_eq!(e.errors.len(), expected.len(), "{e}");
}

#[test]
fn config_errors_are_reported_even_when_the_scope_does_not_resolve() {
    let e = load("_format_version: \"3.0\"\nplugins:\n- name: basic-auth\n  route: ghost\n  config: {realm: \"\"}\n").unwrap_err();
    assert!(
        e.has(
            "plugins[0].route",
            "invalid reference 'route: ghost' (no such entry in 'routes')"
        ),
        "{e}"
    );
    assert!(
        e.has("plugins[0].config.realm", "length must be at least 1"),
        "{e}"
    );
    assert_eq!(e.errors.len(), 2, "{e}");
}

#[test]
fn a_config_that_is_not_an_object_still_gets_its_name_checked() {
    let e = load("_format_version: \"3.0\"\nplugins:\n- name: cors\n  config: [1]\n- name: forward-auth\n  config: 5\n").unwrap_err();
    let expected = [
        (
            "plugins[0].name",
            format!("plugin 'cors' is not supported by Portico yet (supported: {SUPPORTED})"),
        ),
        (
            "plugins[0].config",
            "expected an object, got an array".to_owned(),
        ),
        (
            "plugins[1].config",
            "expected an object, got a number".to_owned(),
        ),
    ];
    for (path, message) in &expected {
        assert!(e.has(path, message), "missing `{path}: {message}` in:\n{e}");
    }
    assert_eq!(e.errors.len(), expected.len(), "{e}");
}

#[test]
fn an_unset_secret_in_a_config_is_one_error() {
    let e = load("_format_version: \"3.0\"\nplugins:\n- name: forward-auth\n  config: {url: \"${AUTH_URL}\"}\n").unwrap_err();
    assert_eq!(e.errors.len(), 1, "{e}");
    assert_eq!(e.errors[0].path, "plugins[0].config.url");
}

#[test]
fn shape_errors() {
    assert_refused(
        "key-auth",
        json!([1]),
        "config",
        "expected an object, got an array",
    );
    assert_refused(
        "basic-auth",
        json!({"realm": "r", "minute": 5}),
        "config",
        "unknown field 'minute'",
    );
    assert_refused(
        "key-auth",
        json!({"key_names": "apikey"}),
        "config.key_names",
        "invalid type: string \"apikey\", expected an array",
    );
    assert_refused(
        "key-auth",
        json!({"key_names": ["apikey", 7]}),
        "config.key_names[1]",
        "invalid type: integer `7`, expected a string",
    );
    assert_refused(
        "key-auth",
        json!({"hide_credentials": 3}),
        "config.hide_credentials",
        "invalid type: integer `3`, expected a boolean",
    );
    // Every bad field of one config at once.
    let issues = refused(
        "key-auth",
        json!({"key_names": ["a b"], "key_in_body": "yes", "typo": 1}),
    );
    assert_eq!(issues.len(), 3, "{issues:?}");
    assert!(issues.contains(&ConfigIssue::new("config", "unknown field 'typo'")));
    assert!(issues.contains(&ConfigIssue::new(
        "config.key_in_body",
        "invalid type: string \"yes\", expected a boolean"
    )));
}

#[test]
fn key_auth_rules() {
    assert_refused(
        "key-auth",
        json!({"key_names": []}),
        "config.key_names",
        "length must be at least 1",
    );
    assert_refused(
        "key-auth",
        json!({"key_names": ["apikey", "x-api:key"]}),
        "config.key_names[1]",
        "bad header name 'x-api:key', allowed characters are A-Z, a-z, 0-9, '_', and '-'",
    );
    assert_refused(
        "key-auth",
        json!({"key_names": [""]}),
        "config.key_names[0]",
        "length must be at least 1",
    );
}

#[test]
fn jwt_rules() {
    assert_refused(
        "jwt",
        json!({"maximum_expiration": 60, "claims_to_verify": ["nbf"]}),
        "config.claims_to_verify",
        "expected to contain: exp",
    );
    for bad in [json!(31_536_001), json!(-1)] {
        assert_refused(
            "jwt",
            json!({"maximum_expiration": bad, "claims_to_verify": ["exp"]}),
            "config.maximum_expiration",
            "value should be between 0 and 31536000",
        );
    }
    assert_refused(
        "jwt",
        json!({"claims_to_verify": ["exp", "iat"]}),
        "config.claims_to_verify[1]",
        "expected one of: exp, nbf",
    );
    assert_refused(
        "jwt",
        json!({"header_names": ["authorization", "x token"]}),
        "config.header_names[1]",
        "bad header name 'x token', allowed characters are A-Z, a-z, 0-9, '_', and '-'",
    );
    assert_refused(
        "jwt",
        json!({"cookie_names": [""]}),
        "config.cookie_names[0]",
        "length must be at least 1",
    );
    assert_refused(
        "jwt",
        json!({"key_claim_name": ""}),
        "config.key_claim_name",
        "length must be at least 1",
    );
    let PluginConfig::Jwt(c) = parse(
        "jwt",
        json!({"maximum_expiration": 3600, "claims_to_verify": ["nbf", "exp"]}),
    ) else {
        panic!("not jwt")
    };
    assert_eq!(c.claims_to_verify, [jwt::Claim::Nbf, jwt::Claim::Exp]);
    assert_eq!(c.maximum_expiration, 3600);
}

#[test]
fn basic_auth_rules() {
    assert_refused(
        "basic-auth",
        json!({"realm": ""}),
        "config.realm",
        "length must be at least 1",
    );
}

#[test]
fn acl_needs_exactly_one_list() {
    let both = "only one of these fields must be non-empty: 'config.allow', 'config.deny'";
    let none = "at least one of these fields must be non-empty: 'config.allow', 'config.deny'";
    assert_refused(
        "acl",
        json!({"allow": ["a"], "deny": ["b"]}),
        "config",
        both,
    );
    assert_refused("acl", json!({}), "config", none);
    // Empty lists count as unset, as in Kong's entity checks.
    assert_refused("acl", json!({"allow": [], "deny": null}), "config", none);
    parse("acl", json!({"allow": [], "deny": ["b"]}));
    assert_refused(
        "acl",
        json!({"allow": ["a", ""]}),
        "config.allow[1]",
        "length must be at least 1",
    );
}

#[test]
fn ip_restriction_lists() {
    let PluginConfig::IpRestriction(c) = parse(
        "ip-restriction",
        json!({"allow": ["10.0.0.1", "::1", "10.1.0.0/16", "2001:db8::/32"], "status": 401}),
    ) else {
        panic!("not ip-restriction")
    };
    let nets: Vec<String> = c.allow.iter().flatten().map(ToString::to_string).collect();
    assert_eq!(
        nets,
        ["10.0.0.1/32", "::1/128", "10.1.0.0/16", "2001:db8::/32"]
    );
    assert_eq!((c.deny, c.status), (None, Some(401)));

    assert_refused(
        "ip-restriction",
        json!({"allow": ["10.0.0.1", "::1", "10.0.0.300"]}),
        "config.allow[2]",
        "invalid ip or cidr range: '10.0.0.300'",
    );
    let issues = refused(
        "ip-restriction",
        json!({"allow": ["10.0.0.0/33"], "deny": ["ok", "::1", "fe80::/129"]}),
    );
    let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        ["config.allow[0]", "config.deny[0]", "config.deny[2]"],
        "{issues:?}"
    );
    assert_refused(
        "ip-restriction",
        json!({"deny": []}),
        "config",
        "at least one of these fields must be non-empty: 'config.allow', 'config.deny'",
    );
    assert_refused(
        "ip-restriction",
        json!({"deny": ["::1"], "status": 700}),
        "config.status",
        "value should be between 100 and 599",
    );
    // Both lists together are fine: deny is checked first.
    let both = ip_restriction::Config {
        allow: Some(vec!["10.0.0.0/8".parse().unwrap()]),
        deny: Some(vec!["10.0.0.5/32".parse().unwrap()]),
        status: None,
        message: Some("go away".into()),
    };
    assert_eq!(
        parse(
            "ip-restriction",
            json!({"allow": ["10.0.0.0/8"], "deny": ["10.0.0.5"], "message": "go away"})
        ),
        PluginConfig::IpRestriction(both)
    );
}

#[test]
fn request_termination_rules() {
    for bad in [99, 600] {
        assert_refused(
            "request-termination",
            json!({"status_code": bad}),
            "config.status_code",
            "value should be between 100 and 599",
        );
    }
    assert_refused(
        "request-termination",
        json!({"message": "m", "body": "b"}),
        "config",
        "message cannot be used with content_type or body",
    );
    assert_refused(
        "request-termination",
        json!({"content_type": "text/plain"}),
        "config",
        "content_type requires a body",
    );
    assert_refused(
        "request-termination",
        json!({"echo": true, "body": "b"}),
        "config",
        "echo cannot be used with content_type and body",
    );
    assert_refused(
        "request-termination",
        json!({"trigger": "x trigger"}),
        "config.trigger",
        "bad header name 'x trigger', allowed characters are A-Z, a-z, 0-9, '_', and '-'",
    );
    // Empty strings count as unset, as Kong's `is_present` has it.
    parse(
        "request-termination",
        json!({"message": "", "body": "<h1>bye</h1>", "content_type": "text/html"}),
    );
    parse(
        "request-termination",
        json!({"echo": true, "trigger": "x-debug"}),
    );
}

#[test]
fn forward_auth_rules() {
    let url = |u: &str| json!({ "url": u });
    assert_refused(
        "forward-auth",
        json!({}),
        "config.url",
        "required field missing",
    );
    assert_refused(
        "forward-auth",
        url("https://auth.internal/verify"),
        "config.url",
        "https:// is not supported yet (upstream TLS lands with the TLS issue); use an http:// URL",
    );
    for bad in ["auth.internal/verify", "ftp://auth.internal", ""] {
        assert_refused(
            "forward-auth",
            url(bad),
            "config.url",
            "expected an absolute http:// URL, like http://auth.internal:8080/verify",
        );
    }
    let cases = [
        ("http:///verify", "expected a host after http://"),
        ("http://bad host/", "invalid host 'bad host'"),
        ("http://auth:0/", "invalid host or port 'auth:0'"),
        (
            "http://user:pw@auth/",
            "must not contain credentials (user@host)",
        ),
        ("http://auth/verify#x", "must not contain a fragment ('#')"),
        (
            "http://auth/a b",
            "must not contain whitespace or control characters",
        ),
    ];
    for (bad, message) in cases {
        assert_refused("forward-auth", url(bad), "config.url", message);
    }
    assert_refused(
        "forward-auth",
        json!({"url": "http://a", "timeout": 0}),
        "config.timeout",
        "value should be between 1 and 2147483646",
    );
    assert_refused(
        "forward-auth",
        json!({"url": "http://a", "auth_response_headers": ["x-user", "x user"]}),
        "config.auth_response_headers[1]",
        "bad header name 'x user', allowed characters are A-Z, a-z, 0-9, '_', and '-'",
    );
    assert_refused(
        "forward-auth",
        json!({"url": "http://a", "auth_request_headers": [""]}),
        "config.auth_request_headers[0]",
        "length must be at least 1",
    );
    // A type error on the url is its only error, not also "required field missing".
    assert_refused(
        "forward-auth",
        json!({"url": 5}),
        "config.url",
        "invalid type: integer `5`, expected a string",
    );
    for ok in [
        "http://auth.internal:8080/verify?x=1",
        "HTTP://10.0.0.7",
        "http://[::1]:9000/check",
    ] {
        parse("forward-auth", url(ok));
    }
}

#[test]
fn prometheus_defaults_and_types() {
    let typed = parse("prometheus", json!({}));
    assert_eq!(
        typed.to_value(),
        json!({"per_consumer": false, "status_code_metrics": false, "latency_metrics": false,
               "bandwidth_metrics": false, "upstream_health_metrics": false, "ai_metrics": false,
               "wasm_metrics": false})
    );
    assert_eq!(parse("prometheus", typed.to_value()), typed);
    let on = parse("prometheus", json!({"per_consumer": "true"}));
    assert_eq!(on.to_value()["per_consumer"], json!(true));
    assert_refused(
        "prometheus",
        json!({"per_consumer": "yes"}),
        "config.per_consumer",
        "invalid type: string \"yes\", expected a boolean",
    );
    assert_refused(
        "prometheus",
        json!({"per_consumers": true}),
        "config",
        "unknown field 'per_consumers'",
    );
    assert_refused(
        "prometheus",
        json!({"latency_metrics": 1}),
        "config.latency_metrics",
        "invalid type: integer `1`, expected a boolean",
    );
}

#[test]
fn prometheus_errors_name_the_entity_and_the_field() {
    let e = load("_format_version: \"3.0\"\nservices:\n- name: s\n  host: h\n  routes:\n  - name: r\n    paths: [/]\n    plugins:\n    - name: prometheus\n      config: {per_consumer: \"yes\"}\n").unwrap_err();
    assert!(
        e.has(
            "services[0].routes[0].plugins[0].config.per_consumer",
            "invalid type: string \"yes\", expected a boolean"
        ),
        "{e}"
    );
    assert_eq!(e.errors.len(), 1, "{e}");
}

const TRACES: &str = "http://collector:4318/v1/traces";

#[test]
fn opentelemetry_defaults_are_kongs() {
    let typed = parse("opentelemetry", json!({"traces_endpoint": TRACES}));
    assert_eq!(
        typed.to_value(),
        json!({"traces_endpoint": TRACES, "logs_endpoint": null, "headers": null,
               "resource_attributes": null,
               "queue": {"max_batch_size": 200, "max_coalescing_delay": 1.0, "max_entries": 10000,
                         "max_bytes": null, "max_retry_time": 60.0, "initial_retry_delay": 0.01,
                         "max_retry_delay": 60.0, "concurrency_limit": 1},
               "batch_span_count": null, "batch_flush_delay": null,
               "connect_timeout": 1000, "send_timeout": 5000, "read_timeout": 5000,
               "http_response_header_for_traceid": null, "header_type": "preserve",
               "sampling_rate": null,
               "propagation": {"extract": null, "inject": null, "clear": null,
                               "default_format": "w3c"}})
    );
    assert_eq!(parse("opentelemetry", typed.to_value()), typed);

    // Kong's deprecated `endpoint` is `traces_endpoint`, and is not written back.
    let old = parse("opentelemetry", json!({"endpoint": TRACES}));
    assert_eq!(old, typed);

    // Every field Kong has, set.
    let full = json!({
        "traces_endpoint": "https://otel.example.com/v1/traces",
        "headers": {"Authorization": "Bearer t"},
        "resource_attributes": {"service.name": "edge", "deployment.environment": "prod"},
        "queue": {"max_batch_size": 50, "max_coalescing_delay": 2, "max_entries": 100,
                  "max_bytes": 1000, "max_retry_time": 10, "initial_retry_delay": 0.5,
                  "max_retry_delay": 5, "concurrency_limit": -1},
        "batch_span_count": 200, "batch_flush_delay": 3,
        "connect_timeout": 100, "send_timeout": 200, "read_timeout": 300,
        "http_response_header_for_traceid": "x-trace-id", "header_type": "w3c",
        "sampling_rate": "0.5",
        "propagation": {"extract": ["w3c"], "inject": ["preserve", "w3c"],
                        "clear": ["x-b3-traceid"], "default_format": "w3c"}
    });
    let typed = parse("opentelemetry", full);
    let v = typed.to_value();
    assert_eq!(v["sampling_rate"], json!(0.5));
    assert_eq!(v["queue"]["max_batch_size"], json!(50));
    assert_eq!(parse("opentelemetry", v), typed);
}

#[test]
fn opentelemetry_rules() {
    assert_refused(
        "opentelemetry",
        json!({}),
        "config",
        "at least one of these fields must be non-empty: 'config.traces_endpoint', \
         'config.logs_endpoint'",
    );
    assert_refused(
        "opentelemetry",
        json!({"logs_endpoint": "http://collector:4318/v1/logs"}),
        "config.logs_endpoint",
        "OTLP logs are not supported by Portico yet; remove logs_endpoint (traces_endpoint is \
         supported, and the data plane's --access-log writes request logs)",
    );
    let both = refused(
        "opentelemetry",
        json!({"traces_endpoint": TRACES, "logs_endpoint": "http://collector:4318/v1/logs"}),
    );
    assert_eq!(both.len(), 1, "{both:?}");
    assert_eq!(both[0].path, "config.logs_endpoint");
    assert_refused(
        "opentelemetry",
        json!({"traces_endpoint": "collector:4318"}),
        "config.traces_endpoint",
        "'collector:4318' is not an http:// or https:// URL (the OTLP/HTTP traces endpoint, \
         like http://collector:4318/v1/traces)",
    );
    assert_refused(
        "opentelemetry",
        json!({"traces_endpoint": "http:///v1/traces"}),
        "config.traces_endpoint",
        "'http:///v1/traces' has no host",
    );
    assert_refused(
        "opentelemetry",
        json!({"traces_endpoint": TRACES, "endpoint": "http://other/v1/traces"}),
        "config.endpoint",
        "endpoint is the deprecated name of traces_endpoint; set only one of them",
    );
    assert_refused(
        "opentelemetry",
        json!({"traces_endpoint": TRACES, "sampling_rate": 1.5}),
        "config.sampling_rate",
        "value should be between 0 and 1",
    );
    assert_refused(
        "opentelemetry",
        json!({"traces_endpoint": TRACES, "http_response_header_for_traceid": "x trace"}),
        "config.http_response_header_for_traceid",
        "bad header name 'x trace', allowed characters are A-Z, a-z, 0-9, '_', and '-'",
    );
    assert_refused(
        "opentelemetry",
        json!({"traces_endpoint": TRACES, "headers": {"bad name": "v"}}),
        "config.headers.bad name",
        "bad header name 'bad name', allowed characters are A-Z, a-z, 0-9, '_', and '-'",
    );
    assert_refused(
        "opentelemetry",
        json!({"traces_endpoint": TRACES, "headers": {"x-token": 5}}),
        "config.headers",
        "invalid type: integer `5`, expected a string",
    );
    assert_refused(
        "opentelemetry",
        json!({"traces_endpoint": TRACES, "resource_attributes": {"env": ""}}),
        "config.resource_attributes.env",
        "required field missing",
    );
    assert_refused(
        "opentelemetry",
        json!({"traces_endpoint": TRACES, "queue": {"max_batch_size": 0}}),
        "config.queue",
        "value should be between 1 and 1000000",
    );
    assert_refused(
        "opentelemetry",
        json!({"traces_endpoint": TRACES, "send_timeout": -1}),
        "config.send_timeout",
        "value should be between 0 and 2147483646",
    );
}

#[test]
fn opentelemetry_propagation_is_w3c_only() {
    let unsupported = |format: &str| {
        format!(
            "propagation format '{format}' is not supported by Portico yet: only W3C trace \
             context ('w3c') is read and written"
        )
    };
    let with = |propagation: Value| json!({"traces_endpoint": TRACES, "propagation": propagation});
    assert_refused(
        "opentelemetry",
        with(json!({"extract": ["w3c", "b3"]})),
        "config.propagation.extract[1]",
        &unsupported("b3"),
    );
    assert_refused(
        "opentelemetry",
        with(json!({"inject": ["datadog"]})),
        "config.propagation.inject[0]",
        &unsupported("datadog"),
    );
    assert_refused(
        "opentelemetry",
        with(json!({"default_format": "jaeger"})),
        "config.propagation.default_format",
        &unsupported("jaeger"),
    );
    assert_refused(
        "opentelemetry",
        with(json!({"extract": ["w3c", "zipkin"]})),
        "config.propagation.extract[1]",
        "expected one of: w3c, b3, b3-single, jaeger, ot, datadog, aws, gcp, instana",
    );
    assert_refused(
        "opentelemetry",
        with(json!({"extract": ["preserve"]})),
        "config.propagation.extract[0]",
        "expected one of: w3c, b3, b3-single, jaeger, ot, datadog, aws, gcp, instana",
    );
    assert_refused(
        "opentelemetry",
        with(json!({"clear": ["ok", "not ok"]})),
        "config.propagation.clear[1]",
        "bad header name 'not ok', allowed characters are A-Z, a-z, 0-9, '_', and '-'",
    );
    assert_refused(
        "opentelemetry",
        json!({"traces_endpoint": TRACES, "header_type": "b3"}),
        "config.header_type",
        "header_type 'b3' is not supported by Portico yet: only W3C trace context \
         ('preserve' or 'w3c') is read and written",
    );
    assert_refused(
        "opentelemetry",
        json!({"traces_endpoint": TRACES, "header_type": "nope"}),
        "config.header_type",
        "expected one of: preserve, ignore, b3, b3-single, w3c, jaeger, ot, aws, gcp, datadog",
    );
}

#[test]
fn opentelemetry_errors_name_the_entity() {
    let e = load("_format_version: \"3.0\"\nplugins:\n- name: opentelemetry\n  config: {logs_endpoint: \"http://c:4318/v1/logs\", sampling_rate: 2}\n").unwrap_err();
    assert!(
        e.has(
            "plugins[0].config.sampling_rate",
            "value should be between 0 and 1"
        ),
        "{e}"
    );
    assert!(
        e.errors
            .iter()
            .any(|i| i.path == "plugins[0].config.logs_endpoint"
                && i.message.starts_with("OTLP logs are not supported")),
        "{e}"
    );
    assert_eq!(e.errors.len(), 2, "{e}");
}
