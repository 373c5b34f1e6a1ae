//! key-auth (KONG.md §3.3; K:kong/plugins/key-auth/handler.lua): a consumer identified by an
//! API key sent in a header, a query argument or the request body.
//!
//! Kong's behaviour, kept on purpose:
//! - For each of `key_names` in order, the header is looked at, then the query, then the body;
//!   the first *string* found wins. A name present without a string value (`?apikey` with no
//!   `=`, a JSON number) stops the search for that name and moves on to the next name.
//! - A repeated value (two headers, `?apikey=a&apikey=b`, a JSON array or object) is
//!   401 "Duplicate API key found"; an empty one is 401 "No API key found in request"; a key
//!   nobody owns (or an expired one) is 401 "Unauthorized". All are `kong.response.error`
//!   bodies with `WWW-Authenticate: Key` (or `Key realm="<realm>"`).
//! - `ttl`: DB-less Kong stores a credential's `ttl` as an absolute Unix time (seconds) and
//!   treats the credential as absent once that time has passed, `0` included
//!   (K:kong/db/strategies/off `process_ttl_field`). A declarative file has no creation time,
//!   so a relative TTL could only restart at every reload; Portico follows Kong.
//!
//! Where Portico differs: the body is read only up to [`BODY_LIMIT`]. Kong reads any size
//! (nginx spools it to disk); past the limit Portico answers 413 "Request size limit exceeded"
//! instead of forwarding a truncated body, and a body that fails to arrive is 400.
//!
//! The key is found with a hash lookup ([`Consumers::key_auth`], as Kong's cache lookup): the
//! only byte comparison is against the entry whose (randomly keyed SipHash) hash matched, so
//! response time does not tell an attacker how many leading characters of some key they got
//! right. Keys are never logged.
//!
//! [`Consumers::key_auth`]: crate::consumers::Consumers::key_auth

use std::borrow::Cow;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Method, StatusCode};
use portico_common::plugins::key_auth::Config;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{BodyError, BuildEnv, Credential, Ctx, Flow, Plugin, Reply, Req};
use crate::upstream_body::UpstreamBody;

/// The most of a request body key-auth buffers to look for a key (`key_in_body`). API calls
/// that carry their key in the body are small forms and JSON documents; a cap keeps one
/// request from making the gateway hold an upload in memory.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The key-auth plugin.
#[derive(Debug)]
pub struct KeyAuth {
    /// `key_names`, each as a header name (lowercase) and as given (query and body lookups
    /// are case-sensitive, as in Kong).
    key_names: Vec<(HeaderName, String)>,
    hide_credentials: bool,
    anonymous: Option<String>,
    key_in_header: bool,
    key_in_query: bool,
    key_in_body: bool,
    run_on_preflight: bool,
    www_authenticate: HeaderValue,
}

/// What one place (header, query, body) holds under a key name.
#[derive(Debug, PartialEq)]
enum Found {
    /// Nothing: look in the next place.
    Absent,
    /// One string value (possibly empty).
    Key(Vec<u8>),
    /// Several values (Kong: a table).
    Duplicate,
    /// A value that is not a string (Kong: a boolean or number): ends the search for this name.
    Other,
}

/// Why authentication did not succeed.
enum Failure {
    /// The client is not authenticated: `anonymous` may stand in.
    Unauthorized(&'static str),
    /// The request cannot go on at all, anonymous or not.
    Fatal(Reply),
}

impl Plugin for KeyAuth {
    const NAME: &'static str = "key-auth";
    type Config = Config;

