//! `portico status [--group G]`: the groups and the fleet of data planes, as tables.

use std::process::ExitCode;

use portico_proto::v1::FleetRequest;

use super::admin::{print_table, AdminArgs};

/// Options of `portico status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this group (default: all).
    #[arg(long, short = 'g', env = "PORTICO_GROUP")]
    pub group: Option<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Runs `portico status`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let result = async {
        let mut client = args.admin.connect().await?;
        client
            .fleet(FleetRequest {
                group: args.group.clone().unwrap_or_default(),
            })
            .await
            .map_err(|s| args.admin.status_error(s))
    }
    .await;
    let fleet = match result {
        Ok(r) => r.into_inner(),
        Err(e) => return Ok(e.report()),
    };
    let groups: Vec<Vec<String>> = fleet
        .groups
        .iter()
        .map(|g| {
            vec![
                g.group.clone(),
                g.version.to_string(),
                short(&g.hash),
                g.applied_at.clone(),
            ]
        })
        .collect();
    print_table(&["GROUP", "VERSION", "HASH", "APPLIED"], &groups);
    println!();
    let dps: Vec<Vec<String>> = fleet
        .data_planes
        .iter()
        .map(|d| {
            let state = if d.state == "nacked" {
                let errs: Vec<String> = d
                    .nack_errors
                    .iter()
                    .map(|e| format!("{}: {}", e.path, e.message))
                    .collect();
                format!("nacked v{}: {}", d.nacked_version, errs.join("; "))
            } else {
                d.state.clone()
            };
            vec![
                d.node_id.clone(),
                d.group.clone(),
                d.address.clone(),
                d.serving_version.to_string(),
                format!("{} ms", d.last_apply_micros / 1000),
                d.last_seen.clone(),
                state,
            ]
        })
        .collect();
    if dps.is_empty() {
        println!("no data planes have connected");
    } else {
        print_table(
            &[
                "DATA PLANE",
                "GROUP",
                "ADDRESS",
                "SERVING",
                "LAST APPLY",
                "LAST SEEN",
                "STATE",
            ],
            &dps,
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn short(h: &str) -> String {
    h[..h.len().min(12)].to_string()
}
