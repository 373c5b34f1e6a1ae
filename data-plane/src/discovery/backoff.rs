//! Reconnect delays: exponential with full jitter (AWS's "exponential backoff and jitter"), so a
//! fleet of data planes that lost their control plane at the same moment does not reconnect in
//! lockstep when it comes back.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Exponential backoff with full jitter: the n-th delay is uniform in `[0, min(cap, base * 2^n)]`.
#[derive(Debug)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    pub(crate) fn new(base: Duration, cap: Duration) -> Self {
        // RandomState is seeded per process from the OS: enough spread for jitter, no extra crate.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(u64::from(std::process::id()));
        Backoff {
            base,
            cap,
            attempt: 0,
            rng: h.finish() | 1,
        }
    }

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        // 2^20 * 200 ms is far past any sane cap; stop doubling there to avoid overflow.
        let exp = self.attempt.min(20);
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = self.base.saturating_mul(1 << exp).min(self.cap);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.random() % nanos.saturating_add(1))
    }

    /// Back to the first delay, after a connection that worked.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failed attempts since the last reset (for logs).
    pub(crate) fn attempts(&self) -> u32 {
        self.attempt
    }

    /// xorshift64*: statistically fine for jitter, not for anything secret.
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_a_doubling_ceiling_capped_and_reset() {
        let base = Duration::from_millis(200);
        let cap = Duration::from_secs(30);
        let mut b = Backoff::new(base, cap);
        for n in 0..40u32 {
            let d = b.next_delay();
            let ceiling = base.saturating_mul(1 << n.min(20)).min(cap);
            assert!(d <= ceiling, "attempt {n}: {d:?} > {ceiling:?}");
        }
        b.reset();
        assert!(b.next_delay() <= base);
    }

    #[test]
    fn delays_are_jittered() {
        let mut b = Backoff::new(Duration::from_secs(30), Duration::from_secs(30));
        let delays: std::collections::HashSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.len() > 10, "{delays:?}");
    }
}
