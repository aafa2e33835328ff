//! The `clock` interface on real time: a monotonic clock started with the
//! device's sandbox, and tokio sleeps.

use std::time::{Duration, Instant};

use host_core::wit::clock_bindings::Host;

/// A device's clock.
#[derive(Debug)]
pub struct ClockCtx {
    /// Time zero of the guest's clock.
    pub started: Instant,
}

impl Default for ClockCtx {
    fn default() -> Self {
        Self {
            started: Instant::now(),
        }
    }
}

impl Host for ClockCtx {
    async fn now_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(self
            .started
            .elapsed()
            .as_millis()
            .try_into()
            .unwrap_or(u64::MAX))
    }

    async fn now_us(&mut self) -> wasmtime::Result<u64> {
        Ok(self
            .started
            .elapsed()
            .as_micros()
            .try_into()
            .unwrap_or(u64::MAX))
    }

    async fn sleep_ms(&mut self, duration_ms: u32) -> wasmtime::Result<()> {
        tokio::time::sleep(Duration::from_millis(u64::from(duration_ms))).await;
        Ok(())
    }
}
