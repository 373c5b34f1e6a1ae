//! Tests for request-path canonicalisation: SECURITY.md §1.5's path-only corpus, Kong's
//! normalisation cases, an exhaustive single-escape sweep, and fast-path/slow-path agreement.

use super::*;

fn ok(raw: &str) -> String {
    ok_with(raw, Options::default())
}

/// Kong's handling of `;` (kept as an ordinary character), `--allow-path-semicolons`.
const KONG: Options = Options {
    allow_encoded_slashes: false,
    allow_semicolons: true,
};

fn ok_with(raw: &str, opts: Options) -> String {
    match canonicalize_with(raw, opts) {
        Ok(c) => c.into_owned(),
        Err(e) => panic!("{raw:?} rejected: {e}"),
    }
}

#[test]
fn canonical_paths_are_borrowed() {
    for p in [
        "/",
        "/a",
        "/a/b",
        "/a/b/",
        "/api/v1/users/42",
        "/%C3%A9t%C3%A9",
        "/a;b=c/d",
        "/%25",
        "/%3B/%20",
        "/!$&'()*+,;=:@[]",
        "/...",
        "/a..b/.c/c.",
    ] {
        let opts = if p.contains(';') {
            assert_eq!(canonicalize(p), Err(PathError::Semicolon), "{p:?}");
            KONG
        } else {
            Options::default()
        };
        assert!(
            matches!(canonicalize_with(p, opts), Ok(Cow::Borrowed(b)) if b == p),
            "{p:?} should be borrowed unchanged"
        );
    }
}

#[test]
fn unreserved_escapes_are_decoded_once() {
    assert_eq!(ok("/%41%62%2d%2E%5f%7e%30"), "/Ab-._~0");
    // `%25` is not unreserved: double encoding stays literal.
    assert_eq!(ok("/%252e%252e/x"), "/%252e%252e/x");
    assert_eq!(ok("/%2541"), "/%2541");
}

#[test]
fn other_escapes_get_uppercase_hex() {
    assert_eq!(ok("/%3b"), "/%3B");
    assert_eq!(ok("/%c3%a9"), "/%C3%A9");
    assert_eq!(ok("/a%20b"), "/a%20b");
    assert_eq!(ok("/%7b%7D"), "/%7B%7D");
}

#[test]
fn raw_others_and_non_ascii_are_encoded() {
    assert_eq!(ok("/caf\u{e9}"), "/caf%C3%A9");
    assert_eq!(ok("/{x}|\"<>^`"), "/%7Bx%7D%7C%22%3C%3E%5E%60");
    // Encoding and decoding meet at the same spelling.
    assert_eq!(ok("/caf\u{e9}"), ok("/caf%c3%a9"));
}

#[test]
fn rejections() {
    use PathError::*;
    let cases: &[(&str, PathError)] = &[
        ("", NotAbsolute),
        ("a/b", NotAbsolute),
        ("*", NotAbsolute),
        ("http://gw/api", NotAbsolute),
        ("/a\0b", ControlChar),
        ("/a\tb", ControlChar),
        ("/a\rb", ControlChar),
        ("/a\x7fb", ControlChar),
        ("/a%00b", EncodedControlChar),
        ("/a%0ab", EncodedControlChar),
        ("/a%0D%0Ab", EncodedControlChar),
        ("/a%1f", EncodedControlChar),
        ("/a%7F", EncodedControlChar),
        ("/a b", Space),
        ("/a#b", Fragment),
        ("/a?b", Query),
        ("/a\\b", Backslash),
        ("/a%2fb", EncodedSlash),
        ("/a%2Fb", EncodedSlash),
        ("/a%5cb", EncodedSlash),
        ("/a%5C", EncodedSlash),
        ("/%", MalformedEscape),
        ("/a%", MalformedEscape),
        ("/a%2", MalformedEscape),
        ("/%g1", MalformedEscape),
        ("/%1g", MalformedEscape),
        ("/%u002e", MalformedEscape),
        ("/%%41", MalformedEscape),
        ("/%c0%ae", InvalidUtf8),
        ("/%c0%af", InvalidUtf8),
        ("/%e0%80%ae", InvalidUtf8),
        ("/%f0%80%80%af", InvalidUtf8),
        ("/%ed%a0%80", InvalidUtf8),
        ("/%f4%90%80%80", InvalidUtf8),
        ("/%ff", InvalidUtf8),
        ("/%c3", InvalidUtf8),
        ("/%c3a", InvalidUtf8),
        ("/%c3/%a9", InvalidUtf8),
        ("/%c3\u{e9}", InvalidUtf8),
        ("/%a9", InvalidUtf8),
        ("/..;", DotSegmentWithParams),
        ("/a/..;/b", DotSegmentWithParams),
        ("/a/..;foo=bar/b", DotSegmentWithParams),
        ("/a/.;/b", DotSegmentWithParams),
        ("/a/.;x", DotSegmentWithParams),
        ("/a/%2e%2e;/b", DotSegmentWithParams),
        ("/a/.%2E;x=y/b", DotSegmentWithParams),
    ];
    for (raw, want) in cases {
        if raw.contains(';') {
            // Refused for the `;` by default; with `;` allowed, for what it hides.
            assert_eq!(canonicalize(raw), Err(Semicolon), "{raw:?}");
            assert_eq!(canonicalize_with(raw, KONG), Err(*want), "{raw:?}");
        } else {
            assert_eq!(canonicalize(raw), Err(*want), "{raw:?}");
        }
    }
}

