//! Kong's defaults, the url shorthand, format migration, equivalent spellings of one config
//! (nested vs top-level, YAML vs JSON, reordered), ids, the content hash, and warnings.

use portico_common::snapshot::{Protocol, Snapshot};
use portico_common::{load_file, load_str, Loaded};
use sha1::{Digest, Sha1};
use uuid::Uuid;

fn load(yaml: &str) -> Loaded {
    load_str(yaml, &|_| None).unwrap_or_else(|e| panic!("config refused:\n{e}"))
}

fn snapshot(yaml: &str) -> Snapshot {
    load(yaml).snapshot
}

#[test]
fn kong_defaults_are_applied() {
    let s = snapshot(
        r#"_format_version: "3.0"
services:
- name: s
  url: http://example.com
  routes:
  - name: r
    paths: [/]
upstreams:
- name: u
  targets: [{target: 10.0.0.1}]
plugins:
- name: basic-auth
"#,
    );
    let svc = &s.services[0];
    assert_eq!(
        (
            svc.protocol,
            svc.host.as_str(),
            svc.port,
            svc.path.as_deref()
        ),
        (Protocol::Http, "example.com", 80, None)
    );
    assert_eq!(
        (
            svc.retries,
            svc.connect_timeout,
            svc.write_timeout,
            svc.read_timeout
        ),
        (5, 60000, 60000, 60000)
    );
    assert!(svc.enabled);

    let r = &s.routes[0];
    assert_eq!(r.protocols, [Protocol::Http, Protocol::Https]);
    assert!(r.strip_path && !r.preserve_host);
    assert_eq!(
        (
            r.regex_priority,
            r.path_handling.as_str(),
            r.https_redirect_status_code
        ),
        (0, "v0", 426)
    );
    assert!(r.request_buffering && r.response_buffering);
    assert_eq!(r.service, Some(svc.id));

    let u = &s.upstreams[0];
    assert_eq!(
        (
            u.algorithm.as_str(),
            u.hash_on.as_str(),
            u.hash_fallback.as_str(),
            u.slots
        ),
        ("round-robin", "none", "none", 10000)
    );
    let hc = &u.healthchecks;
    assert_eq!(hc["active"]["type"], "http");
    assert_eq!(hc["active"]["timeout"], 1);
    assert_eq!(hc["active"]["concurrency"], 10);
    assert_eq!(hc["active"]["http_path"], "/");
    assert_eq!(hc["active"]["https_verify_certificate"], true);
    assert_eq!(
        hc["active"]["healthy"]["http_statuses"],
        serde_json::json!([200, 302])
    );
    assert_eq!(
        hc["active"]["unhealthy"]["http_statuses"],
        serde_json::json!([429, 404, 500, 501, 502, 503, 504, 505])
    );
    assert_eq!(
        hc["passive"]["unhealthy"]["http_statuses"],
        serde_json::json!([429, 500, 503])
    );
    assert_eq!(hc["passive"]["unhealthy"]["http_failures"], 0);
    assert_eq!(
        hc["passive"]["healthy"]["http_statuses"]
            .as_array()
            .map(Vec::len),
        Some(19)
    );
    assert_eq!(hc["threshold"], 0);
    let t = &u.targets[0];
    assert_eq!(
        (t.target.as_str(), t.host.as_str(), t.port, t.weight),
        ("10.0.0.1:8000", "10.0.0.1", 8000, 100)
    );

    let p = &s.plugins[0];
    assert!(p.enabled);
    assert_eq!(
        p.protocols,
        [
            Protocol::Grpc,
            Protocol::Grpcs,
            Protocol::Http,
            Protocol::Https
        ]
    );
    assert_eq!(
        p.config,
        serde_json::json!({"anonymous": null, "hide_credentials": false, "realm": "service"})
    );
    assert_eq!((p.service, p.route, p.consumer), (None, None, None));
}

