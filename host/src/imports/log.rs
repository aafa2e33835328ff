//! The `log` interface: guest lines go to the host's log with the device name.

use host_core::Level;
use host_core::wit::log::Host;
use host_core::wit::log_bindings::Level as WitLevel;

/// Longest guest log line kept, bytes; the rest is cut.
const MAX_LINE: usize = 4096;

/// A device's log.
#[derive(Debug)]
pub struct LogCtx {
    /// The device's name, put before each line.
    pub device: String,
}

impl Host for LogCtx {
    async fn write(&mut self, level: WitLevel, message: String) -> wasmtime::Result<()> {
        let mut message = message;
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let device = &self.device;
        match Level::from(level) {
            Level::Debug => tracing::debug!(target: "device", "[{device}] {message}"),
            Level::Info => tracing::info!(target: "device", "[{device}] {message}"),
            Level::Warn => tracing::warn!(target: "device", "[{device}] {message}"),
            Level::Error => tracing::error!(target: "device", "[{device}] {message}"),
        }
        Ok(())
    }
}
