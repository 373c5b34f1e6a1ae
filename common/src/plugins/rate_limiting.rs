//! rate-limiting: how many requests a client may make per second, minute, hour, day, month and
//! year (KONG.md §3.7; K:kong/plugins/rate-limiting/schema.lua).
//!
//! Kong's fields, defaults and messages, with these differences:
//! - `policy: cluster` is refused: it keeps counters in Kong's database, and Portico (like
//!   Kong with `database=off`) has none.
//! - `redis.ssl: true` is refused until Portico ships TLS to Redis, rather than silently
//!   connecting in clear text.
//! - `sync_rate` is accepted for compatibility (only with `redis`, as Kong) but counting is
//!   always synchronous: Portico's counts are exact, never batched.
//! - `algorithm` is Portico's own: `fixed-window` (Kong's) or `sliding-window`.

use serde::{Deserialize, Serialize};

use super::de;
use super::fields::{header_name_error, Fields, LENGTH_MIN};
use crate::error::ConfigIssue;
use crate::load::checks::REQUIRED;

/// The periods, shortest first (Kong's ORDERED_PERIODS).
pub const PERIODS: [Period; 6] = [
    Period::Second,
    Period::Minute,
    Period::Hour,
    Period::Day,
    Period::Month,
    Period::Year,
];

/// A rate-limiting window length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Second,
    Minute,
    Hour,
    Day,
    Month,
    Year,
}

impl Period {
    /// The name in config and in Kong's counter keys.
    pub fn name(self) -> &'static str {
        match self {
            Period::Second => "second",
            Period::Minute => "minute",
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Month => "month",
            Period::Year => "year",
        }
    }

    /// Index in [`PERIODS`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What a client is counted by (`limit_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitBy {
    #[default]
    Consumer,
    Credential,
    Ip,
    Service,
    Header,
    Path,
}

/// Where counters live (`policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// In the data plane's memory: exact per node.
    #[default]
    Local,
    /// In a Redis shared by the data planes: exact across nodes.
    Redis,
    /// Kong's database policy; parsed only to be refused with a reason.
    Cluster,
}

/// How a window counts (Portico's extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Kong's: calendar-aligned windows, each counted from zero.
    #[default]
    FixedWindow,
    /// The previous window's count, weighted by how much of it still overlaps, plus the
    /// current one: no double burst across a window edge.
    SlidingWindow,
}

/// The Redis server of `policy: redis`. Its `Debug` hides the password.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Redis {
    /// Host name or IP; required with `policy: redis`.
    pub host: Option<String>,
    #[serde(deserialize_with = "de::int_in::<_, u16, 0, 65535>")]
    pub port: u16,
    /// Milliseconds any Redis call may take (connect included).
    #[serde(deserialize_with = "de::int_in::<_, u32, 0, 2147483646>")]
    pub timeout: u32,
    pub username: Option<String>,
    /// Never logged.
    pub password: Option<String>,
    #[serde(deserialize_with = "de::int_in::<_, i64, 0, 2147483647>")]
    pub database: i64,
    #[serde(deserialize_with = "de::boolean")]
    pub ssl: bool,
    #[serde(deserialize_with = "de::boolean")]
    pub ssl_verify: bool,
    pub server_name: Option<String>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("timeout", &self.timeout)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .field("ssl", &self.ssl)
            .field("ssl_verify", &self.ssl_verify)
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl Default for Redis {
    fn default() -> Self {
        Redis {
            host: None,
            port: 6379,
            timeout: 2000,
            username: None,
            password: None,
            database: 0,
            ssl: false,
            ssl_verify: false,
            server_name: None,
        }
    }
}

