//! Request-path canonicalisation: the one canonical form of a request path that Portico routes
//! on, checks policies against, and forwards upstream (SECURITY.md §1.1: one string, no split
//! view). It follows Kong's `kong.tools.uri.normalize` (decode unreserved escapes, remove dot
//! segments, merge slashes) and adds the rejections of SECURITY.md §1.4.
//!
//! The canonical alphabet is: unreserved characters, sub-delims, `:`, `@`, `/`, `[`, `]`, and
//! `%XX` escapes with uppercase hex whose value is not unreserved. Raw non-ASCII bytes and the
//! raw "other" characters (`"`, `<`, `>`, `^`, `{`, `|`, `}` and the backtick) are
//! percent-encoded, so the same bytes always have exactly one spelling (Kong escapes those same
//! characters when it forwards).
//!
//! The config loader also calls [`canonicalize`] to check that prefix paths in config are
//! already canonical, so this module must not depend on anything but `std` and `thiserror`.

use std::borrow::Cow;

/// Why a request path cannot be made canonical (answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Origin form requires a leading `/` (authority form, `*` and absolute form are the
    /// caller's business).
    #[error("path must start with '/'")]
    NotAbsolute,
    /// A raw control character (0x00-0x1F, 0x7F).
    #[error("path contains a control character")]
    ControlChar,
    /// A percent-encoded control character (`%00`-`%1F`, `%7F`).
    #[error("path contains an encoded control character")]
    EncodedControlChar,
    /// A raw space (nginx CVE-2013-4547).
    #[error("path contains a space")]
    Space,
    /// A raw `#`: fragments are never sent, so one in the target is an attack or a bug.
    #[error("path contains a '#' fragment")]
    Fragment,
    /// A raw `?`: the caller must split the query off first.
    #[error("path contains a '?' (query not removed)")]
    Query,
    /// A raw `\`, which some upstreams treat as a separator.
    #[error("path contains a backslash")]
    Backslash,
    /// `%2F` or `%5C`, rejected unless [`Options::allow_encoded_slashes`] is set.
    #[error("path contains an encoded '/' or '\\'")]
    EncodedSlash,
    /// `%` not followed by two hex digits (`%`, `%g1`, `%u002e`).
    #[error("path contains a malformed percent-escape")]
    MalformedEscape,
    /// Decoded bytes are not UTF-8, or are overlong UTF-8 (`%c0%ae`).
    #[error("path is not valid UTF-8 once decoded")]
    InvalidUtf8,
    /// A `.`/`..` segment carrying `;params` (`..;`, `..;a=b`): upstreams disagree on it.
    #[error("path contains a dot segment with ';' parameters")]
    DotSegmentWithParams,
    /// A `;` (unless [`Options::allow_semicolons`] is set).
    #[error("path contains a ';'")]
    Semicolon,
}

/// Knobs for [`canonicalize_with`]; the default is what [`canonicalize`] does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Keep `%2F`/`%5C` (hex uppercased, never treated as separators) instead of rejecting.
    pub allow_encoded_slashes: bool,
    /// Keep `;` as an ordinary sub-delimiter (Kong's behaviour) instead of rejecting it. Off by
    /// default: an upstream that strips `;params` (Tomcat, Spring) reads `/api;/internal/x` as
    /// `/api/internal/x`, behind a rule that matched `/api` (SECURITY.md §1.4 item 5). Turn it
    /// on only for upstreams that use matrix parameters and do not strip them. `.`/`..`
    /// segments with parameters (`..;`) are refused either way.
    pub allow_semicolons: bool,
}

/// Returns the canonical form of `raw` (the request path without its query string) with the
/// default [`Options`]. An already-canonical path is returned borrowed, without allocating.
pub fn canonicalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    canonicalize_with(raw, Options::default())
}

