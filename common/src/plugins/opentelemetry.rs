//! opentelemetry: the routes it applies to are traced to its own OTLP/HTTP collector
//! (KONG.md §3.15; K:kong/plugins/opentelemetry/schema.lua).
//!
//! Kong's fields and defaults, with these differences:
//! - `logs_endpoint` is refused: Portico does not export OTLP logs yet. Kong's rule that one of
//!   `traces_endpoint` and `logs_endpoint` is set becomes: `traces_endpoint` is set.
//! - Propagation is W3C trace context only: `propagation.extract`, `inject` and
//!   `default_format` (and the deprecated `header_type`) accept `w3c` (and Kong's `preserve`
//!   where Kong has it); Kong's other formats are refused with a reason, not ignored.
//! - `queue` is Kong's queue record; Portico's exporter uses `max_batch_size` (spans per
//!   export) and keeps the others for compatibility. The deprecated `batch_span_count` is folded
//!   into it as Kong does, `batch_flush_delay` is accepted and unused.
//! - `connect_timeout` and `read_timeout` are accepted; one export is bounded by
//!   `send_timeout`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::de;
use super::fields::{header_name_error, Fields, LENGTH_MIN};
use crate::error::ConfigIssue;
use crate::load::checks::{split_host_port, valid_host};

/// Kong's propagation formats (K:kong/db/schema/typedefs.lua `propagation`).
const KONG_FORMATS: &[&str] = &[
    "w3c",
    "b3",
    "b3-single",
    "jaeger",
    "ot",
    "datadog",
    "aws",
    "gcp",
    "instana",
];

/// Kong's `header_type` values (deprecated).
const KONG_HEADER_TYPES: &[&str] = &[
    "preserve",
    "ignore",
    "b3",
    "b3-single",
    "w3c",
    "jaeger",
    "ot",
    "aws",
    "gcp",
    "datadog",
];

/// Kong's queue record (K:kong/tools/queue_schema.lua), with opentelemetry's default batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Queue {
    /// Spans sent in one export at most.
    #[serde(deserialize_with = "de::int_in::<_, u32, 1, 1000000>")]
    pub max_batch_size: u32,
    #[serde(deserialize_with = "coalescing_delay")]
    pub max_coalescing_delay: f64,
    #[serde(deserialize_with = "de::int_in::<_, u32, 1, 1000000>")]
    pub max_entries: u32,
    #[serde(deserialize_with = "de::opt_int_in::<_, i64, 0, 9007199254740991>")]
    pub max_bytes: Option<i64>,
    #[serde(deserialize_with = "de::number")]
    pub max_retry_time: f64,
    #[serde(deserialize_with = "retry_delay")]
    pub initial_retry_delay: f64,
    #[serde(deserialize_with = "retry_delay")]
    pub max_retry_delay: f64,
    #[serde(deserialize_with = "concurrency_limit")]
    pub concurrency_limit: i8,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            max_batch_size: 200,
            max_coalescing_delay: 1.0,
            max_entries: 10000,
            max_bytes: None,
            max_retry_time: 60.0,
            initial_retry_delay: 0.01,
            max_retry_delay: 60.0,
            concurrency_limit: 1,
        }
    }
}

/// Which trace-context formats are read, written and removed (Kong's `propagation` typedef).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Propagation {
    /// Formats read from the client's request.
    pub extract: Option<Vec<String>>,
    /// Formats written to the upstream request (`preserve`: the format extracted).
    pub inject: Option<Vec<String>>,
    /// Headers removed from the upstream request once the context was read.
    pub clear: Option<Vec<String>>,
    /// The format injected when none was extracted.
    pub default_format: String,
}

impl Default for Propagation {
    fn default() -> Self {
        Propagation {
            extract: None,
            inject: None,
            clear: None,
            default_format: "w3c".to_owned(),
        }
    }
}

