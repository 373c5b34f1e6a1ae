//! `${VAR}` substitution and `{vault://env/..}` references, resolved before validation so
//! errors name the place of use.

use std::collections::HashMap;

use portico_common::{load_str, ConfigErrors, Loaded};

fn load_env(yaml: &str, vars: &[(&str, &str)]) -> Result<Loaded, ConfigErrors> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    load_str(yaml, &move |name| vars.get(name).cloned())
}

const KEYAUTH: &str = r#"_format_version: "3.0"
consumers:
- username: mobile
  keyauth_credentials:
  - key: ${MOBILE_APP_API_KEY}
"#;

#[test]
fn set_variable_is_substituted() {
    let s = load_env(KEYAUTH, &[("MOBILE_APP_API_KEY", "k-42")])
        .unwrap()
        .snapshot;
    assert_eq!(s.consumers[0].keyauth_credentials[0].key, "k-42");
}

#[test]
fn unset_variable_names_variable_and_path_once() {
    let e = load_env(KEYAUTH, &[]).unwrap_err();
    assert_eq!(
        e.errors.len(),
        1,
        "no follow-up 'required field missing':\n{e}"
    );
    assert_eq!(
        e.to_string(),
        "consumers[0].keyauth_credentials[0].key: environment variable MOBILE_APP_API_KEY is not set"
    );
}

#[test]
fn substitution_inside_strings_and_numbers() {
    let yaml = r#"_format_version: "3.0"
services:
- name: s
  url: http://${HOST}:${PORT}/v1
- name: t
  host: t.internal
  port: ${T_PORT}
  read_timeout: ${TIMEOUT:-5000}
"#;
    let s = load_env(
        yaml,
        &[
            ("HOST", "api.internal"),
            ("PORT", "8080"),
            ("T_PORT", "9090"),
        ],
    )
    .unwrap()
    .snapshot;
    assert_eq!(
        (s.services[0].host.as_str(), s.services[0].port),
        ("api.internal", 8080)
    );
    assert_eq!(s.services[1].port, 9090);
    assert_eq!(s.services[1].read_timeout, 5000);
}

#[test]
fn default_applies_when_unset_or_empty() {
    let yaml =
        "_format_version: \"3.0\"\nservices:\n- name: s\n  host: ${UP_HOST:-fallback.local}\n";
    assert_eq!(
        load_env(yaml, &[]).unwrap().snapshot.services[0].host,
        "fallback.local"
    );
    assert_eq!(
        load_env(yaml, &[("UP_HOST", "")])
            .unwrap()
            .snapshot
            .services[0]
            .host,
        "fallback.local"
    );
    assert_eq!(
        load_env(yaml, &[("UP_HOST", "real.local")])
            .unwrap()
            .snapshot
            .services[0]
            .host,
        "real.local"
    );
}

#[test]
fn double_dollar_escapes_a_literal() {
    let yaml = "_format_version: \"3.0\"\nplugins:\n- name: request-termination\n  config:\n    message: \"a:$${NOT_A_VAR} b:$5 and $$ stay\"\n";
    let s = load_env(yaml, &[]).unwrap().snapshot;
    assert_eq!(
        s.plugins[0].config["message"],
        "a:${NOT_A_VAR} b:$5 and $$ stay"
    );
}

#[test]
fn malformed_references_are_errors() {
    let yaml = "_format_version: \"3.0\"\nservices:\n- name: s\n  host: ${OPEN\n- name: t\n  host: ${bad-name}\n";
    let e = load_env(yaml, &[]).unwrap_err();
    assert!(
        e.has(
            "services[0].host",
            "unterminated '${' in '${OPEN' (write '$${' for a literal '${')"
        ),
        "{e}"
    );
    assert!(
        e.has(
            "services[1].host",
            "invalid variable name 'bad-name' in '${bad-name}' (write '$${' for a literal '${')"
        ),
        "{e}"
    );
    assert_eq!(e.errors.len(), 2, "{e}");
}

#[test]
fn comments_are_not_resolved() {
    let yaml = "_format_version: \"3.0\"\n_comment: uses ${UNSET}\nservices:\n- name: s\n  host: h\n  _comment: ${ALSO_UNSET}\n";
    load_env(yaml, &[]).expect("variables in comments are not required");
}

#[test]
fn vault_env_reference() {
    let yaml = "_format_version: \"3.0\"\nconsumers:\n- username: p\n  jwt_secrets:\n  - key: iss\n    secret: \"{vault://env/partner-jwt-secret}\"\n";
    let s = load_env(yaml, &[("PARTNER_JWT_SECRET", "s3cret")])
        .unwrap()
        .snapshot;
    assert_eq!(
        s.consumers[0].jwt_secrets[0].secret.as_deref(),
        Some("s3cret")
    );

    let e = load_env(yaml, &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "consumers[0].jwt_secrets[0].secret: {vault://env/partner-jwt-secret}: environment variable PARTNER_JWT_SECRET is not set"
    );
}

#[test]
fn vault_json_key_selects_a_field() {
    let yaml = "_format_version: \"3.0\"\nconsumers:\n- username: p\n  basicauth_credentials:\n  - username: p\n    password: \"{vault://env/creds/basic}\"\n";
    let env = [("CREDS", r#"{"basic":"pw","other":1}"#)];
    assert!(load_env(yaml, &env).is_ok());

    let e = load_env(&yaml.replace("creds/basic", "creds/missing"), &env).unwrap_err();
    assert!(
        e.has(
            "consumers[0].basicauth_credentials[0].password",
            "{vault://env/creds/missing}: key 'missing' not found in CREDS"
        ),
        "{e}"
    );
    let e = load_env(yaml, &[("CREDS", "not json")]).unwrap_err();
    assert!(
        e.has(
            "consumers[0].basicauth_credentials[0].password",
            "{vault://env/creds/basic}: environment variable CREDS does not hold a JSON object"
        ),
        "{e}"
    );
}

#[test]
fn other_vaults_are_refused() {
    let yaml =
        "_format_version: \"3.0\"\nservices:\n- name: s\n  host: \"{vault://aws/db-host}\"\n";
    let e = load_env(yaml, &[]).unwrap_err();
    assert!(
        e.has(
            "services[0].host",
            "{vault://aws/db-host}: vault 'aws' is not supported (only 'env')"
        ),
        "{e}"
    );
}
