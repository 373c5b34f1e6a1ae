//! Loader unit tests that need crate internals: the injected path normalizer and the
//! settling of already-reported places.

use std::borrow::Cow;

use super::load_with;
use crate::error::Issues;
use crate::path::PathError;

/// A stand-in normalizer pinned for these tests: lowercases, so any uppercase path is
/// "non-normalized" whatever `path::canonicalize` does today.
fn lowercase(p: &str) -> Result<Cow<'_, str>, PathError> {
    if !p.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if p.bytes().any(|b| b.is_ascii_uppercase()) {
        Ok(Cow::Owned(p.to_ascii_lowercase()))
    } else {
        Ok(Cow::Borrowed(p))
    }
}

#[test]
fn prefix_paths_must_equal_their_canonical_form() {
    let yaml = "_format_version: \"3.0\"\nroutes:\n- paths: [/ok, /Upper]\n";
    let e = load_with(yaml, &|_| None, lowercase, None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "routes[0].paths[1]: non-normalized path, consider use '/upper' instead"
    );
}

#[test]
fn migration_normalizes_plain_paths_with_the_same_normalizer() {
    let yaml = "_format_version: \"2.1\"\nroutes:\n- paths: [/Upper]\n";
    let loaded = load_with(yaml, &|_| None, lowercase, None).unwrap();
    assert_eq!(loaded.snapshot.routes[0].paths, ["/upper"]);
}

#[test]
fn settled_places_silence_follow_up_errors() {
    let mut issues = Issues::default();
    issues.error_settle("services[0].host", "environment variable H is not set");
    issues.error("services[0].host", "required field missing");
    issues.error("services[0].hostname", "unrelated sibling");
    issues.error("services[0]", "parent errors still count");
    let msgs: Vec<String> = issues.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        msgs,
        [
            "services[0].host: environment variable H is not set",
            "services[0].hostname: unrelated sibling",
            "services[0]: parent errors still count",
        ]
    );
}

