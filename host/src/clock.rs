//! The `clock` interface on real time: a monotonic clock started with the
//! device, and tokio sleeps.

use std::time::{Duration, Instant};

use crate::bindings::clock::Host;
use crate::state::DeviceState;

impl Host for DeviceState {
    async fn now_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(elapsed_ms(self.started))
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

fn elapsed_ms(since: Instant) -> u64 {
    since.elapsed().as_millis().try_into().unwrap_or(u64::MAX)
}
