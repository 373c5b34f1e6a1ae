//! `portico get services|routes|consumers|plugins|upstreams [-o table|yaml|json]`: what a
//! group's data planes are serving, from the control plane.

use std::process::ExitCode;

use serde_json::Value;

use super::admin::{print_table, AdminArgs};
use super::live::{self, Kind};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Yaml,
    Json,
}

/// Options of `portico get`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to list.
    pub kind: Kind,
    #[arg(long, short = 'o', default_value = "table")]
    pub output: Output,
    #[arg(long, short = 'g', env = "PORTICO_GROUP", default_value = "default")]
    pub group: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Runs `portico get`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (_, snapshot) = match live::fetch(&args.admin, &args.group).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            eprintln!(
                "group '{}' has no config yet; apply one with `portico apply -f FILE`",
                args.group
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Ok(e.report()),
    };
    let items = live::entities(&snapshot, args.kind);
    match args.output {
        Output::Json => {
            let list: Vec<Value> = items.into_iter().map(|(_, v)| v).collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ args.kind.name(): list }))?
            );
        }
        Output::Yaml => {
            let list: Vec<Value> = items.into_iter().map(|(_, v)| v).collect();
            print!(
                "{}",
                serde_yaml::to_string(&serde_json::json!({ args.kind.name(): list }))?
            );
        }
        Output::Table => table(args.kind, &items, &snapshot),
    }
    Ok(ExitCode::SUCCESS)
}

fn s(v: &Value, f: &str) -> String {
    match v.get(f) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(Value::Array(a)) if a.is_empty() => "-".into(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

fn table(kind: Kind, items: &[(String, Value)], snapshot: &portico_common::snapshot::Snapshot) {
    let service_name = |id: &str| {
        snapshot
            .services
            .iter()
            .find(|x| x.id.to_string() == id)
            .map(|x| x.name.clone().unwrap_or_else(|| x.id.to_string()))
            .unwrap_or_else(|| "-".into())
    };
    match kind {
        Kind::Services => {
            let rows = items
                .iter()
                .map(|(k, v)| {
                    vec![
                        k.clone(),
                        s(v, "protocol"),
                        s(v, "host"),
                        s(v, "port"),
                        s(v, "path"),
                        s(v, "retries"),
                    ]
                })
                .collect::<Vec<_>>();
            print_table(
                &["NAME", "PROTOCOL", "HOST", "PORT", "PATH", "RETRIES"],
                &rows,
            );
        }
        Kind::Routes => {
            let rows = items
                .iter()
                .map(|(k, v)| {
                    vec![
                        k.clone(),
                        service_name(&s(v, "service")),
                        s(v, "paths"),
                        s(v, "hosts"),
                        s(v, "methods"),
                        s(v, "strip_path"),
                    ]
                })
                .collect::<Vec<_>>();
            print_table(
                &["NAME", "SERVICE", "PATHS", "HOSTS", "METHODS", "STRIP_PATH"],
                &rows,
            );
        }
        Kind::Consumers => {
            let count = |v: &Value, f: &str| v.get(f).and_then(Value::as_array).map_or(0, Vec::len);
            let rows = items
                .iter()
                .map(|(_, v)| {
                    let creds = count(v, "keyauth_credentials")
                        + count(v, "jwt_secrets")
                        + count(v, "basicauth_credentials");
                    vec![
                        s(v, "username"),
                        s(v, "custom_id"),
                        creds.to_string(),
                        count(v, "acls").to_string(),
                    ]
                })
                .collect::<Vec<_>>();
            print_table(&["USERNAME", "CUSTOM_ID", "CREDENTIALS", "ACLS"], &rows);
        }
        Kind::Plugins => {
            let rows = items
                .iter()
                .map(|(k, v)| vec![k.clone(), s(v, "enabled")])
                .collect::<Vec<_>>();
            print_table(&["PLUGIN (SCOPE)", "ENABLED"], &rows);
        }
        Kind::Upstreams => {
            let rows = items
                .iter()
                .map(|(k, v)| {
                    let targets = v
                        .get("targets")
                        .and_then(Value::as_array)
                        .map(|ts| {
                            ts.iter()
                                .map(|t| format!("{}@{}", s(t, "target"), s(t, "weight")))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    vec![k.clone(), s(v, "algorithm"), targets]
                })
                .collect::<Vec<_>>();
            print_table(&["NAME", "ALGORITHM", "TARGETS (weight)"], &rows);
        }
        Kind::Certificates => {
            let rows = items
                .iter()
                .map(|(_, v)| {
                    let snis = v
                        .get("snis")
                        .and_then(Value::as_array)
                        .map(|ss| {
                            ss.iter()
                                .map(|x| s(x, "name"))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    let alt = if v.get("cert_alt").is_some_and(|c| !c.is_null()) {
                        "yes"
                    } else {
                        "no"
                    };
                    vec![s(v, "id"), snis, alt.to_owned()]
                })
                .collect::<Vec<_>>();
            print_table(&["ID", "SNIS", "ALT PAIR"], &rows);
        }
    }
}
