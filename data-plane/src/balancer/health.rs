//! Target health: Kong's `healthchecks` (KONG.md §1.5) read once per balancer, per-target
//! counters packed into one atomic word (so a report never takes a lock and never tears), and
//! the active prober that runs as one background task per balancer.
//!
//! Counting follows lua-resty-healthcheck, which Kong uses: a success clears the failure
//! counters, a failure clears the success counter, a counter reaching its threshold flips the
//! target and clears every counter. A threshold of 0 turns that kind of evidence off.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Inner;

/// One piece of evidence about a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A healthy status (or, for tcp checks, a connection).
    Success,
    /// An unhealthy HTTP status.
    HttpFailure(u16),
    /// The connection failed or broke.
    TcpFailure,
    /// Connecting or waiting for the response timed out.
    Timeout,
}

impl Event {
    /// Why a target changed health, for logs.
    fn reason(self) -> String {
        match self {
            Event::Success => "healthy responses".to_owned(),
            Event::HttpFailure(s) => format!("http status {s}"),
            Event::TcpFailure => "tcp failures".to_owned(),
            Event::Timeout => "timeouts".to_owned(),
        }
    }
}

/// How many events of each kind flip a target; 0 disables that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub successes: u32,
    pub http_failures: u32,
    pub tcp_failures: u32,
    pub timeouts: u32,
}

/// The probe Kong calls `healthchecks.active`.
#[derive(Debug, Clone)]
pub struct Active {
    /// `tcp` only connects; `http` sends `GET http_path`. Until the data plane has TLS
    /// upstreams, `https`/`grpc`/`grpcs` probes are sent as plain `http` too.
    pub tcp_only: bool,
    pub timeout: Duration,
    pub concurrency: usize,
    pub http_path: String,
    /// Extra request headers, already formatted as `name: value\r\n` lines.
    pub headers: String,
    /// Probe interval for healthy targets; `None` = healthy targets are not probed.
    pub healthy_interval: Option<Duration>,
    /// Probe interval for unhealthy targets; `None` = unhealthy targets are not probed.
    pub unhealthy_interval: Option<Duration>,
    pub healthy_statuses: Vec<u16>,
    pub unhealthy_statuses: Vec<u16>,
    pub limits: Limits,
}

/// The response classification Kong calls `healthchecks.passive`.
#[derive(Debug, Clone)]
pub struct Passive {
    /// `tcp` passive checks ignore HTTP statuses.
    pub tcp_only: bool,
    pub healthy_statuses: Vec<u16>,
    pub unhealthy_statuses: Vec<u16>,
    pub limits: Limits,
}

/// An upstream's `healthchecks`, typed.
#[derive(Debug, Clone)]
pub struct Config {
    pub active: Active,
    pub passive: Passive,
    /// Percentage of the total weight that must be healthy for the upstream to serve.
    pub threshold: f64,
}

