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
                format!("nacked v{}", d.nacked_version)
            } else {
                d.state.clone()
            };
            vec![
                d.node_id.clone(),
                d.group.clone(),
                d.address.clone(),
                d.serving_version.to_string(),
                format!("{} ms", d.last_apply_micros / 1000),
                propagation(d.propagation_micros),
                lag(d.behind_versions, d.out_of_sync_for_ms),
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
                "PROPAGATION",
                "LAG",
                "LAST SEEN",
                "STATE",
            ],
            &dps,
        );
    }
    // Refusals under the table, one error per line: paths and messages are too long for a cell.
    for d in fleet
        .data_planes
        .iter()
        .filter(|d| !d.nack_errors.is_empty())
    {
        println!();
        println!(
            "{} refused version {} ({} error{}):",
            d.node_id,
            d.nacked_version,
            d.nack_errors.len(),
            if d.nack_errors.len() == 1 { "" } else { "s" }
        );
        for e in &d.nack_errors {
            if e.path.is_empty() {
                println!("  {}", e.message);
            } else {
                println!("  {}: {}", e.path, e.message);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The PROPAGATION cell: the served version's time from the control plane to this node's ACK.
fn propagation(micros: u64) -> String {
    match micros {
        0 => "-".to_owned(),
        m if m < 10_000 => format!("{:.1} ms", m as f64 / 1000.0),
        m => duration(m / 1000),
    }
}

/// The LAG cell: versions behind the group's live one, and for how long.
fn lag(behind: u64, for_ms: u64) -> String {
    if behind == 0 {
        return "-".to_owned();
    }
    format!("{behind} behind, {}", duration(for_ms))
}

/// `850 ms`, `12.3 s`, `4m 05s`, `3h 02m`, `2d 05h`.
fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m {:02}s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn short(h: &str) -> String {
    h[..h.len().min(12)].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_and_propagation_cells_read_at_a_glance() {
        assert_eq!(lag(0, 0), "-");
        assert_eq!(lag(2, 75_000), "2 behind, 1m 15s");
        assert_eq!(lag(1, 3 * 86_400_000 + 3_600_000), "1 behind, 3d 01h");
        assert_eq!(propagation(0), "-");
        assert_eq!(propagation(4_300), "4.3 ms");
        assert_eq!(propagation(850_000), "850 ms");
        assert_eq!(propagation(12_340_000), "12.3 s");
    }
}
