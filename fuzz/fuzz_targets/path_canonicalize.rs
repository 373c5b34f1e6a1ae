//! Path canonicalisation on arbitrary paths, with and without `;` allowed: it never panics,
//! and what it returns is canonical: taken as is by the fast path (so canonicalising is
//! idempotent), absolute, with no dot segment and no empty segment left.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use portico_common::path::{canonicalize_with, Options};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    for allow_semicolons in [false, true] {
        let opts = Options {
            allow_semicolons,
            ..Options::default()
        };
        let Ok(out) = canonicalize_with(raw, opts) else {
            continue;
        };
        match canonicalize_with(&out, opts) {
            Ok(Cow::Borrowed(again)) => assert_eq!(again, &*out, "not idempotent for {raw:?}"),
            other => panic!("{raw:?} -> {out:?}, which is not canonical: {other:?}"),
        }
        assert!(out.starts_with('/'), "{raw:?} -> {out:?}");
        for segment in out.split('/').skip(1) {
            assert!(segment != "." && segment != "..", "{raw:?} -> {out:?}");
        }
        assert!(!out.contains("//"), "{raw:?} -> {out:?}");
    }
});