impl Config {
    /// Reads the loader's `healthchecks` object (Kong's defaults already merged in). A missing
    /// or odd value reads as Kong's default, which for every threshold is "off".
    pub fn parse(v: &Value) -> Config {
        let num =
            |ptr: &str, default: f64| v.pointer(ptr).and_then(Value::as_f64).unwrap_or(default);
        let count = |ptr: &str| num(ptr, 0.0).clamp(0.0, f64::from(u32::MAX)) as u32;
        let interval = |ptr: &str| {
            let s = num(ptr, 0.0);
            (s > 0.0).then(|| Duration::from_secs_f64(s.min(65_535.0)))
        };
        let statuses = |ptr: &str, default: &[u16]| -> Vec<u16> {
            match v.pointer(ptr).and_then(Value::as_array) {
                Some(a) => a
                    .iter()
                    .filter_map(|s| s.as_u64().and_then(|s| u16::try_from(s).ok()))
                    .collect(),
                None => default.to_vec(),
            }
        };
        let kind = |ptr: &str| v.pointer(ptr).and_then(Value::as_str).unwrap_or("http");
        let headers = v
            .pointer("/active/headers")
            .and_then(Value::as_object)
            .map(|h| {
                let mut out = String::new();
                for (name, values) in h {
                    let values: Vec<&str> = match values {
                        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                        Value::String(s) => vec![s.as_str()],
                        _ => Vec::new(),
                    };
                    for value in values {
                        // CR/LF would let a config value smuggle a second request line.
                        if !name.contains(['\r', '\n']) && !value.contains(['\r', '\n']) {
                            out.push_str(&format!("{name}: {value}\r\n"));
                        }
                    }
                }
                out
            })
            .unwrap_or_default();
        Config {
            active: Active {
                tcp_only: kind("/active/type") == "tcp",
                timeout: Duration::from_secs_f64(
                    num("/active/timeout", 1.0).clamp(0.001, 65_535.0),
                ),
                concurrency: (num("/active/concurrency", 10.0) as usize).max(1),
                http_path: v
                    .pointer("/active/http_path")
                    .and_then(Value::as_str)
                    .unwrap_or("/")
                    .to_owned(),
                headers,
                healthy_interval: interval("/active/healthy/interval"),
                unhealthy_interval: interval("/active/unhealthy/interval"),
                healthy_statuses: statuses("/active/healthy/http_statuses", &[200, 302]),
                unhealthy_statuses: statuses(
                    "/active/unhealthy/http_statuses",
                    &[429, 404, 500, 501, 502, 503, 504, 505],
                ),
                limits: Limits {
                    successes: count("/active/healthy/successes"),
                    http_failures: count("/active/unhealthy/http_failures"),
                    tcp_failures: count("/active/unhealthy/tcp_failures"),
                    timeouts: count("/active/unhealthy/timeouts"),
                },
            },
            passive: Passive {
                tcp_only: kind("/passive/type") == "tcp",
                healthy_statuses: statuses(
                    "/passive/healthy/http_statuses",
                    &[
                        200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304,
                        305, 306, 307, 308,
                    ],
                ),
                unhealthy_statuses: statuses("/passive/unhealthy/http_statuses", &[429, 500, 503]),
                limits: Limits {
                    successes: count("/passive/healthy/successes"),
                    http_failures: count("/passive/unhealthy/http_failures"),
                    tcp_failures: count("/passive/unhealthy/tcp_failures"),
                    timeouts: count("/passive/unhealthy/timeouts"),
                },
            },
            threshold: num("/threshold", 0.0).clamp(0.0, 100.0),
        }
    }

    /// True when the active prober has something to do.
    pub fn active_enabled(&self) -> bool {
        self.active.healthy_interval.is_some() || self.active.unhealthy_interval.is_some()
    }

    /// True when no evidence can ever change a target's health (Kong's `HEALTHCHECKS_OFF`).
    pub fn off(&self) -> bool {
        !self.active_enabled() && self.passive.limits == Limits::default()
    }
}

/// Classifies an HTTP status against a healthy and an unhealthy list; `None` = neither.
pub fn classify(status: u16, healthy: &[u16], unhealthy: &[u16]) -> Option<Event> {
    if healthy.contains(&status) {
        Some(Event::Success)
    } else if unhealthy.contains(&status) {
        Some(Event::HttpFailure(status))
    } else {
        None
    }
}

// Packed layout of `TargetHealth::word`: four 15/16-bit saturating counters and the health bit.
const SUCC_SHIFT: u32 = 0;
const HTTP_SHIFT: u32 = 16;
const TCP_SHIFT: u32 = 32;
const TIMEOUT_SHIFT: u32 = 48;
const UNHEALTHY_BIT: u64 = 1 << 63;
const MASK16: u64 = 0xffff;
const MASK15: u64 = 0x7fff;

/// A target's current health and counters, one atomic word.
#[derive(Debug, Default)]
pub struct TargetHealth {
    word: AtomicU64,
}

/// A decoded [`TargetHealth`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub healthy: bool,
    pub successes: u32,
    pub http_failures: u32,
    pub tcp_failures: u32,
    pub timeouts: u32,
}

fn decode(w: u64) -> Counters {
    Counters {
        healthy: w & UNHEALTHY_BIT == 0,
        successes: ((w >> SUCC_SHIFT) & MASK16) as u32,
        http_failures: ((w >> HTTP_SHIFT) & MASK16) as u32,
        tcp_failures: ((w >> TCP_SHIFT) & MASK16) as u32,
        timeouts: ((w >> TIMEOUT_SHIFT) & MASK15) as u32,
    }
}

fn encode(c: Counters) -> u64 {
    let sat16 = |v: u32| u64::from(v).min(MASK16);
    let mut w = sat16(c.successes) << SUCC_SHIFT
        | sat16(c.http_failures) << HTTP_SHIFT
        | sat16(c.tcp_failures) << TCP_SHIFT
        | u64::from(c.timeouts).min(MASK15) << TIMEOUT_SHIFT;
    if !c.healthy {
        w |= UNHEALTHY_BIT;
    }
    w
}

