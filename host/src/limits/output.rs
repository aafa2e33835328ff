//! The guest's output: lines from the `log` import and from WASI stdout and
//! stderr share one rate limit per device (a burst, then a steady rate).
//! Lines over it are dropped and counted; a notice says how many, at most
//! once a second. Long lines are cut. So a flooding guest costs the host
//! a bounded amount of output, whatever it does.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use host_core::Level;
use host_core::observer::{Event, Observer};
use host_core::outcome::LimitHit;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use crate::limits::rate::TokenBucket;

/// Longest guest line kept, bytes; the rest is cut.
pub const MAX_LINE: usize = 1024;

/// Notices of dropped lines come at most this often (and at the end of
/// each iteration).
const NOTICE_EVERY: Duration = Duration::from_secs(1);

/// What a write that went over the limit costs the guest: the call returns
/// after this wait. A flooding loop then makes about a thousand calls a
/// second instead of a million, so it costs the host next to nothing and
/// its neighbours nothing; the iteration timeout ends it.
pub const OVER_LIMIT_WAIT: Duration = Duration::from_millis(1);

/// The output limits of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    /// Lines per second, steady.
    pub lines_per_sec: u32,
    /// Lines at once before the rate applies.
    pub burst: u32,
}

/// A device's output limiter, shared by its log import and its stdio, and
/// kept across restarts of its guest.
pub struct GuestOutput {
    device: String,
    /// Told how many lines were dropped (the notice).
    observer: Arc<dyn Observer>,
    state: Mutex<OutputState>,
}

#[derive(Debug)]
struct OutputState {
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

impl OutputState {
    /// Lines that may be dropped in one iteration before the guest is
    /// stopped: ten seconds' worth; none is a flood without a rate limit.
    fn flood_limit(&self) -> u64 {
        10 * u64::from(self.limits.lines_per_sec)
    }
}

impl std::fmt::Debug for GuestOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestOutput")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl GuestOutput {
    /// The output of the device called `device`, whose notices of dropped
    /// lines go to `observer`.
    pub fn new(device: String, limits: OutputLimits, observer: Arc<dyn Observer>) -> Arc<Self> {
        let now = Instant::now();
        let interval = if limits.lines_per_sec == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1) / limits.lines_per_sec
        };
        Arc::new(Self {
            device,
            observer,
            state: Mutex::new(OutputState {
                bucket: TokenBucket::new(limits.burst, interval, now),
                limits,
                dropped: 0,
                dropped_this_iteration: 0,
                iteration: 0,
                last_notice: now,
                wait_until: None,
            }),
        })
    }

    /// Writes one guest line at `level` if the limit allows; returns
    /// whether it was written.
    pub fn line(&self, level: Level, source: &str, line: &str) -> bool {
        let written = self.permit(1) == 1;
        if written {
            self.emit(level, source, line);
        }
        written
    }

    /// Takes up to `lines` permits to write; the lines beyond them are
    /// dropped and counted. Returns how many may be written.
    pub fn permit(&self, lines: usize) -> usize {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut allowed = 0;
        while allowed < lines && st.bucket.try_take(now) {
            allowed += 1;
        }
        let dropped = (lines - allowed) as u64;
        if dropped > 0 {
            st.dropped += dropped;
            st.dropped_this_iteration += dropped;
            st.wait_until = Some(now + OVER_LIMIT_WAIT);
        }
        if st.dropped > 0 && now.duration_since(st.last_notice) >= NOTICE_EVERY {
            self.notice(&mut st, now);
        }
        allowed
    }

    /// How long the guest's next write waits, if it went over the limit.
    pub fn owed_wait(&self) -> Option<Duration> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let until = st.wait_until.take()?;
        until.checked_duration_since(Instant::now())
    }

    /// Starts counting iteration `iteration`'s dropped lines; its lines
    /// carry its number.
    pub fn new_iteration(&self, iteration: u32) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.dropped_this_iteration = 0;
        st.iteration = iteration;
    }

    /// The flood limit, once the iteration has dropped more lines than it
    /// allows.
    pub fn flood(&self) -> Result<(), LimitHit> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let limit = st.flood_limit();
        if limit > 0 && st.dropped_this_iteration > limit {
            return Err(LimitHit::OutputFlood {
                dropped: st.dropped_this_iteration,
                limit,
            });
        }
        Ok(())
    }

    /// Writes a permitted line: cut, with control characters escaped. Its
    /// structured fields (JSON logs) are the device, the iteration, and the
    /// MQTT packet id when the line names one (`packet id N`).
    pub fn emit(&self, level: Level, source: &str, line: &str) {
        let line = escape(cut(line));
        let device = &self.device;
        let iteration = self
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iteration;
        let packet_id = packet_id(&line);
        macro_rules! emit {
            ($level:ident) => {
                tracing::$level!(target: "device", device = %device, iteration, packet_id, "[{device}] {source}{line}")
            };
        }
        match level {
            Level::Debug => emit!(debug),
            Level::Info => emit!(info),
            Level::Warn => emit!(warn),
            Level::Error => emit!(error),
        }
    }

    /// Says how many lines were dropped since the last notice, if any.
    pub fn flush_notice(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.dropped > 0 {
            self.notice(&mut st, Instant::now());
        }
    }

    fn notice(&self, st: &mut OutputState, now: Instant) {
        self.observer.observe(&Event::OutputDropped {
            lines: st.dropped,
            lines_per_sec: st.limits.lines_per_sec,
            burst: st.limits.burst,
        });
        st.dropped = 0;
        st.last_notice = now;
    }

    /// A WASI stdout or stderr stream (`name` is "stdout" or "stderr")
    /// whose lines go through this limiter.
    pub fn stdio(self: &Arc<Self>, name: &'static str) -> Stdio {
        Stdio {
            output: self.clone(),
            name,
        }
    }
}

