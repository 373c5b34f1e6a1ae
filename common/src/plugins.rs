//! Typed, validated plugin configs: one module per plugin Portico runs, each holding its config
//! struct (Kong's fields and defaults) and its checks (Kong's messages where Kong has one).
//!
//! [`PluginConfig`] is the closed set of plugins. Its matches are exhaustive on purpose: adding a
//! variant makes the compiler list every place that must learn about the new plugin.
//!
//! Errors are [`ConfigIssue`]s whose paths are relative to the plugin entity (`name`,
//! `config.allow[2]`), so the loader prefixes the entity's place in the file and other callers
//! (the admin API, the data plane re-typing a snapshot) can do the same with theirs.

pub mod acl;
pub mod basic_auth;
pub mod circuit_breaker;
pub mod correlation_id;
mod de;
mod fields;
pub mod forward_auth;
pub mod ip_restriction;
pub mod jwt;
pub mod key_auth;
pub mod opentelemetry;
pub mod prometheus;
pub mod rate_limiting;
pub mod request_size_limiting;
pub mod request_termination;

use serde::Serialize;
use serde_json::Value;

use crate::error::ConfigIssue;
use fields::Fields;

/// A validated, typed plugin config.
#[derive(Debug, Clone, PartialEq)]
pub enum PluginConfig {
    KeyAuth(key_auth::Config),
    Jwt(jwt::Config),
    BasicAuth(basic_auth::Config),
    Acl(acl::Config),
    IpRestriction(ip_restriction::Config),
    RequestTermination(request_termination::Config),
    ForwardAuth(forward_auth::Config),
    RateLimiting(rate_limiting::Config),
    RequestSizeLimiting(request_size_limiting::Config),
    CircuitBreaker(circuit_breaker::Config),
    CorrelationId(correlation_id::Config),
    Opentelemetry(Box<opentelemetry::Config>),
    Prometheus(prometheus::Config),
}

/// Plugins bundled with Kong (KONG.md §3.1) that Portico does not run yet. Naming them apart
/// from typos tells a user migrating from Kong that the name is right and the feature is missing.
const KONG_ONLY: &[&str] = &[
    "acme",
    "ai-prompt-decorator",
    "ai-prompt-guard",
    "ai-prompt-template",
    "ai-proxy",
    "ai-request-transformer",
    "ai-response-transformer",
    "aws-lambda",
    "azure-functions",
    "bot-detection",
    "cors",
    "datadog",
    "file-log",
    "grpc-gateway",
    "grpc-web",
    "hmac-auth",
    "http-log",
    "ldap-auth",
    "loggly",
    "oauth2",
    "post-function",
    "pre-function",
    "proxy-cache",
    "redirect",
    "request-transformer",
    "response-ratelimiting",
    "response-transformer",
    "session",
    "standard-webhooks",
    "statsd",
    "syslog",
    "tcp-log",
    "udp-log",
    "zipkin",
];

