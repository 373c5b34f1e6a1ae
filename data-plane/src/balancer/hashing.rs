//! Consistent hashing (KONG.md §1.5): a ring of `slots` points shared out by weight, and the
//! request value (`hash_on`, then `hash_fallback`) that picks a point on it.
//!
//! The hash is FNV-1a with a 64-bit finaliser rather than std's `DefaultHasher`, whose output
//! may change between Rust releases: every data plane of a fleet, whatever build, must send the
//! same key to the same target.

use std::net::IpAddr;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use portico_common::snapshot::{HashInputs, Upstream};
use uuid::Uuid;

/// Incremental FNV-1a, finished with a splitmix64 mix so nearby keys spread over the ring.
#[derive(Debug, Clone, Copy)]
pub struct Hasher(u64);

impl Default for Hasher {
    fn default() -> Self {
        Hasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher {
    /// Feeds `bytes`.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The mixed hash.
    pub fn finish(self) -> u64 {
        mix(self.0)
    }
}

/// splitmix64's finaliser.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The ring: sorted `(point, target index)`.
#[derive(Debug, Default)]
pub struct Ring {
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// Shares `slots` points among `(target index, address, weight)` by weight; every target
    /// with weight keeps at least one point.
    pub fn new(targets: &[(u32, &str, u32)], slots: u32) -> Ring {
        let total: u64 = targets.iter().map(|t| u64::from(t.2)).sum();
        if total == 0 {
            return Ring::default();
        }
        let mut points = Vec::with_capacity(slots as usize + targets.len());
        for &(index, address, weight) in targets {
            let n = (u64::from(slots) * u64::from(weight) / total).max(1);
            for j in 0..n {
                let mut h = Hasher::default();
                h.write(address.as_bytes());
                h.write(b"#");
                h.write(&j.to_le_bytes());
                points.push((h.finish(), index));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// True when the ring has no point (no target with weight).
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Target indexes clockwise from `key`, one per point, a full turn at most.
    pub fn walk(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|p| p.0 < key);
        let n = self.points.len();
        (0..n).map(move |k| self.points[(start + k) % n].1 as usize)
    }
}

/// One hash input, resolved against the upstream's companion fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    None,
    Consumer,
    Ip,
    Header(http::HeaderName),
    Cookie(String),
    Path,
    QueryArg(String),
}

impl Input {
    fn new(kind: &str, on: bool, h: &HashInputs) -> Input {
        let (header, arg) = if on {
            (&h.on_header, &h.on_query_arg)
        } else {
            (&h.fallback_header, &h.fallback_query_arg)
        };
        match kind {
            "consumer" => Input::Consumer,
            "ip" => Input::Ip,
            "path" => Input::Path,
            "header" => header
                .as_deref()
                .and_then(|n| http::HeaderName::from_bytes(n.as_bytes()).ok())
                .map_or(Input::None, Input::Header),
            "cookie" => h.cookie.clone().map_or(Input::None, Input::Cookie),
            "query_arg" => arg.clone().map_or(Input::None, Input::QueryArg),
            _ => Input::None,
        }
    }
}

/// What a consistent-hashing upstream hashes: `hash_on`, then `hash_fallback`.
#[derive(Debug, Clone)]
pub struct KeySpec {
    on: Input,
    fallback: Input,
    /// `Path` of the cookie set when the client sent none.
    cookie_path: String,
}

impl KeySpec {
    /// The spec of `upstream`.
    pub fn new(upstream: &Upstream) -> KeySpec {
        let h = &upstream.hash_inputs;
        KeySpec {
            on: Input::new(&upstream.hash_on, true, h),
            fallback: Input::new(&upstream.hash_fallback, false, h),
            cookie_path: h.cookie_path.clone().unwrap_or_else(|| "/".to_owned()),
        }
    }

    /// True when nothing is hashed (`hash_on: none`): the upstream balances round-robin.
    pub fn is_none(&self) -> bool {
        self.on == Input::None
    }
}

/// What the request offers to hash on.
#[derive(Debug, Clone, Copy)]
pub struct HashRequest<'a> {
    /// The authenticated consumer's id.
    pub consumer: Option<Uuid>,
    pub client_ip: IpAddr,
    pub headers: &'a HeaderMap,
    /// The normalised request path.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
}

/// A request's key for the balancer.
#[derive(Debug, Default, Clone)]
pub struct RequestKey {
    /// The hash; `None` balances round-robin.
    pub hash: Option<u64>,
    /// `Set-Cookie` to add to the response when the hash cookie was missing (Kong's way of
    /// making the next requests of this client stick).
    pub set_cookie: Option<HeaderValue>,
}

impl KeySpec {
    /// The key of `req`: `hash_on`'s value, else `hash_fallback`'s, else none.
    pub fn key(&self, req: &HashRequest<'_>) -> RequestKey {
        if let Some(hash) = value_hash(&self.on, req).or_else(|| value_hash(&self.fallback, req)) {
            return RequestKey {
                hash: Some(hash),
                set_cookie: None,
            };
        }
        // Kong makes up a cookie value when the client has none, and sets it.
        if let Input::Cookie(name) = &self.on {
            let value = Uuid::new_v4().to_string();
            let mut h = Hasher::default();
            h.write(value.as_bytes());
            let cookie = format!("{name}={value}; Path={}", self.cookie_path);
            return RequestKey {
                hash: Some(h.finish()),
                set_cookie: HeaderValue::from_str(&cookie).ok(),
            };
        }
        RequestKey::default()
    }
}

fn value_hash(input: &Input, req: &HashRequest<'_>) -> Option<u64> {
    let mut h = Hasher::default();
    match input {
        Input::None => return None,
        Input::Consumer => h.write(req.consumer?.as_bytes()),
        Input::Ip => match req.client_ip {
            IpAddr::V4(ip) => h.write(&ip.octets()),
            IpAddr::V6(ip) => h.write(&ip.octets()),
        },
        Input::Path => h.write(req.path.as_bytes()),
        Input::Header(name) => {
            // Several values hash as one, in order (Kong concatenates them).
            let mut any = false;
            for v in req.headers.get_all(name) {
                any = true;
                h.write(v.as_bytes());
            }
            if !any {
                return None;
            }
        }
        Input::Cookie(name) => {
            let value = req
                .headers
                .get_all(COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    (k == name).then_some(v)
                })?;
            h.write(value.as_bytes());
        }
        Input::QueryArg(name) => {
            let mut any = false;
            for (k, v) in form_urlencoded::parse(req.query?.as_bytes()) {
                if k == name.as_str() {
                    any = true;
                    h.write(v.as_bytes());
                }
            }
            if !any {
                return None;
            }
        }
    }
    Some(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_shares_points_by_weight_and_is_stable() {
        let ring = Ring::new(&[(0, "a:1", 300), (1, "b:1", 100), (2, "c:1", 0)], 1000);
        let share = |i: usize| ring.points.iter().filter(|p| p.1 as usize == i).count();
        assert_eq!((share(0), share(1), share(2)), (750, 250, 1));
        let again = Ring::new(&[(0, "a:1", 300), (1, "b:1", 100), (2, "c:1", 0)], 1000);
        assert_eq!(ring.points, again.points);
    }

    #[test]
    fn missing_values_fall_back_and_cookies_are_made_up() {
        let up: Upstream = serde_json::from_value(serde_json::json!({
            "id": Uuid::nil(), "name": "u", "algorithm": "consistent-hashing",
            "hash_on": "header", "hash_fallback": "query_arg", "slots": 10,
            "host_header": null, "healthchecks": null, "targets": [], "tags": [],
            "hash_inputs": {"on_header": "x-user", "fallback_query_arg": "u"}
        }))
        .expect("upstream");
        let spec = KeySpec::new(&up);
        let mut headers = HeaderMap::new();
        let req = |headers: &HeaderMap, query: Option<&str>| {
            spec.key(&HashRequest {
                consumer: None,
                client_ip: IpAddr::from([127, 0, 0, 1]),
                headers,
                path: "/",
                query,
            })
            .hash
        };
        assert_eq!(req(&headers, None), None);
        let by_arg = req(&headers, Some("u=alice"));
        assert!(by_arg.is_some());
        headers.insert("x-user", HeaderValue::from_static("alice"));
        let by_header = req(&headers, Some("u=bob"));
        assert_eq!(by_header, by_arg, "same value, same hash, whichever input");
    }
}
