//! One device's sandbox as the supervisor's [`Runtime`]: fresh stores and
//! instances, `run-iteration` calls classified into typed outcomes, real
//! time, OS randomness, and logic offered by a swap. Returns typed results;
//! the CLI words them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use host_core::drive::{self, DriveError, Outcome, Runtime};
use host_core::outcome::{IterationFailure, Stop};
use host_core::settings::DeviceSettings;
use host_core::supervisor::{Ending, Plan, Supervisor};
use host_core::wit::types_bindings::Settings;
use host_core::wit::{Device, DevicePre};
use tokio::sync::watch;
use wasmtime::Store;

use crate::sandbox::limits::new_store;
use crate::sandbox::state::{DeviceState, Sandbox};

/// A component ready to run: prepared against the world, and named.
pub struct Logic {
    /// The prepared component.
    pub pre: DevicePre<DeviceState>,
    /// SHA-256 of its `.wasm`, hex.
    pub sha256: String,
}

impl Logic {
    /// The first 12 hex digits of its SHA-256, for logs.
    pub fn short(&self) -> &str {
        &self.sha256[..self.sha256.len().min(12)]
    }
}

impl fmt::Display for Logic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256 {}", self.short())
    }
}

/// New logic offered by a watcher; taken at the next iteration boundary.
pub type Swaps = watch::Receiver<Option<Arc<Logic>>>;

/// Why a device's run ended in failure.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The supervisor gave up (a failed iteration with a fixed count, or
    /// too many stops in a row).
    #[error("the device's run ended: {0:?}")]
    Ended(Ending),
    /// The guest could not be instantiated.
    #[error("cannot start the device logic")]
    Instantiate(#[source] wasmtime::Error),
}

/// The sandbox of one device on real time.
struct SandboxRuntime {
    sandbox: Sandbox,
    settings: Settings,
    swaps: Option<Swaps>,
}

impl Runtime<Arc<Logic>> for SandboxRuntime {
    type Instance = (Store<DeviceState>, Device);
    type Error = wasmtime::Error;

    async fn instantiate(&mut self, logic: &Arc<Logic>) -> wasmtime::Result<Self::Instance> {
        let mut store = new_store(logic.pre.engine(), self.sandbox.state());
        let device = logic.pre.instantiate_async(&mut store).await?;
        Ok((store, device))
    }

    async fn run_iteration(
        &mut self,
        (store, device): &mut Self::Instance,
        iteration: u32,
    ) -> wasmtime::Result<Outcome> {
        store.data_mut().sockets.take_last_failure();
        let result = device
            .call_run_iteration(&mut *store, &self.settings, iteration)
            .await;
        Ok(match result {
            Ok(Ok(report)) => Outcome::Completed(report.into()),
            Ok(Err(error)) => {
                let failure = IterationFailure::from(error);
                // The detail of a socket failure explains this iteration's
                // failure only when it is a failure of the same kind.
                let socket = store
                    .data_mut()
                    .sockets
                    .take_last_failure()
                    .filter(|s| failure.transport_error() == Some(s.error));
                Outcome::Failed(failure, socket)
            }
            Err(trap) => Outcome::Stopped(Stop::from_error(&trap)),
        })
    }

    async fn sleep(&mut self, delay_ms: u32) {
        tokio::time::sleep(Duration::from_millis(u64::from(delay_ms))).await;
    }

    fn random_u32(&mut self) -> u32 {
        let mut random = [0u8; 4];
        let _ = getrandom::fill(&mut random);
        u32::from_le_bytes(random)
    }

    fn take_swap(&mut self) -> Option<Arc<Logic>> {
        let rx = self.swaps.as_mut()?;
        if rx.has_changed().unwrap_or(false) {
            rx.borrow_and_update().clone()
        } else {
            None
        }
    }
}

/// Runs one device: `logic` in `sandbox` with `settings`, iterations per
/// `plan`, swapped-in logic from `swaps`. Events go to the sandbox's
/// observer. Returns the number of successful iterations.
pub async fn run_device(
    logic: Arc<Logic>,
    swaps: Option<Swaps>,
    sandbox: Sandbox,
    settings: &DeviceSettings,
    plan: Plan,
) -> Result<u32, RunError> {
    let mut supervisor = Supervisor::new(plan, logic, sandbox.observer.clone());
    let mut runtime = SandboxRuntime {
        sandbox,
        settings: settings.into(),
        swaps,
    };
    drive::drive(&mut supervisor, &mut runtime)
        .await
        .map_err(|e| match e {
            DriveError::Ended(ending) => RunError::Ended(ending),
            DriveError::Runtime(e) => RunError::Instantiate(e),
        })
}
