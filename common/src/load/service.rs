//! Services: the `url` shorthand, Kong's defaults and ranges (KONG.md §1.3,
//! K:kong/db/schema/entities/services.lua).

use serde_json::Value;

use super::checks::{
    self, check_name, check_upstream_path, explicit_id, int_in, one_of, MAX_TIMEOUT,
};
use super::collect::Item;
use super::{ids, Ctx, Index};
use crate::config;
use crate::error::field_path;
use crate::snapshot::{Protocol, Service};

/// Protocols a service may use (K:kong/constants.lua).
const PROTOCOLS: &[&str] = &[
    "http",
    "https",
    "grpc",
    "grpcs",
    "tcp",
    "tls",
    "tls_passthrough",
    "udp",
];

/// Validates every service; the list stays aligned with `items` so indices match.
pub(crate) fn build(items: &[Item<config::Service>], ctx: &mut Ctx) -> (Vec<Service>, Index) {
    let mut out = Vec::with_capacity(items.len());
    let mut index = Index::default();
    for (i, item) in items.iter().enumerate() {
        let s = service(item, ctx);
        index.add(s.name.as_deref(), s.id, i);
        out.push(s);
    }
    (out, index)
}

fn service(item: &Item<config::Service>, ctx: &mut Ctx) -> Service {
    let (cfg, path) = (&item.cfg, item.path.as_str());
    let issues = &mut ctx.issues;

    let explicit = explicit_id(&cfg.id, path, issues);
    let (id, from) = ids::assign("services", explicit, cfg.name.as_deref(), &item.content);
    check_name(&cfg.name, path, "name", issues);

    // The url shorthand, or the four fields it stands for.
    let mut protocol_name = cfg.protocol.clone();
    let mut host = cfg.host.clone();
    let mut port = cfg.port;
    let mut upstream_path = cfg.path.clone();
    if let Some(url) = &cfg.url {
        let written: Vec<&str> = [
            ("protocol", cfg.protocol.is_some()),
            ("host", cfg.host.is_some()),
            ("port", cfg.port.is_some()),
            ("path", cfg.path.is_some()),
        ]
        .into_iter()
        .filter_map(|(f, set)| set.then_some(f))
        .collect();
        if !written.is_empty() {
            issues.error(
                &field_path(path, "url"),
                format!(
                    "cannot be combined with {}",
                    written
                        .iter()
                        .map(|f| format!("'{f}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        match parse_url(url) {
            Ok(u) => {
                protocol_name = Some(u.protocol);
                host = Some(u.host);
                port = u.port.map(i64::from);
                upstream_path = u.path;
            }
            Err(msg) => issues.error_settle(&field_path(path, "url"), msg),
        }
    }

    let protocol = match protocol_name.as_deref() {
        None => Protocol::Http,
        Some(p) if one_of(p, PROTOCOLS, path, "protocol", issues) => {
            Protocol::parse(p).unwrap_or(Protocol::Http)
        }
        Some(_) => Protocol::Http,
    };
    let host_field = if cfg.url.is_some() { "url" } else { "host" };
    match &host {
        None => issues.error(&field_path(path, host_field), checks::REQUIRED),
        Some(h) if !checks::valid_host(h) => issues.error(
            &field_path(path, host_field),
            format!("invalid hostname: '{h}'"),
        ),
        Some(_) => {}
    }
    let port = int_in(
        port,
        i64::from(protocol.default_port()),
        (0, 65535),
        path,
        "port",
        issues,
    );

    if let Some(p) = &upstream_path {
        let ppath = field_path(path, if cfg.url.is_some() { "url" } else { "path" });
        if matches!(
            protocol,
            Protocol::Tcp | Protocol::Tls | Protocol::Udp | Protocol::Grpc | Protocol::Grpcs
        ) {
            issues.error(
                &ppath,
                format!(
                    "value must be null when 'protocol' is '{}'",
                    protocol.as_str()
                ),
            );
        } else {
            check_upstream_path(p, &ppath, issues);
        }
    }

    let retries = int_in(cfg.retries, 5, (0, 32767), path, "retries", issues);
    let timeout = |v, f, issues: &mut _| int_in(v, 60000, (1, MAX_TIMEOUT), path, f, issues);
    let connect_timeout = timeout(cfg.connect_timeout, "connect_timeout", issues);
    let write_timeout = timeout(cfg.write_timeout, "write_timeout", issues);
    let read_timeout = timeout(cfg.read_timeout, "read_timeout", issues);

    checks::unsupported(
        &cfg.tls_verify_depth,
        &Value::Null,
        path,
        "tls_verify_depth",
        issues,
    );
    // The references themselves are resolved once certificates are known
    // (`certificate::service_tls`).
    // Kong allows these with https (and stream tls) only; grpcs takes them too, a superset.
    if !matches!(protocol, Protocol::Https | Protocol::Grpcs) {
        let client = cfg.client_certificate.as_ref().filter(|v| !v.is_null());
        let cas = cfg.ca_certificates.as_ref().filter(|v| !v.is_empty());
        for (field, set) in [
            ("tls_verify", cfg.tls_verify.is_some()),
            ("ca_certificates", cas.is_some()),
            ("client_certificate", client.is_some()),
        ] {
            if set {
                issues.error(
                    &field_path(path, field),
                    format!(
                        "value must be null when 'protocol' is '{}'",
                        protocol.as_str()
                    ),
                );
            }
        }
    }
    let tags = checks::tags(&cfg.tags, path, issues);

    // A duplicate name also means a duplicate id; one message is enough.
    let fresh = cfg.name.as_ref().is_none_or(|n| {
        ctx.unique
            .check("services", "name", n, path, &mut ctx.issues)
    });
    if fresh {
        ctx.claim_id("services", id, from, path);
    }

    Service {
        id,
        name: cfg.name.clone(),
        protocol,
        host: host.unwrap_or_default(),
        port: port as u16,
        path: upstream_path,
        retries: retries as u32,
        connect_timeout: connect_timeout as u64,
        write_timeout: write_timeout as u64,
        read_timeout: read_timeout as u64,
        enabled: cfg.enabled.unwrap_or(true),
        tags,
        tls_verify: cfg.tls_verify,
        ca_certificates: Vec::new(),
        client_certificate: None,
    }
}

/// The parts of a service `url`.
#[derive(Debug, PartialEq)]
pub(crate) struct ParsedUrl {
    pub protocol: String,
    pub host: String,
    pub port: Option<u16>,
    pub path: Option<String>,
}

/// `scheme://host[:port][/path]`. Without a scheme, port 443 means https and anything else http
/// (KONG.md §1.3). Userinfo, query and fragment are refused: Kong would drop them silently.
pub(crate) fn parse_url(url: &str) -> Result<ParsedUrl, String> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s.to_ascii_lowercase()), r),
        None => (None, url),
    };
    if rest.contains(['?', '#']) {
        return Err(format!(
            "invalid url '{url}': query strings and fragments are not allowed"
        ));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(rest[i..].to_owned())),
        None => (rest, None),
    };
    if authority.contains('@') {
        return Err(format!(
            "invalid url '{url}': credentials in the url are not allowed"
        ));
    }
    let (host, port) = checks::split_host_port(authority)
        .map_err(|_| format!("invalid url '{url}': bad host or port"))?;
    if host.is_empty() {
        return Err(format!("invalid url '{url}': missing host"));
    }
    let protocol = match scheme {
        Some(s) => {
            if !PROTOCOLS.contains(&s.as_str()) {
                return Err(format!("invalid url '{url}': unsupported scheme '{s}'"));
            }
            s
        }
        None if port == Some(443) => "https".to_owned(),
        None => "http".to_owned(),
    };
    Ok(ParsedUrl {
        protocol,
        host,
        port,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_shorthand() {
        let u = parse_url("https://api.example.com:8443/v1").unwrap();
        assert_eq!(
            u,
            ParsedUrl {
                protocol: "https".into(),
                host: "api.example.com".into(),
                port: Some(8443),
                path: Some("/v1".into())
            }
        );
        assert_eq!(parse_url("example.com:443").unwrap().protocol, "https");
        assert_eq!(parse_url("example.com").unwrap().protocol, "http");
        assert_eq!(parse_url("http://[::1]:81").unwrap().host, "::1");
        assert!(parse_url("http://u:p@h/").is_err());
        assert!(parse_url("ftp://h/").is_err());
        assert!(parse_url("http://h/?q=1").is_err());
    }
}
