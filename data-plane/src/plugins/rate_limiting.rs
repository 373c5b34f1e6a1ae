//! rate-limiting (KONG.md §3.7; K:kong/plugins/rate-limiting/handler.lua): at most N requests
//! per second, minute, hour, day, month and year, counted per consumer, credential, IP,
//! service, header value or path.
//!
//! Kong's behaviour, kept: calendar-aligned windows; counter keys
//! `<route id>:<service id>:<identifier>` (the nil UUID for a missing route or service, so a
//! global plugin counts across routes); a missing identifier falls back to the client IP;
//! `X-RateLimit-Limit-<Period>` / `X-RateLimit-Remaining-<Period>` for every period and
//! `RateLimit-Limit` / `-Remaining` / `-Reset` for the most constraining one (lowest
//! remaining, ties to the longer window), on proxied responses and on the refusal, which also
//! carries `Retry-After`; `hide_client_headers` drops all but `Retry-After`.
//!
//! Where Portico does better: Kong reads the counters, then increments them later, so bursts
//! overshoot (#5311, #2629, #13137). Portico increments and checks in one atomic step, in
//! memory ([`local`]) or in one Redis script ([`redis`]): N concurrent requests against a
//! limit L admit exactly L, per node with `local`, across nodes with `redis`. Refused requests
//! do not count, as in Kong. Counters survive config swaps: a rebuilt instance takes its
//! predecessor's store (and Redis connection, while its settings are unchanged).
//!
//! `algorithm: sliding-window` (Portico's own) estimates the count of the window ending now:
//!
//! ```text
//! used = current + floor(previous × (window − elapsed) / window)
//! ```
//!
//! where `current` counts this calendar window, `previous` the one before, and `elapsed` is
//! how far into this window `now` is. A request is admitted when `used`, counting it, is at
//! most the limit. A client that used its whole allowance at the end of one window therefore
//! regains it gradually over the next window instead of all at once at the edge (no double
//! burst). `RateLimit-Reset` and `Retry-After` still name the next window edge.
//!
//! `RateLimit-Reset` of a month or year counts to the real start of the next month or year;
//! Kong counts every month as 30 days (so on the 31st it says 1 s).
//!
//! Limits are Kong's numbers; a fractional limit admits as many requests as its ceiling
//! (Kong admits while `limit − usage > 0`).

pub mod local;
pub mod redis;
pub mod window;

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::StatusCode;
use portico_common::plugins::rate_limiting::{Algorithm, Config, LimitBy, Period, Policy, PERIODS};
use uuid::Uuid;

use self::local::LocalStore;
use self::redis::{Params, RedisStore};
use self::window::Window;
use super::{BuildEnv, Credential, Ctx, Flow, Instance, Plugin, Reply, Req, ResponseHeaders};

/// Kong's `X-RateLimit-Limit-<Period>` and `X-RateLimit-Remaining-<Period>`, by period.
const PERIOD_HEADERS: [(&str, &str); 6] = [
    ("x-ratelimit-limit-second", "x-ratelimit-remaining-second"),
    ("x-ratelimit-limit-minute", "x-ratelimit-remaining-minute"),
    ("x-ratelimit-limit-hour", "x-ratelimit-remaining-hour"),
    ("x-ratelimit-limit-day", "x-ratelimit-remaining-day"),
    ("x-ratelimit-limit-month", "x-ratelimit-remaining-month"),
    ("x-ratelimit-limit-year", "x-ratelimit-remaining-year"),
];
const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// One period's limit and the window `now` falls in.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    pub period: Period,
    pub limit: u64,
    pub window: Window,
}

/// Each period's usage after a request (counting it), and whether some limit refused it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counted {
    used: [u64; 6],
    over: [bool; 6],
    blocked: bool,
}

impl Counted {
    /// Records `period`'s usage; `over` means this period refuses the request.
    pub fn push(&mut self, period: Period, used: u64, over: bool) {
        self.used[period.index()] = used;
        self.over[period.index()] = over;
        self.blocked |= over;
    }

    /// `period`'s usage, counting the request.
    pub fn used(&self, period: Period) -> u64 {
        self.used[period.index()]
    }

    /// Whether some period refused the request.
    pub fn blocked(&self) -> bool {
        self.blocked
    }
}