#[test]
fn keyless_entities_take_their_id_from_their_content() {
    use super::ids::generate;
    let yaml = "_format_version: \"3.0\"\nservices:\n- host: a.internal\n  port: 81\n  _comment: not content\n  routes:\n  - paths: [/nameless]\n    created_at: 1\n- name: named\n  host: b.internal\n";
    let s = load_with(yaml, &|_| None, crate::path::canonicalize, None)
        .unwrap()
        .snapshot;
    let service = generate(
        "services",
        r#"services:*:#content:{"host":"a.internal","port":81}"#,
    );
    assert_eq!(s.services[0].id, service);
    let route = generate(
        "routes",
        &format!(r#"routes:*:#content:{{"paths":["/nameless"]}}|service:{service}"#),
    );
    assert_eq!(s.routes[0].id, route);
    assert_eq!(s.services[1].id, generate("services", "named"));
}

/// What `portico apply` sends: the document as compact JSON, secrets unresolved, loading to
/// the same snapshot (and errors) as the file itself.
#[test]
fn transport_text_keeps_references_and_the_format_version() {
    use super::{load_str, transport_text};
    let env = |name: &str| Some(format!("{}.internal", name.to_ascii_lowercase()));
    for version in ["\"3.0\"", "3.0", "'2.1'"] {
        let yaml = format!(
            "# comment\n_format_version: {version}\n_transform: false\n_ignore: [&b {{port: 8080}}]\n\
             services:\n- name: s\n  host: ${{UPSTREAM_HOST}}\n  <<: *b\n  retries: 3\n  \
             routes:\n  - paths: [\"~/v\\\\d+/x$\", /p]\n    hosts: ['{{vault://env/HOST_NAME}}']\n"
        );
        let json = transport_text(&yaml);
        assert!(matches!(json, Cow::Owned(_)), "{yaml}");
        assert!(json.starts_with('{') && !json.contains('\n'), "{json}");
        assert!(json.contains("${UPSTREAM_HOST}"), "{json}");
        assert!(json.contains("{vault://env/HOST_NAME}"), "{json}");
        let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(doc, super::parse::parse_document(&yaml).unwrap(), "{yaml}");
        // The control plane loads the JSON exactly as it would have loaded the YAML.
        assert!(load_str(&yaml, &env).is_ok(), "{yaml}");
        assert_eq!(
            load_str(&json, &env).map_err(|e| e.to_string()),
            load_str(&yaml, &env).map_err(|e| e.to_string()),
            "{yaml}"
        );
    }
    let env = |_: &str| Some("h.example.com".to_owned());
    let yaml = "_format_version: 3.0\nservices:\n- name: s\n  url: http://${H}\n";
    let (a, b) = (
        load_str(yaml, &env).unwrap(),
        load_str(&transport_text(yaml), &env).unwrap(),
    );
    assert_eq!(a, b);
    assert_eq!(b.snapshot.source_format_version, "3.0");
}

/// Text the control plane should see as written: JSON already, unparseable, not an object.
#[test]
fn transport_text_passes_other_text_through() {
    use super::transport_text;
    for text in [
        "{\"_format_version\": \"3.0\"}",
        "\u{feff}  {\"a\": 1}",
        "_format_version: \"3.0\"\nservices: [\n",
        "- a\n- b\n",
        "",
        "a: 1\na: 2\n",
    ] {
        assert!(
            matches!(transport_text(text), Cow::Borrowed(t) if t == text),
            "{text:?}"
        );
    }
}

/// Routes of a long list are checked on two threads: the errors and warnings, their order
/// and the snapshot are exactly the sequential ones.
#[test]
fn parallel_route_checks_report_as_the_sequential_ones() {
    use super::route::SEQUENTIAL;
    use std::fmt::Write as _;
    let env = |name: &str| (name == "SET").then(|| "/from-env".to_owned());
    let mut ok = String::from("_format_version: \"3.0\"\nservices:\n");
    for s in 0..30 {
        write!(
            ok,
            "- name: s{s}\n  url: http://up{s}.internal\n  routes:\n"
        )
        .unwrap();
        for r in 0..100 {
            let i = s * 100 + r;
            write!(
                ok,
                "  - name: r{i}\n    paths: [\"~/v{i}/\\\\d+$\", /p{i}]\n"
            )
            .unwrap();
        }
    }
    let mut bad = ok.clone();
    // Errors and warnings in both halves, some from the same route, plus routes whose problem
    // is only visible with the state of the whole load (a duplicate name, a settled place).
    bad.push_str("routes:\n");
    for route in [
        "{name: r5, paths: [/dup]}",
        "{paths: [\"~/(\"], methods: [G3T]}",
        "{service: nope, paths: [/x]}",
        "{paths: [/a+b]}",
        "{paths: [\"${UNSET}\"]}",
        "{paths: [\"${SET}\"], hosts: [\"*.*.x\"]}",
        "{name: r2999, paths: [/q//r]}",
        "{protocols: [tcp], paths: [/t]}",
        "{paths: [/Upper/../x]}",
    ] {
        writeln!(bad, "- {route}").unwrap();
    }
    bad = bad.replacen("paths: [\"~/v7/\\\\d+$\"", "paths: [\"~/v7/(\"", 1);
    bad = bad.replacen("- name: r2500\n", "- name: r2500\n    methods: [\"\"]\n", 1);
    bad = bad.replacen(
        "- name: r1200\n",
        "- name: r1200\n    hosts: [a..b]\n    methods: [g3t, \"\"]\n",
        1,
    );
    for text in [&ok, &bad] {
        let parallel = load_with(text, &env, crate::path::canonicalize, None);
        SEQUENTIAL.with(|s| s.set(true));
        let sequential = load_with(text, &env, crate::path::canonicalize, None);
        SEQUENTIAL.with(|s| s.set(false));
        assert_eq!(parallel, sequential);
    }
    let errors = load_with(&bad, &env, crate::path::canonicalize, None).unwrap_err();
    assert!(errors.errors.len() >= 10, "{errors}");
    assert!(load_with(&ok, &env, crate::path::canonicalize, None).is_ok());
}