#[test]
fn healthchecks_merge_user_values_over_defaults() {
    let s = snapshot("_format_version: \"3.0\"\nupstreams:\n- name: u\n  healthchecks:\n    active:\n      healthy: {interval: 5}\n      https_sni: api.internal\n");
    let hc = &s.upstreams[0].healthchecks;
    assert_eq!(hc["active"]["healthy"]["interval"], 5);
    assert_eq!(hc["active"]["healthy"]["successes"], 0);
    assert_eq!(hc["active"]["https_sni"], "api.internal");
}

#[test]
fn hash_on_switches_to_consistent_hashing() {
    let s = snapshot("_format_version: \"3.0\"\nupstreams:\n- name: u\n  hash_on: ip\n");
    assert_eq!(s.upstreams[0].algorithm, "consistent-hashing");
}

#[test]
fn url_shorthand() {
    let s = snapshot(
        r#"_format_version: "3.0"
services:
- {name: a, url: "https://api.example.com"}
- {name: b, url: "http://10.0.0.5:8080/base/path"}
- {name: c, url: "example.com:443"}
- {name: d, url: "grpcs://grpc.internal:9443"}
"#,
    );
    let got: Vec<_> = s
        .services
        .iter()
        .map(|x| (x.protocol, x.host.as_str(), x.port, x.path.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (Protocol::Https, "api.example.com", 443, None),
            (Protocol::Http, "10.0.0.5", 8080, Some("/base/path")),
            (Protocol::Https, "example.com", 443, None),
            (Protocol::Grpcs, "grpc.internal", 9443, None),
        ]
    );
}

#[test]
fn format_1_1_and_2_1_paths_are_migrated() {
    for version in ["1.1", "2.1"] {
        let loaded = load(&format!(
            "_format_version: \"{version}\"\nservices:\n- name: s\n  host: h\n  routes:\n  - paths: [/plain, \"/users/\\\\d+\", \"/v1/(a|b)$\"]\nroutes:\n- paths: [\"/files/%2E%41.*\", /a/./b]\n"
        ));
        let s = loaded.snapshot;
        assert_eq!(s.source_format_version, version);
        assert_eq!(s.routes[0].paths, ["/plain", r"~/users/\d+", "~/v1/(a|b)$"]);
        assert_eq!(s.routes[1].paths, [r"~/files/\.A.*", "/a/b"]);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }
}

#[test]
fn format_3_0_paths_are_not_migrated() {
    let e = load_str(
        "_format_version: \"3.0\"\nroutes:\n- paths: [\"/users/\\\\d+\"]\n",
        &|_| None,
    )
    .unwrap_err();
    assert!(
        e.has(
            "routes[0].paths[0]",
            "invalid path: path contains a backslash"
        ),
        "{e}"
    );
}

#[test]
fn regex_looking_prefix_path_warns() {
    let loaded = load("_format_version: \"3.0\"\nroutes:\n- paths: [\"/files/[0-9]+\", /plain]\n");
    assert_eq!(loaded.snapshot.routes[0].paths, ["/files/[0-9]+", "/plain"]);
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert_eq!(loaded.warnings[0].path, "routes[0].paths[0]");
    assert_eq!(
        loaded.warnings[0].message,
        "prefix path '/files/[0-9]+' contains regex characters but matches literally; write '~/files/[0-9]+' if you meant a regex"
    );
}

const NESTED: &str = r#"_format_version: "3.0"
services:
- name: users
  host: users.internal
  routes:
  - name: users-route
    paths: [/users]
    plugins:
    - name: request-termination
      config: {status_code: 429}
  - paths: [/nameless]
  plugins:
  - name: key-auth
upstreams:
- name: users.internal
  targets:
  - target: 10.0.0.1:8080
    weight: 10
consumers:
- username: alice
  keyauth_credentials: [{key: k1}, {key: k0}]
  jwt_secrets: [{key: alice-iss, secret: s}]
  basicauth_credentials: [{username: alice, password: pw}]
  acls: [{group: admins}]
  plugins:
  - name: ip-restriction
    config: {allow: [10.0.0.0/8]}
