//! One test per validation error class: each asserts the exact path and message.

use portico_common::{load_str, ConfigErrors, Loaded};

fn load(yaml: &str) -> Result<Loaded, ConfigErrors> {
    load_str(yaml, &|_| None)
}

/// Loads `body` under a 3.0 header and expects it to be refused.
fn errors(body: &str) -> ConfigErrors {
    match load(&format!("_format_version: \"3.0\"\n{body}")) {
        Ok(_) => panic!("config should have been refused:\n{body}"),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_only_error(body: &str, path: &str, message: &str) {
    let e = errors(body);
    assert_eq!(e.errors.len(), 1, "expected exactly one error, got:\n{e}");
    assert!(
        e.has(path, message),
        "expected `{path}: {message}`, got:\n{e}"
    );
}

#[test]
fn format_version_is_required_and_checked() {
    let e = load("services: []").unwrap_err();
    assert!(e.has("_format_version", "required field missing"), "{e}");
    let e = load("_format_version: \"4.0\"").unwrap_err();
    assert!(
        e.has("_format_version", "expected one of: 1.1, 2.1, 3.0"),
        "{e}"
    );
}

#[test]
fn unknown_fields_are_named() {
    let body = "services:\n- name: s\n  host: h\n  routes:\n  - paths: [/a]\n  - paths: [/b]\n    pathz: [/c]\n";
    assert_only_error(body, "services[0].routes[1]", "unknown field 'pathz'");
    assert_only_error("servces: []", "", "unknown field 'servces'");
}

#[test]
fn meta_fields_are_allowed_on_entities() {
    let yaml = "_format_version: \"3.0\"\n_comment: top\n_ignore: [1]\n_transform: true\nservices:\n- name: s\n  host: h\n  _comment: hi\n  _ignore: [{x: 1}]\n  tags: [a]\n";
    load(yaml).expect("meta fields must be accepted");
}

#[test]
fn type_errors_name_the_expected_type() {
    assert_only_error(
        "services:\n- name: s\n  host: h\n  port: abc\n",
        "services[0].port",
        "invalid type: string \"abc\", expected an integer",
    );
    assert_only_error(
        "services:\n- name: s\n  host: h\n  routes:\n  - paths: [/]\n    strip_path: 3\n",
        "services[0].routes[0].strip_path",
        "invalid type: integer `3`, expected a boolean",
    );
    assert_only_error(
        "services:\n- name: s\n  host: h\n  tags: a\n",
        "services[0].tags",
        "invalid type: string \"a\", expected an array",
    );
    assert_only_error(
        "services: {}",
        "services",
        "expected an array, got an object",
    );
    assert_only_error(
        "services: [3]",
        "services[0]",
        "expected an object, got a number",
    );
}

#[test]
fn value_ranges() {
    let svc = |field: &str| format!("services:\n- name: s\n  host: h\n  {field}\n");
    assert_only_error(
        &svc("port: 70000"),
        "services[0].port",
        "value should be between 0 and 65535",
    );
    assert_only_error(
        &svc("retries: 32768"),
        "services[0].retries",
        "value should be between 0 and 32767",
    );
    assert_only_error(
        &svc("connect_timeout: 0"),
        "services[0].connect_timeout",
        "value should be between 1 and 2147483646",
    );
    assert_only_error(
        &svc("read_timeout: 2147483647"),
        "services[0].read_timeout",
        "value should be between 1 and 2147483646",
    );
    assert_only_error(
        "upstreams:\n- name: u\n  targets:\n  - target: a\n    weight: 65536\n",
        "upstreams[0].targets[0].weight",
        "value should be between 0 and 65535",
    );
    assert_only_error(
        "upstreams:\n- name: u\n  slots: 5\n",
        "upstreams[0].slots",
        "value should be between 10 and 65536",
    );
}

#[test]
fn required_fields() {
    assert_only_error(
        "services:\n- name: s\n",
        "services[0].host",
        "required field missing",
    );
    assert_only_error(
        "upstreams:\n- slots: 100\n",
        "upstreams[0].name",
        "required field missing",
    );
    assert_only_error(
        "plugins:\n- config: {}\n",
        "plugins[0].name",
        "required field missing",
    );
    assert_only_error(
        "targets:\n- target: a\n",
        "targets[0].upstream",
        "required field missing",
    );
    assert_only_error(
        "consumers:\n- username: u\n  basicauth_credentials:\n  - username: b\n",
        "consumers[0].basicauth_credentials[0].password",
        "required field missing",
    );
}

#[test]
fn invalid_regex_path() {
    assert_only_error(
        "services:\n- name: s\n  host: h\n  routes:\n  - paths: [/ok, \"~/users/(\\\\d+\"]\n",
        "services[0].routes[0].paths[1]",
        r"invalid regex: '/users/(\d+' (unclosed group)",
    );
}

#[test]
fn regex_paths_compile_as_anchored_rust_regex() {
    // Look-around is PCRE-only; the Rust regex crate refuses it (KONG.md §2.1, #12082).
    let e = errors("routes:\n- paths: [\"~/a(?=b)\"]\n");
    assert_eq!(e.errors.len(), 1, "{e}");
    assert!(
        e.errors[0]
            .message
            .starts_with("invalid regex: '/a(?=b)' ("),
        "{e}"
    );
}

#[test]
fn non_normalized_prefix_path() {
    assert_only_error(
        "routes:\n- paths: [/a/./b]\n",
        "routes[0].paths[0]",
        "non-normalized path, consider use '/a/b' instead",
    );
    assert_only_error(
        "routes:\n- paths: [/caf%65]\n",
        "routes[0].paths[0]",
        "non-normalized path, consider use '/cafe' instead",
    );
}

#[test]
fn prefix_path_shape() {
    assert_only_error(
        "routes:\n- paths: [api]\n",
        "routes[0].paths[0]",
        "should start with: / (fixed path) or ~/ (regex path)",
    );
    assert_only_error(
        "routes:\n- paths: [/a//b]\n",
        "routes[0].paths[0]",
        "must not have empty segments",
    );
}

#[test]
fn http_route_needs_a_matching_field() {
    assert_only_error(
        "services:\n- name: s\n  host: h\n  routes:\n  - name: r\n",
        "services[0].routes[0]",
        "must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'",
    );
    assert_only_error(
        "routes:\n- protocols: [https]\n",
        "routes[0]",
        "must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'https'",
    );
}

#[test]
fn route_protocols() {
    assert_only_error(
        "routes:\n- paths: [/]\n  protocols: [http, grpc]\n",
        "routes[0].protocols",
        "these sets are mutually exclusive: ('http', 'https'), ('tcp', 'tls', 'udp'), ('tls_passthrough'), ('grpc', 'grpcs')",
    );
    assert_only_error(
        "routes:\n- paths: [/]\n  protocols: [htp]\n",
        "routes[0].protocols[0]",
        "expected one of: grpc, grpcs, http, https, tcp, tls, tls_passthrough, udp",
    );
    assert_only_error(
        "routes:\n- paths: [/]\n  protocols: [grpc]\n  strip_path: true\n",
        "routes[0].strip_path",
        "cannot set 'strip_path' when 'protocols' is 'grpc' or 'grpcs'",
    );
}

#[test]
fn host_header_is_refused() {
    assert_only_error(
        "routes:\n- paths: [/]\n  headers:\n    Host: [example.com]\n",
        "routes[0].headers",
        "cannot contain 'host' header, which must be specified in the 'hosts' attribute",
    );
}

#[test]
fn route_host_wildcards() {
    assert_only_error(
        "routes:\n- hosts: [\"a.*.com\"]\n",
        "routes[0].hosts[0]",
        "invalid wildcard: must be placed at leftmost or rightmost label",
    );
    assert_only_error(
        "routes:\n- hosts: [\"*.a.*\"]\n",
        "routes[0].hosts[0]",
        "invalid wildcard: must have at most one wildcard",
    );
    assert_only_error(
        "routes:\n- hosts: [\"a b\"]\n",
        "routes[0].hosts[0]",
        "invalid hostname: a b",
    );
}

#[test]
fn route_methods_headers_hosts_are_normalised() {
    let yaml = "_format_version: \"3.0\"\nroutes:\n- methods: [get, Post]\n  hosts: [\"*.Example.COM:8443\", \"API.example.com\"]\n  headers:\n    X-Version: [v1]\n";
    let r = &load(yaml).unwrap().snapshot.routes[0];
    assert_eq!(r.methods, ["GET", "POST"]);
    assert_eq!(r.hosts, ["*.example.com:8443", "api.example.com"]);
    assert_eq!(r.headers.keys().collect::<Vec<_>>(), ["x-version"]);
}

#[test]
fn service_path_rules() {
    let svc = |extra: &str| format!("services:\n- name: s\n  host: h\n  {extra}\n");
    assert_only_error(&svc("path: v1"), "services[0].path", "should start with: /");
    assert_only_error(
        &svc("path: /a//b"),
        "services[0].path",
        "must not have empty segments",
    );
    assert_only_error(
        &svc("protocol: grpc\n  path: /x"),
        "services[0].path",
        "value must be null when 'protocol' is 'grpc'",
    );
    assert_only_error(
        &svc("protocol: ftp"),
        "services[0].protocol",
        "expected one of: http, https, grpc, grpcs, tcp, tls, tls_passthrough, udp",
    );
}

#[test]
fn url_conflicts_and_errors() {
    assert_only_error(
        "services:\n- name: s\n  url: http://a/\n  host: b\n",
        "services[0].url",
        "cannot be combined with 'host'",
    );
    assert_only_error(
        "services:\n- name: s\n  url: http://user:pw@a/\n",
        "services[0].url",
        "invalid url 'http://user:pw@a/': credentials in the url are not allowed",
    );
}

#[test]
fn consumer_needs_username_or_custom_id() {
    assert_only_error(
        "consumers:\n- tags: [x]\n",
        "consumers[0]",
        "at least one of these fields must be non-empty: 'custom_id', 'username'",
    );
}

#[test]
fn keyauth_key_is_required() {
    assert_only_error(
        "consumers:\n- username: u\n  keyauth_credentials:\n  - tags: [x]\n",
        "consumers[0].keyauth_credentials[0].key",
        "required field missing (a declarative file must set the key: a generated one would change on every load)",
    );
}

#[test]
fn jwt_secret_rules() {
    assert_only_error(
        "consumers:\n- username: u\n  jwt_secrets:\n  - key: iss\n    algorithm: RS256\n",
        "consumers[0].jwt_secrets[0].rsa_public_key",
        "required field missing",
    );
    assert_only_error(
        "consumers:\n- username: u\n  jwt_secrets:\n  - key: iss\n    algorithm: XS1\n    secret: s\n",
        "consumers[0].jwt_secrets[0].algorithm",
        "expected one of: HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384, ES512, PS256, PS384, PS512, EdDSA",
    );
    let e = errors("consumers:\n- username: u\n  jwt_secrets:\n  - key: iss\n");
    assert_eq!(e.errors.len(), 1, "{e}");
    assert_eq!(e.errors[0].path, "consumers[0].jwt_secrets[0].secret");
    assert!(
        e.errors[0].message.starts_with("required field missing"),
        "{e}"
    );
}

#[test]
fn uniqueness_violations() {
    let cases = [
        ("services:\n- {name: a, host: h}\n- {name: a, host: h2}\n", "services[1]", "'services' entity with name set to 'a'"),
        ("routes:\n- {name: r, paths: [/a]}\n- {name: r, paths: [/b]}\n", "routes[1]", "'routes' entity with name set to 'r'"),
        ("upstreams:\n- name: u\n- name: u\n", "upstreams[1]", "'upstreams' entity with name set to 'u'"),
        ("consumers:\n- username: c\n- username: c\n", "consumers[1]", "'consumers' entity with username set to 'c'"),
        ("consumers:\n- custom_id: c\n- custom_id: c\n", "consumers[1]", "'consumers' entity with custom_id set to 'c'"),
        (
            "consumers:\n- username: a\n  jwt_secrets: [{key: k, secret: s}]\n- username: b\n  jwt_secrets: [{key: k, secret: s}]\n",
            "consumers[1].jwt_secrets[0]",
            "'jwt_secrets' entity with key set to 'k'",
        ),
        (
            "consumers:\n- username: a\n  basicauth_credentials: [{username: x, password: p}]\n- username: b\nbasicauth_credentials:\n- {consumer: b, username: x, password: q}\n",
            "basicauth_credentials[0]",
            "'basicauth_credentials' entity with username set to 'x'",
        ),
        (
            "plugins:\n- {name: basic-auth, instance_name: i1}\n- {name: key-auth, instance_name: i1}\n",
            "plugins[1]",
            "'plugins' entity with instance_name set to 'i1'",
        ),
        (
            "services:\n- name: s\n  host: h\n  plugins: [{name: basic-auth}]\nplugins:\n- {name: basic-auth, service: s}\n",
            "plugins[0]",
            "'plugins' entity with name set to 'basic-auth'",
        ),
        (
            "upstreams:\n- name: u\n  targets: [{target: \"a\"}, {target: \"a:8000\"}]\n",
            "upstreams[0].targets[1]",
            "'targets' entity with target set to 'a:8000'",
        ),
        (
            "consumers:\n- username: a\n  acls: [{group: g}, {group: g}]\n",
            "consumers[0].acls[1]",
            "'acls' entity with group set to 'g'",
        ),
    ];
    for (body, path, what) in cases {
        assert_only_error(
            body,
            path,
            &format!("uniqueness violation: {what} already declared"),
        );
    }
}

#[test]
fn duplicate_keyauth_key_is_reported_without_echoing_it() {
    assert_only_error(
        "consumers:\n- username: a\n  keyauth_credentials: [{key: secret-1}]\n- username: b\n  keyauth_credentials: [{key: secret-1}]\n",
        "consumers[1].keyauth_credentials[0]",
        "uniqueness violation: 'keyauth_credentials' entity with key set to '<redacted>' already declared (first at consumers[0].keyauth_credentials[0])",
    );
}

#[test]
fn same_plugin_at_different_scopes_is_fine() {
    let yaml = "_format_version: \"3.0\"\nservices:\n- name: s\n  host: h\n  plugins: [{name: basic-auth}]\n  routes:\n  - name: r\n    paths: [/]\n    plugins: [{name: basic-auth}]\nplugins:\n- name: basic-auth\n- {name: basic-auth, service: s, route: r}\n";
    assert_eq!(load(yaml).unwrap().snapshot.plugins.len(), 4);
}

#[test]
fn dangling_references() {
    assert_only_error(
        "routes:\n- service: nope\n  paths: [/]\n",
        "routes[0].service",
        "invalid reference 'service: nope' (no such entry in 'services')",
    );
    assert_only_error(
        "plugins:\n- name: basic-auth\n  consumer: nope\n",
        "plugins[0].consumer",
        "invalid reference 'consumer: nope' (no such entry in 'consumers')",
    );
    assert_only_error(
        "targets:\n- target: a\n  upstream: nope\n",
        "targets[0].upstream",
        "invalid reference 'upstream: nope' (no such entry in 'upstreams')",
    );
    assert_only_error(
        "keyauth_credentials:\n- key: k\n  consumer: nope\n",
        "keyauth_credentials[0].consumer",
        "invalid reference 'consumer: nope' (no such entry in 'consumers')",
    );
}

#[test]
fn references_by_id_resolve() {
    let yaml = "_format_version: \"3.0\"\nservices:\n- id: 5b1f8b2e-7f3c-4a45-9a55-0d6a6f3b0c11\n  host: h\nroutes:\n- service: 5b1f8b2e-7f3c-4a45-9a55-0d6a6f3b0c11\n  paths: [/]\n";
    let s = load(yaml).unwrap().snapshot;
    assert_eq!(s.routes[0].service, Some(s.services[0].id));
    assert_eq!(
        s.services[0].id.to_string(),
        "5b1f8b2e-7f3c-4a45-9a55-0d6a6f3b0c11"
    );
}

#[test]
fn explicit_ids_must_be_uuids() {
    assert_only_error(
        "services:\n- id: not-a-uuid\n  host: h\n",
        "services[0].id",
        "expected a valid UUID",
    );
}

#[test]
fn nested_entity_cannot_name_another_parent() {
    assert_only_error(
        "services:\n- name: s\n  host: h\n  routes:\n  - service: other\n    paths: [/]\n",
        "services[0].routes[0].service",
        "cannot be set here: the entity is nested in a service, which is its 'service'",
    );
}

#[test]
fn unsupported_kong_fields_are_refused_unless_default() {
    assert_only_error(
        "services:\n- name: s\n  host: h\n  protocol: https\n  tls_verify_depth: 3\n",
        "services[0].tls_verify_depth",
        "'tls_verify_depth' is not supported by Portico yet",
    );
    assert_only_error(
        "services:\n- name: s\n  host: h\n  tls_verify: true\n",
        "services[0].tls_verify",
        "value must be null when 'protocol' is 'http'",
    );
    // Kong exports write these at their defaults; those load.
    let yaml = "_format_version: \"3.0\"\nservices:\n- name: s\n  host: h\n  tls_verify: null\n  client_certificate: null\nupstreams:\n- name: u\n  hash_on_cookie_path: /\n  use_srv_name: false\nroutes:\n- paths: [/]\n  snis: []\n  sources: null\ncertificates: []\n";
    load(yaml).expect("defaults of unsupported fields must load");
    assert_only_error(
        "vaults:\n- name: env\n",
        "vaults",
        "'vaults' are not supported by Portico yet",
    );
    assert_only_error(
        "upstreams:\n- name: u\n  hash_on: uri_capture\n",
        "upstreams[0].hash_on",
        "'uri_capture' is not supported by Portico yet",
    );
}

#[test]
fn upstream_and_target_checks() {
    assert_only_error(
        "upstreams:\n- name: 10.0.0.1\n",
        "upstreams[0].name",
        "Invalid name ('10.0.0.1'); no ip addresses allowed",
    );
    assert_only_error(
        "upstreams:\n- name: \"u:80\"\n",
        "upstreams[0].name",
        "Invalid name ('u:80'); no port allowed",
    );
    assert_only_error(
        "upstreams:\n- name: u\n  targets: [{target: \"a:99999\"}]\n",
        "upstreams[0].targets[0].target",
        "Invalid target ('a:99999'); not a valid hostname or ip address",
    );
    assert_only_error(
        "upstreams:\n- name: u\n  hash_fallback: ip\n",
        "upstreams[0].hash_fallback",
        "must be 'none' when 'hash_on' is 'none'",
    );
    assert_only_error(
        "upstreams:\n- name: u\n  hash_on: header\n",
        "upstreams[0].hash_on_header",
        "required field missing",
    );
    assert_only_error(
        "upstreams:\n- name: u\n  hash_on: header\n  hash_on_header: X-A\n  hash_fallback: header\n  hash_fallback_header: x-a\n",
        "upstreams[0].hash_fallback_header",
        "must differ from 'hash_on_header'",
    );
    assert_only_error(
        "upstreams:\n- name: u\n  hash_on: cookie\n  hash_on_cookie: c\n  hash_fallback: ip\n",
        "upstreams[0].hash_fallback",
        "must be 'none' when 'hash_on' is 'cookie'",
    );
    assert_only_error(
        "upstreams:\n- name: u\n  hash_on: ip\n  hash_fallback: query_arg\n",
        "upstreams[0].hash_fallback_query_arg",
        "required field missing",
    );
    assert_only_error(
        "upstreams:\n- name: u\n  algorithm: latency\n",
        "upstreams[0].algorithm",
        "'latency' is not supported by Portico yet",
    );
    let s = load(
        "_format_version: \"3.0\"\nupstreams:\n- name: u\n  hash_on: header\n  hash_on_header: X-User\n  hash_fallback: cookie\n  hash_on_cookie: sid\n",
    )
    .expect("hash inputs load");
    let h = &s.snapshot.upstreams[0].hash_inputs;
    assert_eq!(h.on_header.as_deref(), Some("x-user"));
    assert_eq!(h.cookie.as_deref(), Some("sid"));
    assert_eq!(h.cookie_path.as_deref(), Some("/"));
}

#[test]
fn healthcheck_shape_is_checked() {
    assert_only_error(
        "upstreams:\n- name: u\n  healthchecks:\n    active:\n      timout: 3\n",
        "upstreams[0].healthchecks.active",
        "unknown field 'timout'",
    );
    assert_only_error(
        "upstreams:\n- name: u\n  healthchecks:\n    passive:\n      unhealthy:\n        http_failures: fast\n",
        "upstreams[0].healthchecks.passive.unhealthy.http_failures",
        "expected a number, got a string",
    );
    assert_only_error(
        "upstreams:\n- name: u\n  healthchecks:\n    threshold: 101\n",
        "upstreams[0].healthchecks.threshold",
        "value should be between 0 and 100",
    );
}

#[test]
fn plugin_config_must_be_an_object() {
    assert_only_error(
        "plugins:\n- name: basic-auth\n  config: [1]\n",
        "plugins[0].config",
        "expected an object, got an array",
    );
}

#[test]
fn identical_nameless_routes_are_reported() {
    assert_only_error(
        "routes:\n- paths: [/a]\n- paths: [/a]\n",
        "routes[1]",
        "same content as routes[0]; give one of them a 'name' or an 'id'",
    );
}

#[test]
fn all_errors_are_reported_together() {
    let body = r#"
services:
- name: a
  host: h
  port: 99999
  routes:
  - paths: ["~/x(("]
  - pathz: [/]
- name: a
  host: h2
routes:
- service: ghost
  paths: [/ok]
consumers:
- tags: [t]
plugins:
- name: basic-auth
  route: nowhere
"#;
    let e = errors(body);
    let expected = [
        ("services[0].port", "value should be between 0 and 65535"),
        (
            "services[0].routes[0].paths[0]",
            "invalid regex: '/x((' (unclosed group)",
        ),
        ("services[0].routes[1]", "unknown field 'pathz'"),
        (
            "services[1]",
            "uniqueness violation: 'services' entity with name set to 'a' already declared",
        ),
        (
            "routes[0].service",
            "invalid reference 'service: ghost' (no such entry in 'services')",
        ),
        (
            "consumers[0]",
            "at least one of these fields must be non-empty: 'custom_id', 'username'",
        ),
        (
            "plugins[0].route",
            "invalid reference 'route: nowhere' (no such entry in 'routes')",
        ),
    ];
    for (path, message) in expected {
        assert!(e.has(path, message), "missing `{path}: {message}` in:\n{e}");
    }
    // The route that lost its only field to a typo also matches nothing; that is a real second error.
    assert!(e.has(
        "services[0].routes[1]",
        "must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'"
    ));
    assert_eq!(e.errors.len(), expected.len() + 1, "{e}");
    // Display: one issue per line, `path: message`.
    assert_eq!(e.to_string().lines().count(), e.errors.len());
    assert!(e
        .to_string()
        .contains("services[0].port: value should be between 0 and 65535"));
}

#[test]
fn secret_values_are_not_echoed_in_type_errors() {
    let e = errors("consumers:\n- username: u\n  keyauth_credentials:\n  - key: 918273645\n");
    assert_eq!(
        e.to_string(),
        "consumers[0].keyauth_credentials[0].key: invalid type: a number, expected a string"
    );
}

#[test]
fn plugins_with_dangling_scopes_are_not_also_duplicates() {
    assert_only_error(
        "plugins:\n- name: basic-auth\n- name: basic-auth\n  service: ghost\n",
        "plugins[1].service",
        "invalid reference 'service: ghost' (no such entry in 'services')",
    );
}

#[test]
fn es512_jwt_secrets_are_refused_by_name() {
    assert_only_error(
        "consumers:\n- username: a\n  jwt_secrets:\n  - key: k\n    algorithm: ES512\n    rsa_public_key: \"-----BEGIN PUBLIC KEY-----\\nx\\n-----END PUBLIC KEY-----\"\n",
        "consumers[0].jwt_secrets[0].algorithm",
        "ES512 is not supported by Portico yet (use ES256 or ES384, or EdDSA)",
    );
}

#[test]
fn a_key_auth_ttl_is_loaded_with_a_warning_that_it_has_expired() {
    let loaded = load(
        "_format_version: \"3.0\"\nconsumers:\n- username: a\n  keyauth_credentials:\n  - { key: k, ttl: 3600 }\n",
    )
    .unwrap();
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.path == "consumers[0].keyauth_credentials[0].ttl"
                && w.message.contains("has expired")),
        "{:?}",
        loaded.warnings
    );
}