/// opentelemetry's config, with Kong's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The OTLP/HTTP traces endpoint, the full URL (`http://collector:4318/v1/traces`).
    pub traces_endpoint: Option<String>,
    /// Kong's OTLP logs endpoint; refused (see the module doc).
    pub logs_endpoint: Option<String>,
    /// Headers sent with every export (authentication tokens).
    pub headers: Option<BTreeMap<String, String>>,
    /// Resource attributes added to Portico's own (`service.name`, ...), overriding them.
    pub resource_attributes: Option<BTreeMap<String, String>>,
    pub queue: Queue,
    /// Deprecated by Kong for `queue.max_batch_size`; a value other than 200 replaces it.
    #[serde(deserialize_with = "de::opt_int_in::<_, i64, -2147483648, 2147483647>")]
    pub batch_span_count: Option<i64>,
    /// Deprecated by Kong for `queue.max_coalescing_delay`; accepted, unused.
    #[serde(deserialize_with = "de::opt_int_in::<_, i64, -2147483648, 2147483647>")]
    pub batch_flush_delay: Option<i64>,
    /// Milliseconds (Kong's `timeout` typedef).
    #[serde(deserialize_with = "de::int_in::<_, u32, 0, 2147483646>")]
    pub connect_timeout: u32,
    /// Milliseconds one export may take.
    #[serde(deserialize_with = "de::int_in::<_, u32, 0, 2147483646>")]
    pub send_timeout: u32,
    #[serde(deserialize_with = "de::int_in::<_, u32, 0, 2147483646>")]
    pub read_timeout: u32,
    /// Answer the trace id to the client in this header.
    pub http_response_header_for_traceid: Option<String>,
    /// Deprecated by Kong for `propagation`.
    pub header_type: String,
    /// Probability of sampling a request whose client did not decide; unset falls back to the
    /// data plane's `--tracing-sampling-rate` (Kong's `tracing_sampling_rate`).
    #[serde(deserialize_with = "sampling_rate")]
    pub sampling_rate: Option<f64>,
    pub propagation: Propagation,
    /// Kong's deprecated name of `traces_endpoint`: folded into it by `parse`, never written
    /// back.
    #[serde(skip_serializing)]
    pub endpoint: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            traces_endpoint: None,
            logs_endpoint: None,
            headers: None,
            resource_attributes: None,
            queue: Queue::default(),
            batch_span_count: None,
            batch_flush_delay: None,
            connect_timeout: 1000,
            send_timeout: 5000,
            read_timeout: 5000,
            http_response_header_for_traceid: None,
            header_type: "preserve".to_owned(),
            sampling_rate: None,
            propagation: Propagation::default(),
            endpoint: None,
        }
    }
}

impl Config {
    /// The spans one export carries at most: `queue.max_batch_size`, or the deprecated
    /// `batch_span_count` when set to anything but Kong's old default (as Kong's queue does).
    pub fn max_batch(&self) -> usize {
        match self.batch_span_count {
            Some(n) if n != 200 && n > 0 => usize::try_from(n).unwrap_or(200),
            _ => self.queue.max_batch_size as usize,
        }
    }
}

fn sampling_rate<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    de::number_between(d, 0.0, 1.0).map(Some)
}

fn coalescing_delay<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    de::number_between(d, 0.0, 3600.0)
}

fn retry_delay<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    de::number_between(d, 0.001, 1000000.0)
}

fn concurrency_limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i8, D::Error> {
    use serde::de::Error as _;
    match de::int_in::<D, i8, -1, 1>(d)? {
        0 => Err(D::Error::custom("expected one of: -1, 1")),
        n => Ok(n),
    }
}

pub(super) fn parse(mut f: Fields) -> Result<Config, Vec<ConfigIssue>> {
    let mut config = f.decode::<Config>();
    if let Some(c) = &mut config {
        // Kong's shorthand: `endpoint` is `traces_endpoint`.
        if let Some(old) = c.endpoint.take() {
            match &c.traces_endpoint {
                Some(new) if *new != old => f.error(
                    "endpoint",
                    "endpoint is the deprecated name of traces_endpoint; set only one of them",
                ),
                _ => c.traces_endpoint = Some(old),
            }
        }
        check(&mut f, c);
    }
    f.finish(config)
}