/// A limit as the packed counters can reach it (counters saturate).
fn reached(count: u32, limit: u32, max: u64) -> bool {
    limit > 0 && u64::from(count) >= u64::from(limit).min(max)
}

impl TargetHealth {
    /// True while the target is in rotation.
    pub fn is_healthy(&self) -> bool {
        self.word.load(Ordering::Relaxed) & UNHEALTHY_BIT == 0
    }

    /// The current state.
    pub fn counters(&self) -> Counters {
        decode(self.word.load(Ordering::Relaxed))
    }

    /// Applies `event` under `limits`; returns the new health when it changed.
    pub fn report(&self, event: Event, limits: &Limits) -> Option<bool> {
        let mut changed = None;
        let update = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |w| {
                let mut c = decode(w);
                let flip = match event {
                    Event::Success => {
                        c.successes = c.successes.saturating_add(1);
                        c.http_failures = 0;
                        c.tcp_failures = 0;
                        c.timeouts = 0;
                        !c.healthy && reached(c.successes, limits.successes, MASK16)
                    }
                    failure => {
                        c.successes = 0;
                        let (count, limit, max) = match failure {
                            Event::HttpFailure(_) => {
                                c.http_failures = c.http_failures.saturating_add(1);
                                (c.http_failures, limits.http_failures, MASK16)
                            }
                            Event::TcpFailure => {
                                c.tcp_failures = c.tcp_failures.saturating_add(1);
                                (c.tcp_failures, limits.tcp_failures, MASK16)
                            }
                            _ => {
                                c.timeouts = c.timeouts.saturating_add(1);
                                (c.timeouts, limits.timeouts, MASK15)
                            }
                        };
                        c.healthy && reached(count, limit, max)
                    }
                };
                if flip {
                    c = Counters {
                        healthy: !c.healthy,
                        successes: 0,
                        http_failures: 0,
                        tcp_failures: 0,
                        timeouts: 0,
                    };
                    changed = Some(c.healthy);
                } else {
                    changed = None;
                }
                Some(encode(c))
            });
        // The closure always returns Some, so the update cannot fail; be total anyway.
        update.ok().and(changed)
    }
}

/// Applies `event` to target `index` of `inner`, logging and re-weighing on a change.
pub(super) fn apply(inner: &Inner, index: usize, event: Event, limits: &Limits, source: &str) {
    let Some(t) = inner.targets.get(index) else {
        return;
    };
    if let Some(healthy) = t.health.report(event, limits) {
        let weight = u64::from(t.weight);
        if healthy {
            inner.healthy_weight.fetch_add(weight, Ordering::AcqRel);
            tracing::info!(upstream = %inner.name, target = %t.address, reason = %event.reason(), check = source, "target is healthy again");
        } else {
            inner.healthy_weight.fetch_sub(weight, Ordering::AcqRel);
            tracing::warn!(upstream = %inner.name, target = %t.address, reason = %event.reason(), check = source, "target is unhealthy, out of rotation");
        }
    }
}

/// Starts the active prober of `inner`; it ends as soon as `stop`'s sender is dropped (when
/// the balancer is). Outside a tokio runtime (unit tests, benches) nothing is probed.
pub(super) fn spawn(inner: Arc<Inner>, stop: watch::Receiver<()>) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(upstream = %inner.name, "no async runtime: active health checks are off");
        return;
    };
    if inner.checks.active.tcp_only {
        tracing::debug!(upstream = %inner.name, "active health checks use tcp connects");
    }
    handle.spawn(async move {
        let mut stop = stop;
        tokio::select! {
            _ = run(&inner) => {}
            _ = stop.changed() => {}
        }
    });
}

