//! The `log` interface: guest lines go to the host's log with the device
//! name, through the device's output limit.

use std::sync::Arc;

use host_core::Level;
use host_core::wit::log::Host;
use host_core::wit::log::WitLevel;

use crate::limits::output::{GuestOutput, OVER_LIMIT_WAIT};

/// A device's log.
#[derive(Debug)]
pub struct LogCtx {
    /// Where lines go, limited.
    pub output: Arc<GuestOutput>,
}

impl Host for LogCtx {
    async fn write(&mut self, level: WitLevel, message: String) -> wasmtime::Result<()> {
        if !self.output.line(Level::from(level), "", &message) {
            self.output.flood()?;
            tokio::time::sleep(OVER_LIMIT_WAIT).await;
        }
        Ok(())
    }
}