impl PluginConfig {
    /// Plugin names Portico runs.
    pub const NAMES: &'static [&'static str] = &[
        "key-auth",
        "jwt",
        "basic-auth",
        "acl",
        "ip-restriction",
        "request-termination",
        "forward-auth",
        "rate-limiting",
        "request-size-limiting",
        "circuit-breaker",
        "correlation-id",
        "opentelemetry",
        "prometheus",
    ];

    /// Types and validates `config` (the plugin entity's `config` object; `{}` when absent) for
    /// plugin `name`. Every problem is reported, each at a path relative to the plugin entity.
    pub fn parse(name: &str, config: &Value) -> Result<PluginConfig, Vec<ConfigIssue>> {
        if !Self::NAMES.contains(&name) {
            return Err(vec![ConfigIssue::new("name", unknown(name))]);
        }
        let fields = Fields::new(config)?;
        match name {
            "key-auth" => key_auth::parse(fields).map(PluginConfig::KeyAuth),
            "jwt" => jwt::parse(fields).map(PluginConfig::Jwt),
            "basic-auth" => basic_auth::parse(fields).map(PluginConfig::BasicAuth),
            "acl" => acl::parse(fields).map(PluginConfig::Acl),
            "ip-restriction" => ip_restriction::parse(fields).map(PluginConfig::IpRestriction),
            "request-termination" => {
                request_termination::parse(fields).map(PluginConfig::RequestTermination)
            }
            "forward-auth" => forward_auth::parse(fields).map(PluginConfig::ForwardAuth),
            "rate-limiting" => rate_limiting::parse(fields).map(PluginConfig::RateLimiting),
            "request-size-limiting" => {
                request_size_limiting::parse(fields).map(PluginConfig::RequestSizeLimiting)
            }
            "circuit-breaker" => circuit_breaker::parse(fields).map(PluginConfig::CircuitBreaker),
            "correlation-id" => correlation_id::parse(fields).map(PluginConfig::CorrelationId),
            "opentelemetry" => {
                opentelemetry::parse(fields).map(|c| PluginConfig::Opentelemetry(Box::new(c)))
            }
            "prometheus" => prometheus::parse(fields).map(PluginConfig::Prometheus),
            // NAMES was checked above; this arm only keeps the match total.
            other => Err(vec![ConfigIssue::new("name", unknown(other))]),
        }
    }

    /// The config with every default filled in (what Kong stores), as a JSON object.
    pub fn to_value(&self) -> Value {
        match self {
            PluginConfig::KeyAuth(c) => object(c),
            PluginConfig::Jwt(c) => object(c),
            PluginConfig::BasicAuth(c) => object(c),
            PluginConfig::Acl(c) => object(c),
            PluginConfig::IpRestriction(c) => object(c),
            PluginConfig::RequestTermination(c) => object(c),
            PluginConfig::ForwardAuth(c) => object(c),
            PluginConfig::RateLimiting(c) => object(c),
            PluginConfig::RequestSizeLimiting(c) => object(c),
            PluginConfig::CircuitBreaker(c) => object(c),
            PluginConfig::CorrelationId(c) => object(c),
            PluginConfig::Opentelemetry(c) => object(&**c),
            PluginConfig::Prometheus(c) => object(c),
        }
    }

    /// The plugin's name, as written in a config file.
    pub fn name(&self) -> &'static str {
        match self {
            PluginConfig::KeyAuth(_) => "key-auth",
            PluginConfig::Jwt(_) => "jwt",
            PluginConfig::BasicAuth(_) => "basic-auth",
            PluginConfig::Acl(_) => "acl",
            PluginConfig::IpRestriction(_) => "ip-restriction",
            PluginConfig::RequestTermination(_) => "request-termination",
            PluginConfig::ForwardAuth(_) => "forward-auth",
            PluginConfig::RateLimiting(_) => "rate-limiting",
            PluginConfig::RequestSizeLimiting(_) => "request-size-limiting",
            PluginConfig::CircuitBreaker(_) => "circuit-breaker",
            PluginConfig::CorrelationId(_) => "correlation-id",
            PluginConfig::Opentelemetry(_) => "opentelemetry",
            PluginConfig::Prometheus(_) => "prometheus",
        }
    }
}

/// The message for a name Portico does not run: a Kong plugin still to come, or no plugin at all.
fn unknown(name: &str) -> String {
    let supported = PluginConfig::NAMES.join(", ");
    if KONG_ONLY.contains(&name) {
        format!("plugin '{name}' is not supported by Portico yet (supported: {supported})")
    } else {
        format!("plugin '{name}' does not exist (supported: {supported})")
    }
}

/// A config struct as a JSON object.
fn object<T: Serialize>(config: &T) -> Value {
    // These structs hold only strings, numbers, booleans, and lists, string-keyed maps and
    // records of them, which serde_json always serializes; the fallback exists so no config can ever reach a panic.
    serde_json::to_value(config).unwrap_or_else(|_| Value::Object(serde_json::Map::new()))
}
