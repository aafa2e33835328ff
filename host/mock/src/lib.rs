//! A mock host for device components of the `mqtt-device:runtime/device`
//! world. It implements the same imports as the real host with no TLS and no
//! sockets: a scripted broker, entropy from a seed, virtual time, and a record
//! of every call, so guest logic is tested fast and deterministically. Runs
//! go through the real host's supervisor (`host_core::drive`): iterations,
//! their delay, and restarts of a stopped guest on a fresh instance behave
//! as in `host run`, on virtual time. So do the sandbox's limits
//! (`host_core::limits`, the same code and defaults as `host run`'s): the
//! iteration timeout and the connect and output rates on virtual time,
//! the CPU limit and budget on the guest's real computation, memory and
//! tables; a logic is stopped by the limit that would stop it under
//! `host run`. Everything but the CPU limits is deterministic: those time
//! real computation, as the host's do, so a logic near them may pass on
//! one machine and not another (a logic far from them, as the demo is at a
//! few milliseconds an iteration, never meets them).
//!
//! ```no_run
//! use mock_host::{MockHost, Scenario, Script, Step, TransportError};
//! let host = MockHost::load("target/demo.wasm").unwrap();
//! let mut scenario = Scenario::new(Script::steps([Step::RefuseConnect(TransportError::ConnectionRefused)]));
//! scenario.seed = 7;
//! let outcome = host.run(scenario);
//! assert!(outcome.results[0].is_ok());
//! assert_eq!(outcome.sleeps().len(), 1);
//! ```

#![deny(unsafe_code)]

pub mod file;
mod imports;
pub mod script;
mod wasi;

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use host_core::drive::{self, DriveError, Outcome, Runtime};
use host_core::observer::{Event, Observer};
use host_core::state::Quota;
use host_core::state::ctx::StateCtx;
pub use host_core::state::memory::MemoryBackend;
use host_core::supervisor::{Ending, Plan, Supervisor};
use host_core::wit::types::Settings;
use host_core::wit::{Device, DevicePre};
use mqttbytes::v4::Packet;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, UpdateDeadline};
use wasmtime_wasi_config::WasiConfigVariables;

pub use crate::imports::{Broker, Call, MAX_RECORDED_BYTES, MockConnection, MockState};
pub use crate::script::{AfterScript, Delivery, Reply, Script, Step, auto_reply, echo_of};
pub use crate::wasi::WALL_CLOCK_START_SECS;
pub use host_core::limits::Limits;
pub use host_core::outcome::{ConnackRefusal, IterationFailure, IterationReport, Stop};
pub use host_core::settings::DeviceSettings;
pub use host_core::supervisor::RestartPolicy;
pub use host_core::{Level, TransportError};

/// The demo's settings with the original's constants, against
/// `broker.example:8883` as client `mock-device`.
pub fn default_settings() -> DeviceSettings {
    DeviceSettings::new(
        "broker.example",
        host_core::settings::defaults::BROKER_PORT,
        "mock-device",
    )
}

/// One run of a component in the mock host.
pub struct Scenario {
    /// Settings passed to every `run-iteration`.
    pub settings: DeviceSettings,
    /// The broker's behaviour.
    pub script: Script,
    /// Seed of the entropy the guest draws (and, apart from it, of the
    /// host's restart jitter).
    pub seed: u64,
    /// Iterations, their delay and restarts, as `host run` takes them;
    /// by default one successful iteration and the host's restart policy.
    pub plan: Plan,
    /// The device's state (`wasi:keyvalue`), with the real host's default
    /// quota: seed it before the run, read it after, or pass the same
    /// store to the next scenario to run after a power cut.
    pub store: Arc<MemoryBackend>,
    /// The logic's own settings (`wasi:config`).
    pub logic_config: Vec<(String, String)>,
    /// The sandbox's limits, as `host run`'s flags set them; `None`: the
    /// mock host's ([`MockLimits::sandbox`], `host run`'s defaults unless
    /// set otherwise).
    pub limits: Option<Limits>,
}

impl Scenario {
    /// One iteration with default settings, seed 0, and `script`.
    pub fn new(script: Script) -> Self {
        Self {
            settings: default_settings(),
            script,
            seed: 0,
            plan: Plan {
                iterations: Some(1),
                ..Plan::default()
            },
            store: MemoryBackend::new(Quota::default()),
            logic_config: Vec::new(),
            limits: None,
        }
    }
}

