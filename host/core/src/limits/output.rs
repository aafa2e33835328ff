//! The guest's output limit, as counted: lines from the `log` import and
//! from WASI stdout and stderr share one rate per device (a burst, then a
//! steady rate); lines over it are dropped and counted, a write over it
//! costs the guest [`OVER_LIMIT_WAIT`], and an iteration that drops more
//! than ten seconds' worth is a flood that stops the guest. Long lines are
//! cut and control characters escaped, so one guest line is one line.
//! The host writes what passes to its log; the mock host records it.

use std::time::{Duration, Instant};

use crate::limits::OutputLimits;
use crate::limits::rate::TokenBucket;
use crate::outcome::LimitHit;

/// Longest guest line kept, bytes; the rest is cut.
pub const MAX_LINE: usize = 1024;

/// Notices of dropped lines come at most this often (and at the end of
/// each iteration).
pub const NOTICE_EVERY: Duration = Duration::from_secs(1);

/// What a write that went over the limit costs the guest: the call returns
/// after this wait. A flooding loop then makes about a thousand calls a
/// second instead of a million, so it costs the host next to nothing and
/// its neighbours nothing; the flood limit ends it.
pub const OVER_LIMIT_WAIT: Duration = Duration::from_millis(1);

/// The count of one device's output against its limits.
#[derive(Debug)]
pub struct OutputMeter {
    bucket: TokenBucket,
    limits: OutputLimits,
    /// Lines dropped since the last notice.
    dropped: u64,
    /// Lines dropped in the iteration in flight.
    dropped_this_iteration: u64,
    last_notice: Instant,
    /// Until when the guest's next write waits (it went over the limit).
    wait_until: Option<Instant>,
    /// The iteration in flight (0 before the first).
    iteration: u32,
}

impl OutputMeter {
    /// A meter with a full burst at `now`.
    pub fn new(limits: OutputLimits, now: Instant) -> Self {
        let interval = Duration::from_secs(1)
            .checked_div(limits.lines_per_sec)
            .unwrap_or(Duration::ZERO);
        Self {
            bucket: TokenBucket::new(limits.burst, interval, now),
            limits,
            dropped: 0,
            dropped_this_iteration: 0,
            last_notice: now,
            wait_until: None,
            iteration: 0,
        }
    }

    /// The limits counted against.
    pub fn limits(&self) -> OutputLimits {
        self.limits
    }

    /// Takes up to `lines` permits at `now`; the lines beyond them are
    /// dropped and counted. Returns how many may be written, and the
    /// dropped lines to announce now, if a notice is due.
    pub fn permit(&mut self, lines: usize, now: Instant) -> (usize, Option<u64>) {
        let mut allowed = 0;
        while allowed < lines && self.bucket.try_take(now) {
            allowed += 1;
        }
        let dropped = (lines - allowed) as u64;
        if dropped > 0 {
            self.dropped += dropped;
            self.dropped_this_iteration += dropped;
            self.wait_until = Some(now + OVER_LIMIT_WAIT);
        }
        let notice = (self.dropped > 0
            && now.saturating_duration_since(self.last_notice) >= NOTICE_EVERY)
            .then(|| self.take_notice(now))
            .flatten();
        (allowed, notice)
    }

    /// The lines dropped since the last notice, if any, which starts a
    /// new count.
    pub fn take_notice(&mut self, now: Instant) -> Option<u64> {
        if self.dropped == 0 {
            return None;
        }
        self.last_notice = now;
        Some(std::mem::take(&mut self.dropped))
    }

    /// How long the guest's next write waits at `now`, if it went over
    /// the limit.
    pub fn owed_wait(&mut self, now: Instant) -> Option<Duration> {
        self.wait_until.take()?.checked_duration_since(now)
    }

    /// Starts counting iteration `iteration`'s dropped lines.
    pub fn new_iteration(&mut self, iteration: u32) {
        self.dropped_this_iteration = 0;
        self.iteration = iteration;
    }

    /// The iteration in flight (0 before the first).
    pub fn iteration(&self) -> u32 {
        self.iteration
    }

    /// A restarted guest starts with no drops counted against its flood
    /// limit: the stopped one's are not its own.
    pub fn restarted(&mut self) {
        self.dropped_this_iteration = 0;
    }