    fn build(config: Config, _env: &BuildEnv<'_>) -> Result<Self, String> {
        let key_names = config
            .key_names
            .into_iter()
            .map(|n| {
                HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes())
                    .map(|h| (h, n.clone()))
                    .map_err(|_| format!("key_names: '{n}' is not a valid header name"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let challenge = match &config.realm {
            Some(r) => format!("Key realm=\"{r}\""),
            None => "Key".to_owned(),
        };
        let www_authenticate = HeaderValue::from_str(&challenge)
            .map_err(|_| "realm: not a valid header value".to_owned())?;
        Ok(KeyAuth {
            key_names,
            hide_credentials: config.hide_credentials,
            anonymous: config.anonymous,
            key_in_header: config.key_in_header,
            key_in_query: config.key_in_query,
            key_in_body: config.key_in_body,
            run_on_preflight: config.run_on_preflight,
            www_authenticate,
        })
    }

    async fn access<'r>(&'r self, req: &mut Req<'_>, ctx: &mut Ctx<'r>) -> Flow {
        if !self.run_on_preflight && *req.method == Method::OPTIONS {
            return Flow::Continue;
        }
        // With `anonymous`, auth plugins are a logical OR: an earlier one already succeeded.
        if self.anonymous.is_some() && ctx.credential.is_some() {
            return Flow::Continue;
        }
        match self.authenticate(req, ctx).await {
            Ok(()) => Flow::Continue,
            Err(Failure::Fatal(reply)) => Flow::Respond(reply),
            Err(Failure::Unauthorized(message)) => match &self.anonymous {
                Some(anonymous) => ctx.authenticate_anonymous(anonymous),
                None => Flow::Respond(
                    Reply::error(StatusCode::UNAUTHORIZED, message)
                        .with_header(WWW_AUTHENTICATE, self.www_authenticate.clone()),
                ),
            },
        }
    }
}

impl KeyAuth {
    async fn authenticate<'r>(&self, req: &mut Req<'_>, ctx: &mut Ctx<'r>) -> Result<(), Failure> {
        let mut body: Option<FormBody> = None;
        let mut key = None;
        for (header, name) in &self.key_names {
            let mut found = Found::Absent;
            if self.key_in_header {
                found = in_header(req, header);
            }
            if found == Found::Absent && self.key_in_query {
                found = in_pairs(req.query.as_deref().unwrap_or("").as_bytes(), name);
            }
            if found == Found::Absent && self.key_in_body {
                found = self.body(req, &mut body).await?.find(name);
            }
            match found {
                Found::Key(k) => {
                    if self.hide_credentials {
                        self.hide(req, header, name, &mut body).await?;
                    }
                    key = Some(k);
                    break;
                }
                Found::Duplicate => return Err(Failure::Unauthorized("Duplicate API key found")),
                Found::Absent | Found::Other => {}
            }
        }
        let key = match key {
            Some(k) if !k.is_empty() => k,
            _ => return Err(Failure::Unauthorized("No API key found in request")),
        };
        let (snapshot, consumers) = (ctx.snapshot, ctx.consumers);
        let found = std::str::from_utf8(&key)
            .ok()
            .and_then(|k| consumers.key_auth(snapshot, k));
        let Some((consumer, credential)) = found else {
            tracing::debug!(plugin = Self::NAME, "no credential for the API key");
            return Err(Failure::Unauthorized("Unauthorized"));
        };
        if expired(credential.ttl) {
            tracing::debug!(plugin = Self::NAME, credential = %credential.id, "API key expired");
            return Err(Failure::Unauthorized("Unauthorized"));
        }
        ctx.authenticate(consumer, Credential::Id(credential.id));
        Ok(())
    }

    /// The parsed body, read on first use.
    async fn body<'b>(
        &self,
        req: &mut Req<'_>,
        cache: &'b mut Option<FormBody>,
    ) -> Result<&'b FormBody, Failure> {
        if cache.is_none() {
            let content_type = req
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let bytes = req.body_bytes(BODY_LIMIT).await.map_err(|e| {
                Failure::Fatal(match e {
                    BodyError::TooLarge(_) => {
                        Reply::error(StatusCode::PAYLOAD_TOO_LARGE, "Request size limit exceeded")
                    }
                    BodyError::Read(_) => Reply::error(StatusCode::BAD_REQUEST, "Bad request"),
                })
            })?;
            *cache = Some(FormBody::parse(&content_type, bytes));
        }
        Ok(cache.get_or_insert(FormBody::None))
    }

