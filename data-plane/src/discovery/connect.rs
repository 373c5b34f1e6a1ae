//! The way to the control plane: the endpoint (URL, plaintext h2c or mutual TLS with rustls and
//! the ring provider), checked once at start so a bad URL or an unreadable certificate stops the
//! data plane with a clear error instead of looping; and the explanation of a failed
//! connection, specific enough to act on (which address, refused or unresolvable or a TLS
//! verdict, and what to check), where Kong logs "failed to receive the first 2 bytes".

use std::error::Error as StdError;
use std::path::Path;
use std::time::Duration;

use http::Uri;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::{ClientTls, ControlPlaneOptions};

/// Kong's `cluster_listen` port, used when the URL names none.
const DEFAULT_PORT: u16 = 8005;

/// A dead TCP peer is noticed after at most this long (plus the keep-alive timeout).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the control-plane options cannot work; found at start, before serving.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("control plane URL '{url}': {reason}")]
    Url { url: String, reason: String },
    #[error("control plane URL '{url}' uses https, so the data plane needs a client certificate, its key and the CA that signed the control plane's certificate")]
    TlsRequired { url: String },
    #[error("control plane URL '{url}' is plain http but TLS files were given; use https://{authority} to connect with TLS")]
    TlsOnPlainText { url: String, authority: String },
    #[error("cannot read the {what} {path}: {source}")]
    ReadFile {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("the {what} {path} holds no PEM {expected}")]
    Pem {
        what: &'static str,
        path: String,
        expected: &'static str,
    },
    #[error("TLS setup for the control plane '{url}': {reason}")]
    Tls { url: String, reason: String },
    #[error("{0} must not be empty")]
    Empty(&'static str),
}

/// A checked endpoint and how to talk about it.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub endpoint: Endpoint,
    /// `host:port`, as logged.
    pub authority: String,
    pub tls: bool,
}

