//! Runs a device component: the engine and linker, instantiation checked
//! against the world, and the iteration loop with its delay, exit rules and
//! one-line failure messages.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use guest::backoff::Backoff;
use tokio::sync::watch;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store};

use crate::bindings::mtls_socket::ErrorCode;
use crate::bindings::types::{ConnackRefusal, IterationError, IterationReport, Settings};
use crate::bindings::{Device, DevicePre};
use crate::limits;
use crate::mtls_socket::SocketCtx;
use crate::state::DeviceState;
use crate::tls::Failure;

/// The world's name, for messages.
pub const WORLD: &str = "mqtt-device:runtime/device@0.1.0";

/// A wasmtime engine for device components.
pub fn engine() -> anyhow::Result<Engine> {
    engine_for(None)
}

/// An engine; with `pool`, instances come from wasmtime's pooling allocator
/// sized for that many devices with these limits (fleet mode).
pub fn engine_for(pool: Option<(u32, &crate::limits::Limits)>) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    if let Some((devices, limits)) = pool {
        // One instance per device, plus room for restarts overlapping and
        // trial instances of swapped-in logic.
        let slots = devices + devices / 8 + 16;
        let mut p = wasmtime::PoolingAllocationConfig::default();
        p.total_component_instances(slots)
            .max_core_instances_per_component(16)
            .total_core_instances(slots * 8)
            .max_memories_per_component(4)
            .total_memories(slots * 2)
            .max_tables_per_component(8)
            .total_tables(slots * 4)
            .table_elements(limits.max_table_elements)
            .max_memory_size(limits.max_memory_bytes)
            .total_stacks(slots);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(p));
        // Reserve only what a guest may use: thousands of 4 GiB reservations
        // would not fit the address space.
        config.memory_reservation(limits.max_memory_bytes as u64);
        config.memory_guard_size(64 << 10);
        config.memory_reservation_for_growth(0);
        config.async_stack_size(1 << 20);
    }
    // CPU limits: wasm code checks the epoch, which a thread advances.
    config.epoch_interruption(true);
    let engine = Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("cannot set up the WebAssembly engine")?;
    crate::limits::start_epoch_ticker(&engine);
    Ok(engine)
}

/// A linker with WASI (stdio, clocks) and the world's imports.
pub fn linker(engine: &Engine) -> anyhow::Result<Linker<DeviceState>> {
    let mut linker: Linker<DeviceState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    // The getter runs on every import call: count them for the CPU limit.
    Device::add_to_linker::<_, HasSelf<DeviceState>>(&mut linker, |s: &mut DeviceState| {
        s.cpu.host_calls = s.cpu.host_calls.wrapping_add(1);
        s
    })?;
    Ok(linker)
}

/// Checks `component` against the world and prepares it for instantiation.
pub fn prepare(
    linker: &Linker<DeviceState>,
    component: &Component,
) -> anyhow::Result<DevicePre<DeviceState>> {
    let pre = linker.instantiate_pre(component).map_err(|e| {
        anyhow::anyhow!("the component does not match the world {WORLD}: {e:#} (build it against this project's wit/)")
    })?;
    DevicePre::new(pre).map_err(|e| {
        anyhow::anyhow!(
            "the component does not match the world {WORLD}: {e:#} (it must export run-iteration)"
        )
    })
}

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

/// One line for a trap: its message and, when recognisable, the limit hit.
pub fn describe_trap(trap: &wasmtime::Error, limits: &crate::limits::Limits) -> String {
    // The root cause is the trap itself; the outer layers are backtraces.
    let cause = trap.root_cause().to_string().replace('\n', " ");
    match crate::limits::trap_hint(&cause, limits) {
        Some(hint) => format!("{cause} ({hint})"),
        None => cause,
    }
}

fn report_line(iteration: u32, r: &IterationReport) -> String {
    format!(
        "Demo iteration {iteration} completed successfully: {} published, {} acknowledged, {} echoes received, {} TLS connection(s).",
        r.published, r.acknowledged, r.echoes, r.connections
    )
}

/// One line naming the cause of a failed iteration and the fix.
pub fn describe(error: &IterationError, settings: &Settings, failure: Option<&Failure>) -> String {
    let broker = format!("{}:{}", settings.broker_host, settings.broker_port);
    let detail = |code: &ErrorCode| match failure {
        Some(f) => f.to_string(),
        None => crate::mtls_socket::describe_code(*code).to_string(),
    };
    match error {
        IterationError::ConnectRetriesExhausted(code) => format!(
            "could not connect to {broker}, all {} retries exhausted: {}",
            settings.backoff_max_attempts,
            detail(code)
        ),
        IterationError::TransportPermanent(
            code @ (ErrorCode::NotPermitted
            | ErrorCode::TooManyConnections
            | ErrorCode::MessageTooLarge),
        ) => format!(
            "the device logic hit a sandbox limit: {}",
            crate::mtls_socket::describe_code(*code)
        ),
        IterationError::TransportPermanent(code) => {
            format!(
                "TLS connection to {broker} failed, not retried: {}",
                detail(code)
            )
        }
        IterationError::Transport(code) => format!("connection to {broker} lost: {}", detail(code)),
        IterationError::ConnackRefused(refusal) => {
            let (what, fix) = match refusal {
                ConnackRefusal::UnacceptableProtocolVersion => (
                    "unacceptable protocol version",
                    "use a broker that speaks MQTT 3.1.1",
                ),
                ConnackRefusal::IdentifierRejected => {
                    ("identifier rejected", "pass another --client-id")
                }
                ConnackRefusal::ServerUnavailable => {
                    ("server unavailable", "retry later or check the broker")
                }
                ConnackRefusal::BadUserNameOrPassword => (
                    "bad user name or password",
                    "check --username and --password",
                ),
                ConnackRefusal::NotAuthorized => (
                    "not authorized",
                    "allow this client id in the broker's policy",
                ),
            };
            format!("the broker {broker} refused the MQTT connection: {what} ({fix})")
        }
        IterationError::SubscribeRetriesExhausted(topic) => format!(
            "the broker {broker} rejected the subscription to {topic} after all retries (allow the topic in the broker's policy)"
        ),
        IterationError::TimedOut(what) => {
            format!(
                "timed out waiting for {what} from {broker} (check the broker's log, or raise --process-loop-ms)"
            )
        }
        IterationError::ProtocolViolation(what) => format!(
            "the broker {broker} sent invalid MQTT: {what} (check that --broker points at an MQTT 3.1.1 broker)"
        ),
    }
}

/// A socket context that allows exactly the broker in `settings` and `extra`.
pub fn sockets_for(
    settings: &Settings,
    tls: crate::tls::TlsClient,
    extra: &[crate::mtls_socket::Endpoint],
) -> SocketCtx {
    let mut allowed = vec![crate::mtls_socket::Endpoint {
        host: settings.broker_host.clone(),
        port: settings.broker_port,
    }];
    allowed.extend_from_slice(extra);
    SocketCtx::new(tls, allowed)
}