async fn run(inner: &Inner) {
    let active = &inner.checks.active;
    let n = inner.targets.len();
    let mut last: Vec<Option<Instant>> = vec![None; n];
    // With no interval for the current state the loop still wakes this often, so a target the
    // passive checks just flipped starts being probed.
    let tick = [active.healthy_interval, active.unhealthy_interval]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(Duration::from_secs(1));
    loop {
        let now = Instant::now();
        let mut due = Vec::new();
        let mut next = now + tick;
        for (i, t) in inner.targets.iter().enumerate() {
            if t.weight == 0 {
                continue;
            }
            let interval = if t.health.is_healthy() {
                active.healthy_interval
            } else {
                active.unhealthy_interval
            };
            let Some(interval) = interval else { continue };
            let at = last[i].map_or(now, |l| l + interval);
            if at <= now {
                due.push(i);
                next = next.min(now + interval);
            } else {
                next = next.min(at);
            }
        }
        futures_util::stream::iter(due.iter().copied())
            .for_each_concurrent(active.concurrency, |i| async move {
                let t = &inner.targets[i];
                let event = probe(t, active).await;
                if let Some(event) = event {
                    apply(inner, i, event, &active.limits, "active");
                }
            })
            .await;
        let done = Instant::now();
        for i in due {
            last[i] = Some(done);
        }
        tokio::time::sleep_until(next.max(done)).await;
    }
}

/// One probe; `None` when the status is in neither list.
async fn probe(t: &super::BalancedTarget, active: &Active) -> Option<Event> {
    let attempt = async {
        let mut stream = match connect(t.pool.host(), t.pool.port()).await {
            Some(s) => s,
            None => return Some(Event::TcpFailure),
        };
        if active.tcp_only {
            return Some(Event::Success);
        }
        let host = t.host_header.to_str().unwrap_or("localhost");
        let req = format!(
            "GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: portico-healthcheck\r\nConnection: close\r\n{}\r\n",
            active.http_path, active.headers
        );
        if stream.write_all(req.as_bytes()).await.is_err() {
            return Some(Event::TcpFailure);
        }
        // Only the status line matters; read until its end (or a small cap).
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        while !buf.contains(&b'\n') && buf.len() < 4096 {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let line = String::from_utf8_lossy(&buf);
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok());
        match status {
            Some(s) => classify(s, &active.healthy_statuses, &active.unhealthy_statuses),
            None => Some(Event::TcpFailure),
        }
    };
    tokio::time::timeout(active.timeout, attempt)
        .await
        .unwrap_or(Some(Event::Timeout))
}

async fn connect(host: &str, port: u16) -> Option<TcpStream> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return TcpStream::connect((ip, port)).await.ok();
    }
    let addrs = tokio::net::lookup_host((host, port)).await.ok()?;
    for addr in addrs {
        if let Ok(s) = TcpStream::connect(addr).await {
            return Some(s);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_flip_at_thresholds_and_reset() {
        let h = TargetHealth::default();
        let limits = Limits {
            successes: 2,
            http_failures: 3,
            tcp_failures: 1,
            timeouts: 0,
        };
        assert_eq!(h.report(Event::HttpFailure(500), &limits), None);
        assert_eq!(h.report(Event::HttpFailure(500), &limits), None);
        // A success in between clears the failure count.
        assert_eq!(h.report(Event::Success, &limits), None);
        assert_eq!(h.counters().http_failures, 0);
        for _ in 0..2 {
            assert_eq!(h.report(Event::HttpFailure(500), &limits), None);
        }
        assert_eq!(h.report(Event::HttpFailure(500), &limits), Some(false));
        assert!(!h.is_healthy());
        assert_eq!(h.counters().http_failures, 0, "a flip clears the counters");
        // Timeouts are off (0): they count, never flip.
        for _ in 0..100 {
            assert_eq!(h.report(Event::Timeout, &limits), None);
        }
        assert_eq!(h.report(Event::Success, &limits), None);
        assert_eq!(h.report(Event::Success, &limits), Some(true));
        assert_eq!(h.report(Event::TcpFailure, &limits), Some(false));
    }

    #[test]
    fn parses_kong_defaults_as_off() {
        let c = Config::parse(&serde_json::Value::Null);
        assert!(c.off());
        let c = Config::parse(&serde_json::json!({
            "active": {"healthy": {"interval": 0.5, "successes": 2}, "headers": {"x-a": ["1", "2"]}},
            "passive": {"unhealthy": {"http_failures": 3}},
            "threshold": 50
        }));
        assert_eq!(c.active.healthy_interval, Some(Duration::from_millis(500)));
        assert_eq!(c.active.unhealthy_interval, None);
        assert_eq!(c.active.headers, "x-a: 1\r\nx-a: 2\r\n");
        assert_eq!(c.passive.limits.http_failures, 3);
        assert_eq!(c.passive.unhealthy_statuses, vec![429, 500, 503]);
        assert_eq!(c.threshold, 50.0);
        assert!(!c.off());
    }
}
