//! `portico up`: the embedded default. A control plane with its on-disk store, seeded with the
//! quickstart config on first start, one data plane fed by it over the cluster protocol, and the
//! demo echo upstream the quickstart routes to: all in one process.

use std::path::PathBuf;
use std::process::ExitCode;

use super::cp::CpArgs;
use super::dp::{ClusterArgs, ListenArgs};

/// The quickstart config, built in so `portico up` works from any directory.
const QUICKSTART: &str = include_str!("../../deploy/examples/quickstart.yaml");

/// Options of `portico up`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config to seed the `default` group with on first start (default: the built-in
    /// quickstart). Later starts keep what the store holds; change it with `portico apply`.
    #[arg(long, short = 'c', env = "PORTICO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the demo echo upstream the quickstart routes to.
    #[arg(long, env = "PORTICO_ECHO_LISTEN", default_value = "127.0.0.1:9080")]
    pub echo_listen: std::net::SocketAddr,
    /// Do not start the demo echo upstream.
    #[arg(long, env = "PORTICO_NO_ECHO")]
    pub no_echo: bool,
    #[command(flatten)]
    pub cp: CpArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
}

/// Starts the control plane, the data plane and the echo upstream.
pub async fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    let seed = match &args.config {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?,
        None => QUICKSTART.to_string(),
    };
    // The embedded cluster link never leaves the host.
    if args.cp.cluster_listen.ip().is_unspecified() {
        args.cp
            .cluster_listen
            .set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let cp_listeners = args.cp.bind().await?;
    let cluster_addr = cp_listeners.cluster.local_addr()?;
    let dp_listeners = args.listen.bind().await?;
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

    let shutdown = super::shutdown_on_signals();
    let cp = tokio::spawn(portico_control_plane::run(
        args.cp.options(Some(seed)),
        cp_listeners,
        shutdown.clone(),
    ));

    let cluster = ClusterArgs {
        group: "default".into(),
        node_id: Some("local".into()),
        cache_dir: args.cp.data_dir.join("dp-cache"),
        cluster_cert: None,
        cluster_key: None,
        cluster_ca: None,
        cluster_server_name: None,
    };
    let opts = cluster.options(format!("http://{cluster_addr}"), &args.listen)?;
    tracing::info!(
        admin = %args.cp.admin_listen,
        "Portico is up; try: curl -i http://127.0.0.1:{}/echo/hello  and  portico status",
        args.listen.proxy_listen.port()
    );
    let dp = portico_data_plane::run_from_control_plane(opts, dp_listeners, shutdown);
    let (dp, cp) = tokio::join!(dp, cp);
    dp?;
    cp??;
    Ok(ExitCode::SUCCESS)
}