    /// `hide_credentials`: the key leaves the header, the query and (with `key_in_body`) the
    /// body under this name, wherever it was found, as in Kong.
    async fn hide(
        &self,
        req: &mut Req<'_>,
        header: &HeaderName,
        name: &str,
        body: &mut Option<FormBody>,
    ) -> Result<(), Failure> {
        req.headers.remove(header);
        req.remove_query_arg(name);
        if self.key_in_body {
            if let Some(stripped) = self.body(req, body).await?.without(name) {
                // The proxy derives framing (Content-Length) from the body it sends.
                *req.body = UpstreamBody::Buffered(Some(stripped));
            }
        }
        Ok(())
    }
}

/// Whether a credential's `ttl` (absolute Unix time, see the module doc) has passed.
fn expired(ttl: Option<u64>) -> bool {
    let Some(ttl) = ttl else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    ttl <= now
}

fn in_header(req: &Req<'_>, header: &HeaderName) -> Found {
    let mut values = req.headers.get_all(header).iter();
    match (values.next(), values.next()) {
        (None, _) => Found::Absent,
        (Some(v), None) => Found::Key(v.as_bytes().to_vec()),
        (Some(_), Some(_)) => Found::Duplicate,
    }
}

/// `name` in `a=1&b=2` pairs (a query string or a form body), as nginx's args parser sees
/// them: `+` is a space, `name` without `=` is not a string.
fn in_pairs(raw: &[u8], name: &str) -> Found {
    let mut found = Found::Absent;
    for pair in raw.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], Some(&pair[i + 1..])),
            None => (pair, None),
        };
        if decode(k).as_ref() != name.as_bytes() {
            continue;
        }
        if found != Found::Absent {
            return Found::Duplicate;
        }
        found = match v {
            Some(v) => Found::Key(decode(v).into_owned()),
            None => Found::Other,
        };
    }
    found
}

/// Form-decodes one component (`+` and `%XX`), bytes in, bytes out.
fn decode(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.iter().any(|&b| b == b'+' || b == b'%') {
        return Cow::Borrowed(raw);
    }
    let plus: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    Cow::Owned(percent_encoding::percent_decode(&plus).collect())
}

/// The request body as Kong's `kong.request.get_body` reads it, by content type.
#[derive(Debug)]
enum FormBody {
    /// No body, an unknown content type, or a body that does not parse: no key in it.
    None,
    /// `application/x-www-form-urlencoded`.
    Form(Bytes),
    /// `application/json` with an object at the top.
    Json(Bytes),
    /// `multipart/form-data`.
    Multipart { raw: Bytes, boundary: String },
}

impl FormBody {
    fn parse(content_type: &str, raw: Bytes) -> FormBody {
        let ct = content_type.to_ascii_lowercase();
        if raw.is_empty() {
            FormBody::None
        } else if ct.contains("application/x-www-form-urlencoded") {
            FormBody::Form(raw)
        } else if ct.contains("application/json") {
            FormBody::Json(raw)
        } else if ct.contains("multipart/form-data") {
            match boundary(content_type) {
                Some(boundary) => FormBody::Multipart { raw, boundary },
                None => FormBody::None,
            }
        } else {
            FormBody::None
        }
    }

    fn find(&self, name: &str) -> Found {
        match self {
            FormBody::None => Found::Absent,
            FormBody::Form(raw) => in_pairs(raw, name),
            FormBody::Json(raw) => match JsonObject::parse(raw) {
                Some(o) => o.find(name),
                None => Found::Absent,
            },
            FormBody::Multipart { raw, boundary } => {
                let Some(parts) = multipart(raw, boundary) else {
                    return Found::Absent;
                };
                let mut named = parts.iter().filter(|p| p.name.as_deref() == Some(name));
                match (named.next(), named.next()) {
                    (None, _) => Found::Absent,
                    (Some(p), None) => Found::Key(raw[p.value.0..p.value.1].to_vec()),
                    _ => Found::Duplicate,
                }
            }
        }
    }