"#;

const FLAT: &str = r#"_format_version: "3.0"
services:
- name: users
  host: users.internal
routes:
- name: users-route
  service: users
  paths: [/users]
- service: users
  paths: [/nameless]
upstreams:
- name: users.internal
targets:
- upstream: users.internal
  target: 10.0.0.1:8080
  weight: 10
consumers:
- username: alice
keyauth_credentials:
- {consumer: alice, key: k1}
- {consumer: alice, key: k0}
jwt_secrets:
- {consumer: alice, key: alice-iss, secret: s}
basicauth_credentials:
- {consumer: alice, username: alice, password: pw}
acls:
- {consumer: alice, group: admins}
plugins:
- name: request-termination
  route: users-route
  config: {status_code: 429}
- name: key-auth
  service: users
- name: ip-restriction
  consumer: alice
  config: {allow: [10.0.0.0/8]}
"#;

#[test]
fn nested_and_top_level_forms_give_the_same_snapshot() {
    let (nested, flat) = (snapshot(NESTED), snapshot(FLAT));
    assert_eq!(nested, flat);
    assert_eq!(nested.hash, flat.hash);
}

#[test]
fn json_and_yaml_give_the_same_snapshot() {
    let value: serde_json::Value = serde_yaml::from_str(NESTED).unwrap();
    let json = serde_json::to_string(&value).unwrap();
    assert!(json.starts_with('{'));
    assert_eq!(snapshot(&json), snapshot(NESTED));
}

#[test]
fn ids_follow_kong_generate_uuid() {
    // uuid5(uuid5(fd02801f-0957-4a15-a55a-c8d9606f30b5, "services"), "users"), as Kong computes it
    // for a named service (checked with Python's uuid module).
    let s = snapshot(NESTED);
    assert_eq!(
        s.services[0].id.to_string(),
        "e37de8aa-85e3-5439-b356-1084f7624ae5"
    );
    assert!(s.routes.iter().all(|r| r.id.get_version_num() == 5));
}

#[test]
fn ids_are_stable_across_reordering() {
    let a = snapshot("_format_version: \"3.0\"\nservices:\n- {name: one, host: a}\n- {name: two, host: b}\nroutes:\n- {service: one, paths: [/x]}\n- {name: r2, service: two, paths: [/y]}\nconsumers:\n- username: c\n  keyauth_credentials: [{key: k1}, {key: k2}]\n");
    let b = snapshot("_format_version: \"3.0\"\nconsumers:\n- username: c\n  keyauth_credentials: [{key: k2}, {key: k1}]\nroutes:\n- {name: r2, service: two, paths: [/y]}\n- {service: one, paths: [/x]}\nservices:\n- {name: two, host: b}\n- {name: one, host: a}\n");
    let by_name = |s: &Snapshot, n: &str| {
        s.services
            .iter()
            .find(|x| x.name.as_deref() == Some(n))
            .map(|x| x.id)
    };
    assert_eq!(by_name(&a, "one"), by_name(&b, "one"));
    assert_eq!(by_name(&a, "two"), by_name(&b, "two"));
    let route_by_path =
        |s: &Snapshot, p: &str| s.routes.iter().find(|r| r.paths == [p]).map(|r| r.id);
    assert_eq!(route_by_path(&a, "/x"), route_by_path(&b, "/x"));
    assert_eq!(route_by_path(&a, "/y"), route_by_path(&b, "/y"));
    let key_id = |s: &Snapshot, k: &str| {
        s.consumers[0]
            .keyauth_credentials
            .iter()
            .find(|c| c.key == k)
            .map(|c| c.id)
    };
    assert_eq!(key_id(&a, "k1"), key_id(&b, "k1"));
    assert_eq!(key_id(&a, "k2"), key_id(&b, "k2"));
    assert_ne!(key_id(&a, "k1"), key_id(&a, "k2"));
}

