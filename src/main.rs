//! `portico`: one binary for the data plane, the embedded single-node mode and the CLI. This file
//! only parses arguments and dispatches; each subcommand lives in `cli/<name>.rs`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_tracing(&args.log_format);
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
