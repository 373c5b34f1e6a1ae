//! `portico`: one binary for the data plane, the embedded single-node mode and the CLI. This file
//! only parses arguments and dispatches; each subcommand lives in `cli/<name>.rs`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// jemalloc instead of glibc's malloc: see "The allocator" in CONTRIBUTING.md for the figures.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
