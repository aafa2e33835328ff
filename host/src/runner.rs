//! Runs a device component: the iteration loop with its delay, restarts,
//! hot-swap points and exit rules.

use std::sync::Arc;
use std::time::Duration;

use guest::backoff::Backoff;
use tokio::sync::watch;
use wasmtime::Store;

use crate::bindings::types::{IterationReport, Settings};
use crate::bindings::{Device, DevicePre};
use crate::explain::{describe, describe_trap};
use crate::limits;
use crate::state::DeviceState;

/// How to run the iterations.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Settings handed to the guest.
    pub settings: Settings,
    /// Stop after this many successful iterations; `None` = forever, and a
    /// failed iteration is logged and followed by the next one.
    pub iterations: Option<u32>,
    /// Wait between iterations, milliseconds.
    pub iteration_delay_ms: u32,
    /// Restarts of a trapped or stopped guest, with Full-Jitter backoff.
    pub restart: RestartPolicy,
    /// Fleet counters to report into, in fleet mode.
    pub stats: Option<Arc<crate::fleet::FleetStats>>,
}

/// How a guest that traps (or is stopped by a limit) is restarted.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    /// First backoff window, milliseconds.
    pub base_ms: u32,
    /// Largest backoff window, milliseconds.
    pub max_ms: u32,
    /// Restarts in a row before giving up; 0 = never restart.
    pub max_attempts: u32,
}

/// Process exit codes of `host run`.
pub mod exit {
    /// A setting, file or component was wrong (the message says which).
    pub const SETUP: u8 = 1;
    /// An iteration failed in `--iterations` mode.
    pub const ITERATION_FAILED: u8 = 2;
    /// The guest trapped or hit a limit, and the restarts are exhausted.
    pub const GUEST_FAILED: u8 = 3;
}

/// Why a run ended in failure.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// An iteration failed (in `--iterations` mode).
    #[error("iteration {iteration} failed: {message}")]
    IterationFailed {
        /// Which iteration, from 1.
        iteration: u32,
        /// Cause and fix.
        message: String,
    },
    /// The guest trapped or hit a limit too many times in a row.
    #[error(
        "the device logic was stopped {traps} time(s) in a row and the restarts are exhausted; last: {message} (fix the guest or raise the limit; the host was unaffected)"
    )]
    GuestFailed {
        /// Traps in a row.
        traps: u32,
        /// The last trap, on one line, with the limit it hit if known.
        message: String,
    },
    /// The guest could not be instantiated.
    #[error("cannot start the device logic: {0:#}")]
    Instantiate(anyhow::Error),
    /// In fleet mode, some devices failed (each logged why).
    #[error("{failed} of {devices} devices failed (their log lines say why)")]
    FleetFailed {
        /// Devices that failed.
        failed: usize,
        /// Devices in the fleet.
        devices: usize,
    },
}

/// A component ready to run: prepared against the world, and named.
pub struct Logic {
    /// The prepared component.
    pub pre: DevicePre<DeviceState>,
    /// SHA-256 of its `.wasm`, hex.
    pub sha256: String,
}

impl RunError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::IterationFailed { .. } => exit::ITERATION_FAILED,
            RunError::GuestFailed { .. } => exit::GUEST_FAILED,
            RunError::Instantiate(_) => exit::SETUP,
            RunError::FleetFailed { .. } => exit::ITERATION_FAILED,
        }
    }
}

impl Logic {
    /// The first 12 hex digits of its SHA-256, for logs.
    pub fn short(&self) -> &str {
        &self.sha256[..self.sha256.len().min(12)]
    }
}

/// Makes the data of a fresh store (a device's sandbox).
pub type StateFactory = Arc<dyn Fn() -> DeviceState + Send + Sync>;

/// New logic offered by a watcher; taken at the next iteration boundary.
pub type Swaps = watch::Receiver<Option<Arc<Logic>>>;

