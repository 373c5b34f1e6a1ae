//! Route regexes, compiled with the regex crate's parser and NFA compiler and searched with its
//! bounded backtracker (a PikeVM for haystacks too long for it), without the `regex::Regex`
//! wrapper.
//!
//! Why not `regex::Regex`: its meta engine keeps, per regex, a reverse NFA, a one-pass DFA,
//! a 3.6 KB strategy object and a cache pool (13 KB before the first search), then a lazy-DFA
//! cache of about 24 KB per regex per thread that searched it. With 2,000 regex routes that is
//! 26 MB at rest and tens of MB more once traffic reaches them. Here a regex is its forward NFA
//! (about 2.4 KB for `^/api/v1/items/\d+$`) and the search scratch space is one cache per thread
//! shared by every regex.
//!
//! Semantics are the regex crate's: the same syntax configuration (Unicode on, UTF-8 for paths,
//! bytes for header values), leftmost-first, the same NFA size limit, and the same error text.
//! Only the engine that runs the NFA differs, and every engine of the crate reports the same
//! leftmost-first match.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use regex_automata::nfa::thompson::backtrack::{self, BoundedBacktracker};
use regex_automata::nfa::thompson::pikevm::{self, PikeVM};
use regex_automata::nfa::thompson::{self, WhichCaptures};
use regex_automata::util::syntax;
use regex_automata::Input;

/// `regex::RegexBuilder`'s default `size_limit`.
const NFA_SIZE_LIMIT: usize = 10 * (1 << 20);

/// A compiled regex; clones share it (an `Arc`).
#[derive(Clone)]
pub(super) struct Regex(Arc<Inner>);

struct Inner {
    /// The text this regex was compiled from, as configured (the cache key when recompiling).
    source: Box<str>,
    backtrack: BoundedBacktracker,
    pikevm: PikeVM,
}

impl fmt::Debug for Regex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Regex").field(&self.0.source).finish()
    }
}

/// What a regex searches: `&str` (as `regex::Regex`) or bytes (as `regex::bytes::Regex`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Str,
    Bytes,
}

/// Compiles regexes; keep one for a batch (its NFA compiler reuses its scratch tables, which
/// are large for Unicode classes such as `\d`).
pub(super) struct Compiler {
    str_nfa: thompson::Compiler,
    bytes_nfa: thompson::Compiler,
}

impl Compiler {
    pub fn new() -> Compiler {
        let nfa = |utf8: bool| {
            let mut c = thompson::Compiler::new();
            c.configure(
                thompson::Config::new()
                    .utf8(utf8)
                    .nfa_size_limit(Some(NFA_SIZE_LIMIT))
                    .shrink(false)
                    // Only the overall match is ever asked for.
                    .which_captures(WhichCaptures::Implicit),
            );
            c
        };
        Compiler {
            str_nfa: nfa(true),
            bytes_nfa: nfa(false),
        }
    }

    /// Compiles `pattern` as `regex::Regex::new` (`Mode::Str`) or `regex::bytes::Regex::new`
    /// (`Mode::Bytes`) would; `source` is kept as the regex's cache key. The error reads as the
    /// regex crate's.
    pub fn compile(&self, source: &str, pattern: &str, mode: Mode) -> Result<Regex, String> {
        let utf8 = mode == Mode::Str;
        let hir = syntax::parse_with(pattern, &syntax::Config::new().utf8(utf8))
            .map_err(|e| e.to_string())?;
        let nfa = match mode {
            Mode::Str => &self.str_nfa,
            Mode::Bytes => &self.bytes_nfa,
        }
        .build_from_hir(&hir)
        .map_err(|e| match e.size_limit() {
            Some(limit) => format!("Compiled regex exceeds size limit of {limit} bytes."),
            None => e.to_string(),
        })?;
        let backtrack = BoundedBacktracker::builder()
            .build_from_nfa(nfa.clone())
            .map_err(|e| e.to_string())?;
        let pikevm = PikeVM::builder()
            .build_from_nfa(nfa)
            .map_err(|e| e.to_string())?;
        Ok(Regex(Arc::new(Inner {
            source: source.into(),
            backtrack,
            pikevm,
        })))
    }
}

/// Search scratch space, one per thread, reset for whichever regex runs.
#[derive(Default)]
struct Caches {
    backtrack: Option<backtrack::Cache>,
    pikevm: Option<pikevm::Cache>,
}

