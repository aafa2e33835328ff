//! The WASI a mock instance sees: no files and no network (as in the real
//! host); stdout and stderr recorded as log lines ("stdout: ...", as the
//! real host logs them) through the same output limit as the log import;
//! and,
//! unlike the real host, WASI's random numbers drawn from
//! the scenario's seed and WASI's clocks on the run's virtual time. A logic
//! that reads `wasi:random` or `wasi:clocks` (languages' standard libraries
//! do: Python seeds its hashes and reads `time.time()` through them) stays
//! deterministic under the mock. WASI waits (`subscribe-duration`, `poll`)
//! are not virtual: a logic waits with the world's `clock.sleep-ms`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use host_core::Level;
use host_core::limits::output::{LineSplitter, line_ends};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx};

use crate::imports::Broker;

/// Wall-clock time at virtual time 0: 2026-01-01T00:00:00Z, seconds since
/// the Unix epoch.
pub const WALL_CLOCK_START_SECS: u64 = 1_767_225_600;

/// Salt that keeps WASI's numbers apart from the `entropy` import's.
const SALT: u64 = 0x3a51_0000_0000_0001;

/// A WASI context for instance number `instance` of a run seeded `seed`.
pub(crate) fn context(broker: &Arc<Mutex<Broker>>, seed: u64, instance: u64) -> WasiCtx {
    let seed = seed ^ SALT ^ instance.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let insecure_seed = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
    WasiCtx::builder()
        .secure_random(Seeded(ChaCha20Rng::seed_from_u64(rng.next_u64())))
        .insecure_random(Seeded(ChaCha20Rng::seed_from_u64(rng.next_u64())))
        .insecure_random_seed(insecure_seed)
        .wall_clock(VirtualClock(broker.clone()))
        .monotonic_clock(VirtualClock(broker.clone()))
        .stdout(Stdio {
            broker: Arc::downgrade(broker),
            level: Level::Info,
            source: "stdout: ",
        })
        .stderr(Stdio {
            broker: Arc::downgrade(broker),
            level: Level::Warn,
            source: "stderr: ",
        })
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

/// A seeded generator in the shape WASI's context takes.
struct Seeded(ChaCha20Rng);

impl wasi_rand::TryRng for Seeded {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.0.next_u32())
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.0.next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill_bytes(dst);
        Ok(())
    }
}

/// The broker's virtual time as WASI's clocks.
struct VirtualClock(Arc<Mutex<Broker>>);

impl VirtualClock {
    fn now_ms(&self) -> u64 {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).now_ms
    }
}

impl HostWallClock for VirtualClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_secs(WALL_CLOCK_START_SECS) + Duration::from_millis(self.now_ms())
    }
}

impl HostMonotonicClock for VirtualClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    fn now(&self) -> u64 {
        self.now_ms().saturating_mul(1_000_000)
    }
}

/// WASI stdout or stderr of a mock instance: lines into the record as the
/// host logs them, through the device's output limit. WASI may keep a
/// stream past the run; it does not keep the broker.
#[derive(Clone)]
struct Stdio {
    broker: std::sync::Weak<Mutex<Broker>>,
    level: Level,
    source: &'static str,
}

impl IsTerminal for Stdio {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Stdio {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.writer())
    }

    /// Written at once, with no task behind it: the mock host runs on
    /// virtual time, without an async runtime to drive one.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.writer())
    }
}

impl Stdio {
    fn writer(&self) -> LineWriter {
        LineWriter {
            out: self.clone(),
            lines: LineSplitter::default(),
        }
    }
}

/// Splits what the guest writes into lines, as the host's writer does.
struct LineWriter {
    out: Stdio,
    lines: LineSplitter,
}

impl LineWriter {
    /// Records the lines `buf` ends; each passes the output limit as the
    /// log import's do (a dropped one costs its wait on virtual time).
    fn write_lines(&mut self, buf: &[u8]) {
        let Some(broker) = self.out.broker.upgrade() else {
            return;
        };
        let mut b = broker.lock().unwrap_or_else(|p| p.into_inner());
        for line in self.lines.split(buf, line_ends(buf)) {
            b.output_line(self.out.level, self.out.source, &line);
        }
    }

    /// Records the unfinished line, if any.
    fn finish(&mut self) {
        if let Some(line) = self.lines.finish()
            && let Some(broker) = self.out.broker.upgrade()
        {
            let mut b = broker.lock().unwrap_or_else(|p| p.into_inner());
            b.output_line(self.out.level, self.out.source, &line);
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_lines(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.finish();
        Poll::Ready(Ok(()))
    }
}

#[async_trait::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

#[async_trait::async_trait]
impl OutputStream for LineWriter {
    fn write(&mut self, buf: bytes::Bytes) -> StreamResult<()> {
        self.write_lines(&buf);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.finish();
    }
}
