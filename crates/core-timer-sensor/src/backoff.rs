//! Retry delays of the sender: exponential from [`START`] to [`MAX`] with
//! jitter (sensors restarted together do not retry in step), and never shorter
//! than the server's `Retry-After`, which is honoured up to [`RETRY_AFTER_MAX`].

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// First retry delay (before jitter).
pub const START: Duration = Duration::from_millis(100);
/// Longest retry delay of the sensor's own backoff: an API back from an outage
/// is noticed within this long.
pub const MAX: Duration = Duration::from_secs(10);
/// Longest `Retry-After` honoured: a server asking for hours does not park the
/// queue (the events stay queued either way).
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);

/// The delays between attempts at one event.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    state: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    /// Starts at [`START`], seeded from the process's random hasher keys (no
    /// dependency for randomness that needs no quality).
    pub fn new() -> Backoff {
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Backoff {
            base: START,
            state: seed | 1,
        }
    }

    /// After a success: the next failure waits [`START`] again.
    pub fn reset(&mut self) {
        self.base = START;
    }

    /// The wait before the next attempt: a random delay between half the
    /// current base and the base (which then doubles, up to [`MAX`]), or the
    /// server's `retry_after` (at most [`RETRY_AFTER_MAX`]) when that is longer.
    pub fn next(&mut self, retry_after: Option<Duration>) -> Duration {
        let base = self.base;
        self.base = (self.base * 2).min(MAX);
        let half = base / 2;
        let spread = (base - half).as_nanos() as u64 + 1;
        let own = half + Duration::from_nanos(self.random() % spread);
        retry_after.map_or(own, |after| own.max(after.min(RETRY_AFTER_MAX)))
    }

    /// xorshift64.
    fn random(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new();
        let mut base = START;
        for _ in 0..20 {
            let d = b.next(None);
            assert!(
                d >= base / 2 && d <= base,
                "{d:?} outside [{:?}, {base:?}]",
                base / 2
            );
            base = (base * 2).min(MAX);
        }
        assert!(b.next(None) <= MAX);
        b.reset();
        assert!(b.next(None) <= START);
    }

    #[test]
    fn retry_after_is_a_floor_capped_at_a_minute() {
        let mut b = Backoff::new();
        assert!(b.next(Some(Duration::from_secs(3))) >= Duration::from_secs(3));
        assert_eq!(b.next(Some(Duration::from_secs(3600))), RETRY_AFTER_MAX);
        // Retry-After: 0 does not turn the retries into a busy loop.
        assert!(b.next(Some(Duration::ZERO)) >= START);
    }
}
