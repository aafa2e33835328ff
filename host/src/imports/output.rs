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
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use crate::imports::rate::TokenBucket;

/// Longest guest line kept, bytes; the rest is cut.
pub const MAX_LINE: usize = 4096;

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
#[derive(Debug)]
pub struct GuestOutput {
    device: String,
    state: Mutex<OutputState>,
}

#[derive(Debug)]
struct OutputState {
    bucket: TokenBucket,
    limits: OutputLimits,
    dropped: u64,
    last_notice: Instant,
}

impl GuestOutput {
    /// The output of the device called `device`.
    pub fn new(device: String, limits: OutputLimits) -> Arc<Self> {
        let now = Instant::now();
        let interval = if limits.lines_per_sec == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1) / limits.lines_per_sec
        };
        Arc::new(Self {
            device,
            state: Mutex::new(OutputState {
                bucket: TokenBucket::new(limits.burst, interval, now),
                limits,
                dropped: 0,
                last_notice: now,
            }),
        })
    }

    /// Writes one guest line at `level` if the limit allows; returns
    /// whether it was written.
    pub fn line(&self, level: Level, source: &str, line: &str) -> bool {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let written = st.bucket.try_take(now);
        if !written {
            st.dropped += 1;
        }
        if st.dropped > 0 && now.duration_since(st.last_notice) >= NOTICE_EVERY {
            self.notice(&mut st, now);
        }
        drop(st);
        if !written {
            return false;
        }
        let line = cut(line);
        let device = &self.device;
        match level {
            Level::Debug => tracing::debug!(target: "device", "[{device}] {source}{line}"),
            Level::Info => tracing::info!(target: "device", "[{device}] {source}{line}"),
            Level::Warn => tracing::warn!(target: "device", "[{device}] {source}{line}"),
            Level::Error => tracing::error!(target: "device", "[{device}] {source}{line}"),
        }
        true
    }

    /// Says how many lines were dropped since the last notice, if any.
    pub fn flush_notice(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.dropped > 0 {
            self.notice(&mut st, Instant::now());
        }
    }

    fn notice(&self, st: &mut OutputState, now: Instant) {
        tracing::warn!(
            target: "host",
            "[{}] {} guest output line(s) dropped (limit --log-lines-per-sec {}, --log-burst {})",
            self.device,
            st.dropped,
            st.limits.lines_per_sec,
            st.limits.burst
        );
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

/// Splits what the guest writes into lines; holds the guest for
/// [`OVER_LIMIT_WAIT`] after a write with a dropped line.
struct LineWriter {
    output: Arc<GuestOutput>,
    source: &'static str,
    level: Level,
    /// The unfinished line, at most [`MAX_LINE`] bytes kept.
    partial: Vec<u8>,
    /// The wait owed for the last write's dropped lines.
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl LineWriter {
    fn emit(&mut self) {
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        if !self.output.line(self.level, self.source, &line) && self.wait.is_none() {
            self.wait = Some(Box::pin(tokio::time::sleep(OVER_LIMIT_WAIT)));
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(wait) = self.wait.as_mut() {
            if wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.wait = None;
        }
        for chunk in buf.split_inclusive(|b| *b == b'\n') {
            let (text, ends) = match chunk.strip_suffix(b"\n") {
                Some(text) => (text, true),
                None => (chunk, false),
            };
            let room = MAX_LINE.saturating_sub(self.partial.len());
            self.partial
                .extend_from_slice(&text[..text.len().min(room)]);
            if ends {
                self.emit();
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.partial.is_empty() {
            self.emit();
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_over_the_burst_are_dropped() {
        let out = GuestOutput::new(
            "d".into(),
            OutputLimits {
                lines_per_sec: 1,
                burst: 5,
            },
        );
        let written = (0..100)
            .filter(|i| out.line(Level::Info, "", &format!("line {i}")))
            .count();
        assert_eq!(written, 5);
        assert_eq!(out.state.lock().unwrap().dropped, 95);
        out.flush_notice();
        assert_eq!(out.state.lock().unwrap().dropped, 0);
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_LINE);
        let cut = cut(&long);
        assert!(cut.len() <= MAX_LINE && cut.len() >= MAX_LINE - 1);
    }
}
