//! Command-line interface: every flag is also a `PORTICO_*` environment variable.

mod admin;
mod apply;
mod certs;
mod cp;
mod diff;
mod dp;
mod echo;
mod get;
mod history;
mod live;
mod rollback;
mod status;
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
    /// Run the control plane: config store, snapshots per node group, admin and cluster APIs.
    Cp(cp::Args),
    /// Run a data plane, fed by a control plane or (DB-less) by a Kong declarative file.
    Dp(dp::Args),
    /// Control plane + data plane + demo upstream in one process, on the quickstart config.
    Up(up::Args),
    /// Check a Kong declarative file offline and print what it holds, or every error.
    Validate(validate::Args),
    /// Run a small HTTP echo server (the quickstart's and the benchmarks' upstream).
    Echo(echo::Args),
    /// Cluster certificates for mutual TLS between control plane and data planes.
    Certs(certs::Args),
    /// Validate a file locally and apply it to a node group on the control plane.
    Apply(apply::Args),
    /// Entity-level differences between a file and what a group serves (exit 1 if any).
    Diff(diff::Args),
    /// List what a group serves: services, routes, consumers, plugins, upstreams.
    Get(get::Args),
    /// Groups and data planes, as tables.
    Status(status::Args),
    /// The versions applied to a group.
    History(history::Args),
    /// Make a past version live again (as a new version).
    Rollback(rollback::Args),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate(a) => validate::run(a),
        Command::Cp(a) => runtime()?.block_on(cp::run(a)),
        Command::Dp(a) => runtime()?.block_on(dp::run(a)),
        Command::Up(a) => runtime()?.block_on(up::run(a)),
        Command::Echo(a) => runtime()?.block_on(echo::run(a)),
        Command::Certs(a) => certs::run(a),
        Command::Apply(a) => client_runtime()?.block_on(apply::run(a)),
        Command::Diff(a) => client_runtime()?.block_on(diff::run(a)),
        Command::Get(a) => client_runtime()?.block_on(get::run(a)),
        Command::Status(a) => client_runtime()?.block_on(status::run(a)),
        Command::History(a) => client_runtime()?.block_on(history::run(a)),
        Command::Rollback(a) => client_runtime()?.block_on(rollback::run(a)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("portico-worker")
        .build()?)
}

/// A small runtime for one-shot CLI calls.
fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Sets up structured logging. Levels come from PORTICO_LOG (or RUST_LOG) as `level` and
/// `target=level` pairs, e.g. `info,portico_data_plane=debug`.
///
/// `Targets` rather than `EnvFilter`: EnvFilter's span-field regexes pull in `matchers`, which
/// turns on full-DFA construction in `regex-automata` for every regex in the process, including
/// each route's path regex (measured: most of the time and memory of compiling 2,000 regex routes).
pub fn init_tracing(format: &str) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let spec = std::env::var("PORTICO_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    // `Targets` takes a bare word as a target name, so a typo would silence every log: accept
    // only `level` or `target=level` directives.
    let well_formed = spec
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .all(|d| match d.split_once('=') {
            Some((target, level)) => !target.is_empty() && level.parse::<LevelFilter>().is_ok(),
            None => d.parse::<LevelFilter>().is_ok(),
        });
    let filter = match spec.parse::<Targets>() {
        Ok(t) if well_formed => t,
        _ => {
            eprintln!(
                "warning: ignoring PORTICO_LOG={spec:?}: use `level` or `target=level` pairs, e.g. \
                 info,portico_data_plane=debug; logging at info"
            );
            Targets::new().with_default(LevelFilter::INFO)
        }
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if format == "json" {
        tracing_subscriber::registry()
            .with(fmt.json().flatten_event(true).with_filter(filter))
            .init();
    } else {
        tracing_subscriber::registry()
            .with(fmt.with_ansi(false).with_filter(filter))
            .init();
    }
}

/// A shutdown signal that turns true on SIGTERM or SIGINT; a second signal exits at once.
///
/// The handlers are installed before this returns, so a signal that arrives as soon as the
/// listeners answer drains instead of killing the process (the default action).
pub fn shutdown_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let mut signals = Signals::install();
    tokio::spawn(async move {
        signals.recv().await;
        tracing::info!("shutdown requested: draining (signal again to exit now)");
        let _ = tx.send(true);
        signals.recv().await;
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
    rx
}

/// SIGTERM and SIGINT, registered with the runtime.
#[cfg(unix)]
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

#[cfg(unix)]
impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate())
            .map_err(|e| tracing::warn!(error = %e, "cannot install the SIGTERM handler"))
            .ok();
        let int = signal(SignalKind::interrupt())
            .map_err(|e| tracing::warn!(error = %e, "cannot install the SIGINT handler"))
            .ok();
        Signals { term, int }
    }

    async fn recv(&mut self) {
        async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = one(&mut self.term) => {}
            _ = one(&mut self.int) => {}
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> Self {
        Signals
    }

    async fn recv(&mut self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}