/// Where an instance counts.
#[derive(Debug, Clone)]
enum Store {
    Local(Arc<LocalStore>),
    Redis(Arc<RedisStore>),
}

/// The rate-limiting plugin.
#[derive(Debug)]
pub struct RateLimiting {
    /// Configured periods, shortest first, with their limits and header names.
    limits: Vec<(Period, u64, HeaderName, HeaderName)>,
    limit_by: LimitBy,
    header_name: Option<HeaderName>,
    path: Option<String>,
    store: Store,
    sliding: bool,
    fault_tolerant: bool,
    hide_client_headers: bool,
    status: StatusCode,
    message: Arc<str>,
}

impl Plugin for RateLimiting {
    const NAME: &'static str = "rate-limiting";
    type Config = Config;

    fn build(config: Config, env: &BuildEnv<'_>) -> Result<Self, String> {
        let limits = PERIODS
            .iter()
            .filter_map(|p| {
                let limit = config.limit(*p)?;
                let (l, r) = PERIOD_HEADERS[p.index()];
                Some((
                    *p,
                    limit.ceil() as u64,
                    HeaderName::from_static(l),
                    HeaderName::from_static(r),
                ))
            })
            .collect::<Vec<_>>();
        if limits.is_empty() {
            return Err("at least one limit is required".into());
        }
        let previous = match env.previous {
            Some(Instance::RateLimiting(p)) => Some(&p.store),
            _ => None,
        };
        let store = match config.policy {
            Policy::Local => Store::Local(match previous {
                Some(Store::Local(s)) => Arc::clone(s),
                _ => Arc::default(),
            }),
            Policy::Redis => {
                let params = Params::from_config(&config.redis)
                    .ok_or("redis.host is required with policy 'redis'")?;
                Store::Redis(match previous {
                    Some(Store::Redis(s)) if *s.params() == params => Arc::clone(s),
                    _ => Arc::new(RedisStore::new(params)),
                })
            }
            Policy::Cluster => return Err("policy 'cluster' needs a database".into()),
        };
        if config.sync_rate != -1.0 {
            tracing::warn!(
                plugin = Self::NAME,
                sync_rate = config.sync_rate,
                "sync_rate is ignored: Portico counts in redis synchronously, exactly"
            );
        }
        let header_name = match &config.header_name {
            Some(h) if config.limit_by == LimitBy::Header => Some(
                HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("header_name: '{h}' is not a valid header name"))?,
            ),
            _ => None,
        };
        Ok(RateLimiting {
            limits,
            limit_by: config.limit_by,
            header_name,
            path: config.path,
            store,
            sliding: config.algorithm == Algorithm::SlidingWindow,
            fault_tolerant: config.fault_tolerant,
            hide_client_headers: config.hide_client_headers,
            status: StatusCode::from_u16(config.error_code)
                .map_err(|_| format!("error_code {} is not an HTTP status", config.error_code))?,
            message: Arc::from(config.error_message),
        })
    }

    async fn access<'r>(&'r self, req: &mut Req<'_>, ctx: &mut Ctx<'r>) -> Flow {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut checks = [Check {
            period: Period::Second,
            limit: 0,
            window: Window::at(Period::Second, now_ms),
        }; 6];
        for (slot, (period, limit, _, _)) in checks.iter_mut().zip(&self.limits) {
            *slot = Check {
                period: *period,
                limit: *limit,
                window: Window::at(*period, now_ms),
            };
        }
        let checks = &checks[..self.limits.len()];
        let key = self.key(req, ctx);
        let counted = match &self.store {
            Store::Local(s) => s.hit(&key, checks, self.sliding, now_ms / 1000),
            Store::Redis(s) => match s.hit(&key, checks, self.sliding).await {
                Ok(c) => c,
                Err(e) => {
                    s.log_failure(&e, now_ms / 1000, self.fault_tolerant);
                    if self.fault_tolerant {
                        // Kong: proxy the request, with no rate-limit headers.
                        return Flow::Continue;
                    }
                    return Flow::Respond(Reply::error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "An unexpected error occurred",
                    ));
                }
            },
        };
        // Headers go into the response's (the proxy adds them to the refusal too); hidden ones
        // are not written, but the reset is still needed for Retry-After.
        let sink = (!self.hide_client_headers).then_some(&mut ctx.response_headers);
        let reset = self.headers(checks, &counted, sink);
        if counted.blocked() {
            let reply = Reply::error(self.status, Cow::Owned(self.message.to_string()));
            return Flow::Respond(reply.with_header(RETRY_AFTER, HeaderValue::from(reset)));
        }
        Flow::Continue
    }
}