    /// Lines that may be dropped in one iteration before the guest is
    /// stopped: ten seconds' worth; with no rate, none is a flood.
    fn flood_limit(&self) -> u64 {
        10 * u64::from(self.limits.lines_per_sec)
    }

    /// The flood limit, once the iteration has dropped more lines than it
    /// allows.
    pub fn flood(&self) -> Result<(), LimitHit> {
        let limit = self.flood_limit();
        if limit > 0 && self.dropped_this_iteration > limit {
            return Err(LimitHit::OutputFlood {
                dropped: self.dropped_this_iteration,
                limit,
            });
        }
        Ok(())
    }
}

/// `line` cut to [`MAX_LINE`] bytes with control characters escaped, as
/// a guest line is shown.
pub fn shown(line: &str) -> std::borrow::Cow<'_, str> {
    escape(cut(line))
}

/// `line` with control characters escaped, so one guest line is one host
/// line and cannot pass for another device's or the host's.
fn escape(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.chars().any(char::is_control) {
        return line.into();
    }
    line.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// Cuts `line` to at most [`MAX_LINE`] bytes, on a character boundary.
fn cut(line: &str) -> &str {
    if line.len() <= MAX_LINE {
        return line;
    }
    let mut end = MAX_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

/// Splits written bytes into lines: the unfinished line is kept, at most
/// [`MAX_LINE`] bytes of it.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// The lines `buf` ends, those past the first `permitted` dropped
    /// unbuilt; the rest of `buf` starts the next line.
    pub fn split(&mut self, buf: &[u8], mut permitted: usize) -> Vec<String> {
        let mut lines = Vec::new();
        let mut rest = buf;
        while let Some(at) = rest.iter().position(|b| *b == b'\n') {
            if permitted > 0 {
                permitted -= 1;
                self.keep(&rest[..at]);
                lines.push(String::from_utf8_lossy(&self.partial).into_owned());
            }
            self.partial.clear();
            rest = &rest[at + 1..];
        }
        self.keep(rest);
        lines
    }

    /// The unfinished line, if any, which ends it.
    pub fn finish(&mut self) -> Option<String> {
        if self.partial.is_empty() {
            return None;
        }
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        Some(line)
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

/// How many lines `buf` ends.
pub fn line_ends(buf: &[u8]) -> usize {
    buf.iter().filter(|b| **b == b'\n').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_over_the_burst_are_dropped_and_a_flood_stops() {
        let t0 = Instant::now();
        let mut m = OutputMeter::new(
            OutputLimits {
                lines_per_sec: 1,
                burst: 5,
            },
            t0,
        );
        let written: usize = (0..100).map(|_| m.permit(1, t0).0).sum();
        assert_eq!(written, 5);
        assert_eq!(m.owed_wait(t0), Some(OVER_LIMIT_WAIT));
        assert_eq!(m.take_notice(t0), Some(95));
        assert_eq!(m.take_notice(t0), None);
        // 95 dropped this iteration, over ten seconds' worth (10 lines).
        assert_eq!(
            m.flood(),
            Err(LimitHit::OutputFlood {
                dropped: 95,
                limit: 10
            })
        );
        m.new_iteration(2);
        assert_eq!(m.flood(), Ok(()));
        // A second later one more line passes, and the notice of the one
        // dropped with it is due.
        let (n, notice) = m.permit(2, t0 + Duration::from_secs(1));
        assert_eq!((n, notice), (1, Some(1)));
        m.permit(1, t0);
        m.restarted();
        assert_eq!(m.flood(), Ok(()), "a restart starts the count anew");
    }

    #[test]
    fn control_characters_are_escaped_and_long_lines_cut() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a\n[other] forged"), "a\\n[other] forged");
        let long = "é".repeat(MAX_LINE);
        let cut = cut(&long);
        assert!(cut.len() <= MAX_LINE && cut.len() >= MAX_LINE - 1);
    }

    #[test]
    fn written_bytes_become_lines_and_only_permitted_ones_are_built() {
        let mut s = LineSplitter::default();
        assert_eq!(s.split(b"one\ntw", 5), vec!["one"]);
        assert_eq!(s.split(b"o\nthree\nfour", 1), vec!["two"]);
        assert_eq!(s.finish().as_deref(), Some("four"));
        assert_eq!(line_ends(b"a\nb\n"), 2);
    }
}