/// [`canonicalize`] with explicit [`Options`].
pub fn canonicalize_with(raw: &str, opts: Options) -> Result<Cow<'_, str>, PathError> {
    if is_canonical(raw.as_bytes(), opts) {
        return Ok(Cow::Borrowed(raw));
    }
    rewrite(raw.as_bytes(), opts).map(Cow::Owned)
}

const fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// ASCII bytes that stay raw in canonical output (besides `/`, `%` and unreserved).
const fn is_raw_reserved(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$'
            | b'&'
            | b'\''
            | b'('
            | b')'
            | b'*'
            | b'+'
            | b','
            | b';'
            | b'='
            | b':'
            | b'@'
            | b'['
            | b']'
    )
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Incremental UTF-8 validation over the decoded byte stream (raw and escaped bytes
/// interleaved). Rejects overlong forms, surrogates and code points above U+10FFFF, as
/// `std::str::from_utf8` does.
#[derive(Clone, Copy)]
struct Utf8 {
    need: u8,
    lo: u8,
    hi: u8,
}

impl Utf8 {
    const START: Utf8 = Utf8 {
        need: 0,
        lo: 0x80,
        hi: 0xBF,
    };

    fn feed(&mut self, b: u8) -> bool {
        if self.need > 0 {
            if b < self.lo || b > self.hi {
                return false;
            }
            self.need -= 1;
            self.lo = 0x80;
            self.hi = 0xBF;
            return true;
        }
        let (need, lo, hi) = match b {
            0x00..=0x7F => return true,
            0xC2..=0xDF => (1, 0x80, 0xBF),
            0xE0 => (2, 0xA0, 0xBF),
            0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF),
            0xED => (2, 0x80, 0x9F),
            0xF0 => (3, 0x90, 0xBF),
            0xF1..=0xF3 => (3, 0x80, 0xBF),
            0xF4 => (3, 0x80, 0x8F),
            _ => return false,
        };
        *self = Utf8 { need, lo, hi };
        true
    }

    fn done(self) -> bool {
        self.need == 0
    }
}

/// True for a dot segment (`.` or `..`) ...
fn is_dot(seg: &[u8]) -> bool {
    seg == b"." || seg == b".."
}

/// ... and for one that only hides behind `;params` (`..;`, `.;a=b`).
fn is_dot_with_params(seg: &[u8]) -> bool {
    match seg.iter().position(|&b| b == b';') {
        Some(i) => is_dot(&seg[..i]),
        None => false,
    }
}

/// The fast path: one scan, no allocation. True only if `rewrite` would return `raw`
/// unchanged; anything unusual (including every error) answers false and takes the slow path,
/// which is the reference. A test checks the two agree.
fn is_canonical(raw: &[u8], opts: Options) -> bool {
    if raw.first() != Some(&b'/') {
        return false;
    }
    let mut utf8 = Utf8::START;
    let mut seg_start = 1;
    let mut i = 1;
    while i < raw.len() {
        let b = raw[i];
        match b {
            b'/' => {
                let seg = &raw[seg_start..i];
                if seg.is_empty() || is_dot(seg) || is_dot_with_params(seg) || !utf8.done() {
                    return false;
                }
                seg_start = i + 1;
            }
            b'%' => {
                let (Some(&h), Some(&l)) = (raw.get(i + 1), raw.get(i + 2)) else {
                    return false;
                };
                // Lowercase hex is valid input but not canonical.
                let (Some(hv), Some(lv)) = (hex_upper_val(h), hex_upper_val(l)) else {
                    return false;
                };
                let v = hv << 4 | lv;
                if is_unreserved(v) || v < 0x20 || v == 0x7F {
                    return false;
                }
                if (v == b'/' || v == b'\\') && !opts.allow_encoded_slashes {
                    return false;
                }
                if !utf8.feed(v) {
                    return false;
                }
                i += 3;
                continue;
            }
            b';' if !opts.allow_semicolons => return false,
            _ if (is_unreserved(b) || is_raw_reserved(b)) && utf8.done() => {}
            _ => return false,
        }
        i += 1;
    }
    let last = &raw[seg_start..];
    utf8.done() && !is_dot(last) && !is_dot_with_params(last)
}

