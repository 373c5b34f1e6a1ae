//! `portico dp`: a data plane fed by a Kong declarative file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use portico_data_plane::discovery::{ClientTls, ControlPlaneOptions};
use portico_data_plane::telemetry::{access_log, TelemetryOptions};
use portico_data_plane::{FileOptions, Listeners};

/// Data-plane options: fed by a file, or by a control plane.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["config", "control_plane"])))]
pub struct Args {
    /// Kong declarative config file (YAML or JSON, `_format_version: "3.0"`): DB-less mode.
    #[arg(long, short = 'c', env = "PORTICO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Control plane cluster URL (http://host:8005 on loopback, https://host:8005 with mTLS).
    #[arg(long, env = "PORTICO_CONTROL_PLANE")]
    pub control_plane: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
}

/// How a data plane joins a control plane.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Node group whose config this data plane serves.
    #[arg(long, short = 'g', env = "PORTICO_GROUP", default_value = "default")]
    pub group: String,
    /// Node id shown in the fleet (default: hostname plus an id kept in the cache directory).
    #[arg(long, env = "PORTICO_NODE_ID")]
    pub node_id: Option<String>,
    /// Where the last good config is cached, to boot from when the control plane is away.
    #[arg(long, env = "PORTICO_CACHE_DIR", default_value = "./portico-cache")]
    pub cache_dir: PathBuf,
    /// Data-plane client certificate (PEM) for mutual TLS (`portico certs init`).
    #[arg(long, env = "PORTICO_CLUSTER_CERT", requires_all = ["cluster_key", "cluster_ca"])]
    pub cluster_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "PORTICO_CLUSTER_KEY")]
    pub cluster_key: Option<PathBuf>,
    /// The CA that signed the control plane's certificate (PEM).
    #[arg(long, env = "PORTICO_CLUSTER_CA")]
    pub cluster_ca: Option<PathBuf>,
    /// Name to verify in the control plane's certificate, when it differs from the URL's host.
    #[arg(long, env = "PORTICO_CLUSTER_SERVER_NAME")]
    pub cluster_server_name: Option<String>,
}

impl ClusterArgs {
    /// The data plane's control-plane options for `url`.
    pub fn options(&self, url: String, listen: &ListenArgs) -> anyhow::Result<ControlPlaneOptions> {
        std::fs::create_dir_all(&self.cache_dir).map_err(|e| {
            anyhow::anyhow!("cannot create cache dir {}: {e}", self.cache_dir.display())
        })?;
        let node_id = match &self.node_id {
            Some(id) => id.clone(),
            None => default_node_id(&self.cache_dir)?,
        };
        let tls = match (&self.cluster_cert, &self.cluster_key, &self.cluster_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(ClientTls {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
                server_name: self.cluster_server_name.clone(),
            }),
            _ => None,
        };
        if url.starts_with("https://") && tls.is_none() {
            anyhow::bail!("{url} needs --cluster-cert, --cluster-key and --cluster-ca (create them with `portico certs init`)");
        }
        Ok(ControlPlaneOptions {
            control_plane: url,
            group: self.group.clone(),
            node_id,
            cache_dir: self.cache_dir.clone(),
            tls,
            trusted_ips: listen.trusted_ips.clone(),
            plugins: listen.plugins.clone(),
            drain_timeout: Duration::from_secs(listen.drain_timeout),
            telemetry: listen.telemetry(),
            limits: listen.limits(),
        })
    }
}

/// `<hostname>-<8 hex>`, the suffix kept in the cache dir so the id survives restarts and two
/// data planes on one host (each with its own cache) differ.
fn default_node_id(cache_dir: &std::path::Path) -> anyhow::Result<String> {
    let file = cache_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&file) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "dp".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let id = format!("{host}-{}", &suffix[..8]);
    std::fs::write(&file, &id)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", file.display()))?;
    Ok(id)
}

