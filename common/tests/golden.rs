//! Golden test: a realistic kong.yml and the snapshot it must produce. Regenerate after an
//! intended change with `UPDATE_GOLDEN=1 cargo test -p portico-common --test golden`, then
//! review the diff of `tests/golden/kong.snapshot.json` like code.

use std::path::Path;

use portico_common::load_str;

fn env(name: &str) -> Option<String> {
    match name {
        "MOBILE_APP_API_KEY" => Some("mk-123".to_owned()),
        "PARTNER_JWT_SECRET" => Some("s3cret".to_owned()),
        _ => None,
    }
}

#[test]
fn kong_yml_matches_golden_snapshot() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let yaml = std::fs::read_to_string(dir.join("kong.yml")).expect("golden input");
    let loaded = load_str(&yaml, &env).unwrap_or_else(|e| panic!("golden config refused:\n{e}"));
    assert!(
        loaded.warnings.is_empty(),
        "unexpected warnings: {:?}",
        loaded.warnings
    );
    assert_eq!(
        loaded.snapshot.summary(),
        "2 services, 3 routes, 1 upstream (2 targets), 2 consumers (3 credentials), 6 plugins"
    );
    let actual = serde_json::to_string_pretty(&loaded.snapshot).expect("serialize") + "\n";
    let golden = dir.join("kong.snapshot.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &actual).expect("write golden");
    }
    let expected =
        std::fs::read_to_string(&golden).expect("golden output (run with UPDATE_GOLDEN=1 once)");
    assert_eq!(
        actual, expected,
        "snapshot differs from tests/golden/kong.snapshot.json"
    );
}
