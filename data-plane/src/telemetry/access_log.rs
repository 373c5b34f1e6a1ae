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

/// Lines that may wait for the writer; past this the request path drops lines.
const QUEUE: usize = 4096;

/// Written lines' buffers kept for reuse, and the largest buffer kept.
const SPARE: usize = 256;
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
        entry.write_json(&mut line);
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
#[derive(Debug)]
pub struct Entry<'a> {
    /// When the request arrived (RFC 3339, UTC, milliseconds).
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
    /// Absent when no consumer was identified.
    pub consumer: Option<&'a str>,
    /// The upstream `host:port` of the last attempt; absent when nothing was sent upstream.
    pub upstream_addr: Option<&'a str>,
    /// Attempts made upstream (0 when the gateway answered itself); retries are `tries - 1`.
    pub tries: u32,
    pub latency_ms: Latencies,
    /// Request body bytes when declared (Content-Length); response body bytes sent.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The response body was cut short (upstream failure mid-body, client gone); written only
    /// when true.
    pub incomplete: bool,
    /// The W3C trace id of the request when it was traced.
    pub trace_id: Option<&'a str>,
}

/// Kong's three latencies: the whole request, the upstream's share (absent when nothing was
/// sent upstream), and the gateway's own.
#[derive(Debug)]
pub struct Latencies {
    pub request: Duration,
    pub upstream: Option<Duration>,
    pub proxy: Duration,
}

impl Entry<'_> {
    /// Appends the entry as one JSON object. Field by field rather than through `Serialize`:
    /// the keys are constants, and this runs once per request. Strings are escaped by
    /// serde_json; numbers are formatted by itoa.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"time\":\"");
        rfc3339_millis(self.time, out);
        str_field(out, b"\",\"request_id\":", self.request_id);
        out.extend_from_slice(b",\"client_ip\":\"");
        let mut ip = [0u8; crate::headers::IP_TEXT_MAX];
        out.extend_from_slice(crate::headers::ip_text(self.client_ip, &mut ip));
        str_field(out, b"\",\"method\":", self.method);
        str_field(out, b",\"host\":", self.host);
        str_field(out, b",\"path\":", self.path);
        str_field(out, b",\"protocol\":", self.protocol);
        int_field(out, b",\"status\":", self.status);
        str_field(out, b",\"route\":", self.route);
        str_field(out, b",\"service\":", self.service);
        if let Some(c) = self.consumer {
            str_field(out, b",\"consumer\":", c);
        }
        if let Some(a) = self.upstream_addr {
            str_field(out, b",\"upstream_addr\":", a);
        }
        int_field(out, b",\"tries\":", self.tries);
        out.extend_from_slice(b",\"latency_ms\":{\"request\":");
        millis(out, self.latency_ms.request);
        if let Some(u) = self.latency_ms.upstream {
            out.extend_from_slice(b",\"upstream\":");
            millis(out, u);
        }
        out.extend_from_slice(b",\"proxy\":");
        millis(out, self.latency_ms.proxy);
        int_field(out, b"},\"bytes_in\":", self.bytes_in);
        int_field(out, b",\"bytes_out\":", self.bytes_out);
        if self.incomplete {
            out.extend_from_slice(b",\"incomplete\":true");
        }
        if let Some(t) = self.trace_id {
            str_field(out, b",\"trace_id\":", t);
        }
        out.push(b'}');
    }
}