#[test]
fn explicit_ids_are_kept() {
    let id = "0b7c1a3e-5d2f-4c61-8a9b-2f3e4d5c6b7a";
    let s = snapshot(&format!(
        "_format_version: \"3.0\"\nconsumers:\n- id: {id}\n  username: u\n"
    ));
    assert_eq!(s.consumers[0].id, Uuid::parse_str(id).unwrap());
}

#[test]
fn hash_is_deterministic_and_tracks_content() {
    let a = snapshot(NESTED);
    assert_eq!(a.hash.len(), 64);
    assert!(a.hash.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(a.hash, snapshot(NESTED).hash);
    assert_eq!(a.hash, a.compute_hash());
    let changed = snapshot(&NESTED.replace("status_code: 429", "status_code: 430"));
    assert_ne!(a.hash, changed.hash);
    let retagged =
        snapshot(&NESTED.replace("host: users.internal", "host: users.internal\n  tags: [x]"));
    assert_ne!(a.hash, retagged.hash);
}

#[test]
fn basic_auth_passwords_are_hashed_like_kong() {
    let s = snapshot(NESTED);
    let c = &s.consumers[0];
    let expected = hex::encode(Sha1::digest(format!("pw{}", c.id).as_bytes()));
    assert_eq!(c.basicauth_credentials[0].password, expected);

    let raw = snapshot(&format!("{NESTED}_transform: false\n"));
    assert_eq!(raw.consumers[0].basicauth_credentials[0].password, "pw");
}

#[test]
fn jwt_defaults_and_generated_key() {
    let s = snapshot(
        "_format_version: \"3.0\"\nconsumers:\n- username: u\n  jwt_secrets:\n  - secret: s\n",
    );
    let j = &s.consumers[0].jwt_secrets[0];
    assert_eq!(j.algorithm, "HS256");
    assert_eq!(j.key, j.id.simple().to_string());
    assert_eq!(
        j.key,
        snapshot(
            "_format_version: \"3.0\"\nconsumers:\n- username: u\n  jwt_secrets:\n  - secret: s\n"
        )
        .consumers[0]
            .jwt_secrets[0]
            .key
    );
}

#[test]
fn summary_line() {
    assert_eq!(
        snapshot(NESTED).summary(),
        "1 service, 2 routes, 1 upstream (1 target), 1 consumer (4 credentials), 3 plugins"
    );
    assert_eq!(
        Snapshot::default().summary(),
        "0 services, 0 routes, 0 upstreams (0 targets), 0 consumers (0 credentials), 0 plugins"
    );
}

#[test]
fn load_file_reads_and_reports_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kong.yml");
    std::fs::write(&path, NESTED).unwrap();
    assert_eq!(load_file(&path).unwrap().snapshot, snapshot(NESTED));

    let missing = dir.path().join("missing.yml");
    let e = load_file(&missing).unwrap_err();
    assert_eq!(e.errors.len(), 1);
    assert_eq!(e.errors[0].path, "");
    assert!(
        e.errors[0].message.contains(&missing.display().to_string()),
        "{e}"
    );
}

#[test]
fn syntax_errors_are_one_file_level_issue() {
    let e = load_str("_format_version: \"3.0\"\nservices: [\n", &|_| None).unwrap_err();
    assert_eq!(e.errors.len(), 1);
    assert!(e.errors[0].message.starts_with("invalid YAML: "), "{e}");
    let e = load_str("{\"_format_version\": ", &|_| None).unwrap_err();
    assert!(e.errors[0].message.starts_with("invalid JSON: "), "{e}");
}

#[test]
fn yaml_merge_keys_are_applied() {
    let s = snapshot("_format_version: \"3.0\"\nservices:\n- &base\n  name: a\n  host: h\n  retries: 1\n- <<: *base\n  name: b\n");
    assert_eq!(
        (
            s.services[1].name.as_deref(),
            s.services[1].host.as_str(),
            s.services[1].retries
        ),
        (Some("b"), "h", 1)
    );
}