fn check(f: &mut Fields, c: &Config) {
    if let Some(url) = &c.traces_endpoint {
        if let Err(msg) = check_url(url) {
            f.error("traces_endpoint", msg);
        }
    }
    if c.logs_endpoint.is_some() {
        f.error(
            "logs_endpoint",
            "OTLP logs are not supported by Portico yet; remove logs_endpoint (traces_endpoint \
             is supported, and the data plane's --access-log writes request logs)",
        );
    } else if c.traces_endpoint.is_none() && f.whole() {
        f.error(
            "",
            "at least one of these fields must be non-empty: 'config.traces_endpoint', \
             'config.logs_endpoint'",
        );
    }
    for (name, value) in c.headers.iter().flatten() {
        if let Some(msg) = header_name_error(name) {
            f.error(&format!("headers.{name}"), msg);
        } else if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            f.error(
                &format!("headers.{name}"),
                "header values must not contain control characters",
            );
        }
    }
    for (name, value) in c.resource_attributes.iter().flatten() {
        if name.is_empty() {
            f.error("resource_attributes", "attribute names must not be empty");
        } else if value.is_empty() {
            f.error(
                &format!("resource_attributes.{name}"),
                "required field missing",
            );
        }
    }
    if let Some(name) = &c.http_response_header_for_traceid {
        if let Some(msg) = header_name_error(name) {
            f.error("http_response_header_for_traceid", msg);
        }
    }
    if !KONG_HEADER_TYPES.contains(&c.header_type.as_str()) {
        f.error(
            "header_type",
            format!("expected one of: {}", KONG_HEADER_TYPES.join(", ")),
        );
    } else if !matches!(c.header_type.as_str(), "preserve" | "w3c") {
        f.error(
            "header_type",
            format!(
                "header_type '{}' is not supported by Portico yet: only W3C trace context \
                 ('preserve' or 'w3c') is read and written",
                c.header_type
            ),
        );
    }
    let p = &c.propagation;
    formats(f, "propagation.extract", p.extract.as_deref(), false);
    formats(f, "propagation.inject", p.inject.as_deref(), true);
    if let Some(msg) = format_error(&p.default_format, false) {
        f.error("propagation.default_format", msg);
    }
    if let Some(clear) = &p.clear {
        f.header_names("propagation.clear", clear);
    }
}

/// Each entry of a propagation list is a Kong format Portico implements.
fn formats(f: &mut Fields, field: &str, list: Option<&[String]>, preserve: bool) {
    let Some(list) = list else { return };
    if list.is_empty() {
        f.error(
            field,
            "an empty list (no trace context at all) is not supported by Portico yet; remove \
             the field or list 'w3c'",
        );
    }
    for (i, format) in list.iter().enumerate() {
        if let Some(msg) = format_error(format, preserve) {
            f.error(&format!("{field}[{i}]"), msg);
        }
    }
}

fn format_error(format: &str, preserve: bool) -> Option<String> {
    match format {
        "w3c" => None,
        "preserve" if preserve => None,
        known if KONG_FORMATS.contains(&known) => Some(format!(
            "propagation format '{known}' is not supported by Portico yet: only W3C trace \
             context ('w3c') is read and written"
        )),
        other => {
            let mut expected = KONG_FORMATS.to_vec();
            if preserve {
                expected.push("preserve");
            }
            Some(if other.is_empty() {
                LENGTH_MIN.to_owned()
            } else {
                format!("expected one of: {}", expected.join(", "))
            })
        }
    }
}

/// `http(s)://host[:port][/path]`: the OTLP/HTTP endpoint, a full URL.
fn check_url(url: &str) -> Result<(), String> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &url[7..]
    } else if lower.starts_with("https://") {
        &url[8..]
    } else {
        return Err(format!(
            "'{url}' is not an http:// or https:// URL (the OTLP/HTTP traces endpoint, like \
             http://collector:4318/v1/traces)"
        ));
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters".to_owned());
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.contains('@') {
        return Err(
            "must not contain credentials (user@host); send them in config.headers".to_owned(),
        );
    }
    match split_host_port(authority) {
        Ok((host, _)) if host.is_empty() => Err(format!("'{url}' has no host")),
        Ok((host, _)) if valid_host(&host) => Ok(()),
        Ok((host, _)) => Err(format!("invalid host '{host}'")),
        Err(()) => Err(format!("invalid host or port '{authority}'")),
    }
}
