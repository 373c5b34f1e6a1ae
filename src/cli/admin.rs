//! The CLI's connection to a control plane's admin service: address, token, and errors that
//! say what to do next.

use std::process::ExitCode;

use portico_proto::v1::admin_client::AdminClient;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

/// Exit code when the control plane cannot be reached or refuses the credentials.
pub const EXIT_UNREACHABLE: u8 = 2;

/// Where the control plane's admin API is.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// Control plane admin URL.
    #[arg(
        long,
        env = "PORTICO_ADMIN_URL",
        default_value = "http://127.0.0.1:8001"
    )]
    pub admin_url: String,
    /// Admin token, when the control plane requires one.
    #[arg(long, env = "PORTICO_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// An admin client that adds the bearer token to every call.
pub type Client =
    AdminClient<tonic::service::interceptor::InterceptedService<Channel, TokenInterceptor>>;

/// Adds `authorization: Bearer <token>`.
#[derive(Debug, Clone)]
pub struct TokenInterceptor(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert("authorization", t.clone());
        }
        Ok(req)
    }
}

/// A failure the CLI reports and exits on.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the control plane at {url}: {reason}\n  is `portico cp` (or `portico up`) running there? Point the CLI at it with --admin-url or PORTICO_ADMIN_URL")]
    Unreachable { url: String, reason: String },
    #[error("the control plane at {url} refused the credentials: {message}\n  pass the admin token with --token or PORTICO_ADMIN_TOKEN")]
    Unauthenticated { url: String, message: String },
    #[error("{0}")]
    Refused(String),
}

impl CliError {
    /// Prints the error for the user and returns the exit code to end with.
    pub fn report(self) -> ExitCode {
        eprintln!("error: {self}");
        self.exit_code()
    }

    /// The process exit code for this failure.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Unreachable { .. } | CliError::Unauthenticated { .. } => {
                ExitCode::from(EXIT_UNREACHABLE)
            }
            CliError::Refused(_) => ExitCode::FAILURE,
        }
    }
}

impl AdminArgs {
    /// Connects, failing fast with an actionable message.
    pub async fn connect(&self) -> Result<Client, CliError> {
        let unreachable = |reason: String| CliError::Unreachable {
            url: self.admin_url.clone(),
            reason,
        };
        let endpoint = Endpoint::from_shared(self.admin_url.clone())
            .map_err(|e| unreachable(format!("invalid URL ({e})")))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(60));
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        let token = match &self.token {
            Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| {
                CliError::Refused(
                    "the admin token contains characters not allowed in a header".into(),
                )
            })?),
            None => None,
        };
        Ok(AdminClient::with_interceptor(
            channel,
            TokenInterceptor(token),
        ))
    }

    /// Turns a gRPC status into the CLI's error.
    pub fn status_error(&self, s: tonic::Status) -> CliError {
        match s.code() {
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                CliError::Unauthenticated {
                    url: self.admin_url.clone(),
                    message: s.message().to_string(),
                }
            }
            tonic::Code::Unavailable => CliError::Unreachable {
                url: self.admin_url.clone(),
                reason: s.message().to_string(),
            },
            _ => CliError::Refused(s.message().to_string()),
        }
    }
}

/// "a: b: c" from an error and its sources (tonic's top-level message alone says little).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let m = s.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        src = s.source();
    }
    out
}

/// Prints `rows` as aligned columns under `header`.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}
