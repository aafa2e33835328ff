//! The `log` interface: guest lines go to the host's log with the device name.

use crate::bindings::log::{Host, Level};
use crate::state::DeviceState;

/// Longest guest log line kept, bytes; the rest is cut.
const MAX_LINE: usize = 4096;

impl Host for DeviceState {
    async fn write(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let mut message = message;
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let device = &self.name;
        match level {
            Level::Debug => tracing::debug!(target: "device", "[{device}] {message}"),
            Level::Info => tracing::info!(target: "device", "[{device}] {message}"),
            Level::Warn => tracing::warn!(target: "device", "[{device}] {message}"),
            Level::Error => tracing::error!(target: "device", "[{device}] {message}"),
        }
        Ok(())
    }
}