/// Builds the endpoint for `opts`, reading and checking the TLS files.
pub(crate) fn target(opts: &ControlPlaneOptions) -> Result<Target, SetupError> {
    if opts.group.is_empty() {
        return Err(SetupError::Empty("the node group"));
    }
    if opts.node_id.is_empty() {
        return Err(SetupError::Empty("the node id"));
    }
    let url = opts.control_plane.trim();
    let bad = |reason: &str| SetupError::Url {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    // `cp.example:8005` without a scheme is common (Kong's `cluster_control_plane` has none):
    // take the scheme from whether TLS was configured.
    let with_scheme = if url.contains("://") {
        url.to_owned()
    } else if opts.tls.is_some() {
        format!("https://{url}")
    } else {
        format!("http://{url}")
    };
    let uri: Uri = with_scheme.parse().map_err(|e| {
        bad(&format!(
            "not a URL ({e}); expected e.g. https://cp.example:8005"
        ))
    })?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(bad("the scheme must be http or https")),
    };
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("a control plane URL has no path or query"));
    }
    let port = uri.port_u16().unwrap_or(DEFAULT_PORT);
    let authority = format!("{host}:{port}");
    let scheme = if tls { "https" } else { "http" };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{authority}"))
        .map_err(|e| bad(&e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let endpoint = match (&opts.tls, tls) {
        (None, true) => {
            return Err(SetupError::TlsRequired {
                url: url.to_owned(),
            })
        }
        (Some(_), false) => {
            return Err(SetupError::TlsOnPlainText {
                url: url.to_owned(),
                authority,
            })
        }
        (None, false) => endpoint,
        (Some(files), true) => {
            endpoint
                .tls_config(client_tls(files)?)
                .map_err(|e| SetupError::Tls {
                    url: url.to_owned(),
                    reason: chain(&e),
                })?
        }
    };
    Ok(Target {
        endpoint,
        authority,
        tls,
    })
}

/// Reads the PEM files and checks each holds what it should, naming the file that does not.
fn client_tls(files: &ClientTls) -> Result<ClientTlsConfig, SetupError> {
    let cert = read(&files.cert, "client certificate")?;
    let key = read(&files.key, "client key")?;
    let ca = read(&files.ca, "control plane CA")?;
    let no_pem = |what, path: &Path, expected| SetupError::Pem {
        what,
        path: path.display().to_string(),
        expected,
    };
    if CertificateDer::pem_slice_iter(&cert).next().is_none() {
        return Err(no_pem("client certificate", &files.cert, "certificate"));
    }
    if PrivateKeyDer::from_pem_slice(&key).is_err() {
        return Err(no_pem("client key", &files.key, "private key"));
    }
    if CertificateDer::pem_slice_iter(&ca).next().is_none() {
        return Err(no_pem("control plane CA", &files.ca, "certificate"));
    }
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key));
    if let Some(name) = &files.server_name {
        config = config.domain_name(name.clone());
    }
    Ok(config)
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|source| SetupError::ReadFile {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// One line saying why talking to the control plane at `t` failed and what to check, followed
/// by the underlying error chain.
pub(crate) fn explain(t: &Target, err: &(dyn StdError + 'static)) -> String {
    let addr = &t.authority;
    let causes = chain(err);
    let hint = diagnose(t, err, &causes);
    format!("control plane {addr}: {hint} [{causes}]")
}

fn diagnose(t: &Target, err: &(dyn StdError + 'static), causes: &str) -> String {
    let addr = &t.authority;
    if let Some(tls) = find_tls(err) {
        return explain_tls(t, tls);
    }
    // rustls reports an alert read after the handshake (TLS 1.3 servers reject a client
    // certificate there) as an `io::Error` holding only its text.
    if let Some(alert) = causes
        .split("received fatal alert: ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_alphanumeric()).next())
    {
        if let Some(a) = alert_named(alert) {
            return explain_tls(t, &rustls::Error::AlertReceived(a));
        }
    }
    if let Some(status) = find::<tonic::Status>(err) {
        if let Some(h) = explain_status(status) {
            return h;
        }
    }
    if let Some(io) = find::<std::io::Error>(err) {
        use std::io::ErrorKind as K;
        match io.kind() {
            K::ConnectionRefused => {
                return format!(
                    "connection refused: nothing listens on {addr}; is the control plane \
                     running, and is this its cluster (gRPC) address?"
                )
            }
            K::TimedOut => {
                return format!(
                    "connection to {addr} timed out; a firewall or security group may drop \
                     the traffic, or the host is down"
                )
            }
            K::ConnectionReset | K::UnexpectedEof | K::BrokenPipe if t.tls => {
                return format!(
                    "{addr} closed the connection during the TLS handshake; is it serving \
                     TLS on this port, and does it accept this data plane's client certificate?"
                )
            }
            K::ConnectionReset | K::UnexpectedEof | K::BrokenPipe => {
                return format!(
                    "{addr} closed the connection; if the control plane serves TLS, use an \
                     https:// URL with a client certificate"
                )
            }
            _ => {}
        }
    }
    let lower = causes.to_ascii_lowercase();
    if lower.contains("dns error")
        || lower.contains("failed to lookup address")
        || lower.contains("name or service not known")
    {
        return format!("cannot resolve the host of {addr} (DNS); check the name and the resolver");
    }
    if lower.contains("timed out") {
        return format!("connecting to {addr} timed out; is the host reachable?");
    }
    if !t.tls && (lower.contains("frame with invalid size") || lower.contains("http2 error")) {
        return format!(
            "{addr} did not answer as a plaintext HTTP/2 gRPC server; if it serves TLS, use an \
             https:// URL"
        );
    }
    format!("cannot talk to the control plane at {addr}")
}

/// What a gRPC status from the control plane means for the operator.
fn explain_status(status: &tonic::Status) -> Option<String> {
    use tonic::Code;
    let msg = status.message();
    Some(match status.code() {
        Code::Unimplemented => "this server does not implement portico.v1.Discovery: is the \
                                URL the control plane's cluster port (default 8005), not its \
                                admin port?"
            .to_owned(),
        Code::Unauthenticated | Code::PermissionDenied => {
            format!("the control plane refused this data plane: {msg}")
        }
        Code::InvalidArgument | Code::FailedPrecondition | Code::NotFound => {
            format!("the control plane rejected the stream: {msg}")
        }
        _ => return None,
    })
}

fn explain_tls(t: &Target, e: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let addr = &t.authority;
    match e {
        E::InvalidCertificate(C::UnknownIssuer) | E::InvalidCertificate(C::BadSignature) => {
            format!(
                "TLS: the certificate of {addr} is not signed by the configured control plane \
                 CA; give the CA that issued the control plane's certificate"
            )
        }
        E::InvalidCertificate(C::NotValidForName)
        | E::InvalidCertificate(C::NotValidForNameContext { .. }) => format!(
            "TLS: the certificate of {addr} does not name the host being connected to; \
             connect by a name in its SANs, or set the TLS server name to one"
        ),
        E::InvalidCertificate(C::Expired) | E::InvalidCertificate(C::ExpiredContext { .. }) => {
            format!("TLS: the certificate of {addr} has expired")
        }
        E::InvalidCertificate(C::NotValidYet)
        | E::InvalidCertificate(C::NotValidYetContext { .. }) => {
            format!("TLS: the certificate of {addr} is not valid yet (check this host's clock)")
        }
        E::InvalidCertificate(other) => {
            format!("TLS: the certificate of {addr} was refused ({other:?})")
        }
        E::AlertReceived(A::CertificateRequired) => {
            format!("TLS: {addr} requires a client certificate and got none")
        }
        E::AlertReceived(
            A::BadCertificate | A::UnknownCA | A::CertificateUnknown | A::DecryptError,
        ) => {
            format!(
                "TLS: {addr} refused this data plane's client certificate; is it signed by \
                 the CA the control plane trusts for data planes?"
            )
        }
        E::AlertReceived(A::CertificateExpired) => {
            format!("TLS: {addr} says this data plane's client certificate has expired")
        }
        E::AlertReceived(A::CertificateRevoked) => {
            format!("TLS: {addr} says this data plane's client certificate was revoked")
        }
        E::AlertReceived(A::HandshakeFailure | A::ProtocolVersion) => format!(
            "TLS: {addr} and this data plane share no protocol version or cipher suite (this \
             data plane speaks TLS 1.2 and 1.3)"
        ),
        E::InvalidMessage(_) => format!(
            "TLS: {addr} did not answer with TLS; if the control plane serves plaintext, use \
             an http:// URL"
        ),
        other => format!("TLS handshake with {addr} failed: {other}"),
    }
}

fn alert_named(name: &str) -> Option<rustls::AlertDescription> {
    use rustls::AlertDescription as A;
    [
        A::CertificateRequired,
        A::BadCertificate,
        A::UnknownCA,
        A::CertificateUnknown,
        A::DecryptError,
        A::CertificateExpired,
        A::CertificateRevoked,
        A::UnsupportedCertificate,
        A::AccessDenied,
        A::HandshakeFailure,
        A::ProtocolVersion,
    ]
    .into_iter()
    .find(|a| format!("{a:?}") == name)
}

/// The rustls error in a chain. tokio-rustls wraps it in an `io::Error`, whose `source()` skips
/// the wrapped error itself, so `io::Error::get_ref` is checked at every step.
fn find_tls<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(t) = find_tls(inner) {
                return Some(t);
            }
        }
        cur = e.source();
    }
    None
}

fn find<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

/// `a: b: c` over the source chain, skipping links that only repeat their cause.
pub(crate) fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !s.is_empty() && parts.last().is_none_or(|p| !p.contains(&s)) {
            parts.push(s);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            let s = inner.to_string();
            if parts.last().is_none_or(|p| !p.contains(&s)) {
                parts.push(s);
            }
        }
        cur = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(url: &str) -> ControlPlaneOptions {
        ControlPlaneOptions {
            control_plane: url.to_owned(),
            group: "default".into(),
            node_id: "n1".into(),
            cache_dir: std::env::temp_dir(),
            tls: None,
            trusted_ips: vec![],
            plugins: vec!["bundled".into()],
            drain_timeout: Duration::from_secs(1),
            telemetry: Default::default(),
            limits: Default::default(),
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            target(&opts("http://127.0.0.1:9")).unwrap().authority,
            "127.0.0.1:9"
        );
        // No scheme: plaintext without TLS files; no port: Kong's cluster port.
        let t = target(&opts("cp.example")).unwrap();
        assert_eq!((t.authority.as_str(), t.tls), ("cp.example:8005", false));
        assert!(matches!(
            target(&opts("https://cp.example:8005")),
            Err(SetupError::TlsRequired { .. })
        ));
        assert!(matches!(
            target(&opts("ftp://cp.example")),
            Err(SetupError::Url { .. })
        ));
        assert!(matches!(
            target(&opts("http://cp.example/x")),
            Err(SetupError::Url { .. })
        ));
        let mut o = opts("http://cp.example");
        o.group.clear();
        assert!(matches!(target(&o), Err(SetupError::Empty(_))));
    }

    #[test]
    fn tls_files_are_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let mut o = opts("https://cp.example:8005");
        o.tls = Some(ClientTls {
            cert: junk.clone(),
            key: junk.clone(),
            ca: dir.path().join("missing.pem"),
            server_name: None,
        });
        let e = target(&o).unwrap_err().to_string();
        assert!(
            e.contains("control plane CA") && e.contains("missing.pem"),
            "{e}"
        );
        o.tls.as_mut().unwrap().ca = junk.clone();
        let e = target(&o).unwrap_err().to_string();
        assert!(
            e.contains("client certificate") && e.contains("no PEM"),
            "{e}"
        );
        let mut plain = o.clone();
        plain.control_plane = "http://cp.example:8005".into();
        assert!(matches!(
            target(&plain),
            Err(SetupError::TlsOnPlainText { .. })
        ));
    }

    #[test]
    fn refused_connections_are_named() {
        let t = target(&opts("http://127.0.0.1:9")).unwrap();
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let msg = explain(&t, &io);
        assert!(
            msg.contains("connection refused") && msg.contains("127.0.0.1:9"),
            "{msg}"
        );
        let tls = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let msg = explain(&t, &tls);
        assert!(msg.contains("TLS") && msg.contains("CA"), "{msg}");
    }
}
