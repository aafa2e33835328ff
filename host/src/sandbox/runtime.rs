//! One device's sandbox as the supervisor's [`Runtime`]: fresh stores and
//! instances, `run-iteration` calls bounded by the iteration timeout and
//! classified into typed outcomes, real time, OS randomness, logic offered
//! by a swap, and the host's stop. Returns typed results; the CLI words
//! them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use host_core::drive::{self, DriveError, Outcome, Runtime};
use host_core::outcome::{IterationFailure, LimitHit, Stop, TimeoutSetBy};
use host_core::settings::DeviceSettings;
use host_core::supervisor::{Ending, Plan, Supervisor};
use host_core::wit::types::Settings;
use host_core::wit::{Device, DevicePre};
use tokio::sync::watch;
use tokio::time::Instant;
use wasmtime::Store;

use crate::limits::Limits;
use crate::sandbox::state::{DeviceState, Sandbox};
use crate::sandbox::store::new_store;

/// A component ready to run: prepared against the world, and named.
pub struct Logic {
    /// The prepared component.
    pub pre: DevicePre<DeviceState>,
    /// SHA-256 of its `.wasm`, hex.
    pub sha256: String,
    /// Its signed version, when it was verified against trusted keys.
    pub version: Option<u64>,
}

impl Logic {
    /// The first 12 hex digits of its SHA-256, for logs.
    pub fn short(&self) -> &str {
        &self.sha256[..self.sha256.len().min(12)]
    }
}

impl fmt::Display for Logic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Some(v) => write!(f, "version {v} (sha256 {})", self.short()),
            None => write!(f, "sha256 {}", self.short()),
        }
    }
}

/// New logic offered by a watcher or an update; taken at the next
/// iteration boundary.
pub type Swaps = watch::Receiver<Option<Arc<Logic>>>;

/// Offers new logic to one device.
pub type SwapSender = watch::Sender<Option<Arc<Logic>>>;

/// A channel of new logic for one device: a watched file and the update
/// channel offer into it, [`run_device`] takes from it.
pub fn swaps() -> (SwapSender, Swaps) {
    watch::channel(None)
}

/// Why a device's run ended in failure.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The supervisor gave up (a failed iteration with a fixed count, or
    /// too many stops in a row).
    #[error("the device's run ended before its iterations were done")]
    Ended(Ending),
    /// The guest could not be instantiated (the runtime's only failure:
    /// an iteration's call always ends in an outcome).
    #[error("cannot start the device logic")]
    Instantiate(#[source] wasmtime::Error),
}

/// Why a guest's start (its instantiation) was cut short; the source of a
/// [`RunError::Instantiate`] when it was.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// It did not finish within the iteration timeout.
    #[error("its start did not finish within {limit_ms} ms")]
    TimedOut {
        /// The timeout, milliseconds.
        limit_ms: u64,
        /// Who set it.
        set_by: TimeoutSetBy,
    },
    /// The host was stopping, and the time it allows passed.
    #[error("the host stopped while it started")]
    Interrupted,
}

/// How a call of `run-iteration` ended, before classification.
enum CallEnd<T> {
    /// It returned (or trapped).
    Returned(T),
    /// The iteration timeout passed: it, milliseconds, and who set it.
    TimedOut(u64, TimeoutSetBy),
    /// The host is stopping and the time allowed passed.
    Interrupted,
}

/// When a call must end.
enum Deadline {
    /// This many milliseconds after it starts (0 = never), set by this.
    Fixed(u64, TimeoutSetBy),
    /// What the logic declares for the iteration, at most the host's
    /// maximum (which also applies until it declares).
    Declared(watch::Receiver<Option<u64>>),
}

impl Deadline {
    /// The timeout now, milliseconds, and who set it.
    fn limit(&self) -> (u64, TimeoutSetBy) {
        match self {
            Deadline::Fixed(ms, by) => (*ms, *by),
            // A declared 0 is not "no limit" (the operator's 0 is): a logic
            // can shorten its own bound, never lift the host's maximum.
            Deadline::Declared(declared) => {
                host_core::timeout::iteration_timeout(None, *declared.borrow())
            }
        }
    }

    /// Resolves when the logic declares anew (never for a fixed one).
    async fn changed(&mut self) {
        if let Deadline::Declared(declared) = self
            && declared.changed().await.is_ok()
        {
            return;
        }
        std::future::pending().await
    }

