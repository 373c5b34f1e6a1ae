//! `portico up`: the embedded single-node default. Today it runs a data plane on the quickstart
//! config plus the demo echo upstream the quickstart points at; the embedded control plane joins
//! it when the control-plane issue lands.

use std::path::PathBuf;
use std::process::ExitCode;

use super::dp::ListenArgs;

/// The quickstart config, built in so `portico up` works from any directory.
const QUICKSTART: &str = include_str!("../../deploy/examples/quickstart.yaml");

/// Options of `portico up`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config file; default: deploy/examples/quickstart.yaml if present, else the built-in copy
    /// written to <data-dir>/quickstart.yaml.
    #[arg(long, short = 'c', env = "PORTICO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where Portico keeps its files.
    #[arg(long, env = "PORTICO_DATA_DIR", default_value = "./portico-data")]
    pub data_dir: PathBuf,
    /// Address of the demo echo upstream the quickstart routes to.
    #[arg(long, env = "PORTICO_ECHO_LISTEN", default_value = "127.0.0.1:9080")]
    pub echo_listen: std::net::SocketAddr,
    /// Do not start the demo echo upstream.
    #[arg(long, env = "PORTICO_NO_ECHO")]
    pub no_echo: bool,
    #[command(flatten)]
    pub listen: ListenArgs,
}

/// Starts the echo upstream and the data plane.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match args.config {
        Some(c) => c,
        None => {
            let in_repo = PathBuf::from("deploy/examples/quickstart.yaml");
            if in_repo.is_file() {
                in_repo
            } else {
                std::fs::create_dir_all(&args.data_dir).map_err(|e| {
                    anyhow::anyhow!("cannot create data dir {}: {e}", args.data_dir.display())
                })?;
                let p = args.data_dir.join("quickstart.yaml");
                if !p.exists() {
                    std::fs::write(&p, QUICKSTART)?;
                }
                p
            }
        }
    };
    if !args.no_echo {
        let listener = tokio::net::TcpListener::bind(args.echo_listen)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot start the demo upstream on {}: {e}; pass --echo-listen ADDR or --no-echo",
                    args.echo_listen
                )
            })?;
        tokio::spawn(super::echo::serve(listener));
    }
    tracing::info!(config = %config.display(), "starting Portico; try: curl -i http://127.0.0.1:{}/echo/hello", args.listen.proxy_listen.port());
    super::dp::serve_file(config, &args.listen).await
}