fn hex_upper_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The reference algorithm: decode each segment, then resolve dot segments and merge slashes
/// in one pass over segments, as Kong's `normalize(uri, true)` does (empty segments are
/// dropped before `..` pops, so `/a//../b` is `/b`).
fn rewrite(raw: &[u8], opts: Options) -> Result<String, PathError> {
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut out: Vec<u8> = Vec::with_capacity(raw.len() + 8);
    let mut seg: Vec<u8> = Vec::with_capacity(64);
    let mut utf8 = Utf8::START;
    let mut segments = raw[1..].split(|&b| b == b'/').peekable();
    let mut trailing_slash = false;
    while let Some(raw_seg) = segments.next() {
        let is_last = segments.peek().is_none();
        seg.clear();
        decode_segment(raw_seg, opts, &mut utf8, &mut seg)?;
        if !utf8.done() {
            // A multi-byte sequence may not straddle a `/`.
            return Err(PathError::InvalidUtf8);
        }
        if is_dot_with_params(&seg) {
            return Err(PathError::DotSegmentWithParams);
        }
        if seg.is_empty() || seg == b"." {
            trailing_slash = is_last;
        } else if seg == b".." {
            // `..` above the root stays at the root.
            let cut = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
            out.truncate(cut);
            trailing_slash = is_last;
        } else {
            out.push(b'/');
            out.extend_from_slice(&seg);
            trailing_slash = false;
        }
    }
    if out.is_empty() || trailing_slash {
        out.push(b'/');
    }
    // Every byte pushed is ASCII (non-ASCII is percent-encoded), so this cannot fail; map it to
    // an error rather than panic all the same.
    String::from_utf8(out).map_err(|_| PathError::InvalidUtf8)
}

/// Decodes one segment (no `/` inside) into `out`: unreserved escapes decoded, other escapes
/// uppercased, raw "other" and non-ASCII bytes percent-encoded.
fn decode_segment(
    raw: &[u8],
    opts: Options,
    utf8: &mut Utf8,
    out: &mut Vec<u8>,
) -> Result<(), PathError> {
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' {
            let (Some(h), Some(l)) = (
                raw.get(i + 1).copied().and_then(hex_val),
                raw.get(i + 2).copied().and_then(hex_val),
            ) else {
                return Err(PathError::MalformedEscape);
            };
            let v = h << 4 | l;
            if v < 0x20 || v == 0x7F {
                return Err(PathError::EncodedControlChar);
            }
            if (v == b'/' || v == b'\\') && !opts.allow_encoded_slashes {
                return Err(PathError::EncodedSlash);
            }
            if !utf8.feed(v) {
                return Err(PathError::InvalidUtf8);
            }
            if is_unreserved(v) {
                out.push(v);
            } else {
                push_escape(out, v);
            }
            i += 3;
            continue;
        }
        match b {
            0x00..=0x1F | 0x7F => return Err(PathError::ControlChar),
            b' ' => return Err(PathError::Space),
            b'#' => return Err(PathError::Fragment),
            b'?' => return Err(PathError::Query),
            b'\\' => return Err(PathError::Backslash),
            b';' if !opts.allow_semicolons => return Err(PathError::Semicolon),
            _ => {}
        }
        if !utf8.feed(b) {
            return Err(PathError::InvalidUtf8);
        }
        if is_unreserved(b) || is_raw_reserved(b) {
            out.push(b);
        } else {
            push_escape(out, b);
        }
        i += 1;
    }
    Ok(())
}

fn push_escape(out: &mut Vec<u8>, v: u8) {
    out.push(b'%');
    out.push(HEX_UPPER[usize::from(v >> 4)]);
    out.push(HEX_UPPER[usize::from(v & 0xF)]);
}

#[cfg(test)]
mod tests;