/// Listener and traffic options shared by `dp` and `up`.
#[derive(Debug, clap::Args)]
pub struct ListenArgs {
    /// Proxy listener (HTTP/1.1 and h2c).
    #[arg(long, env = "PORTICO_PROXY_LISTEN", default_value = "0.0.0.0:8000")]
    pub proxy_listen: SocketAddr,
    /// Proxy TLS listener (HTTPS with ALPN h2 and http/1.1; TLS 1.2 and 1.3), serving the
    /// config's `certificates` by SNI; `off` turns it off.
    #[arg(long, env = "PORTICO_PROXY_LISTEN_TLS", default_value = "0.0.0.0:8443", value_parser = parse_listen_or_off)]
    pub proxy_listen_tls: ListenOrOff,
    /// Certificate (PEM chain) the TLS listener serves to names no SNI of the config takes
    /// (Kong's `ssl_cert`); without it a self-signed one for `localhost` is made at start.
    #[arg(long, env = "PORTICO_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `--tls-cert` (Kong's `ssl_cert_key`).
    #[arg(long, env = "PORTICO_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Status listener (`/status`, `/status/ready`); keep it private.
    #[arg(long, env = "PORTICO_STATUS_LISTEN", default_value = "127.0.0.1:8100")]
    pub status_listen: SocketAddr,
    /// Comma-separated IPs/CIDRs of proxies whose X-Forwarded-* headers are trusted.
    #[arg(long, env = "PORTICO_TRUSTED_IPS", value_delimiter = ',')]
    pub trusted_ips: Vec<String>,
    /// Comma-separated plugins this node runs (Kong's `plugins`): `bundled` (all of this build),
    /// `off`, or names. A config using another plugin is refused, not served without it.
    #[arg(
        long,
        env = "PORTICO_PLUGINS",
        value_delimiter = ',',
        default_value = "bundled"
    )]
    pub plugins: Vec<String>,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(long, env = "PORTICO_DRAIN_TIMEOUT", default_value_t = 30)]
    pub drain_timeout: u64,
    /// Do not reload the config file when it changes (SIGHUP still reloads).
    #[arg(long, env = "PORTICO_NO_WATCH")]
    pub no_watch: bool,
    /// Access log, one JSON line per request: `off`, `stdout`, `stderr` or a file path
    /// (appended to). Headers, query strings and bodies are never logged.
    #[arg(long, env = "PORTICO_ACCESS_LOG", default_value = "off")]
    pub access_log: String,
    /// OTLP/gRPC collector to send every request's trace to, e.g. http://127.0.0.1:4317
    /// (Kong's `opentelemetry` plugin, when configured, takes over for its routes).
    #[arg(long, env = "PORTICO_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Share of requests traced when the client did not decide (its `traceparent` sampled
    /// flag is followed): 0 to 1. Kong's `tracing_sampling_rate`; also the default of
    /// `opentelemetry` plugins without `sampling_rate`.
    #[arg(long, env = "PORTICO_TRACING_SAMPLING_RATE", default_value_t = portico_data_plane::telemetry::DEFAULT_SAMPLING_RATE)]
    pub tracing_sampling_rate: f64,
    /// Per-request Prometheus metrics on the status listener's /metrics: `on` or `off` (node
    /// gauges such as connections, target health and config version are always served).
    #[arg(long, env = "PORTICO_METRICS", default_value = "on", value_parser = ["on", "off"])]
    pub metrics: String,
    /// Keep `;` in request paths (Kong's behaviour) instead of answering 400. By default a `;`
    /// is refused: an upstream that strips `;params` (Tomcat, Spring) would read
    /// `/api;/internal` as `/api/internal`, past a rule on `/api/internal`. Only for upstreams
    /// that use matrix parameters and do not strip them.
    #[arg(long, env = "PORTICO_ALLOW_PATH_SEMICOLONS")]
    pub allow_path_semicolons: bool,
    /// Open proxy connections kept at once; past it, new connections are closed at once.
    #[arg(long, env = "PORTICO_MAX_CONNECTIONS", default_value_t = 16_384, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// Seconds a client gets to send a request head (the slowloris bound; also how long an
    /// idle connection, HTTP/1.1 keep-alive or HTTP/2 with no open stream, stays open).
    #[arg(long, env = "PORTICO_HEADER_READ_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout: u64,
    /// Bytes a request head may take (request line and headers; an HTTP/2 header list): 431
    /// past it. At least 8192.
    #[arg(long, env = "PORTICO_MAX_HEADER_SIZE", default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(8192..=16_777_216))]
    pub max_header_size: u64,
}

