//! Header rules of the proxy: hop-by-hop removal (both directions), X-Forwarded-* and Via
//! (KONG.md §0; incoming forwarding headers trusted only from configured proxies, SECURITY.md
//! §2.5), client-IP resolution, and request ids.
//!
//! Order matters: client-supplied hop-by-hop and forwarding headers are removed *before* Portico
//! adds its own, so a client listing `X-Forwarded-For` in `Connection` cannot delete ours
//! (Traefik CVE-2024-45410).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{HeaderName, HeaderValue, CONNECTION};
use http::HeaderMap;
use ipnet::IpNet;

/// Names looked up on every request: constants, so a lookup hashes the name without parsing it.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_FORWARDED_PATH: HeaderName = HeaderName::from_static("x-forwarded-path");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers only a trusted proxy may set; from anyone else they are dropped and regenerated.
pub(crate) const FORWARDING: [HeaderName; 8] = [
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-path"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-real-ip"),
];

/// Whether `name` describes one connection and is never forwarded (RFC 9110 §7.6.1), counting
/// `Upgrade`-era leftovers that would open a tunnel (`HTTP2-Settings`, SECURITY.md §2.3).
///
/// These checks match the name's text: one pass over a request's names costs less than
/// hashing every candidate name for a lookup, and most requests carry none of them.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "http2-settings"
    )
}

/// Whether `name` is one of [`FORWARDING`].
fn is_forwarding(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "forwarded"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "x-forwarded-port"
            | "x-forwarded-path"
            | "x-forwarded-prefix"
            | "x-real-ip"
    )
}

/// Whether no client may set `name` at all: identity headers that auth plugins own, URL
/// overrides some frameworks honour (SECURITY.md §1.4 step 10), and names holding an `_` (see
/// [`strip_client_identity`]).
fn is_never_from_client(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "x-consumer-id"
            | "x-consumer-custom-id"
            | "x-consumer-username"
            | "x-consumer-groups"
            | "x-credential-identifier"
            | "x-anonymous-consumer"
            | "x-authenticated-groups"
            | "x-original-url"
            | "x-rewrite-url"
            | "x-http-method-override"
    ) || name.as_str().as_bytes().contains(&b'_')
}

/// Removes every header whose name `doomed` picks. Names are matched in one pass over the
/// map; only those present are hashed for removal, and a map with none is left untouched
/// (no allocation).
fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    let names: Vec<HeaderName> = headers.keys().filter(|k| doomed(k)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

/// Removes hop-by-hop headers and every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Names listed in Connection are collected first: removing Connection loses them.
    let mut listed: Vec<HeaderName> = Vec::new();
    for v in headers.get_all(CONNECTION) {
        if let Ok(s) = v.to_str() {
            for name in s.split(',') {
                let name = name.trim();
                if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                    listed.push(n);
                }
            }
        }
    }
    remove_where(headers, |k| is_hop_by_hop(k) || listed.contains(k));
}

/// Addresses whose forwarding headers are believed (`--trusted-ips`).
#[derive(Debug, Clone, Default)]
pub struct TrustedIps {
    nets: Vec<IpNet>,
}

impl TrustedIps {
    /// Parses a list of IPs and CIDRs (`127.0.0.1`, `10.0.0.0/8`, `::1`, `0.0.0.0/0`).
    pub fn parse(items: &[String]) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let net = match item.parse::<IpNet>() {
                Ok(n) => n,
                Err(_) => match item.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => return Err(format!("'{item}' is neither an IP nor a CIDR")),
                },
            };
            nets.push(net);
        }
        Ok(TrustedIps { nets })
    }

    /// Whether `ip` is trusted.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// True when nothing is trusted (the default).
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4, so `::ffff:10.0.0.1` matches `10.0.0.0/8`.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Room [`ip_text`] needs: the longest IPv6 text (`ffff:...:255.255.255.255`).
pub const IP_TEXT_MAX: usize = 45;

/// `ip` as `Display` writes it, into `buf`, without the formatting machinery for IPv4 (the
/// common case: a log line and a span each write the client's address per request).
pub fn ip_text(ip: IpAddr, buf: &mut [u8; IP_TEXT_MAX]) -> &[u8] {
    match ip {
        IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                // Digit by digit: a copy per octet was a `memcpy` call each.
                if octet >= 100 {
                    buf[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    buf[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                buf[len] = b'0' + octet % 10;
                len += 1;
            }
            &buf[..len]
        }
        IpAddr::V6(_) => {
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            let _ = std::io::Write::write_fmt(&mut cursor, format_args!("{ip}"));
            let len = cursor.position() as usize;
            &buf[..len]
        }
    }
}

/// What the proxy knows about where a request came from.
#[derive(Debug)]
pub struct Forwarding<'a> {
    /// The TCP peer.
    pub peer: IpAddr,
    /// Whether the peer is a trusted proxy.
    pub trusted: bool,
    /// `http` or `https`, as the request reached us.
    pub scheme: &'static str,
    /// The request host without port.
    pub host: &'a str,
    /// The port the request arrived on.
    pub port: u16,
    /// The canonical request path.
    pub path: &'a str,
    /// What strip_path removed, if anything but `/`.
    pub prefix: Option<&'a str>,
    /// `peer` as a header value ([`ConnHeaders::peer`]).
    pub peer_header: &'a HeaderValue,
    /// `port` as a header value ([`ConnHeaders::port`]).
    pub port_header: &'a HeaderValue,
}

