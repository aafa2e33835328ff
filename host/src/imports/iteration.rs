//! The `iteration` interface: a logic declares the longest its iteration
//! in flight can take; the sandbox's watchdog reads it (see
//! [`crate::sandbox::runtime`]).

use host_core::wit::iteration::Host;
use tokio::sync::watch;

/// A device's declared bound: `None` until the logic declares one in the
/// iteration in flight.
#[derive(Debug)]
pub struct IterationCtx {
    declared: watch::Sender<Option<u64>>,
}

impl Default for IterationCtx {
    fn default() -> Self {
        Self {
            declared: watch::channel(None).0,
        }
    }
}

impl IterationCtx {
    /// Starts an iteration: nothing declared yet. Returns where its
    /// declarations arrive.
    pub fn new_iteration(&self) -> watch::Receiver<Option<u64>> {
        self.declared.send_replace(None);
        self.declared.subscribe()
    }
}

impl Host for IterationCtx {
    fn declare_bound(&mut self, ms: u64) -> wasmtime::Result<()> {
        self.declared.send_replace(Some(ms));
        Ok(())
    }
}