/// A listen address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenOrOff(pub Option<SocketAddr>);

fn parse_listen_or_off(s: &str) -> Result<ListenOrOff, String> {
    match s {
        "off" => Ok(ListenOrOff(None)),
        addr => addr
            .parse()
            .map(|a| ListenOrOff(Some(a)))
            .map_err(|e| format!("expected ADDR:PORT or 'off': {e}")),
    }
}

impl ListenArgs {
    /// Binds the proxy, status and (unless off) TLS listeners, naming the one that failed.
    pub async fn bind(&self) -> anyhow::Result<Listeners> {
        let listeners = Listeners::bind(self.proxy_listen, self.status_listen).await?;
        let Some(addr) = self.proxy_listen_tls.0 else {
            return Ok(listeners);
        };
        let default = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                portico_data_plane::tls::DefaultCertificate::from_files(cert, key)
                    .map_err(|e| anyhow::anyhow!(e))?
            }
            _ => portico_data_plane::tls::DefaultCertificate::self_signed()
                .map_err(|e| anyhow::anyhow!(e))?,
        };
        Ok(listeners.with_tls(addr, default).await?)
    }

    /// Options for a file-fed data plane on `config`.
    pub fn file_options(&self, config: PathBuf) -> FileOptions {
        FileOptions {
            config,
            trusted_ips: self.trusted_ips.clone(),
            plugins: self.plugins.clone(),
            drain_timeout: Duration::from_secs(self.drain_timeout),
            watch: !self.no_watch,
            telemetry: self.telemetry(),
            limits: self.limits(),
        }
    }

    /// The proxy listener's bounds and path policy.
    pub fn limits(&self) -> portico_data_plane::server::Limits {
        portico_data_plane::server::Limits {
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            header_read_timeout: Duration::from_secs(self.header_read_timeout),
            max_header_bytes: usize::try_from(self.max_header_size).unwrap_or(usize::MAX),
            allow_path_semicolons: self.allow_path_semicolons,
        }
    }

    /// Access log and tracing options (the node id is filled in by the data plane).
    pub fn telemetry(&self) -> TelemetryOptions {
        TelemetryOptions {
            access_log: access_log::Target::parse(&self.access_log),
            otlp_endpoint: self.otlp_endpoint.clone(),
            sampling_rate: self.tracing_sampling_rate,
            node_id: String::new(),
            metrics: self.metrics == "on",
        }
    }
}

/// Runs the data plane until SIGTERM/SIGINT.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match (args.config, args.control_plane) {
        (Some(config), _) => serve_file(config, &args.listen).await,
        (None, Some(url)) => {
            let opts = args.cluster.options(url, &args.listen)?;
            serve_control_plane(opts, &args.listen).await
        }
        (None, None) => anyhow::bail!("pass --config FILE or --control-plane URL"),
    }
}

/// Binds and serves what the control plane streams, until a signal.
pub async fn serve_control_plane(
    opts: ControlPlaneOptions,
    listen: &ListenArgs,
) -> anyhow::Result<ExitCode> {
    let listeners = listen.bind().await?;
    let shutdown = super::shutdown_on_signals();
    portico_data_plane::run_from_control_plane(opts, listeners, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// Binds, loads `config` and serves until a signal.
pub async fn serve_file(config: PathBuf, listen: &ListenArgs) -> anyhow::Result<ExitCode> {
    let listeners = listen.bind().await?;
    let shutdown = super::shutdown_on_signals();
    portico_data_plane::run_from_file(listen.file_options(config), listeners, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