/// The client's IP: the peer, or, behind trusted proxies, the right-most address of
/// X-Forwarded-For that is not itself trusted (counting from the right, so a client cannot
/// choose its own address by prepending entries).
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted: &TrustedIps) -> IpAddr {
    let peer = canonical_ip(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    let entries: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for entry in entries.iter().rev() {
        match parse_xff_entry(entry) {
            Some(ip) => {
                client = ip;
                if !trusted.contains(ip) {
                    break;
                }
            }
            None => break,
        }
    }
    client
}

/// An X-Forwarded-For element: an IP, optionally `[v6]:port` or `v4:port`.
fn parse_xff_entry(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    if let Some(rest) = e.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok().map(canonical_ip);
    }
    let (host, _port) = e.rsplit_once(':')?;
    host.parse().ok().map(canonical_ip)
}

/// Fields a request carries at most once (RFC 9110), and that the gateway's checks read: two
/// of them let the gateway check one and the upstream use the other (Envoy CVE-2021-32777).
/// `Host` and `Content-Length` are checked elsewhere (hyper, `original_host`).
const SINGLETONS: [HeaderName; 3] = [
    http::header::AUTHORIZATION,
    http::header::PROXY_AUTHORIZATION,
    http::header::CONTENT_TYPE,
];

/// Refuses a request that repeats one of [`SINGLETONS`].
pub fn check_singletons(headers: &HeaderMap) -> Result<(), crate::error::ProxyError> {
    for name in &SINGLETONS {
        if headers.get_all(name).iter().nth(1).is_some() {
            return Err(crate::error::ProxyError::BadRequest(
                "Repeated header that must be single",
            ));
        }
    }
    Ok(())
}

/// HTTP/2 lets a field value start or end with whitespace (h2 does not refuse it, RFC 9113
/// §8.2.1 says to); forwarded over HTTP/1.1 it would be trimmed by one reader and not by
/// another (SECURITY.md §2.3 item 5). Refused.
pub fn check_h2_values(headers: &HeaderMap) -> Result<(), crate::error::ProxyError> {
    let padded = |b: &[u8]| {
        matches!(b.first(), Some(b' ' | b'\t')) || matches!(b.last(), Some(b' ' | b'\t'))
    };
    if headers.values().any(|v| padded(v.as_bytes())) {
        return Err(crate::error::ProxyError::BadRequest(
            "Header value with leading or trailing whitespace",
        ));
    }
    Ok(())
}

/// Removes the identity headers auth plugins own (and URL overrides) from a client request.
/// Runs before the plugin chain, so neither a plugin nor the upstream ever sees a client's
/// own `X-Consumer-ID`; what the chain sets afterwards is what goes upstream.
///
/// Header names containing `_` go too, as nginx (and so Kong) drops them by default
/// (`underscores_in_headers off`): some servers read `_` as `-`, so `Transfer_Encoding` or
/// `X_Forwarded_For` would mean something to them that the gateway never checked (SECURITY.md
/// §2.3 item 6).
pub fn strip_client_identity(headers: &mut HeaderMap) {
    remove_where(headers, is_never_from_client);
}