#[test]
fn dot_segments_are_removed() {
    // RFC 3986 §5.2.4 and §5.4 examples, as absolute paths.
    assert_eq!(ok("/a/b/c/./../../g"), "/a/g");
    assert_eq!(ok("/mid/content=5/../6"), "/mid/6");
    assert_eq!(ok("/a/b/c/../../../g"), "/g");
    assert_eq!(ok("/a/b/c/../../../../g"), "/g");
    assert_eq!(ok("/.."), "/");
    assert_eq!(ok("/."), "/");
    assert_eq!(ok("/../a"), "/a");
    assert_eq!(ok("/a/.."), "/");
    assert_eq!(ok("/a/b/.."), "/a/");
    assert_eq!(ok("/a/."), "/a/");
    assert_eq!(ok("/a/./b/"), "/a/b/");
    assert_eq!(ok("/%2e%2e/a"), "/a");
    assert_eq!(ok("/a/%2E./b"), "/b");
    assert_eq!(ok("/a/.%2e/"), "/");
    assert_eq!(ok("/a/%2e/b"), "/a/b");
    // Not dot segments.
    assert_eq!(ok("/.../a"), "/.../a");
    assert_eq!(ok("/a./.b/..c"), "/a./.b/..c");
    assert_eq!(ok_with("/a/;/b", KONG), "/a/;/b");
    assert_eq!(ok_with("/a/...;x", KONG), "/a/...;x");
}

#[test]
fn slashes_are_merged() {
    assert_eq!(ok("//"), "/");
    assert_eq!(ok("//a///b//"), "/a/b/");
    assert_eq!(ok("/a//b"), "/a/b");
    // As Kong's normalize: empty segments vanish before `..` pops.
    assert_eq!(ok("/a//../b"), "/b");
    assert_eq!(ok("/a/b//.."), "/a/");
}

#[test]
fn kong_fixture_requests() {
    // Rows of K:spec/fixtures/router_path_handling_tests.lua quoted in KONG.md §2.3: the
    // request path is normalised first, then `/route` is stripped and `./`/`../` sanitised.
    assert_eq!(ok("/route./req"), "/route./req");
    assert_eq!(ok("/route%2E%2E/req"), "/route../req");
    assert_eq!(ok("/route%2e%2e/req"), "/route../req");
    // Kong's PR #9024 notice: `/%2e./` is the same as `/../`.
    assert_eq!(ok("/a/%2e./b"), "/b");
}

/// SECURITY.md §1.5: route `/api` plus a rule on `/api/internal`. Every path-only input must be
/// rejected or canonicalise onto the rule's prefix.
#[test]
fn security_corpus_cannot_dodge_the_internal_rule() {
    let must_hit_rule_or_400 = [
        "/api/public/../internal/x",
        "/api/public/%2e%2e/internal/x",
        "/api/public/%2E%2E/internal/x",
        "/api/public/.%2e/internal/x",
        "/api/public/..;/internal/x",
        "/api/public/..;x=y/internal/x",
        "/api/public/%c0%ae%c0%ae/internal/x",
        "/api/public/%e0%80%ae%e0%80%ae/internal/x",
        "//api/internal/x",
        "/api//internal/x",
        "///api///internal///x",
        "/api%2finternal/x",
        "/api%2Finternal/x",
        "/api%5cinternal/x",
        "/api\\internal\\x",
        "/api/%69nternal/x",
        "/api/%69%6E%74%65%72%6E%61%6C/x",
        "/api/internal%00/x",
        "/api/public#/../internal/x",
        "/api/./internal/x",
        "/api/public/./../internal/x",
        "/x/../api/internal/x",
        "/../api/internal/x",
    ];
    for raw in must_hit_rule_or_400 {
        match canonicalize(raw) {
            Err(_) => {}
            Ok(c) => assert!(c.starts_with("/api/internal"), "{raw:?} -> {c:?} dodges"),
        }
    }
    // Double encoding stays literal: `%252e%252e` is a directory named `%2e%2e` upstream.
    assert_eq!(
        ok("/api/public/%252e%252e/internal/x"),
        "/api/public/%252e%252e/internal/x"
    );
    assert_eq!(ok("/api/%25c0%25ae"), "/api/%25c0%25ae");
    // Case is kept (matching is exact by default, SECURITY.md §1.4 item 8).
    assert_eq!(ok("/Admin"), "/Admin");
}

