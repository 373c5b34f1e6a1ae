//! Reading a group's live config from the control plane, and presenting snapshot entities
//! (by kind, with a stable key, secrets redacted) for `get` and `diff`.

use portico_common::snapshot::Snapshot;
use portico_proto::v1::GetConfigRequest;
use serde_json::Value;

use super::admin::{AdminArgs, CliError};

/// The entity kinds `get` and `diff` know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Services,
    Routes,
    Consumers,
    Plugins,
    Upstreams,
    Certificates,
}

impl Kind {
    /// All kinds, in the order `diff` reports them.
    pub const ALL: [Kind; 6] = [
        Kind::Services,
        Kind::Routes,
        Kind::Upstreams,
        Kind::Consumers,
        Kind::Plugins,
        Kind::Certificates,
    ];

    /// The plural name used in files and output.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Services => "services",
            Kind::Routes => "routes",
            Kind::Consumers => "consumers",
            Kind::Plugins => "plugins",
            Kind::Upstreams => "upstreams",
            Kind::Certificates => "certificates",
        }
    }
}

/// The live snapshot of `group` (`None` when the group has no config yet).
pub async fn fetch(admin: &AdminArgs, group: &str) -> Result<Option<(u64, Snapshot)>, CliError> {
    let mut client = admin.connect().await?;
    let doc = match client
        .get_config(GetConfigRequest {
            group: group.to_string(),
            version: 0,
        })
        .await
    {
        Ok(d) => d.into_inner(),
        Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
        Err(s) => return Err(admin.status_error(s)),
    };
    let snapshot: Snapshot = serde_json::from_slice(&doc.snapshot_json).map_err(|e| {
        CliError::Refused(format!(
            "the control plane sent a snapshot this CLI cannot read: {e}"
        ))
    })?;
    Ok(Some((doc.version, snapshot)))
}

/// The entities of `kind` as JSON values keyed by name (or id), secrets redacted.
pub fn entities(snapshot: &Snapshot, kind: Kind) -> Vec<(String, Value)> {
    let to_values = |v: Value| match v {
        Value::Array(a) => a,
        _ => Vec::new(),
    };
    let raw = match kind {
        Kind::Services => to_values(serde_json::to_value(&snapshot.services).unwrap_or_default()),
        Kind::Routes => to_values(serde_json::to_value(&snapshot.routes).unwrap_or_default()),
        Kind::Consumers => to_values(serde_json::to_value(&snapshot.consumers).unwrap_or_default()),
        Kind::Plugins => to_values(serde_json::to_value(&snapshot.plugins).unwrap_or_default()),
        Kind::Upstreams => to_values(serde_json::to_value(&snapshot.upstreams).unwrap_or_default()),
        Kind::Certificates => {
            to_values(serde_json::to_value(&snapshot.certificates).unwrap_or_default())
        }
    };
    raw.into_iter()
        .map(|mut v| {
            redact(&mut v);
            (key(kind, &v), v)
        })
        .collect()
}

fn key(kind: Kind, v: &Value) -> String {
    let field = |f: &str| v.get(f).and_then(Value::as_str).map(str::to_string);
    let name = match kind {
        Kind::Consumers => field("username").or_else(|| field("custom_id")),
        // A certificate is known by its first server name (its id otherwise).
        Kind::Certificates => v
            .get("snis")
            .and_then(|s| s.get(0))
            .and_then(|s| s.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string),
        Kind::Plugins => field("instance_name").or_else(|| {
            let scope: Vec<String> = ["service", "route", "consumer"]
                .iter()
                .filter_map(|s| field(s).map(|id| format!("{s}={}", &id[..id.len().min(8)])))
                .collect();
            field("name").map(|n| {
                if scope.is_empty() {
                    format!("{n} (global)")
                } else {
                    format!("{n} ({})", scope.join(","))
                }
            })
        }),
        _ => field("name"),
    };
    name.or_else(|| field("id")).unwrap_or_default()
}

/// Credentials never leave the control plane through the CLI's output.
fn redact(v: &mut Value) {
    const SECRET: [(&str, &str); 3] = [
        ("keyauth_credentials", "key"),
        ("jwt_secrets", "secret"),
        ("basicauth_credentials", "password"),
    ];
    // A certificate's private keys.
    if v.get("cert").is_some() {
        for field in ["key", "key_alt"] {
            if let Some(f) = v.get_mut(field) {
                if !f.is_null() {
                    *f = Value::String("<redacted>".into());
                }
            }
        }
    }
    for (list, field) in SECRET {
        if let Some(Value::Array(items)) = v.get_mut(list) {
            for item in items {
                if let Some(f) = item.get_mut(field) {
                    if !f.is_null() {
                        *f = Value::String("<redacted>".into());
                    }
                }
            }
        }
    }
}
