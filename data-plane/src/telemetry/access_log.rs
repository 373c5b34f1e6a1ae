//! The access log: one JSON object per request, written by a dedicated thread.
//!
//! The request path formats its line into a buffer the writer handed back after writing an
//! earlier one (so a line costs no allocation once the node is warm, and no buffer is freed on
//! another thread than the one that allocated it) and hands it to the writer through a bounded
//! channel; it never waits on the disk or on a slow stdout reader. When the writer falls
//! behind and the channel is full, lines are dropped and counted
//! (`portico_access_log_dropped_total`), never queued without bound.
//!
//! What is never written: request or response headers (they carry API keys, tokens, cookies and
//! basic-auth credentials), the query string (key-auth reads keys from it), and bodies. The
//! consumer appears by username (or id), never by credential.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_queue::ArrayQueue;
use serde::Serialize;

/// Lines that may wait for the writer; past this the request path drops lines.
const QUEUE: usize = 64 * 1024;

/// Written lines' buffers kept for reuse, and the largest buffer kept.
const SPARE: usize = 4096;
const SPARE_CAPACITY: usize = 4096;

/// Where access-log lines go (`--access-log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    Stderr,
    /// Appended to; created when missing.
    File(PathBuf),
}

impl Target {
    /// `off` (None), `stdout`, `stderr`, or a file path.
    pub fn parse(s: &str) -> Option<Target> {
        match s {
            "" | "off" => None,
            "stdout" | "-" => Some(Target::Stdout),
            "stderr" => Some(Target::Stderr),
            path => Some(Target::File(PathBuf::from(path))),
        }
    }
}

/// The writer's handle: cheap to share, never blocks.
#[derive(Debug)]
pub struct AccessLog {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
    /// Buffers of written lines, for the next lines.
    spare: Arc<ArrayQueue<Vec<u8>>>,
}

/// What the writer thread receives.
#[derive(Debug)]
enum Msg {
    Line(Vec<u8>),
    /// Write and flush everything queued before this, then answer.
    Flush(SyncSender<()>),
}

impl AccessLog {
    /// Opens `target` and starts the writer thread.
    pub fn open(target: &Target) -> std::io::Result<AccessLog> {
        let out: Box<dyn Write + Send> = match target {
            Target::Stdout => Box::new(std::io::stdout()),
            Target::Stderr => Box::new(std::io::stderr()),
            Target::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        std::io::Error::new(
                            e.kind(),
                            format!("cannot open access log {}: {e}", path.display()),
                        )
                    })?,
            ),
        };
        let (tx, rx) = sync_channel(QUEUE);
        let spare = Arc::new(ArrayQueue::new(SPARE));
        let returned = Arc::clone(&spare);
        std::thread::Builder::new()
            .name("portico-access-log".into())
            .spawn(move || write_lines(rx, out, &returned))?;
        Ok(AccessLog {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            spare,
        })
    }

    /// Queues one entry's line; drops it (counted) when the writer is behind.
    pub fn write(&self, entry: &Entry<'_>) {
        let mut line = self.spare.pop().unwrap_or_else(|| Vec::with_capacity(512));
        if serde_json::to_writer(&mut line, entry).is_err() {
            return;
        }
        line.push(b'\n');
        match self.tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!("access log writer is behind; dropping lines (counted in portico_access_log_dropped_total)");
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits (at most `timeout`) until every line queued so far is written and flushed: at
    /// shutdown, so the last requests' lines are not lost with the process.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (done, wait) = sync_channel(1);
        if self.tx.send(Msg::Flush(done)).is_err() {
            return false;
        }
        wait.recv_timeout(timeout).is_ok()
    }

    /// Lines dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// How long the writer sleeps between two drains of the queue. It polls rather than blocks on
/// the channel so that queuing a line never has to wake a thread (a futex call per request);
/// a line reaches the file within about this long.
const DRAIN_EVERY: Duration = Duration::from_millis(5);

