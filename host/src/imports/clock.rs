//! The `clock` interface on real time: a monotonic clock started with the
//! device's sandbox, and tokio sleeps.

use std::time::{Duration, Instant};

use host_core::wit::clock::Host;
use tokio::sync::watch;

/// A device's clock.
#[derive(Debug)]
pub struct ClockCtx {
    /// Time zero of the guest's clock.
    pub started: Instant,
    /// Becomes true when the host is stopping: sleeps end at once.
    pub stopping: watch::Receiver<bool>,
}

impl ClockCtx {
    /// A clock starting now.
    pub fn new(stopping: watch::Receiver<bool>) -> Self {
        Self {
            started: Instant::now(),
            stopping,
        }
    }
}

impl Host for ClockCtx {
    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(self
            .started
            .elapsed()
            .as_millis()
            .try_into()
            .unwrap_or(u64::MAX))
    }

    fn now_us(&mut self) -> wasmtime::Result<u64> {
        Ok(self
            .started
            .elapsed()
            .as_micros()
            .try_into()
            .unwrap_or(u64::MAX))
    }

    async fn sleep_ms(&mut self, duration_ms: u32) -> wasmtime::Result<()> {
        let sleep = tokio::time::sleep(Duration::from_millis(u64::from(duration_ms)));
        tokio::select! {
            () = sleep => {}
            _ = self.stopping.wait_for(|stopping| *stopping) => {}
        }
        Ok(())
    }
}
