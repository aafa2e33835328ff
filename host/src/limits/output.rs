//! The guest's output as the host writes it: lines from the `log` import
//! and from WASI stdout and stderr, counted by one meter per device
//! (host-core's [`OutputMeter`]: a burst, then a steady rate, a flood
//! limit), written to the host's log with the device's fields. Lines over
//! the limit are dropped and counted; a notice says how many, at most once
//! a second. So a flooding guest costs the host a bounded amount of
//! output, whatever it does.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use host_core::Level;
pub use host_core::limits::OutputLimits;
pub use host_core::limits::output::OVER_LIMIT_WAIT;
use host_core::limits::output::{LineSplitter, OutputMeter, line_ends, shown};
use host_core::observer::{Event, Observer};
use host_core::outcome::LimitHit;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// A device's output limiter, shared by its log import and its stdio, and
/// kept across restarts of its guest.
pub struct GuestOutput {
    device: String,
    /// Told how many lines were dropped (the notice).
    observer: Arc<dyn Observer>,
    meter: Mutex<OutputMeter>,
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
        Arc::new(Self {
            device,
            observer,
            meter: Mutex::new(OutputMeter::new(limits, Instant::now())),
        })
    }

    fn meter(&self) -> std::sync::MutexGuard<'_, OutputMeter> {
        self.meter.lock().unwrap_or_else(|p| p.into_inner())
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
        let (allowed, notice) = self.meter().permit(lines, Instant::now());
        if let Some(dropped) = notice {
            self.notice(dropped);
        }
        allowed
    }

    /// How long the guest's next write waits, if it went over the limit.
    pub fn owed_wait(&self) -> Option<std::time::Duration> {
        self.meter().owed_wait(Instant::now())
    }

    /// A restarted guest starts with no drops counted against its flood
    /// limit.
    pub fn restarted(&self) {
        self.meter().restarted();
    }

    /// Starts counting iteration `iteration`'s dropped lines; its lines
    /// carry its number.
    pub fn new_iteration(&self, iteration: u32) {
        self.meter().new_iteration(iteration);
    }

    /// The flood limit, once the iteration has dropped more lines than it
    /// allows.
    pub fn flood(&self) -> Result<(), LimitHit> {
        self.meter().flood()
    }

    /// Writes a permitted line: cut, with control characters escaped. Its
    /// structured fields (JSON logs) are the device, the iteration, and the
    /// MQTT packet id when the line names one (`packet id N`).
    pub fn emit(&self, level: Level, source: &str, line: &str) {
        let line = shown(line);
        let device = &self.device;
        let iteration = self.meter().iteration();
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
        let notice = self.meter().take_notice(Instant::now());
        if let Some(dropped) = notice {
            self.notice(dropped);
        }
    }

    fn notice(&self, lines: u64) {
        let limits = self.meter().limits();
        self.observer.observe(&Event::OutputDropped {
            lines,
            lines_per_sec: limits.lines_per_sec,
            burst: limits.burst,
        });
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
            lines: LineSplitter::default(),
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
    lines: LineSplitter,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
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
        let ends = line_ends(buf);
        let permitted = if ends > 0 {
            self.output.permit(ends)
        } else {
            0
        };
        for line in self.lines.split(buf, permitted) {
            self.output.emit(self.level, self.source, &line);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Some(line) = self.lines.finish() {
            self.output.line(self.level, self.source, &line);
        }
        Poll::Ready(Ok(()))
    }
}

/// A last line the guest did not end is written when its stream goes
/// (WASI does not shut a stream down), as the mock host records it.
impl Drop for LineWriter {
    fn drop(&mut self) {
        if let Some(line) = self.lines.finish() {
            self.output.line(self.level, self.source, &line);
        }
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

    /// Counts the lines the notices announce.
    #[derive(Default)]
    struct Notices(std::sync::atomic::AtomicU64);

    impl Observer for Notices {
        fn observe(&self, event: &Event) {
            if let Event::OutputDropped { lines, .. } = event {
                self.0
                    .fetch_add(*lines, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    #[test]
    fn lines_over_the_burst_are_dropped_and_announced() {
        let notices = Arc::new(Notices::default());
        let out = GuestOutput::new(
            "d".into(),
            OutputLimits {
                lines_per_sec: 1,
                burst: 5,
            },
            notices.clone(),
        );
        let written = (0..100)
            .filter(|i| out.line(Level::Info, "", &format!("line {i}")))
            .count();
        assert_eq!(written, 5);
        assert!(
            out.flood().is_err(),
            "95 dropped is over ten seconds' worth"
        );
        out.flush_notice();
        assert_eq!(notices.0.load(std::sync::atomic::Ordering::Relaxed), 95);
        assert_eq!(
            out.meter().take_notice(Instant::now()),
            None,
            "announced once"
        );
        out.new_iteration(2);
        assert_eq!(out.flood(), Ok(()));
    }
}
