//! `policy: local`: counters in this data plane's memory, shared by every request it serves,
//! exact under any concurrency.
//!
//! Each counted identity (route, service, identifier) has, per period, two slots indexed by
//! the parity of the window number. A slot packs `window number (low 32 bits) << 32 | count`
//! in one `AtomicU64`, so moving to a new window and counting in it are one compare-and-swap:
//! no lock is held while counting, and the previous window's count stays readable for the
//! sliding window until the window after next reuses the slot.
//!
//! Exactness: a request first increments, then checks. Of N concurrent requests against a
//! limit L, the first L increments see a count ≤ L and the others a count > L, whatever the
//! interleaving. A refused request takes its increments back, so only admitted requests count
//! (Kong does not count refused ones either) and a client hammering a closed window does not
//! extend its own lockout into a sliding window's next window.
//!
//! The map is sharded (by [`shard_of`]); a shard's lock is taken for reading on the request path,
//! and for writing only to insert a new identity or to sweep the shard's expired identities (at
//! most every [`SWEEP_EVERY_SECS`]), which bounds memory to the identities seen within two windows
//! of the longest configured period.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use super::window::{nominal_secs, sliding, Window};
use super::{Check, Counted};

const SHARDS: usize = 64;
// [`shard_of`] takes the top bits of a hash.
const _: () = assert!(SHARDS.is_power_of_two());

/// How often each shard drops the identities whose windows are all over.
pub const SWEEP_EVERY_SECS: u64 = 10;

/// The counters of one plugin instance (and of its successors across config swaps).
#[derive(Debug)]
pub struct LocalStore {
    shards: Box<[Shard]>,
}

#[derive(Debug, Default)]
struct Shard {
    map: RwLock<HashMap<Box<str>, Entry>>,
    /// Unix seconds of the next sweep.
    next_sweep: AtomicU64,
}

#[derive(Debug, Default)]
struct Entry {
    /// Per period, per window parity: `window << 32 | count`.
    slots: [[AtomicU64; 2]; 6],
    /// Unix seconds after which no window of this entry matters any more.
    expires: AtomicU64,
}