/// The record of a run: its results, stops, events and every call.
#[derive(Debug)]
pub struct Record {
    /// Result of each `run-iteration` that returned.
    pub results: Vec<Result<IterationReport, IterationFailure>>,
    /// What ended the run early, if anything did: a scripting failure, or
    /// the last stop when the restarts ran out. `None` when the run ended
    /// by its plan or by a failed iteration. (A stop the host restarted from
    /// is in [`Record::stops`] only.)
    pub aborted: Option<String>,
    /// Every time the guest was stopped (trap or limit), in order.
    pub stops: Vec<Stop>,
    /// The supervisor's events, in order.
    pub events: Vec<Event>,
    /// Every recorded call, in order.
    pub calls: Vec<Call>,
    /// Virtual time at the end, milliseconds.
    pub now_ms: u64,
    /// Script steps left undone.
    pub steps_left: usize,
    /// The device's state after the run.
    pub store: std::collections::BTreeMap<String, Vec<u8>>,
    /// Output lines dropped over the output limit.
    pub dropped_lines: u64,
    /// Calls left out of [`Record::calls`] once it held
    /// [`MAX_RECORDED_BYTES`].
    pub calls_cut: u64,
}

impl Record {
    /// Packets the guest sent, in order.
    pub fn sent(&self) -> Vec<Packet> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Sent { packet, .. } => Some(packet.clone()),
                _ => None,
            })
            .collect()
    }

    /// Names of the packets the guest sent ("CONNECT", ...).
    pub fn sent_names(&self) -> Vec<&'static str> {
        self.sent()
            .iter()
            .map(mqtt_core::packets::packet_name)
            .collect()
    }

    /// The bounds the logic declared for its iterations
    /// (`iteration.declare-bound`), milliseconds, in order.
    pub fn declared_bounds(&self) -> Vec<u64> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::DeclaredBound(ms) => Some(*ms),
                _ => None,
            })
            .collect()
    }

    /// Durations of the guest's `sleep-ms` calls, milliseconds.
    pub fn sleeps(&self) -> Vec<u32> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Sleep { ms, .. } => Some(*ms),
                _ => None,
            })
            .collect()
    }

    /// The log lines: the guest's own, its stdout and stderr lines
    /// ("stdout: ..."), and the host's lines about it ("host: ..."), as
    /// `host run` logs them.
    pub fn log(&self) -> Vec<String> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Log(_, m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    /// Number of `connect` calls.
    pub fn connects(&self) -> usize {
        self.calls
            .iter()
            .filter(|c| matches!(c, Call::Connect { .. }))
            .count()
    }

    /// The first iteration's result; panics, with the trap, if there is none.
    pub fn result(&self) -> &Result<IterationReport, IterationFailure> {
        match self.results.first() {
            Some(r) => r,
            None => panic!(
                "no iteration returned; aborted: {:?}; stops: {:?}",
                self.aborted, self.stops
            ),
        }
    }
}

/// The project's `target/demo.wasm` in a mock host, compiled once per process
/// (build it with scripts/build).
pub fn demo_host() -> &'static MockHost {
    static HOST: std::sync::OnceLock<MockHost> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/demo.wasm");
        MockHost::load(path)
            .unwrap_or_else(|e| panic!("{path}: {e:#} (build it with scripts/build)"))
    })
}

/// A compiled component and a linker with the mock imports.
pub struct MockHost {
    logic: MockLogic,
    limits: MockLimits,
}

/// What contains a logic under the mock host: `host run`'s limits, and a
/// real-time limit of its own, so that a looping, hanging or greedy logic
/// fails its scenario instead of stopping the test run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MockLimits {
    /// The sandbox's limits for scenarios that set none (`host run`'s
    /// defaults, or `host test`'s flags); a scenario's `[limits]` are
    /// applied over them.
    pub sandbox: Limits,
    /// Real time a scenario may take; the guest is stopped wherever it
    /// computes once it is over, and the scenario fails. Not a limit of
    /// `host run`: a backstop for a logic that no other limit stops in
    /// time (its CPU budget is per iteration).
    pub real_time: Duration,
}

impl Default for MockLimits {
    fn default() -> Self {
        Self {
            sandbox: Limits::default(),
            real_time: Duration::from_secs(30),
        }
    }
}

/// An engine for mock runs: the component model, and epoch interruption
/// (with its ticker) for [`MockLimits::real_time`].
pub fn engine() -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    let engine = Engine::new(&config).map_err(anyhow::Error::from)?;
    host_core::epoch::start_ticker(&engine)?;
    Ok(engine)
}

/// The component a mock run instantiates.
#[derive(Clone)]
struct MockLogic(DevicePre<MockState>);

impl fmt::Display for MockLogic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the component")
    }
}

