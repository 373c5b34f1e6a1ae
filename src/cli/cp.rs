//! `portico cp`: the control plane (store, snapshots per node group, discovery, admin APIs).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use portico_control_plane::{ClusterTls, CpListeners, CpOptions};

/// Control-plane options.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub cp: CpArgs,
}

/// Options shared by `cp` and `up`.
#[derive(Debug, clap::Args)]
pub struct CpArgs {
    /// Where the config store lives.
    #[arg(long, env = "PORTICO_DATA_DIR", default_value = "./portico-data")]
    pub data_dir: PathBuf,
    /// Admin listener: REST API and the CLI's gRPC admin service.
    #[arg(long, env = "PORTICO_ADMIN_LISTEN", default_value = "127.0.0.1:8001")]
    pub admin_listen: SocketAddr,
    /// Bearer token required on every admin call (mandatory when the admin listener is not
    /// loopback).
    #[arg(long, env = "PORTICO_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Cluster listener data planes connect to.
    #[arg(long, env = "PORTICO_CLUSTER_LISTEN", default_value = "0.0.0.0:8005")]
    pub cluster_listen: SocketAddr,
    /// Control-plane certificate (PEM) for the cluster listener (`portico certs init`).
    #[arg(long, env = "PORTICO_CLUSTER_CERT", requires_all = ["cluster_key", "cluster_ca"])]
    pub cluster_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "PORTICO_CLUSTER_KEY")]
    pub cluster_key: Option<PathBuf>,
    /// The CA that must have signed data-plane certificates (PEM).
    #[arg(long, env = "PORTICO_CLUSTER_CA")]
    pub cluster_ca: Option<PathBuf>,
    /// Allow a plaintext cluster listener or a token-less admin listener off loopback.
    #[arg(long, env = "PORTICO_INSECURE")]
    pub insecure: bool,
    /// Versions kept per group for `history` and `rollback` (each holds a whole snapshot);
    /// older ones are deleted as new ones are applied. 0 keeps every version.
    #[arg(long, env = "PORTICO_HISTORY_LIMIT", default_value_t = 100)]
    pub history_limit: usize,
    /// Seconds a disconnected data plane stays listed in the fleet (Kong's
    /// `cluster_data_plane_purge_delay`).
    #[arg(
        long,
        env = "PORTICO_DATA_PLANE_PURGE_DELAY",
        default_value_t = 1_209_600
    )]
    pub data_plane_purge_delay: u64,
}

impl CpArgs {
    /// The control plane's options, with an optional config to seed group "default".
    pub fn options(&self, seed: Option<String>) -> CpOptions {
        let cluster_tls = match (&self.cluster_cert, &self.cluster_key, &self.cluster_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(ClusterTls {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: ca.clone(),
            }),
            _ => None,
        };
        CpOptions {
            data_dir: self.data_dir.clone(),
            admin_token: self.admin_token.clone(),
            cluster_tls,
            insecure: self.insecure,
            seed,
            history_limit: std::num::NonZeroUsize::new(self.history_limit),
            data_plane_purge_delay: Some(std::time::Duration::from_secs(
                self.data_plane_purge_delay,
            )),
        }
    }

    /// Binds both listeners, naming the one that failed.
    pub async fn bind(&self) -> anyhow::Result<CpListeners> {
        let bind = |addr: SocketAddr, flag: &'static str| async move {
            tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                anyhow::anyhow!("cannot listen on {addr}: {e}; is another process using it? Pick another address with --{flag}")
            })
        };
        Ok(CpListeners {
            admin: bind(self.admin_listen, "admin-listen").await?,
            cluster: bind(self.cluster_listen, "cluster-listen").await?,
        })
    }
}

/// Runs the control plane until SIGTERM/SIGINT.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let listeners = args.cp.bind().await?;
    let shutdown = super::shutdown_on_signals();
    portico_control_plane::run(args.cp.options(None), listeners, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