/// Prepares client headers for forwarding: removes hop-by-hop and spoofable forwarding
/// headers, then sets X-Forwarded-*, X-Real-IP and Via. Identity headers are removed earlier,
/// by [`strip_client_identity`], since plugins set them in between.
pub fn forward_request_headers(
    headers: &mut HeaderMap,
    f: &Forwarding<'_>,
    client: IpAddr,
    via: &HeaderValue,
) {
    strip_hop_by_hop(headers);

    let xff_in = if f.trusted {
        joined(headers, &X_FORWARDED_FOR)
    } else {
        None
    };
    let keep = |headers: &HeaderMap, name: &HeaderName| {
        if f.trusted {
            headers.get(name).cloned()
        } else {
            None
        }
    };
    let proto = keep(headers, &X_FORWARDED_PROTO);
    let host = keep(headers, &X_FORWARDED_HOST);
    let port = keep(headers, &X_FORWARDED_PORT);
    let path = keep(headers, &X_FORWARDED_PATH);
    let prefix = keep(headers, &X_FORWARDED_PREFIX);
    // Framing is hyper's job: it derives Content-Length / chunked from the body we pass, so a
    // client cannot smuggle its own framing through (SECURITY.md §2.3 item 2).
    remove_where(headers, |k| {
        k == http::header::CONTENT_LENGTH || k == http::header::EXPECT || is_forwarding(k)
    });
    // Room for what follows, so the map grows once rather than on the way.
    headers.reserve(8);

    let xff = match xff_in {
        Some(prev) => HeaderValue::from_str(&format!("{prev}, {}", canonical_ip(f.peer))).ok(),
        None => Some(f.peer_header.clone()),
    };
    if let Some(xff) = xff {
        headers.insert(X_FORWARDED_FOR, xff);
    }
    headers.insert(
        X_FORWARDED_PROTO,
        proto.unwrap_or(HeaderValue::from_static(f.scheme)),
    );
    match host {
        Some(h) => headers.insert(X_FORWARDED_HOST, h),
        None => insert_str(headers, X_FORWARDED_HOST, f.host),
    };
    headers.insert(
        X_FORWARDED_PORT,
        port.unwrap_or_else(|| f.port_header.clone()),
    );
    match path {
        Some(p) => headers.insert(X_FORWARDED_PATH, p),
        None => insert_str(headers, X_FORWARDED_PATH, f.path),
    };
    match (prefix, f.prefix) {
        (Some(p), _) => {
            headers.insert(X_FORWARDED_PREFIX, p);
        }
        (None, Some(p)) => {
            insert_str(headers, X_FORWARDED_PREFIX, p);
        }
        (None, None) => {}
    }
    if canonical_ip(client) == canonical_ip(f.peer) {
        headers.insert(X_REAL_IP, f.peer_header.clone());
    } else {
        insert_str(headers, X_REAL_IP, &canonical_ip(client).to_string());
    }
    headers.append(http::header::VIA, via.clone());
}

/// A connection's own forwarding values, made once per connection rather than per request.
#[derive(Debug, Clone)]
pub struct ConnHeaders {
    /// The peer's address (IPv4-mapped shown as IPv4): X-Forwarded-For and X-Real-IP.
    pub peer: HeaderValue,
    /// The port the connection arrived on: X-Forwarded-Port.
    pub port: HeaderValue,
}

impl ConnHeaders {
    /// The values for a connection from `peer` to local port `port`.
    pub fn new(peer: IpAddr, port: u16) -> Self {
        ConnHeaders {
            peer: HeaderValue::from_str(&canonical_ip(peer).to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            port: HeaderValue::from(port),
        }
    }
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut out: Option<String> = None;
    for v in headers.get_all(name) {
        let Ok(s) = v.to_str() else { continue };
        match &mut out {
            Some(o) => {
                o.push_str(", ");
                o.push_str(s);
            }
            None => out = Some(s.to_string()),
        }
    }
    out
}

fn insert_str(headers: &mut HeaderMap, name: HeaderName, value: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(value)
        .ok()
        .and_then(|v| headers.insert(name, v))
}

/// The `Host` value for `host:port`, omitting the port when it is the scheme's default
/// (KONG.md §1.5, `set_host_header`).
pub fn host_header_value(host: &str, port: u16, default_port: u16) -> HeaderValue {
    let needs_brackets = host.contains(':') && !host.starts_with('[');
    let h = if needs_brackets {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let s = if port == default_port {
        h
    } else {
        format!("{h}:{port}")
    };
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("invalid-host"))
}

/// Request ids: a per-process random prefix and a counter, so ids are unique without a syscall
/// or a lock per request.
#[derive(Debug)]
pub struct RequestIds {
    prefix: u32,
    counter: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        let r = uuid::Uuid::new_v4();
        let b = r.as_bytes();
        RequestIds {
            prefix: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            counter: AtomicU64::new(0),
        }
    }
}

impl RequestIds {
    /// The client's `X-Request-Id` when it is sane (1-128 visible ASCII chars without spaces or
    /// quotes), else a fresh id.
    pub fn for_request(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(v) = headers.get(&X_REQUEST_ID) {
            let b = v.as_bytes();
            if !b.is_empty()
                && b.len() <= 128
                && b.iter()
                    .all(|&c| c.is_ascii_graphic() && c != b'"' && c != b'\\')
            {
                return v.clone();
            }
        }
        self.fresh()
    }

    /// A new id: 8 hex chars of process prefix, 16 of counter.
    pub fn fresh(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut id = [0u8; 24];
        hex_into(&mut id[..8], u64::from(self.prefix));
        hex_into(&mut id[8..], n);
        HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
    }
}

/// Writes `n` as lowercase hex, zero-padded to fill `out` (its low `out.len()` digits).
fn hex_into(out: &mut [u8], mut n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// A latency in milliseconds as a header value; the usual single digits are static (no
/// allocation).
pub fn millis_value(ms: u64) -> HeaderValue {
    const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match SMALL.get(ms as usize) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(ms),
    }
}

#[cfg(test)]
mod tests;