thread_local! {
    static CACHES: RefCell<Caches> = RefCell::new(Caches::default());
}

impl Regex {
    /// The text this regex was compiled from.
    pub fn source(&self) -> &str {
        &self.0.source
    }

    /// Whether two values are the same compiled regex (not merely equal patterns).
    #[cfg(test)]
    pub fn ptr_eq(a: &Regex, b: &Regex) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }

    /// The leftmost-first match in `haystack`, as `regex::Regex::find`.
    pub fn find(&self, haystack: &str) -> Option<(usize, usize)> {
        self.search(Input::new(haystack))
            .map(|m| (m.start(), m.end()))
    }

    /// Whether the regex matches anywhere in `haystack`, as `regex::bytes::Regex::is_match`.
    pub fn is_match(&self, haystack: &[u8]) -> bool {
        self.search(Input::new(haystack).earliest(true)).is_some()
    }

    fn search(&self, input: Input<'_>) -> Option<regex_automata::Match> {
        let run = |caches: &mut Caches| self.search_with(caches, &input);
        CACHES
            .try_with(|c| match c.try_borrow_mut() {
                Ok(mut caches) => run(&mut caches),
                Err(_) => run(&mut Caches::default()),
            })
            .unwrap_or_else(|_| run(&mut Caches::default()))
    }

    fn search_with(&self, caches: &mut Caches, input: &Input<'_>) -> Option<regex_automata::Match> {
        let re = &*self.0;
        if input.haystack().len() <= re.backtrack.max_haystack_len() {
            let cache = caches
                .backtrack
                .get_or_insert_with(|| re.backtrack.create_cache());
            cache.reset(&re.backtrack);
            if let Ok(m) = re.backtrack.try_find(cache, input.clone()) {
                return m;
            }
        }
        let cache = caches
            .pikevm
            .get_or_insert_with(|| re.pikevm.create_cache());
        cache.reset(&re.pikevm);
        re.pikevm.find(cache, input.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::{Compiler, Mode};

    /// The same answers as the regex crate, on patterns and haystacks that exercise anchors,
    /// Unicode classes, greediness, alternation and empty matches.
    #[test]
    fn agrees_with_the_regex_crate() {
        let c = Compiler::new();
        let patterns = [
            r"^/api/v1/items/\d+$",
            r"^/a|/ab",
            r"^/(?P<x>a+?)b*",
            r"^/users/(?<id>[^/]+)/?",
            r"^",
            r"^/é+\w*",
            r"^/x(?:y|yz)",
            r"^.*",
        ];
        let haystacks = [
            "/api/v1/items/42",
            "/api/v1/items/٣٤",
            "/api/v1/items/4x",
            "/abbb",
            "/ab",
            "/users/bob/rest",
            "/ééé日本",
            "/xyz",
            "",
            "/",
        ];
        for p in patterns {
            let ours = c.compile(p, p, Mode::Str).expect("compiles");
            let theirs = regex::Regex::new(p).expect("compiles");
            for h in haystacks {
                assert_eq!(
                    ours.find(h),
                    theirs.find(h).map(|m| (m.start(), m.end())),
                    "{p} on {h}"
                );
            }
        }
        let long = format!("/api/v1/items/{}", "1".repeat(200_000));
        let ours = c
            .compile("d", r"^/api/v1/items/\d+$", Mode::Str)
            .expect("compiles");
        assert_eq!(ours.find(&long), Some((0, long.len())), "PikeVM fallback");

        for (p, h, want) in [
            ("beta", "x-beta-1", true),
            ("^v[0-9]+$", "v12", true),
            ("^v[0-9]+$", "v12a", false),
            ("\\xff", "a", false),
        ] {
            let ours = c.compile(p, p, Mode::Bytes).expect("compiles");
            let theirs = regex::bytes::Regex::new(p).expect("compiles");
            assert_eq!(ours.is_match(h.as_bytes()), want, "{p} on {h}");
            assert_eq!(theirs.is_match(h.as_bytes()), want, "{p} on {h}");
        }
    }

    #[test]
    fn errors_read_as_the_regex_crate() {
        let c = Compiler::new();
        for p in ["^/bad(", "^/x{99999999}", "^/(?<n>a)(?<n>b)"] {
            let ours = c.compile(p, p, Mode::Str).expect_err("must fail");
            let theirs = regex::Regex::new(p).expect_err("must fail").to_string();
            assert_eq!(ours, theirs, "{p}");
        }
    }
}
