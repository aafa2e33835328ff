//! A token bucket: a burst, then a steady rate. Pure: the caller passes
//! the time, so tests choose it.

use std::time::{Duration, Instant};

/// Up to `burst` tokens; one more every `interval`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    burst: u32,
    interval: Duration,
    tokens: u32,
    /// When the last token was added (or the bucket made).
    refilled: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens, refilled one per `interval`
    /// (a zero interval refills at once: no limit).
    pub fn new(burst: u32, interval: Duration, now: Instant) -> Self {
        Self {
            burst,
            interval,
            tokens: burst,
            refilled: now,
        }
    }

    /// Takes a token if there is one at `now`.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// Takes `n` tokens if there are that many at `now`, else none.
    pub fn try_take_n(&mut self, n: u32, now: Instant) -> bool {
        self.refill(now);
        if self.tokens < n {
            return false;
        }
        self.tokens -= n;
        true
    }

    fn refill(&mut self, now: Instant) {
        if self.interval.is_zero() {
            self.tokens = self.burst;
            return;
        }
        let elapsed = now.saturating_duration_since(self.refilled);
        let new = (elapsed.as_nanos() / self.interval.as_nanos()).min(u128::from(u32::MAX)) as u32;
        if new > 0 {
            self.tokens = self.tokens.saturating_add(new).min(self.burst);
            self.refilled += self.interval * new;
            if self.tokens == self.burst {
                // Time spent full does not bank tokens.
                self.refilled = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_token_per_interval() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, Duration::from_secs(1), t0);
        assert!((0..3).all(|_| b.try_take(t0)));
        assert!(!b.try_take(t0));
        assert!(!b.try_take(t0 + Duration::from_millis(999)));
        assert!(b.try_take(t0 + Duration::from_millis(1000)));
        assert!(!b.try_take(t0 + Duration::from_millis(1500)));
        // Ten idle seconds refill the burst, no more.
        let later = t0 + Duration::from_secs(12);
        assert!((0..3).all(|_| b.try_take(later)));
        assert!(!b.try_take(later));
    }

    #[test]
    fn taking_several_takes_all_or_none() {
        let t0 = Instant::now();
        let mut c = TokenBucket::new(3, Duration::from_secs(1), t0);
        assert!(!c.try_take_n(4, t0), "more than there are");
        assert!(c.try_take_n(3, t0), "a refused take took nothing");
        assert!(!c.try_take(t0));
    }

    #[test]
    fn a_zero_interval_never_limits() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1, Duration::ZERO, t0);
        assert!((0..100).all(|_| b.try_take(t0)));
    }
}
