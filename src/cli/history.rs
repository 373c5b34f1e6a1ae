//! `portico history [--group G]`: the versions applied to a group, newest first.

use std::process::ExitCode;

use portico_proto::v1::HistoryRequest;

use super::admin::{print_table, AdminArgs};

/// Options of `portico history`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, short = 'g', env = "PORTICO_GROUP", default_value = "default")]
    pub group: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Runs `portico history`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let result = async {
        let mut client = args.admin.connect().await?;
        client
            .history(HistoryRequest {
                group: args.group.clone(),
            })
            .await
            .map_err(|s| args.admin.status_error(s))
    }
    .await;
    match result {
        Ok(resp) => {
            let rows: Vec<Vec<String>> = resp
                .into_inner()
                .entries
                .into_iter()
                .map(|e| {
                    vec![
                        e.version.to_string(),
                        e.hash[..e.hash.len().min(12)].to_string(),
                        e.applied_at,
                        e.origin,
                        e.summary,
                    ]
                })
                .collect();
            print_table(&["VERSION", "HASH", "APPLIED", "ORIGIN", "CONTENT"], &rows);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(e.report()),
    }
}