/// Writes what has queued up, in bursts: one write and one flush per drain, not per line.
fn write_lines(rx: Receiver<Msg>, out: Box<dyn Write + Send>, spare: &ArrayQueue<Vec<u8>>) {
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, out);
    let mut warned = false;
    let mut waiting = Vec::new();
    loop {
        let mut result = Ok(());
        let mut wrote = false;
        let closed = loop {
            match rx.try_recv() {
                Ok(Msg::Line(mut line)) => {
                    wrote = true;
                    if result.is_ok() {
                        result = out.write_all(&line);
                    }
                    if line.capacity() <= SPARE_CAPACITY {
                        line.clear();
                        // A full spare queue frees the buffer here instead.
                        let _ = spare.push(line);
                    }
                }
                Ok(Msg::Flush(done)) => waiting.push(done),
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        if wrote && result.is_ok() {
            result = out.flush();
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
        if let Err(e) = result {
            if !warned {
                tracing::error!(error = %e, "cannot write the access log; lines are lost until it recovers");
                warned = true;
            }
        } else if wrote {
            warned = false;
        }
        if closed {
            return;
        }
        std::thread::sleep(DRAIN_EVERY);
    }
}

/// One request, as logged. Durations are milliseconds with microsecond precision.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// When the request arrived (RFC 3339, UTC).
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    pub request_id: &'a str,
    pub client_ip: IpAddr,
    pub method: &'a str,
    pub host: &'a str,
    /// The path as the client sent it, without the query string.
    pub path: &'a str,
    pub protocol: &'static str,
    pub status: u16,
    /// Route and service names (ids when unnamed); empty when no route matched.
    pub route: &'a str,
    pub service: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<&'a str>,
    /// The upstream `host:port` of the last attempt; absent when nothing was sent upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_addr: Option<&'a str>,
    /// Attempts made upstream (0 when the gateway answered itself); retries are `tries - 1`.
    pub tries: u32,
    pub latency_ms: Latencies,
    /// Request body bytes when declared (Content-Length); response body bytes sent.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The response body was cut short (upstream failure mid-body, client gone).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub incomplete: bool,
    /// The W3C trace id of the request when it was traced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
}

/// Kong's three latencies: the whole request, the upstream's share, and the gateway's own.
#[derive(Debug, Serialize)]
pub struct Latencies {
    #[serde(serialize_with = "millis")]
    pub request: Duration,
    #[serde(serialize_with = "millis_opt", skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Duration>,
    #[serde(serialize_with = "millis")]
    pub proxy: Duration,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_micros() as f64) / 1000.0)
}

fn millis_opt<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => millis(d, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            request_id: "r-1",
            client_ip: "10.0.0.1".parse().unwrap(),
            method: "GET",
            host: "api.example.com",
            path: "/v1/items",
            protocol: "HTTP/1.1",
            status: 200,
            route: "items",
            service: "inventory",
            consumer: Some("alice"),
            upstream_addr: Some("127.0.0.1:9000"),
            tries: 2,
            latency_ms: Latencies {
                request: Duration::from_micros(12_345),
                upstream: Some(Duration::from_micros(10_000)),
                proxy: Duration::from_micros(2_345),
            },
            bytes_in: 0,
            bytes_out: 42,
            incomplete: false,
            trace_id: None,
        }
    }

    #[test]
    fn entries_are_one_json_object_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(&Target::File(path.clone())).unwrap();
        log.write(&entry());
        log.write(&entry());
        assert!(
            log.flush(Duration::from_secs(5)),
            "the writer answers a flush"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        let v = &lines[0];
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["status"], 200);
        assert_eq!(v["consumer"], "alice");
        assert_eq!(v["tries"], 2);
        assert_eq!(v["latency_ms"]["request"], 12.345);
        assert_eq!(v["latency_ms"]["upstream"], 10.0);
        assert!(v.get("incomplete").is_none());
        assert!(v.get("trace_id").is_none());
    }

    #[test]
    fn targets_parse() {
        assert_eq!(Target::parse("off"), None);
        assert_eq!(Target::parse("stdout"), Some(Target::Stdout));
        assert_eq!(
            Target::parse("/var/log/portico/access.log"),
            Some(Target::File("/var/log/portico/access.log".into()))
        );
    }
}