    /// The body without `name`, or `None` when `name` is not in it (the body goes on as is).
    fn without(&self, name: &str) -> Option<Bytes> {
        match self {
            FormBody::None => None,
            FormBody::Form(raw) => {
                let mut kept = Vec::with_capacity(raw.len());
                let mut removed = false;
                for pair in raw.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
                    let key = pair.split(|&b| b == b'=').next().unwrap_or_default();
                    if decode(key).as_ref() == name.as_bytes() {
                        removed = true;
                        continue;
                    }
                    if !kept.is_empty() {
                        kept.push(b'&');
                    }
                    kept.extend_from_slice(pair);
                }
                removed.then(|| Bytes::from(kept))
            }
            FormBody::Json(raw) => JsonObject::parse(raw)?.without(name),
            FormBody::Multipart { raw, boundary } => {
                let parts = multipart(raw, boundary)?;
                let mut kept = Vec::with_capacity(raw.len());
                let mut at = 0;
                let mut removed = false;
                for p in parts.iter().filter(|p| p.name.as_deref() == Some(name)) {
                    kept.extend_from_slice(&raw[at..p.span.0]);
                    at = p.span.1;
                    removed = true;
                }
                kept.extend_from_slice(&raw[at..]);
                removed.then(|| Bytes::from(kept))
            }
        }
    }
}

/// A JSON object's members in document order, values kept as written, so removing the key
/// leaves every other byte of meaning (number precision, order) as the client sent it.
struct JsonObject<'a>(Vec<(String, &'a RawValue)>);

impl<'a> JsonObject<'a> {
    fn parse(raw: &'a [u8]) -> Option<JsonObject<'a>> {
        serde_json::from_slice(raw).ok()
    }

    fn find(&self, name: &str) -> Found {
        // Like a Lua table built by cjson, the last of repeated members wins.
        let Some((_, v)) = self.0.iter().rev().find(|(k, _)| k == name) else {
            return Found::Absent;
        };
        match v.get().as_bytes().first() {
            Some(b'"') => serde_json::from_str::<String>(v.get())
                .map_or(Found::Other, |s| Found::Key(s.into_bytes())),
            // Kong sees a table: "Duplicate API key found".
            Some(b'[' | b'{') => Found::Duplicate,
            _ => Found::Other,
        }
    }

    fn without(&self, name: &str) -> Option<Bytes> {
        if !self.0.iter().any(|(k, _)| k == name) {
            return None;
        }
        let mut out = String::from("{");
        for (k, v) in self.0.iter().filter(|(k, _)| k != name) {
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(&serde_json::Value::from(k.as_str()).to_string());
            out.push(':');
            out.push_str(v.get());
        }
        out.push('}');
        Some(Bytes::from(out))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for JsonObject<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Members<'a> {
            type Value = JsonObject<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Self::Value, M::Error> {
                let mut members = Vec::new();
                while let Some(entry) = m.next_entry::<String, &'de RawValue>()? {
                    members.push(entry);
                }
                Ok(JsonObject(members))
            }
        }
        d.deserialize_map(Members(std::marker::PhantomData))
    }
}

/// The `boundary` parameter of a multipart content type (quoted or not).
fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (k, v) = param.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        (!v.is_empty()).then(|| v.to_owned())
    })
}

/// One multipart part: its byte span (from its delimiter to the next one), its field name and
/// where its content is.
#[derive(Debug)]
struct Part {
    span: (usize, usize),
    name: Option<String>,
    value: (usize, usize),
}