/// rate-limiting's config, with Kong's defaults.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    #[serde(deserialize_with = "de::opt_number")]
    pub second: Option<f64>,
    #[serde(deserialize_with = "de::opt_number")]
    pub minute: Option<f64>,
    #[serde(deserialize_with = "de::opt_number")]
    pub hour: Option<f64>,
    #[serde(deserialize_with = "de::opt_number")]
    pub day: Option<f64>,
    #[serde(deserialize_with = "de::opt_number")]
    pub month: Option<f64>,
    #[serde(deserialize_with = "de::opt_number")]
    pub year: Option<f64>,
    pub limit_by: LimitBy,
    /// The header counted by with `limit_by: header`.
    pub header_name: Option<String>,
    /// The path counted by with `limit_by: path`.
    pub path: Option<String>,
    pub policy: Policy,
    /// On a Redis error: let the request through (true) or answer 500 (false).
    #[serde(deserialize_with = "de::boolean")]
    pub fault_tolerant: bool,
    /// Boxed: rarely set, and it would make every `PluginConfig` as large as this one.
    pub redis: Box<Redis>,
    /// Send no X-RateLimit-*/RateLimit-* headers.
    #[serde(deserialize_with = "de::boolean")]
    pub hide_client_headers: bool,
    #[serde(deserialize_with = "de::int_in::<_, u16, 100, 599>")]
    pub error_code: u16,
    pub error_message: String,
    /// Kong's batching interval; −1 is synchronous (see the module doc).
    #[serde(deserialize_with = "de::number")]
    pub sync_rate: f64,
    pub algorithm: Algorithm,
    // Kong's deprecated flat shorthands: folded into `redis` by `parse`, never written back.
    #[serde(skip_serializing)]
    pub redis_host: Option<String>,
    #[serde(
        skip_serializing,
        deserialize_with = "de::opt_int_in::<_, u16, 0, 65535>"
    )]
    pub redis_port: Option<u16>,
    #[serde(skip_serializing)]
    pub redis_username: Option<String>,
    #[serde(skip_serializing)]
    pub redis_password: Option<String>,
    #[serde(
        skip_serializing,
        deserialize_with = "de::opt_int_in::<_, i64, 0, 2147483647>"
    )]
    pub redis_database: Option<i64>,
    #[serde(
        skip_serializing,
        deserialize_with = "de::opt_int_in::<_, u32, 0, 2147483646>"
    )]
    pub redis_timeout: Option<u32>,
    #[serde(skip_serializing)]
    pub redis_ssl: Option<bool>,
    #[serde(skip_serializing)]
    pub redis_ssl_verify: Option<bool>,
    #[serde(skip_serializing)]
    pub redis_server_name: Option<String>,
}

// By hand so the deprecated `redis_password` shorthand is never printed either (`parse`
// folds it into `redis`, whose Debug hides it).
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("second", &self.second)
            .field("minute", &self.minute)
            .field("hour", &self.hour)
            .field("day", &self.day)
            .field("month", &self.month)
            .field("year", &self.year)
            .field("limit_by", &self.limit_by)
            .field("header_name", &self.header_name)
            .field("path", &self.path)
            .field("policy", &self.policy)
            .field("fault_tolerant", &self.fault_tolerant)
            .field("redis", &self.redis)
            .field("hide_client_headers", &self.hide_client_headers)
            .field("error_code", &self.error_code)
            .field("error_message", &self.error_message)
            .field("sync_rate", &self.sync_rate)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            second: None,
            minute: None,
            hour: None,
            day: None,
            month: None,
            year: None,
            limit_by: LimitBy::Consumer,
            header_name: None,
            path: None,
            policy: Policy::Local,
            fault_tolerant: true,
            redis: Box::default(),
            hide_client_headers: false,
            error_code: 429,
            error_message: "API rate limit exceeded".to_owned(),
            sync_rate: -1.0,
            algorithm: Algorithm::FixedWindow,
            redis_host: None,
            redis_port: None,
            redis_username: None,
            redis_password: None,
            redis_database: None,
            redis_timeout: None,
            redis_ssl: None,
            redis_ssl_verify: None,
            redis_server_name: None,
        }
    }
}

impl Config {
    /// The configured limit of `period`, if any.
    pub fn limit(&self, period: Period) -> Option<f64> {
        match period {
            Period::Second => self.second,
            Period::Minute => self.minute,
            Period::Hour => self.hour,
            Period::Day => self.day,
            Period::Month => self.month,
            Period::Year => self.year,
        }
    }