/// The world's imports on the mock's state: its own for the device's
/// interfaces, the real host's for the state and the logic's settings.
fn add_imports(linker: &mut Linker<MockState>) -> wasmtime::Result<()> {
    use host_core::wit;
    wit::mtls_socket::add_to_linker::<_, HasSelf<MockState>>(linker, |s| s)?;
    wit::entropy::add_to_linker::<_, HasSelf<MockState>>(linker, |s| s)?;
    wit::clock::add_to_linker::<_, HasSelf<MockState>>(linker, |s| s)?;
    wit::log::add_to_linker::<_, HasSelf<MockState>>(linker, |s| s)?;
    wit::iteration::add_to_linker::<_, HasSelf<MockState>>(linker, |s| s)?;
    wit::types::add_to_linker::<_, HasSelf<MockState>>(linker, |s| s)?;
    wit::keyvalue::add_to_linker(linker, |s| &mut s.counted().state)?;
    wasmtime_wasi_config::add_to_linker(linker, |s| {
        wasmtime_wasi_config::WasiConfig::new(&s.counted().config)
    })?;
    Ok(())
}

impl MockHost {
    /// Compiles the component at `path` and checks it against the world.
    pub fn load(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let engine = engine()?;
        let component =
            Component::from_file(&engine, path.as_ref()).map_err(anyhow::Error::from)?;
        Self::from_component(&engine, &component)
    }

    /// Uses an already compiled component. The real-time limit needs an
    /// engine with epoch interruption whose epoch advances (see [`engine`]).
    pub fn from_component(engine: &Engine, component: &Component) -> anyhow::Result<Self> {
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        add_imports(&mut linker).map_err(anyhow::Error::from)?;
        let pre = linker
            .instantiate_pre(component)
            .map_err(anyhow::Error::from)?;
        let pre = DevicePre::new(pre).map_err(anyhow::Error::from)?;
        Ok(Self {
            logic: MockLogic(pre),
            limits: MockLimits::default(),
        })
    }

    /// Runs later scenarios with these limits.
    pub fn with_limits(mut self, limits: MockLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The limits scenarios run with.
    pub fn limits(&self) -> MockLimits {
        self.limits
    }

    /// Runs a scenario under the host's supervisor, on virtual time.
    pub fn run(&self, scenario: Scenario) -> Record {
        let rng = ChaCha20Rng::seed_from_u64(scenario.seed);
        let sandbox = scenario.limits.unwrap_or(self.limits.sandbox);
        let broker = Arc::new(Mutex::new(Broker::new(
            scenario.script,
            rng,
            sandbox,
            (
                &scenario.settings.broker_host,
                scenario.settings.broker_port,
            ),
        )));
        let events = Arc::new(Recorder::default());
        let mut supervisor = Supervisor::new(scenario.plan, self.logic.clone(), events.clone());
        let mut runtime = MockRuntime {
            store: scenario.store.clone(),
            config: Arc::new(scenario.logic_config.iter().cloned().collect()),
            device: scenario.settings.client_id.as_str().into(),
            broker: broker.clone(),
            settings: (&scenario.settings).into(),
            // Apart from the guest's entropy, so its draws stay the seed's.
            jitter: ChaCha20Rng::seed_from_u64(scenario.seed ^ 0x5eed_5eed),
            seed: scenario.seed,
            limits: sandbox,
            real_time: self.limits.real_time,
            // A limit too far to represent is no limit.
            deadline: Instant::now()
                .checked_add(self.limits.real_time)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365)),
        };
        // Everything runs on virtual time: nothing waits for real.
        let ended = drive::run_ready(drive::drive(&mut supervisor, &mut runtime));
        drop(runtime);
        let events = std::mem::take(&mut *events.0.lock().unwrap_or_else(|p| p.into_inner()));
        let broker = Arc::try_unwrap(broker)
            .ok()
            .expect("every instance is gone")
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        let aborted = match ended {
            Err(waited) => Some(format!(
                "mock host: the logic {waited} (wait with the world's clock.sleep-ms)"
            )),
            Ok(Err(DriveError::Runtime(message))) => Some(message),
            Ok(Err(DriveError::Ended(Ending::GuestFailed { last, .. }))) => Some(last.to_string()),
            Ok(Ok(_)) | Ok(Err(DriveError::Ended(Ending::IterationFailed { .. }))) => None,
        };
        Record {
            results: events
                .iter()
                .filter_map(|e| match e {
                    Event::IterationCompleted { report, .. } => Some(Ok(report.clone())),
                    Event::IterationFailed { failure, .. } => Some(Err(failure.clone())),
                    _ => None,
                })
                .collect(),
            aborted,
            stops: events
                .iter()
                .filter_map(|e| match e {
                    Event::GuestStopped { stop, .. } | Event::FellBack { stop, .. } => {
                        Some(stop.clone())
                    }
                    _ => None,
                })
                .collect(),
            events,
            now_ms: broker.now_ms,
            // The steps of the file: an `after-ms` is part of its step.
            steps_left: broker
                .script
                .steps
                .iter()
                .filter(|s| !matches!(s, Step::After(_)))
                .count(),
            store: scenario.store.bucket(&scenario.settings.client_id),
            dropped_lines: broker.dropped_lines,
            calls_cut: broker.calls_cut,
            calls: broker.calls,
        }
    }
}