/// `key` (its comma, quotes and colon included), then `s` as a JSON string. A string with
/// nothing to escape (the usual: ids, names, paths) is copied between quotes; any other is
/// escaped by serde_json (writing to a `Vec` cannot fail).
// Inlined: each caller's key is a constant, so its copy is a few moves, not a `memcpy` call.
#[inline(always)]
fn str_field(out: &mut Vec<u8>, key: &[u8], s: &str) {
    out.extend_from_slice(key);
    if !needs_escape(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Whether `s` holds a byte serde_json escapes: a control character (below 0x20), the quote
/// or the backslash. Eight bytes at a time (this runs over every string of every line).
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Whether a byte of `x` is below `n` (exact as a yes/no for n <= 0x80).
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH != 0;
    let has = |x: u64, b: u8| below(x ^ (ONES * u64::from(b)), 1);
    let mut chunks = s.chunks_exact(8);
    for chunk in &mut chunks {
        let x = u64::from_ne_bytes(chunk.try_into().expect("eight bytes"));
        if below(x, 0x20) || has(x, b'"') || has(x, b'\\') {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// `key`, then `n`.
#[inline(always)]
fn int_field(out: &mut Vec<u8>, key: &[u8], n: impl itoa::Integer) {
    out.extend_from_slice(key);
    int(out, n);
}

fn int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Milliseconds with up to three decimals (microseconds), as the shortest decimal: `12.345`,
/// `12.3`, `10.0`; what serde_json writes for the same `f64`.
fn millis(out: &mut Vec<u8>, d: Duration) {
    // u64 arithmetic: 584,000 years of microseconds.
    let micros = d
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(d.subsec_micros()));
    int(out, micros / 1000);
    out.push(b'.');
    let frac = (micros % 1000) as u16;
    if frac == 0 {
        out.push(b'0');
        return;
    }
    let digits = [frac / 100, frac / 10 % 10, frac % 10];
    let len = if digits[2] != 0 {
        3
    } else if digits[1] != 0 {
        2
    } else {
        1
    };
    out.extend(digits[..len].iter().map(|&d| b'0' + d as u8));
}

thread_local! {
    /// The last second formatted (`YYYY-MM-DDTHH:MM:SS.`) and its Unix time: lines in the
    /// same second only add their milliseconds.
    static SECOND: std::cell::Cell<(u64, [u8; 20])> = const { std::cell::Cell::new((u64::MAX, [0; 20])) };
}

/// `2023-11-14T22:13:20.123Z`.
fn rfc3339_millis(t: SystemTime, out: &mut Vec<u8>) {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (cached, mut prefix) = SECOND.get();
    if cached != secs {
        let text =
            humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
                .to_string();
        // `YYYY-MM-DDTHH:MM:SSZ`; years past 9999 are not expected of a clock.
        if text.len() == 20 {
            prefix[..19].copy_from_slice(&text.as_bytes()[..19]);
            prefix[19] = b'.';
            SECOND.set((secs, prefix));
        } else {
            out.extend_from_slice(humantime::format_rfc3339_millis(t).to_string().as_bytes());
            return;
        }
    }
    out.extend_from_slice(&prefix);
    let ms = since.subsec_millis();
    out.extend_from_slice(&[
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
    ]);
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
    fn lines_escape_strings_and_format_numbers_as_serde_json_does() {
        let mut e = entry();
        e.path = "/a\"b\\c\n\u{1}é";
        e.consumer = None;
        e.upstream_addr = None;
        e.incomplete = true;
        e.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736");
        e.client_ip = "2001:db8::1".parse().unwrap();
        e.latency_ms.upstream = None;
        let mut line = Vec::new();
        e.write_json(&mut line);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["path"], "/a\"b\\c\n\u{1}é");
        assert_eq!(v["client_ip"], "2001:db8::1");
        assert_eq!(v["incomplete"], true);
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(v.get("consumer").is_none() && v.get("upstream_addr").is_none());
        assert!(v["latency_ms"].get("upstream").is_none());
        // Strings come out byte for byte as serde_json writes them, escaped or not.
        for text in [
            "",
            "plain-id_0123",
            "/a b/c?d=e&f",
            "tab\there",
            "quote\"",
            "back\\slash",
            "\u{7f}del",
            "é ü 中",
            "\u{1f}",
        ] {
            let mut out = Vec::new();
            str_field(&mut out, b"", text);
            assert_eq!(out, serde_json::to_vec(text).unwrap(), "{text:?}");
        }
        // Each byte value at each position of a 17-byte string (two words and a tail).
        for byte in 0u8..0x80 {
            for at in 0..17 {
                let mut text = vec![b'a'; 17];
                text[at] = byte;
                let text = std::str::from_utf8(&text).unwrap();
                let mut out = Vec::new();
                str_field(&mut out, b"", text);
                assert_eq!(out, serde_json::to_vec(text).unwrap(), "{byte:#x} at {at}");
            }
        }
        // Every microsecond count reads as the f64 serde_json would have written, in the
        // same shortest form.
        for micros in (0..20_000u64).chain([999_999, 1_000_000, 86_400_000_123]) {
            let mut out = Vec::new();
            millis(&mut out, Duration::from_micros(micros));
            let want = serde_json::to_string(&(micros as f64 / 1000.0)).unwrap();
            assert_eq!(std::str::from_utf8(&out).unwrap(), want, "{micros} µs");
        }
        // Timestamps across second boundaries, as humantime formats them.
        for ms in [
            0u64,
            999,
            1_000,
            1_700_000_000_123,
            1_700_000_000_999,
            1_700_000_001_000,
        ] {
            let t = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
            let mut out = Vec::new();
            rfc3339_millis(t, &mut out);
            assert_eq!(
                std::str::from_utf8(&out).unwrap(),
                humantime::format_rfc3339_millis(t).to_string()
            );
        }
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