/// Runs iterations per `plan`, starting with `logic` and taking swapped-in
/// logic from `swaps` between iterations. Returns the number of successful
/// iterations. Logic that traps in its first iteration after a swap is
/// replaced by the logic it replaced.
pub async fn run(
    logic: Arc<Logic>,
    mut swaps: Option<Swaps>,
    state: &StateFactory,
    plan: &Plan,
) -> Result<u32, RunError> {
    let mut current = logic;
    let mut previous: Option<Arc<Logic>> = None;
    let mut succeeded = 0u32;
    let mut iteration = 0u32;
    let mut instance: Option<(Store<DeviceState>, Device)> = None;
    let new_restarts = || {
        Backoff::new(
            plan.restart.base_ms,
            plan.restart.max_ms,
            plan.restart.max_attempts,
        )
    };
    let mut restarts = new_restarts();
    let mut traps_in_a_row = 0u32;
    loop {
        iteration += 1;
        // The safe point: no iteration is in flight, every publish of the
        // last one was acknowledged or reported.
        if let Some(rx) = swaps.as_mut()
            && rx.has_changed().unwrap_or(false)
            && let Some(next) = rx.borrow_and_update().clone()
        {
            tracing::info!(target: "host", "sha256 {} takes over from sha256 {} at iteration {iteration}", next.short(), current.short());
            previous = Some(std::mem::replace(&mut current, next));
            instance = None;
        }
        if instance.is_none() {
            let mut store = limits::new_store(current.pre.engine(), state());
            let device = current
                .pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| RunError::Instantiate(e.into()))?;
            instance = Some((store, device));
        }
        let Some((store, device)) = instance.as_mut() else {
            unreachable!("instantiated above")
        };
        store.data_mut().sockets.last_failure = None;
        match device
            .call_run_iteration(&mut *store, &plan.settings, iteration)
            .await
        {
            Ok(Ok(report)) => {
                succeeded += 1;
                previous = None;
                traps_in_a_row = 0;
                restarts = new_restarts();
                if let Some(stats) = &plan.stats {
                    stats.iteration_done(&report);
                }
                tracing::info!(target: "host", "[{}] {}", plan.settings.client_id, report_line(iteration, &report));
            }
            Ok(Err(error)) => {
                previous = None;
                let message = describe(
                    &error,
                    &plan.settings,
                    store.data().sockets.last_failure.as_ref(),
                );
                if plan.iterations.is_some() {
                    return Err(RunError::IterationFailed { iteration, message });
                }
                tracing::error!(target: "host", "[{}] iteration {iteration} failed: {message}", plan.settings.client_id);
            }
            Err(trap) => {
                let limits = store.data().limits;
                let message = describe_trap(&trap, &limits);
                if let Some(stats) = &plan.stats {
                    stats.failed();
                }
                // A trapped instance cannot be entered again.
                instance = None;
                if let Some(old) = previous.take() {
                    tracing::error!(target: "host", "swapped-in sha256 {} trapped in its first iteration ({message}); back to sha256 {}", current.short(), old.short());
                    current = old;
                } else {
                    traps_in_a_row += 1;
                    tracing::error!(target: "host", "[{}] the device logic was stopped in iteration {iteration}: {message}", plan.settings.client_id);
                    let mut random = [0u8; 4];
                    let _ = getrandom::fill(&mut random);
                    match restarts.next_delay_ms(u32::from_le_bytes(random)) {
                        Some(delay_ms) => {
                            tracing::warn!(target: "host", "[{}] restarting the device logic on a fresh instance in {delay_ms} ms (restart {} of {})", plan.settings.client_id, restarts.attempts_done(), plan.restart.max_attempts);
                            tokio::time::sleep(Duration::from_millis(u64::from(delay_ms))).await;
                            continue;
                        }
                        None => {
                            return Err(RunError::GuestFailed {
                                traps: traps_in_a_row,
                                message,
                            });
                        }
                    }
                }
            }
        }
        if plan.iterations.is_some_and(|n| succeeded >= n) {
            return Ok(succeeded);
        }
        tracing::info!(target: "host", "[{}] Short delay before starting the next iteration....", plan.settings.client_id);
        tokio::time::sleep(Duration::from_millis(u64::from(plan.iteration_delay_ms))).await;
    }
}

fn report_line(iteration: u32, r: &IterationReport) -> String {
    format!(
        "Demo iteration {iteration} completed successfully: {} published, {} acknowledged, {} echoes received, {} TLS connection(s).",
        r.published, r.acknowledged, r.echoes, r.connections
    )
}
