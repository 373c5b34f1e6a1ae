//! `portico dp`: a data plane fed by a Kong declarative file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use portico_data_plane::{FileOptions, Listeners};

/// Data-plane options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kong declarative config file (YAML or JSON, `_format_version: "3.0"`).
    #[arg(long, short = 'c', env = "PORTICO_CONFIG")]
    pub config: PathBuf,
    #[command(flatten)]
    pub listen: ListenArgs,
}

/// Listener and traffic options shared by `dp` and `up`.
#[derive(Debug, clap::Args)]
pub struct ListenArgs {
    /// Proxy listener (HTTP/1.1 and h2c).
    #[arg(long, env = "PORTICO_PROXY_LISTEN", default_value = "0.0.0.0:8000")]
    pub proxy_listen: SocketAddr,
    /// Status listener (`/status`, `/status/ready`); keep it private.
    #[arg(long, env = "PORTICO_STATUS_LISTEN", default_value = "127.0.0.1:8100")]
    pub status_listen: SocketAddr,
    /// Comma-separated IPs/CIDRs of proxies whose X-Forwarded-* headers are trusted.
    #[arg(long, env = "PORTICO_TRUSTED_IPS", value_delimiter = ',')]
    pub trusted_ips: Vec<String>,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(long, env = "PORTICO_DRAIN_TIMEOUT", default_value_t = 30)]
    pub drain_timeout: u64,
    /// Do not reload the config file when it changes (SIGHUP still reloads).
    #[arg(long, env = "PORTICO_NO_WATCH")]
    pub no_watch: bool,
}

impl ListenArgs {
    /// Options for a file-fed data plane on `config`.
    pub fn file_options(&self, config: PathBuf) -> FileOptions {
        FileOptions {
            config,
            trusted_ips: self.trusted_ips.clone(),
            drain_timeout: Duration::from_secs(self.drain_timeout),
            watch: !self.no_watch,
        }
    }
}

/// Runs the data plane until SIGTERM/SIGINT.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    serve_file(args.config, &args.listen).await
}

/// Binds, loads `config` and serves until a signal.
pub async fn serve_file(config: PathBuf, listen: &ListenArgs) -> anyhow::Result<ExitCode> {
    let listeners = Listeners::bind(listen.proxy_listen, listen.status_listen).await?;
    let shutdown = super::shutdown_on_signals();
    portico_data_plane::run_from_file(listen.file_options(config), listeners, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
