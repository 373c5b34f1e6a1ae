//! `portico validate`: offline check of a Kong declarative file.

use std::path::PathBuf;
use std::process::ExitCode;

/// Validation options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file to check.
    #[arg(long, short = 'f', env = "PORTICO_FILE")]
    pub file: PathBuf,
}

/// Prints a one-line summary (exit 0), or every error (exit 1). Warnings go to stderr either way.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let checked = portico_common::load_file(&args.file).and_then(|loaded| {
        // Also what the data plane would refuse (router build, plugins this build lacks), so
        // "OK" here means `portico dp` serves the file.
        let pools = portico_data_plane::pool::Pools::default();
        // Building an opentelemetry plugin's exporter needs a tokio runtime (nothing is sent).
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| portico_common::ConfigErrors {
                errors: vec![portico_common::ConfigIssue::new(
                    "",
                    format!("runtime: {e}"),
                )],
            })?;
        let _runtime = rt.enter();
        match portico_data_plane::runtime::Runtime::compile(loaded.snapshot.clone(), &pools) {
            Ok(_) => Ok(loaded),
            Err(errors) => Err(portico_common::ConfigErrors { errors }),
        }
    });
    match checked {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("warning: {w}");
            }
            println!("{}: OK: {}", args.file.display(), loaded.snapshot.summary());
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            let n = errors.errors.len();
            eprintln!(
                "{}: invalid ({n} error{}):",
                args.file.display(),
                if n == 1 { "" } else { "s" }
            );
            for e in &errors.errors {
                eprintln!("  {e}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
