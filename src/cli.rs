//! Command-line interface: every flag is also a `PORTICO_*` environment variable.

mod dp;
mod echo;
mod up;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::sync::watch;

/// Portico API gateway.
#[derive(Debug, Parser)]
#[command(name = "portico", version, about, propagate_version = true)]
pub struct Cli {
    /// Log format: `text` for people, `json` for log pipelines. Levels via PORTICO_LOG / RUST_LOG
    /// (e.g. `info`, `portico_data_plane=debug`).
    #[arg(
        long,
        global = true,
        env = "PORTICO_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a data plane (DB-less: from a Kong declarative file, reloaded on change and SIGHUP).
    Dp(dp::Args),
    /// Start Portico on the quickstart config with a demo upstream: the 5-minute tour.
    Up(up::Args),
    /// Check a Kong declarative file offline and print what it holds, or every error.
    Validate(validate::Args),
    /// Run a small HTTP echo server (the quickstart's and the benchmarks' upstream).
    Echo(echo::Args),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate(a) => validate::run(a),
        Command::Dp(a) => runtime()?.block_on(dp::run(a)),
        Command::Up(a) => runtime()?.block_on(up::run(a)),
        Command::Echo(a) => runtime()?.block_on(echo::run(a)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("portico-worker")
        .build()?)
}

/// Sets up structured logging.
pub fn init_tracing(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("PORTICO_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.with_ansi(false).init();
    }
}

/// A shutdown signal that turns true on SIGTERM or SIGINT; a second signal exits at once.
pub fn shutdown_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: draining (signal again to exit now)");
        let _ = tx.send(true);
        wait_for_signal().await;
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
    rx
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
