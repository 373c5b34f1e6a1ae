//! `portico rollback VERSION [--group G]`: make a past version live again (as a new version).

use std::process::ExitCode;

use portico_proto::v1::RollbackRequest;

use super::admin::AdminArgs;

/// Options of `portico rollback`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The version to return to (see `portico history`).
    pub version: u64,
    #[arg(long, short = 'g', env = "PORTICO_GROUP", default_value = "default")]
    pub group: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Runs `portico rollback`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let result = async {
        let mut client = args.admin.connect().await?;
        client
            .rollback(RollbackRequest {
                group: args.group.clone(),
                version: args.version,
            })
            .await
            .map_err(|s| args.admin.status_error(s))
    }
    .await;
    match result {
        Ok(resp) => {
            let r = resp.into_inner();
            if !r.accepted {
                eprintln!("rollback refused:");
                for e in &r.errors {
                    eprintln!("  {}: {}", e.path, e.message);
                }
                return Ok(ExitCode::FAILURE);
            }
            println!(
                "group '{}' now serves the content of version {} as version {} ({})",
                r.group,
                args.version,
                r.version,
                &r.hash[..r.hash.len().min(12)]
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(e.report()),
    }
}