#[test]
fn semicolon_policy() {
    // Default: `;` is refused. An upstream that strips matrix parameters (Tomcat) would read
    // `/api;/internal/x` as `/api/internal/x` behind a rule that matched `/api`.
    assert_eq!(canonicalize("/api;/internal/x"), Err(PathError::Semicolon));
    assert_eq!(canonicalize("/a;b"), Err(PathError::Semicolon));
    assert_eq!(canonicalize("/a/..;/b"), Err(PathError::Semicolon));
    // An encoded `;` is not a parameter separator and stays allowed.
    assert_eq!(canonicalize("/a%3bb").as_deref(), Ok("/a%3Bb"));
    // Kong's behaviour, for upstreams that use matrix parameters and do not strip them: `;` in
    // a non-dot segment is an ordinary sub-delim and is forwarded as is.
    let kong = Options {
        allow_semicolons: true,
        ..Options::default()
    };
    assert_eq!(
        canonicalize_with("/api;/internal/x", kong).as_deref(),
        Ok("/api;/internal/x")
    );
    assert!(matches!(
        canonicalize_with("/items;v=2", kong),
        Ok(Cow::Borrowed(_))
    ));
    // Dot segments hiding behind parameters stay refused.
    assert_eq!(
        canonicalize_with("/a/..;/b", kong),
        Err(PathError::DotSegmentWithParams)
    );
}

#[test]
fn encoded_slash_option_keeps_them_opaque() {
    let lax = Options {
        allow_encoded_slashes: true,
        ..Options::default()
    };
    assert_eq!(
        canonicalize_with("/a%2fb/..%2f", lax).as_deref(),
        Ok("/a%2Fb/..%2F")
    );
    assert_eq!(canonicalize_with("/a%5c", lax).as_deref(), Ok("/a%5C"));
    assert!(matches!(
        canonicalize_with("/a%2Fb", lax),
        Ok(Cow::Borrowed(_))
    ));
}

/// Every single escape `%00`..`%FF`, in both hex cases, is decoded (unreserved), kept with
/// uppercase hex, or rejected - never anything else.
#[test]
fn exhaustive_single_escape_sweep() {
    for v in 0u8..=255 {
        for spelled in [format!("%{v:02x}"), format!("%{v:02X}")] {
            let raw = format!("/a{spelled}b");
            let got = canonicalize(&raw);
            let want = if v < 0x20 || v == 0x7F {
                Err(PathError::EncodedControlChar)
            } else if v == b'/' || v == b'\\' {
                Err(PathError::EncodedSlash)
            } else if v >= 0x80 {
                // A lone byte is never a complete UTF-8 sequence.
                Err(PathError::InvalidUtf8)
            } else if is_unreserved(v) {
                Ok(format!("/a{}b", char::from(v)))
            } else {
                Ok(format!("/a%{v:02X}b"))
            };
            assert_eq!(got.map(Cow::into_owned), want, "{raw:?}");
        }
    }
}

#[test]
fn idempotent_on_corpus() {
    let corpus = [
        "/a/b/c/./../../g",
        "/%41%2e%2E/..//x/%c3%a9/caf\u{e9}",
        "//a///b//",
        "/a/b/..",
        "/route%2E%2E/req",
        "/{}/%7b",
        "/a;b/c;d=e/",
    ];
    for raw in corpus {
        let once = ok_with(raw, KONG);
        assert!(
            matches!(canonicalize_with(&once, KONG), Ok(Cow::Borrowed(b)) if b == once),
            "{raw:?} -> {once:?} is not a fixed point"
        );
    }
}

/// Every string over a small adversarial alphabet, up to 5 symbols after the leading `/`:
/// the fast path only borrows what the reference rewrite leaves unchanged, the reference's
/// output is accepted by the fast path (so it is a fixed point), and both agree on errors.
#[test]
fn fast_path_agrees_with_reference_exhaustively() {
    const ALPHABET: [&str; 12] = [
        "/", ".", "a", "%", "2", "e", "E", ";", "F", "C", "\u{e9}", "{",
    ];
    let mut stack: Vec<String> = vec!["/".to_owned()];
    let mut checked = 0usize;
    while let Some(s) = stack.pop() {
        check_agreement(&s);
        checked += 1;
        // Count symbols, not bytes (é is two bytes).
        if s.chars().count() <= 5 {
            for sym in ALPHABET {
                stack.push(format!("{s}{sym}"));
            }
        }
    }
    assert!(checked > 200_000, "only {checked} strings checked");
}

fn check_agreement(s: &str) {
    check_agreement_with(s, Options::default());
    check_agreement_with(s, KONG);
}

fn check_agreement_with(s: &str, opts: Options) {
    let reference = rewrite(s.as_bytes(), opts);
    if is_canonical(s.as_bytes(), opts) {
        assert_eq!(reference.as_deref(), Ok(s), "fast path borrowed {s:?}");
    }
    match (&reference, canonicalize_with(s, opts)) {
        (Ok(r), Ok(c)) => {
            assert_eq!(r, &c, "{s:?}");
            assert!(
                is_canonical(r.as_bytes(), opts),
                "{s:?} -> {r:?} not a fixed point"
            );
        }
        (Err(r), Err(c)) => assert_eq!(*r, c, "{s:?}"),
        (r, c) => panic!("{s:?}: reference {r:?} vs canonicalize {c:?}"),
    }
}
