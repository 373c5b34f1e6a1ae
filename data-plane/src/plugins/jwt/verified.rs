//! Tokens whose signature this plugin instance has already verified, so that a client sending
//! the same token again (the normal case: a token lives for minutes or hours) skips base64,
//! JSON and the signature check. Envoy's jwt_authn keeps such a cache too (`jwt_cache_config`).
//!
//! What is remembered is only what the signature proved, about one snapshot: the token's exact
//! text, the key of the secret that verified it, and its `exp`/`nbf`. Everything that depends
//! on the clock (`claims_to_verify`, `maximum_expiration`) is checked again on every request,
//! and the consumer and secret are looked up again in the current snapshot. A cache belongs to
//! one plugin instance, and instances are rebuilt with every config, so a rotated secret or a
//! deleted consumer is never served from it; [`super::keys::Keys`] also checks the snapshot.
//!
//! The cache is direct-mapped: [`SLOTS`] slots, each holding at most one token, read without a
//! lock (`arc-swap`). A newer token takes over its slot. Tokens longer than
//! [`MAX_CACHED_LEN`] are not kept, which bounds the memory to about `SLOTS × MAX_CACHED_LEN`
//! per instance, and only verified tokens are kept, so a client without a secret cannot fill
//! it. A presented token is compared with the cached one in constant time.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

/// Slots per plugin instance.
pub const SLOTS: usize = 512;

/// Longer tokens are verified every time.
pub const MAX_CACHED_LEN: usize = 4096;

/// How many trailing bytes of a token choose its slot: the end of the signature, which differs
/// between any two valid tokens.
const HASHED_TAIL: usize = 32;

/// What a verified token proved.
#[derive(Debug)]
pub struct Verified {
    token: Box<str>,
    /// The key (`jwt_secrets.key`) of the secret whose signature it carries.
    pub key: Box<str>,
    /// Its `exp` and `nbf` claims, when they are JSON numbers.
    pub exp: Option<f64>,
    pub nbf: Option<f64>,
}

/// The verified tokens of one plugin instance and snapshot.
#[derive(Debug)]
pub struct Cache {
    slots: Box<[ArcSwapOption<Verified>]>,
    hasher: RandomState,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            slots: (0..SLOTS).map(|_| ArcSwapOption::empty()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Cache {
    /// Calls `f` with what `token` proved when it was verified before.
    pub fn with<R>(&self, token: &str, f: impl FnOnce(&Verified) -> R) -> Option<R> {
        let slot = self.slot(token)?;
        let cached = slot.load();
        let cached = cached.as_deref()?;
        constant_time_eq(cached.token.as_bytes(), token.as_bytes()).then(|| f(cached))
    }

    /// Remembers that `token` was signed by the secret `key`.
    pub fn remember(&self, token: &str, key: &str, exp: Option<f64>, nbf: Option<f64>) {
        let Some(slot) = self.slot(token) else {
            return;
        };
        slot.store(Some(Arc::new(Verified {
            token: token.into(),
            key: key.into(),
            exp,
            nbf,
        })));
    }

    fn slot(&self, token: &str) -> Option<&ArcSwapOption<Verified>> {
        if token.len() > MAX_CACHED_LEN {
            return None;
        }
        let tail = &token.as_bytes()[token.len().saturating_sub(HASHED_TAIL)..];
        let i = self.hasher.hash_one(tail) as usize % SLOTS;
        Some(&self.slots[i])
    }
}

/// Whether `a` and `b` are equal, in a time that depends only on their lengths. Word by word:
/// `subtle`'s byte-wise comparison cost ten instructions a byte, more than the rest of a cache
/// hit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (wa, wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (wa.remainder(), wb.remainder());
    let mut diff = 0u64;
    for (x, y) in wa.zip(wb) {
        let x = u64::from_ne_bytes(x.try_into().unwrap_or_default());
        let y = u64::from_ne_bytes(y.try_into().unwrap_or_default());
        diff |= x ^ y;
    }
    for (x, y) in ra.iter().zip(rb) {
        diff |= u64::from(x ^ y);
    }
    // Keeps the compiler from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_the_exact_token() {
        let cache = Cache::default();
        let token = "aaaa.bbbb.signature-of-some-length-0123456789";
        assert!(cache.with(token, |_| ()).is_none());
        cache.remember(token, "iss-1", Some(10.0), None);
        let got = cache.with(token, |v| (v.key.to_string(), v.exp, v.nbf));
        assert_eq!(got, Some(("iss-1".to_owned(), Some(10.0), None)));
        // Same tail (so the same slot), different head: not the cached token.
        let other = "xaaa.bbbb.signature-of-some-length-0123456789";
        assert!(cache.with(other, |_| ()).is_none());
        // A prefix or extension of it is not it either.
        assert!(cache.with(&token[1..], |_| ()).is_none());
        assert!(cache.with(&format!("a{token}"), |_| ()).is_none());
    }

    #[test]
    fn compares_every_byte() {
        let a: Vec<u8> = (0..=40).collect();
        for n in [0, 1, 7, 8, 9, 16, 41] {
            assert!(constant_time_eq(&a[..n], &a[..n]));
            for i in 0..n {
                let mut b = a[..n].to_vec();
                b[i] ^= 0x80;
                assert!(!constant_time_eq(&a[..n], &b), "n {n}, byte {i}");
            }
        }
        assert!(!constant_time_eq(&a[..8], &a[..9]));
    }

    #[test]
    fn long_tokens_are_not_kept() {
        let cache = Cache::default();
        let long = "x".repeat(MAX_CACHED_LEN + 1);
        cache.remember(&long, "k", None, None);
        assert!(cache.with(&long, |_| ()).is_none());
        let fits = "x".repeat(MAX_CACHED_LEN);
        cache.remember(&fits, "k", None, None);
        assert!(cache.with(&fits, |_| ()).is_some());
    }

    #[test]
    fn a_newer_token_takes_over_its_slot() {
        let cache = Cache::default();
        // Two tokens with the same last 32 bytes share a slot.
        let tail = "t".repeat(HASHED_TAIL);
        let (a, b) = (format!("a.{tail}"), format!("b.{tail}"));
        cache.remember(&a, "ka", None, None);
        cache.remember(&b, "kb", None, None);
        assert!(cache.with(&a, |_| ()).is_none());
        assert_eq!(cache.with(&b, |v| v.key.to_string()).as_deref(), Some("kb"));
    }
}
