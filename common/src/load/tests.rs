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
    let e = load_with(yaml, &|_| None, lowercase).unwrap_err();
    assert_eq!(
        e.to_string(),
        "routes[0].paths[1]: non-normalized path, consider use '/upper' instead"
    );
}

#[test]
fn migration_normalizes_plain_paths_with_the_same_normalizer() {
    let yaml = "_format_version: \"2.1\"\nroutes:\n- paths: [/Upper]\n";
    let loaded = load_with(yaml, &|_| None, lowercase).unwrap();
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
    let s = load_with(yaml, &|_| None, crate::path::canonicalize)
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