/// The MQTT packet id a guest line names (`... packet id 3 ...`, any
/// case, as the original's "PUBACK received for packet Id 3."), if any.
fn packet_id(line: &str) -> Option<u16> {
    let lower = line.to_ascii_lowercase();
    let (_, after) = lower.split_once("packet id ")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
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

/// WASI stdout or stderr of a guest.
#[derive(Clone)]
pub struct Stdio {
    output: Arc<GuestOutput>,
    name: &'static str,
}

impl IsTerminal for Stdio {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Stdio {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            output: self.output.clone(),
            source: if self.name == "stderr" {
                "stderr: "
            } else {
                "stdout: "
            },
            level: if self.name == "stderr" {
                Level::Warn
            } else {
                Level::Info
            },
            partial: Vec::new(),
            wait: None,
        })
    }
}

/// Splits what the guest writes into lines. After a write with dropped
/// lines the next one waits [`OVER_LIMIT_WAIT`]; the wait is the device's,
/// not this stream's, so opening a new stream does not skip it.
struct LineWriter {
    output: Arc<GuestOutput>,
    source: &'static str,
    level: Level,
    /// The unfinished line, at most [`MAX_LINE`] bytes kept.
    partial: Vec<u8>,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl LineWriter {
    /// Adds to the unfinished line, up to [`MAX_LINE`] bytes.
    fn keep(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.wait.is_none()
            && let Some(wait) = self.output.owed_wait()
        {
            self.wait = Some(Box::pin(tokio::time::sleep(wait)));
        }
        if let Some(wait) = self.wait.as_mut() {
            if wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.wait = None;
        }
        // Permits first, for every line this write ends; only the permitted
        // lines are ever built.
        let ends = buf.iter().filter(|b| **b == b'\n').count();
        let mut permitted = if ends > 0 {
            self.output.permit(ends)
        } else {
            0
        };
        let mut rest = buf;
        while let Some(at) = rest.iter().position(|b| *b == b'\n') {
            if permitted > 0 {
                permitted -= 1;
                self.keep(&rest[..at]);
                let line = String::from_utf8_lossy(&self.partial).into_owned();
                self.output.emit(self.level, self.source, &line);
            }
            self.partial.clear();
            rest = &rest[at + 1..];
        }
        self.keep(rest);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.partial.is_empty() {
            let line = String::from_utf8_lossy(&self.partial).into_owned();
            self.partial.clear();
            self.output.line(self.level, self.source, &line);
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_id_is_taken_from_the_line() {
        assert_eq!(
            packet_id("SUBACK for packet id 12 within 2000 ms"),
            Some(12)
        );
        assert_eq!(packet_id("PUBACK received for packet Id 3."), Some(3));
        assert_eq!(packet_id("PUBACK for packet ids [1, 2]"), None);
        assert_eq!(packet_id("packet id 70000"), None);
        assert_eq!(packet_id("no id here"), None);
    }

    #[test]
    fn lines_over_the_burst_are_dropped() {
        let out = GuestOutput::new(
            "d".into(),
            OutputLimits {
                lines_per_sec: 1,
                burst: 5,
            },
            Arc::new(host_core::observer::Ignore),
        );
        let written = (0..100)
            .filter(|i| out.line(Level::Info, "", &format!("line {i}")))
            .count();
        assert_eq!(written, 5);
        assert_eq!(out.state.lock().unwrap().dropped, 95);
        out.flush_notice();
        assert_eq!(out.state.lock().unwrap().dropped, 0);
        // 95 dropped this iteration, under ten seconds' worth (10 lines).
        assert_eq!(
            out.flood(),
            Err(LimitHit::OutputFlood {
                dropped: 95,
                limit: 10
            })
        );
        out.new_iteration(2);
        assert_eq!(out.flood(), Ok(()));
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a\n[other] forged"), "a\\n[other] forged");
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_LINE);
        let cut = cut(&long);
        assert!(cut.len() <= MAX_LINE && cut.len() >= MAX_LINE - 1);
    }
}