/// Records the supervisor's events.
#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl Observer for Recorder {
    fn observe(&self, event: &Event) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event.clone());
    }
}

/// The mock as the supervisor's runtime: instances share the broker; time
/// is the broker's virtual clock.
struct MockRuntime {
    store: Arc<MemoryBackend>,
    config: Arc<WasiConfigVariables>,
    device: Arc<str>,
    broker: Arc<Mutex<Broker>>,
    settings: Settings,
    jitter: ChaCha20Rng,
    seed: u64,
    /// The scenario's sandbox limits.
    limits: Limits,
    /// The real time a scenario may take.
    real_time: Duration,
    /// When the scenario's real time is up.
    deadline: Instant,
}

impl MockRuntime {
    fn broker(&self) -> std::sync::MutexGuard<'_, Broker> {
        self.broker.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Runtime<MockLogic> for MockRuntime {
    type Instance = (Store<MockState>, Device);
    /// A scripting failure or a looping guest: ends the run.
    type Error = String;

    async fn instantiate(&mut self, logic: &MockLogic) -> Result<Self::Instance, String> {
        let instance = {
            let mut b = self.broker();
            b.instantiated();
            b.instances
        };
        let mut state = MockState::new(self.broker.clone(), self.seed, instance, &self.limits);
        state.state = StateCtx::new(
            self.device.clone(),
            self.store.clone(),
            imports::state_write_permit(&self.broker),
            self.limits.state_writes_per_sec,
        );
        state.config = self.config.clone();
        let mut store = Store::new(logic.0.engine(), state);
        store.limiter(|s| &mut s.limits);
        // Guest computation is timed as under `host run`: every stretch of
        // wasm between host calls (host-core's CPU meter).
        store.call_hook(|mut ctx, hook| {
            ctx.data_mut().cpu.on_hook(hook, Instant::now());
            Ok(())
        });
        // Checked at every epoch tick while wasm runs: the CPU limits and
        // the output flood stop the guest as under `host run`; past the
        // scenario's real time the guest stops where it is and the run fails.
        let deadline = self.deadline;
        let real_time = self.real_time;
        let limits = self.limits;
        store.set_epoch_deadline(1);
        // The broker is never locked while wasm runs (an import takes and
        // releases it within its call); `try_lock` keeps it so: were it
        // held, the check waits for the next tick instead of a deadlock.
        store.epoch_deadline_callback(move |mut ctx| {
            let state = ctx.data_mut();
            state.cpu.check(&limits, Instant::now())?;
            let Ok(mut b) = state.broker.try_lock() else {
                return Ok(UpdateDeadline::Continue(1));
            };
            b.output.flood()?;
            if Instant::now() < deadline {
                return Ok(UpdateDeadline::Continue(1));
            }
            Err(b.fail(format!(
                "mock host: the scenario ran for over {} s of real time; the logic computes without end (host test --timeout-secs)",
                real_time.as_secs_f64()
            )))
        });
        match logic.0.instantiate_async(&mut store).await {
            Ok(device) => Ok((store, device)),
            Err(e) => Err(format!("instantiation failed: {e:#}")),
        }
    }

    async fn run_iteration(
        &mut self,
        (store, device): &mut Self::Instance,
        iteration: u32,
    ) -> Result<Outcome, String> {
        self.broker().new_iteration(iteration);
        store.data_mut().cpu.new_iteration();
        let result = device
            .call_run_iteration(&mut *store, &self.settings, iteration)
            .await;
        if let Some(failure) = self.broker().failure.clone() {
            return Err(failure);
        }
        Ok(match result {
            Ok(Ok(report)) => Outcome::Completed(report.into()),
            Ok(Err(error)) => Outcome::Failed(error.into(), None),
            Err(trap) => Outcome::Stopped(Stop::from_error(&trap)),
        })
    }

    async fn sleep(&mut self, delay_ms: u32) {
        let mut b = self.broker();
        b.now_ms += u64::from(delay_ms);
        b.calls.push(Call::HostWait(delay_ms));
    }

    fn random_u32(&mut self) -> u32 {
        self.jitter.next_u32()
    }

    fn take_swap(&mut self) -> Option<MockLogic> {
        None
    }
}