    /// Moves the deprecated `redis_*` shorthands into `redis` (Kong's shorthand_fields).
    fn fold_shorthands(&mut self) {
        let r = &mut self.redis;
        if let Some(v) = self.redis_host.take() {
            r.host = Some(v);
        }
        if let Some(v) = self.redis_port.take() {
            r.port = v;
        }
        if let Some(v) = self.redis_username.take() {
            r.username = Some(v);
        }
        if let Some(v) = self.redis_password.take() {
            r.password = Some(v);
        }
        if let Some(v) = self.redis_database.take() {
            r.database = v;
        }
        if let Some(v) = self.redis_timeout.take() {
            r.timeout = v;
        }
        if let Some(v) = self.redis_ssl.take() {
            r.ssl = v;
        }
        if let Some(v) = self.redis_ssl_verify.take() {
            r.ssl_verify = v;
        }
        if let Some(v) = self.redis_server_name.take() {
            r.server_name = Some(v);
        }
    }
}

pub(super) fn parse(mut f: Fields) -> Result<Config, Vec<ConfigIssue>> {
    let mut config = f.decode::<Config>();
    if let Some(c) = &mut config {
        c.fold_shorthands();
        check(&mut f, c);
    }
    f.finish(config)
}

fn check(f: &mut Fields, c: &Config) {
    for p in PERIODS {
        if let Some(v) = c.limit(p) {
            if v.is_nan() || v <= 0.0 || v.is_infinite() {
                f.error(p.name(), "value must be greater than 0");
            }
        }
    }
    if PERIODS.iter().all(|p| c.limit(*p).is_none()) {
        f.error(
            "",
            "at least one of these fields must be non-empty: 'config.second', \
             'config.minute', 'config.hour', 'config.day', 'config.month', 'config.year'",
        );
    } else if let Some(msg) = order_error(c).filter(|_| f.whole()) {
        f.error("", msg);
    }
    match c.limit_by {
        LimitBy::Header => match c.header_name.as_deref() {
            None => f.error("header_name", REQUIRED),
            Some(h) => {
                if let Some(msg) = header_name_error(h) {
                    f.error("header_name", msg);
                }
            }
        },
        LimitBy::Path => match c.path.as_deref() {
            None => f.error("path", REQUIRED),
            Some(p) if !p.starts_with('/') => f.error("path", "should start with: /"),
            Some(_) => {}
        },
        _ => {}
    }
    match c.policy {
        Policy::Cluster => f.error(
            "policy",
            "'cluster' keeps counters in Kong's database and Portico runs without one \
             (as Kong does with database=off): use 'local' or 'redis'",
        ),
        Policy::Redis => match c.redis.host.as_deref() {
            None => f.error("redis.host", REQUIRED),
            Some("") => f.error("redis.host", LENGTH_MIN),
            Some(_) => {}
        },
        Policy::Local => {}
    }
    if c.redis.ssl {
        f.error(
            "redis.ssl",
            "TLS to Redis is not supported by Portico yet; connect in clear text on a \
             trusted network or through a local TLS tunnel",
        );
    }
    if c.sync_rate != -1.0 {
        if c.policy != Policy::Redis {
            f.error(
                "sync_rate",
                "sync_rate is only supported with policy 'redis'",
            );
        } else if c.sync_rate.is_nan() || c.sync_rate < 0.02 {
            f.error("sync_rate", "value must be -1 or at least 0.02");
        }
    }
    if c.error_message.is_empty() {
        f.error("error_message", LENGTH_MIN);
    }
}

/// Kong's `validate_periods_order`: a longer period may not allow fewer requests than a
/// shorter one. Reports the first offending pair, as Kong does.
fn order_error(c: &Config) -> Option<String> {
    for (i, lower) in PERIODS.iter().enumerate() {
        let Some(lower_value) = c.limit(*lower) else {
            continue;
        };
        for upper in &PERIODS[i + 1..] {
            if let Some(upper_value) = c.limit(*upper) {
                if upper_value < lower_value {
                    return Some(format!(
                        "The limit for {}({upper_value:.1}) cannot be lower than the limit \
                         for {}({lower_value:.1})",
                        upper.name(),
                        lower.name()
                    ));
                }
            }
        }
    }
    None
}
