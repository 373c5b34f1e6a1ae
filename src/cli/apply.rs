//! `portico apply -f FILE [--group G] [--wait]`: validate locally, push to the control plane
//! (the document as compact JSON, [`portico_common::load::transport_text`]), optionally wait
//! for every data plane of the group to ACK or NACK.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use portico_proto::v1::{ApplyRequest, FleetRequest};

use super::admin::{print_table, AdminArgs, CliError};

/// Exit code when `--wait` saw a data plane refuse the version or the wait timed out.
pub const EXIT_NOT_CONVERGED: u8 = 3;

/// Options of `portico apply`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Kong declarative file to apply.
    #[arg(long, short = 'f', env = "PORTICO_FILE")]
    pub file: PathBuf,
    /// Node group the config is for.
    #[arg(long, short = 'g', env = "PORTICO_GROUP", default_value = "default")]
    pub group: String,
    /// Wait until every connected data plane of the group has ACKed or NACKed the new version.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub wait_timeout: u64,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Runs `portico apply`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Local validation first: the same code the control plane runs, so errors show without a
    // round trip and without the control plane.
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.file.display()))?;
    // The document travels as compact JSON (secret references unresolved), as Kong's deck
    // sends it: the control plane parses JSON several times faster than YAML. What is checked
    // here is what is sent; it loads exactly as the file does.
    let text = portico_common::load::transport_text(&text).into_owned();
    if let Err(errors) = portico_common::load_str(&text, &|name| std::env::var(name).ok()) {
        eprintln!("{}: invalid, nothing applied:", args.file.display());
        for e in &errors.errors {
            eprintln!("  {e}");
        }
        return Ok(ExitCode::FAILURE);
    }
    match apply(&args, text).await {
        Ok(code) => Ok(code),
        Err(e) => Ok(e.report()),
    }
}

async fn apply(args: &Args, text: String) -> Result<ExitCode, CliError> {
    let mut client = args.admin.connect().await?;
    let resp = client
        .apply(ApplyRequest {
            group: args.group.clone(),
            config_text: text,
        })
        .await
        .map_err(|s| args.admin.status_error(s))?
        .into_inner();
    if !resp.accepted {
        eprintln!(
            "the control plane refused the config for group '{}', nothing changed:",
            args.group
        );
        for e in &resp.errors {
            eprintln!("  {}: {}", e.path, e.message);
        }
        return Ok(ExitCode::FAILURE);
    }
    let short = &resp.hash[..resp.hash.len().min(12)];
    if resp.unchanged {
        println!(
            "group '{}' already serves this config: version {} ({short})",
            resp.group, resp.version
        );
    } else {
        println!(
            "applied version {} ({short}) to group '{}': {}",
            resp.version, resp.group, resp.summary
        );
    }
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    wait(args, &mut client, resp.version, &resp.hash).await
}

async fn wait(
    args: &Args,
    client: &mut super::admin::Client,
    version: u64,
    hash: &str,
) -> Result<ExitCode, CliError> {
    let deadline = Instant::now() + Duration::from_secs(args.wait_timeout);
    loop {
        let fleet = client
            .fleet(FleetRequest {
                group: args.group.clone(),
            })
            .await
            .map_err(|s| args.admin.status_error(s))?
            .into_inner();
        let dps: Vec<_> = fleet
            .data_planes
            .into_iter()
            .filter(|d| d.group == args.group && d.state != "disconnected")
            .collect();
        let done = |d: &portico_proto::v1::DataPlaneInfo| {
            (d.serving_version == version && d.serving_hash == hash)
                || (d.state == "nacked" && d.nacked_version == version)
        };
        let timed_out = Instant::now() >= deadline;
        if dps.iter().all(done) || timed_out {
            if dps.is_empty() {
                println!("no data plane of group '{}' is connected", args.group);
                return Ok(ExitCode::SUCCESS);
            }
            let mut failed = false;
            let rows: Vec<Vec<String>> = dps
                .iter()
                .map(|d| {
                    let result = if d.serving_version == version && d.serving_hash == hash {
                        format!("ACK ({} ms)", d.last_apply_micros / 1000)
                    } else if d.state == "nacked" && d.nacked_version == version {
                        failed = true;
                        let errs: Vec<String> = d
                            .nack_errors
                            .iter()
                            .map(|e| format!("{}: {}", e.path, e.message))
                            .collect();
                        format!("NACK: {}", errs.join("; "))
                    } else {
                        failed = true;
                        format!("no answer (serving {})", d.serving_version)
                    };
                    vec![d.node_id.clone(), d.address.clone(), result]
                })
                .collect();
            print_table(&["DATA PLANE", "ADDRESS", "RESULT"], &rows);
            if timed_out && !dps.iter().all(done) {
                eprintln!("gave up waiting after {} s", args.wait_timeout);
            }
            return Ok(if failed {
                ExitCode::from(EXIT_NOT_CONVERGED)
            } else {
                ExitCode::SUCCESS
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