impl Default for LocalStore {
    fn default() -> Self {
        LocalStore {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

impl LocalStore {
    /// Counts one request of `key` in every window of `checks`; returns each period's usage
    /// including this request, and whether every limit held (else nothing was counted).
    pub fn hit(&self, key: &str, checks: &[Check], sliding_window: bool, now_s: u64) -> Counted {
        let shard = &self.shards[shard_of(key)];
        self.maybe_sweep(shard, now_s);
        let expires = now_s
            + checks
                .iter()
                .map(|c| 2 * nominal_secs(c.period))
                .max()
                .unwrap_or(0);
        {
            let map = shard.map.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = map.get(key) {
                entry.expires.fetch_max(expires, Ordering::Relaxed);
                return count(entry, checks, sliding_window);
            }
        }
        let mut map = shard.map.write().unwrap_or_else(PoisonError::into_inner);
        let entry = map.entry(Box::from(key)).or_default();
        entry.expires.fetch_max(expires, Ordering::Relaxed);
        count(entry, checks, sliding_window)
    }

    /// How many identities are held (tests check that expired ones go).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.map.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Whether no identity is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every expired identity now, whatever the sweep schedule (tests).
    pub fn sweep_all(&self, now_s: u64) {
        for shard in self.shards.iter() {
            sweep(shard, now_s);
        }
    }

    fn maybe_sweep(&self, shard: &Shard, now_s: u64) {
        let due = shard.next_sweep.load(Ordering::Relaxed);
        // Only the request that wins the swap sweeps; the others go on counting.
        if now_s >= due
            && shard
                .next_sweep
                .compare_exchange(
                    due,
                    now_s + SWEEP_EVERY_SECS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            sweep(shard, now_s);
        }
    }
}

fn sweep(shard: &Shard, now_s: u64) {
    let mut map = shard.map.write().unwrap_or_else(PoisonError::into_inner);
    map.retain(|_, e| e.expires.load(Ordering::Relaxed) > now_s);
}

/// The shard of `key`: a multiply-rotate fold over its 8-byte words (FxHash's step). Keys only
/// spread load here; each shard's map still hashes them with SipHash, so keys crafted to share
/// a shard cost contention on that shard's lock, never a degenerate map. One SipHash of the
/// ~110-byte key was a tenth of the plugin's cost.
fn shard_of(key: &str) -> usize {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let words = key.as_bytes().chunks(8);
    let h = words.fold(key.len() as u64, |h, w| {
        let mut buf = [0u8; 8];
        buf[..w.len()].copy_from_slice(w);
        (h.rotate_left(5) ^ u64::from_le_bytes(buf)).wrapping_mul(K)
    });
    // The high bits are the best mixed.
    (h >> (u64::BITS - SHARDS.trailing_zeros())) as usize
}

const COUNT_MASK: u64 = 0xFFFF_FFFF;

fn tag(window: &Window) -> u64 {
    window.index & COUNT_MASK
}

/// Increments every period's current window, then checks; on a refusal, takes them back.
fn count(entry: &Entry, checks: &[Check], sliding_window: bool) -> Counted {
    let mut counted = Counted::default();
    for c in checks {
        let slots = &entry.slots[c.period.index()];
        let t = tag(&c.window);
        let cur = &slots[(c.window.index & 1) as usize];
        let after = match cur.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            Some(if v >> 32 == t {
                // Saturate rather than carry into the window number.
                (v & !COUNT_MASK) | ((v & COUNT_MASK) + 1).min(COUNT_MASK)
            } else {
                t << 32 | 1
            })
        }) {
            Ok(v) | Err(v) => {
                if v >> 32 == t {
                    ((v & COUNT_MASK) + 1).min(COUNT_MASK)
                } else {
                    1
                }
            }
        };
        let used = if sliding_window {
            let prev_slot =
                slots[(c.window.index.wrapping_sub(1) & 1) as usize].load(Ordering::Acquire);
            let prev = if prev_slot >> 32 == (c.window.index.wrapping_sub(1) & COUNT_MASK) {
                prev_slot & COUNT_MASK
            } else {
                0
            };
            sliding(after, prev, c.window.prev_weight())
        } else {
            after
        };
        counted.push(c.period, used, used > c.limit);
    }
    if counted.blocked() {
        for c in checks {
            let t = tag(&c.window);
            let cur = &entry.slots[c.period.index()][(c.window.index & 1) as usize];
            let _ = cur.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                (v >> 32 == t && v & COUNT_MASK > 0).then(|| v - 1)
            });
        }
    }
    counted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_over_the_shards() {
        // Counter keys as the plugin writes them: route and service ids, then an IP.
        let prefix = "3f1a9c52-0d7e-4b8a-9e61-2c4f5b7d8e90:7c2e4a18-5b3d-4f6e-8a9c-1d2e3f4a5b6c:";
        let mut per_shard = [0usize; SHARDS];
        for i in 0..6400u32 {
            let [a, b, c, d] = i.to_be_bytes();
            per_shard[shard_of(&format!("{prefix}{a}.{b}.{c}.{d}"))] += 1;
        }
        // 100 a shard on average.
        let (min, max) = (per_shard.iter().min(), per_shard.iter().max());
        assert!(min >= Some(&50) && max <= Some(&200), "{per_shard:?}");
    }
    use portico_common::plugins::rate_limiting::Period;

    fn checks(limit: u64, now_ms: u64) -> Vec<Check> {
        vec![Check {
            period: Period::Minute,
            limit,
            window: Window::at(Period::Minute, now_ms),
        }]
    }

    #[test]
    fn counts_exactly_and_refusals_do_not_count() {
        let s = LocalStore::default();
        let now = 1_700_000_000_000;
        let c = checks(3, now);
        let used: Vec<_> = (0..5)
            .map(|_| s.hit("k", &c, false, now / 1000))
            .map(|r| (r.used(Period::Minute), r.blocked()))
            .collect();
        assert_eq!(
            used,
            [(1, false), (2, false), (3, false), (4, true), (4, true)]
        );
        // The next window starts from zero.
        let next = now + 60_000;
        assert!(!s.hit("k", &checks(3, next), false, next / 1000).blocked());
    }

    #[test]
    fn sliding_window_carries_the_previous_window() {
        let s = LocalStore::default();
        let start = 1_700_000_040_000; // a minute boundary
        for _ in 0..4 {
            s.hit("k", &checks(4, start + 50_000), true, 0);
        }
        // A quarter into the next minute, three quarters of the 4 still count: 3 + 1 = 4.
        let at = start + 60_000 + 15_000;
        let r = s.hit("k", &checks(4, at), true, 0);
        assert_eq!((r.used(Period::Minute), r.blocked()), (4, false));
        assert!(s.hit("k", &checks(4, at), true, 0).blocked());
    }

    #[test]
    fn expired_identities_are_swept() {
        let s = LocalStore::default();
        let now = 1_700_000_000_000;
        for i in 0..100 {
            s.hit(&format!("k{i}"), &checks(3, now), false, now / 1000);
        }
        assert_eq!(s.len(), 100);
        s.sweep_all(now / 1000 + 119);
        assert_eq!(s.len(), 100);
        s.sweep_all(now / 1000 + 121);
        assert!(s.is_empty());
    }
}
