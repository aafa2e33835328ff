//! Runs a device component: the engine and linker, instantiation checked
//! against the world, and the iteration loop with its delay, exit rules and
//! one-line failure messages.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store};

use crate::bindings::types::{ConnackRefusal, IterationError, IterationReport, Settings};
use crate::bindings::{Device, DevicePre};
use crate::mtls_socket::SocketCtx;
use crate::state::DeviceState;
use crate::tls::Failure;

/// The world's name, for messages.
pub const WORLD: &str = "mqtt-device:runtime/device@0.1.0";

/// A wasmtime engine for device components.
pub fn engine() -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("cannot set up the WebAssembly engine")
}

/// A linker with WASI (stdio, clocks) and the world's imports.
pub fn linker(engine: &Engine) -> anyhow::Result<Linker<DeviceState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    Device::add_to_linker::<_, HasSelf<DeviceState>>(&mut linker, |s| s)?;
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
    /// The guest trapped.
    #[error(
        "the device logic trapped in iteration {iteration}: {message} (fix the guest; the host is unaffected)"
    )]
    Trapped {
        /// Which iteration, from 1.
        iteration: u32,
        /// The trap and its backtrace, on one line.
        message: String,
    },
    /// The guest could not be instantiated.
    #[error("cannot start the device logic: {0:#}")]
    Instantiate(anyhow::Error),
}

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
            let mut store = Store::new(current.pre.engine(), state());
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
                tracing::info!(target: "host", "{}", report_line(iteration, &report));
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
                tracing::error!(target: "host", "iteration {iteration} failed: {message}");
            }
            Err(trap) => {
                let message = format!("{trap:#}").replace('\n', " | ");
                // A trapped instance cannot be entered again.
                instance = None;
                if let Some(old) = previous.take() {
                    tracing::error!(target: "host", "swapped-in sha256 {} trapped in its first iteration ({message}); back to sha256 {}", current.short(), old.short());
                    current = old;
                } else if plan.iterations.is_some() {
                    return Err(RunError::Trapped { iteration, message });
                } else {
                    tracing::error!(target: "host", "the device logic trapped in iteration {iteration}: {message}; starting a fresh instance");
                }
            }
        }
        if plan.iterations.is_some_and(|n| succeeded >= n) {
            return Ok(succeeded);
        }
        tracing::info!(target: "host", "Short delay before starting the next iteration....");
        tokio::time::sleep(Duration::from_millis(u64::from(plan.iteration_delay_ms))).await;
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
    let detail = |code: &dyn std::fmt::Debug| match failure {
        Some(f) => f.to_string(),
        None => format!("{code:?}"),
    };
    match error {
        IterationError::ConnectRetriesExhausted(code) => format!(
            "could not connect to {broker}, all {} retries exhausted: {}",
            settings.backoff_max_attempts,
            detail(code)
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