/// Splits a `multipart/form-data` body (RFC 7578); `None` when it is not well formed.
fn multipart(raw: &[u8], boundary: &str) -> Option<Vec<Part>> {
    let delimiter = [b"--", boundary.as_bytes()].concat();
    // Delimiters start the body or follow a CRLF (the CRLF belongs to the delimiter).
    let mut starts = Vec::new();
    if raw.starts_with(&delimiter) {
        starts.push(0);
    }
    let mut i = 0;
    while let Some(off) = find(&raw[i..], b"\r\n") {
        let at = i + off + 2;
        if raw[at..].starts_with(&delimiter) {
            starts.push(at);
        }
        i = at;
    }
    let mut parts = Vec::new();
    for pair in starts.windows(2) {
        let (start, next) = (pair[0], pair[1]);
        let after = &raw[start + delimiter.len()..next];
        if after.starts_with(b"--") {
            break; // the close delimiter
        }
        let line_end = find(after, b"\r\n")?;
        let headers_at = start + delimiter.len() + line_end + 2;
        let head_len = find(&raw[headers_at..next], b"\r\n\r\n");
        // A part with no header block at all has its blank line right away.
        let (headers, content_at) = match head_len {
            Some(n) => (&raw[headers_at..headers_at + n], headers_at + n + 4),
            None if raw[headers_at..].starts_with(b"\r\n") => (&raw[0..0], headers_at + 2),
            None => return None,
        };
        let content_end = next.checked_sub(2)?.max(content_at);
        parts.push(Part {
            span: (start, next),
            name: field_name(headers),
            value: (content_at, content_end),
        });
    }
    // Without a close delimiter the body was cut short.
    let last = *starts.last()?;
    raw[last + delimiter.len()..]
        .starts_with(b"--")
        .then_some(parts)
}

/// The `name` of a part's `Content-Disposition: form-data; name="..."` header.
fn field_name(headers: &[u8]) -> Option<String> {
    let headers = std::str::from_utf8(headers).ok()?;
    let disposition = headers.split("\r\n").find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-disposition")
            .then_some(v)
    })?;
    disposition.split(';').skip(1).find_map(|param| {
        let (k, v) = param.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("name") {
            return None;
        }
        let v = v.trim();
        Some(
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
                .to_owned(),
        )
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_follow_nginx_args() {
        assert_eq!(
            in_pairs(b"a=1&apikey=k%20y+z", "apikey"),
            Found::Key(b"k y z".to_vec())
        );
        assert_eq!(in_pairs(b"apikey=a&apikey=b", "apikey"), Found::Duplicate);
        assert_eq!(in_pairs(b"apikey", "apikey"), Found::Other);
        assert_eq!(in_pairs(b"apikey=", "apikey"), Found::Key(Vec::new()));
        assert_eq!(in_pairs(b"APIKEY=x", "apikey"), Found::Absent);
    }

    #[test]
    fn json_keeps_other_members_as_written() {
        let body = FormBody::parse(
            "application/json",
            Bytes::from_static(br#"{"n":1.50,"apikey":"k","z":[1]}"#),
        );
        assert_eq!(body.find("apikey"), Found::Key(b"k".to_vec()));
        assert_eq!(body.find("z"), Found::Duplicate);
        assert_eq!(body.find("n"), Found::Other);
        assert_eq!(
            body.without("apikey").as_deref(),
            Some(&br#"{"n":1.50,"z":[1]}"#[..])
        );
        assert_eq!(body.without("missing"), None);
    }

    #[test]
    fn multipart_finds_and_removes_a_field() {
        let raw = "--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n\
                   --XX\r\nContent-Disposition: form-data; name=\"apikey\"\r\n\r\nsecret\r\n\
                   --XX--\r\n";
        let body = FormBody::parse("multipart/form-data; boundary=\"XX\"", Bytes::from(raw));
        assert_eq!(body.find("apikey"), Found::Key(b"secret".to_vec()));
        assert_eq!(body.find("a"), Found::Key(b"1".to_vec()));
        let stripped = body.without("apikey").unwrap();
        assert_eq!(
            &stripped[..],
            &b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XX--\r\n"[..]
        );
        // Truncated: no close delimiter.
        assert!(multipart(&raw.as_bytes()[..60], "XX").is_none());
    }
}