impl RateLimiting {
    /// Kong's counter key: `<route id>:<service id>:<identifier>`.
    fn key(&self, req: &Req<'_>, ctx: &Ctx<'_>) -> String {
        let route = ctx.route.map_or(Uuid::nil(), |r| r.id);
        let service = ctx.service.map_or(Uuid::nil(), |s| s.id);
        // Two ids, two colons and a third id or an IPv6 address fit without growing.
        let mut key = String::with_capacity(128);
        push_uuid(&mut key, route);
        key.push(':');
        push_uuid(&mut key, service);
        key.push(':');
        let found = match self.limit_by {
            LimitBy::Consumer => match (ctx.consumer, ctx.credential) {
                (Some(c), _) => {
                    push_uuid(&mut key, c.id);
                    true
                }
                (None, Some(cred)) => write_credential(&mut key, cred),
                (None, None) => false,
            },
            LimitBy::Credential => ctx
                .credential
                .is_some_and(|cred| write_credential(&mut key, cred)),
            LimitBy::Service => ctx.service.is_some_and(|s| {
                push_uuid(&mut key, s.id);
                true
            }),
            LimitBy::Header => self
                .header_name
                .as_ref()
                .and_then(|h| req.headers.get(h))
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    key.push_str(v);
                    true
                }),
            LimitBy::Path => self.path.as_deref().is_some_and(|p| {
                let matches = p == req.path;
                if matches {
                    key.push_str(p);
                }
                matches
            }),
            LimitBy::Ip => false,
        };
        if !found {
            let _ = write!(key, "{}", req.client_ip);
        }
        key
    }

    /// Writes the rate-limit headers; returns the most constraining period's reset (seconds).
    fn headers(
        &self,
        checks: &[Check],
        counted: &Counted,
        mut out: Option<&mut ResponseHeaders>,
    ) -> u64 {
        if let Some(out) = out.as_deref_mut() {
            out.reserve(2 * checks.len() + 3);
        }
        // (remaining, limit, reset) of the most constraining period so far.
        let mut most: Option<(u64, u64, u64)> = None;
        for (c, (_, _, limit_name, remaining_name)) in checks.iter().zip(&self.limits) {
            let used = counted.used(c.period);
            // A refused request was not counted: other periods show their usage without it,
            // the refusing period(s) 0 (Kong's `stop` period, floored at 0).
            let remaining = if counted.blocked() {
                if counted.over[c.period.index()] {
                    0
                } else {
                    c.limit.saturating_sub(used.saturating_sub(1))
                }
            } else {
                c.limit.saturating_sub(used)
            };
            // Periods run shortest first, so `<=` gives ties to the longer window, as Kong.
            if most.is_none_or(|(r, _, _)| remaining <= r) {
                most = Some((remaining, c.limit, c.window.reset_secs()));
            }
            if let Some(out) = out.as_deref_mut() {
                out.insert(limit_name.clone(), HeaderValue::from(c.limit));
                out.insert(remaining_name.clone(), HeaderValue::from(remaining));
            }
        }
        let (remaining, limit, reset) = most.unwrap_or((0, 0, 1));
        if let Some(out) = out {
            out.insert(RATELIMIT_LIMIT, HeaderValue::from(limit));
            out.insert(RATELIMIT_REMAINING, HeaderValue::from(remaining));
            out.insert(RATELIMIT_RESET, HeaderValue::from(reset));
        }
        reset
    }
}

/// Appends `id` hyphenated, as its `Display` writes it, without the formatting machinery.
fn push_uuid(key: &mut String, id: Uuid) {
    key.push_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
}

/// A credential's identifier: key-auth's credential id, jwt's key, basic-auth's username.
fn write_credential(key: &mut String, cred: Credential<'_>) -> bool {
    match cred {
        Credential::Id(id) => {
            push_uuid(key, id);
            true
        }
        Credential::Name(n) => {
            key.push_str(n);
            true
        }
    }
}
