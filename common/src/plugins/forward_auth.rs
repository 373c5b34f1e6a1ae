//! forward-auth: Portico's own plugin. Each request is first sent to an auth service; a 2xx
//! answer lets it through, anything else is returned to the client as the auth service wrote
//! it (the contract of Traefik's forwardAuth and nginx's auth_request).

use serde::{Deserialize, Serialize};

use super::de;
use super::fields::Fields;
use crate::error::ConfigIssue;
use crate::load::checks::{split_host_port, valid_host, MAX_TIMEOUT};

/// forward-auth's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The auth service: an absolute `http://` URL.
    pub url: String,
    /// How long to wait for the auth service, in milliseconds.
    #[serde(
        default = "default_timeout",
        deserialize_with = "de::int_in::<_, u64, 1, MAX_TIMEOUT>"
    )]
    pub timeout: u64,
    /// Client headers sent to the auth service; empty sends them all.
    #[serde(default)]
    pub auth_request_headers: Vec<String>,
    /// Headers copied from a 2xx auth response onto the upstream request.
    #[serde(default)]
    pub auth_response_headers: Vec<String>,
}

/// Five seconds: long enough for a slow auth service, short enough to fail before clients do.
fn default_timeout() -> u64 {
    5000
}

pub(super) fn parse(mut f: Fields) -> Result<Config, Vec<ConfigIssue>> {
    let config = f.decode::<Config>();
    if let Some(c) = &config {
        if let Err(msg) = check_url(&c.url) {
            f.error("url", msg);
        }
        f.header_names("auth_request_headers", &c.auth_request_headers);
        f.header_names("auth_response_headers", &c.auth_response_headers);
    }
    f.finish(config)
}

/// `http://host[:port][/path][?query]`, the shape the data plane's client can reach.
fn check_url(url: &str) -> Result<(), String> {
    let Some(rest) = strip_scheme(url, "http://") else {
        if strip_scheme(url, "https://").is_some() {
            return Err(
                "https:// is not supported yet (upstream TLS lands with the TLS issue); \
                        use an http:// URL"
                    .to_owned(),
            );
        }
        return Err(
            "expected an absolute http:// URL, like http://auth.internal:8080/verify".to_owned(),
        );
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // Credentials in a URL end up in logs and admin listings; headers are the place for them.
    if authority.contains('@') {
        return Err("must not contain credentials (user@host)".to_owned());
    }
    if tail.contains('#') {
        return Err("must not contain a fragment ('#')".to_owned());
    }
    if tail.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters".to_owned());
    }
    match split_host_port(authority) {
        Ok((host, _)) if !host.is_empty() && valid_host(&host) => Ok(()),
        Ok((host, _)) if host.is_empty() => Err("expected a host after http://".to_owned()),
        Ok((host, _)) => Err(format!("invalid host '{host}'")),
        Err(()) => Err(format!("invalid host or port '{authority}'")),
    }
}

/// `url` without its scheme, compared case-insensitively as URL schemes are.
fn strip_scheme<'a>(url: &'a str, scheme: &str) -> Option<&'a str> {
    let head = url.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| &url[scheme.len()..])
}
