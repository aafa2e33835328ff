//! Exponential backoff with Full Jitter (AWS Architecture Blog, "Exponential
//! Backoff And Jitter"), as in FreeRTOS's backoffAlgorithm v1.4.
//!
//! A pure policy: the caller passes in the random number, so tests choose it
//! and assert exact delays.

/// `max_attempts` value meaning "retry forever".
pub const RETRY_FOREVER: u32 = u32::MAX;

/// Backoff state for one sequence of retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    /// Largest window, milliseconds.
    max_ms: u32,
    /// Retries allowed; 0 = none, [`RETRY_FOREVER`] = no limit.
    max_attempts: u32,
    /// Retries handed out so far (wrapping when retrying forever).
    attempts_done: u32,
    /// Upper bound of the next delay, milliseconds.
    window_ms: u32,
}

impl Backoff {
    /// A fresh sequence: first window `base_ms`, windows capped at `max_ms`.
    pub fn new(base_ms: u32, max_ms: u32, max_attempts: u32) -> Self {
        Self {
            max_ms,
            max_attempts,
            attempts_done: 0,
            window_ms: base_ms,
        }
    }

    /// The next delay in milliseconds, uniform in `[0, window]` for a uniform
    /// `random`, or `None` when the retries are exhausted (state untouched).
    pub fn next_delay_ms(&mut self, random: u32) -> Option<u32> {
        if self.max_attempts != RETRY_FOREVER && self.attempts_done >= self.max_attempts {
            return None;
        }
        // u64 so that a window of u32::MAX does not overflow `window + 1`.
        let delay = (u64::from(random) % (u64::from(self.window_ms) + 1)) as u32;
        self.attempts_done = self.attempts_done.wrapping_add(1);
        self.window_ms = if self.window_ms < self.max_ms / 2 {
            self.window_ms * 2
        } else {
            self.max_ms
        };
        Some(delay)
    }

    /// Retries handed out so far.
    pub fn attempts_done(&self) -> u32 {
        self.attempts_done
    }

    /// The longest a whole sequence can wait: the sum of every window, in
    /// milliseconds; `None` when it retries forever.
    pub fn longest_total_ms(&self) -> Option<u64> {
        if self.max_attempts == RETRY_FOREVER {
            return None;
        }
        // Windows double until the cap, then stay there: walk the doubling
        // part (at most 32 steps), count the rest.
        let mut window = self.window_ms;
        let mut total = 0u64;
        let mut left = self.max_attempts.saturating_sub(self.attempts_done);
        while left > 0 && window < self.max_ms / 2 {
            total += u64::from(window);
            window *= 2;
            left -= 1;
        }
        if left > 0 {
            total += u64::from(window) + u64::from(left - 1) * u64::from(self.max_ms);
        }
        Some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_double_up_to_the_cap_then_retries_are_exhausted() {
        let mut b = Backoff::new(500, 5000, 5);
        // A random equal to the window gives the window's upper bound.
        assert_eq!(b.next_delay_ms(500), Some(500));
        assert_eq!(b.next_delay_ms(1000), Some(1000));
        assert_eq!(b.next_delay_ms(2000), Some(2000));
        assert_eq!(b.next_delay_ms(4000), Some(4000));
        assert_eq!(b.next_delay_ms(5000), Some(5000));
        assert_eq!(b.next_delay_ms(0), None);
        assert_eq!(b.next_delay_ms(0), None, "exhausted stays exhausted");
        assert_eq!(b.attempts_done(), 5);
    }

    #[test]
    fn delay_is_random_modulo_window_plus_one() {
        let mut b = Backoff::new(500, 5000, 5);
        assert_eq!(b.next_delay_ms(501), Some(0));
        assert_eq!(b.next_delay_ms(1001), Some(0));
        assert_eq!(b.next_delay_ms(2001), Some(0));
        assert_eq!(b.next_delay_ms(123_456_789), Some(123_456_789 % 4001));
        assert_eq!(b.next_delay_ms(u32::MAX), Some(u32::MAX % 5001));
    }

    #[test]
    fn fixed_sequence_matches_full_jitter() {
        let randoms = [
            0x1234_5678u32,
            0x9abc_def0,
            0x0fed_cba9,
            0x7654_3210,
            0xdead_beef,
        ];
        let mut b = Backoff::new(500, 5000, 5);
        let got: Vec<u32> = randoms
            .iter()
            .map(|r| b.next_delay_ms(*r).unwrap())
            .collect();
        let windows = [500u32, 1000, 2000, 4000, 5000];
        let want: Vec<u32> = randoms
            .iter()
            .zip(windows)
            .map(|(r, w)| r % (w + 1))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_longest_total_is_the_sum_of_the_windows() {
        assert_eq!(Backoff::new(500, 5000, 5).longest_total_ms(), Some(12_500));
        assert_eq!(Backoff::new(500, 5000, 0).longest_total_ms(), Some(0));
        assert_eq!(
            Backoff::new(500, 5000, RETRY_FOREVER).longest_total_ms(),
            None
        );
    }

    #[test]
    fn zero_attempts_means_no_retry() {
        assert_eq!(Backoff::new(500, 5000, 0).next_delay_ms(7), None);
    }

    #[test]
    fn forever_never_exhausts_and_window_saturates() {
        let mut b = Backoff::new(1, u32::MAX, RETRY_FOREVER);
        for _ in 0..100 {
            assert!(b.next_delay_ms(u32::MAX).is_some());
        }
        assert_eq!(b.window_ms, u32::MAX);
        assert_eq!(b.next_delay_ms(u32::MAX), Some(u32::MAX));
    }
}