    /// The deadline of a call made with `limits`: the operator's timeout,
    /// or, without one, the logic's declaration (`declared`).
    fn of(limits: &Limits, declared: watch::Receiver<Option<u64>>) -> Self {
        match limits.iteration_timeout_ms {
            Some(ms) => Deadline::Fixed(ms, TimeoutSetBy::Operator),
            None => Deadline::Declared(declared),
        }
    }
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
        // A flood that stopped the last instance is not this one's.
        self.sandbox.restarted();
        let mut store = new_store(logic.pre.engine(), self.sandbox.state());
        // A start function that never ends is bounded like an iteration
        // (nothing declared yet).
        let deadline = Deadline::of(&self.sandbox.limits, store.data().iteration.new_iteration());
        let start = logic.pre.instantiate_async(&mut store);
        match bounded(start, deadline, &self.sandbox).await {
            CallEnd::Returned(device) => Ok((store, device?)),
            CallEnd::TimedOut(limit_ms, set_by) => {
                Err(StartError::TimedOut { limit_ms, set_by }.into())
            }
            CallEnd::Interrupted => Err(StartError::Interrupted.into()),
        }
    }

    async fn run_iteration(
        &mut self,
        (store, device): &mut Self::Instance,
        iteration: u32,
    ) -> wasmtime::Result<Outcome> {
        let state = store.data_mut();
        state.sockets.take_last_failure();
        state.sockets.new_iteration();
        state.cpu.new_iteration();
        let deadline = Deadline::of(&self.sandbox.limits, state.iteration.new_iteration());
        self.sandbox.new_iteration(iteration);
        let end = {
            let call = device.call_run_iteration(&mut *store, &self.settings, iteration);
            bounded(call, deadline, &self.sandbox).await
        };
        self.sandbox.flush_output_notice();
        let result = match end {
            CallEnd::Returned(result) => result,
            CallEnd::TimedOut(limit_ms, set_by) => {
                return Ok(Outcome::Stopped(Stop::Limit(LimitHit::IterationTimeout {
                    limit_ms,
                    set_by,
                })));
            }
            CallEnd::Interrupted => return Ok(Outcome::Interrupted),
        };
        Ok(match result {
            Ok(Ok(report)) => Outcome::Completed(report.into()),
            Ok(Err(error)) => {
                let failure = IterationFailure::from(error);
                let socket = failure.explained_by(store.data_mut().sockets.take_last_failure());
                Outcome::Failed(failure, socket)
            }
            Err(trap) => Outcome::Stopped(Stop::from_error(&trap)),
        })
    }

    async fn sleep(&mut self, delay_ms: u32) {
        let sleep = tokio::time::sleep(Duration::from_millis(u64::from(delay_ms)));
        let mut stopping = self.sandbox.stopping.clone();
        tokio::select! {
            () = sleep => {}
            _ = stopping.wait_for(|stopping| *stopping) => {}
        }
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

    fn stop_requested(&self) -> bool {
        *self.sandbox.stopping.borrow()
    }
}

/// Awaits `call` until it returns, its deadline passes, or, once the host
/// is stopping, the stop timeout passes. The guest is stopped wherever it
/// is: in a host call, or computing (it yields at every epoch tick).
/// Dropping the call leaves its store unusable; the caller drops it, which
/// closes its connections.
async fn bounded<F: Future>(
    call: F,
    mut deadline: Deadline,
    sandbox: &Sandbox,
) -> CallEnd<F::Output> {
    let started = Instant::now();
    // About a year stands for "never" without overflowing an Instant.
    let year = Duration::from_secs(365 * 24 * 3600);
    let never = started + year;
    let at = |ms: u64| match ms {
        0 => never,
        ms => started + Duration::from_millis(ms).min(year),
    };
    let (mut limit_ms, mut set_by) = deadline.limit();
    let mut timeout = at(limit_ms);
    let mut stopping = sandbox.stopping.clone();
    let mut stop_by: Option<Instant> = None;
    tokio::pin!(call);
    loop {
        tokio::select! {
            result = &mut call => return CallEnd::Returned(result),
            () = tokio::time::sleep_until(timeout) => return CallEnd::TimedOut(limit_ms, set_by),
            () = deadline.changed() => {
                (limit_ms, set_by) = deadline.limit();
                timeout = at(limit_ms);
            }
            _ = stopping.wait_for(|stopping| *stopping), if stop_by.is_none() => {
                stop_by = Some(Instant::now() + sandbox.stop_timeout);
            }
            () = tokio::time::sleep_until(stop_by.unwrap_or(never)), if stop_by.is_some() => {
                return CallEnd::Interrupted;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a logic that declared 0 had no iteration timeout at all.
    #[test]
    fn a_declared_bound_is_kept_between_a_millisecond_and_the_hosts_maximum() {
        let (tx, rx) = watch::channel(None);
        let deadline = Deadline::Declared(rx);
        let max = Limits::ITERATION_TIMEOUT_MAX_MS;
        assert_eq!(deadline.limit(), (max, TimeoutSetBy::Maximum));
        for (declared, limit) in [(0, 1), (1500, 1500), (u64::MAX, max)] {
            tx.send_replace(Some(declared));
            assert_eq!(deadline.limit(), (limit, TimeoutSetBy::Logic), "{declared}");
        }
        let fixed = Deadline::Fixed(0, TimeoutSetBy::Operator);
        assert_eq!(
            fixed.limit(),
            (0, TimeoutSetBy::Operator),
            "the operator's 0 is no limit"
        );
    }
}
