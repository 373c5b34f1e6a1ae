//! `portico diff -f FILE [--group G]`: entity-level differences between a file and what the
//! group serves. Exit 0 when identical, 1 when they differ (like diff(1)).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use portico_common::snapshot::Snapshot;
use serde_json::Value;

use super::admin::AdminArgs;
use super::live::{self, Kind};

/// Options of `portico diff`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, short = 'f', env = "PORTICO_FILE")]
    pub file: PathBuf,
    #[arg(long, short = 'g', env = "PORTICO_GROUP", default_value = "default")]
    pub group: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// One line of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added(String),
    Removed(String),
    /// The entity and the fields that differ (values are not printed: they may be secrets).
    Changed(String, Vec<String>),
}

/// Runs `portico diff`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let local = match portico_common::load_file(&args.file) {
        Ok(l) => l.snapshot,
        Err(errors) => {
            eprintln!("{}: invalid:", args.file.display());
            for e in &errors.errors {
                eprintln!("  {e}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    let live = match live::fetch(&args.admin, &args.group).await {
        Ok(l) => l,
        Err(e) => return Ok(e.report()),
    };
    let (version, live) = match live {
        Some((v, s)) => (Some(v), s),
        None => (None, Snapshot::default()),
    };
    let changes = diff(&live, &local);
    if changes.is_empty() {
        println!(
            "no changes: group '{}' serves this config (version {})",
            args.group,
            version.unwrap_or(0)
        );
        return Ok(ExitCode::SUCCESS);
    }
    match version {
        Some(v) => println!("changes against group '{}' version {v}:", args.group),
        None => println!(
            "group '{}' has no config yet; applying would add:",
            args.group
        ),
    }
    for c in &changes {
        match c {
            Change::Added(e) => println!("+ {e}"),
            Change::Removed(e) => println!("- {e}"),
            Change::Changed(e, fields) => println!("~ {e}: {}", fields.join(", ")),
        }
    }
    Ok(ExitCode::FAILURE)
}

/// Entity-level changes from `live` to `local`.
pub fn diff(live: &Snapshot, local: &Snapshot) -> Vec<Change> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        let before: BTreeMap<String, Value> = live::entities(live, kind).into_iter().collect();
        let after: BTreeMap<String, Value> = live::entities(local, kind).into_iter().collect();
        for (k, v) in &after {
            let name = format!("{}/{k}", kind.name());
            match before.get(k) {
                None => out.push(Change::Added(name)),
                Some(old) if old != v => out.push(Change::Changed(name, changed_fields(old, v))),
                Some(_) => {}
            }
        }
        for k in before.keys().filter(|k| !after.contains_key(*k)) {
            out.push(Change::Removed(format!("{}/{k}", kind.name())));
        }
    }
    out
}

fn changed_fields(a: &Value, b: &Value) -> Vec<String> {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return vec!["(value)".into()];
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Snapshot {
        portico_common::load_str(yaml, &|_| None).unwrap().snapshot
    }

    #[test]
    fn diff_names_added_removed_and_changed_fields() {
        let live = load("_format_version: \"3.0\"\nservices:\n  - name: a\n    url: http://a\n  - name: gone\n    url: http://g\nconsumers:\n  - username: u\n    keyauth_credentials:\n      - key: old-secret\n");
        let local = load("_format_version: \"3.0\"\nservices:\n  - name: a\n    url: http://a:8080\n  - name: new\n    url: http://n\nconsumers:\n  - username: u\n    keyauth_credentials:\n      - key: new-secret\n");
        let changes = diff(&live, &local);
        assert!(
            changes.contains(&Change::Changed("services/a".into(), vec!["port".into()])),
            "{changes:?}"
        );
        assert!(changes.contains(&Change::Added("services/new".into())));
        assert!(changes.contains(&Change::Removed("services/gone".into())));
        // Secrets are redacted before comparing, so a key rotation shows as no visible change
        // in value but the credential's id changes with it.
        let printed = format!("{changes:?}");
        assert!(!printed.contains("secret"), "{printed}");
        assert!(diff(&local, &local).is_empty());
    }
}
