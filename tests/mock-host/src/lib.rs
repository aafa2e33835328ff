//! A mock host for device components of the `mqtt-device:runtime/device`
//! world. It implements the same imports as the real host with no TLS and no
//! sockets: a scripted broker, entropy from a seed, virtual time, and a record
//! of every call, so guest logic is tested fast and deterministically.
//!
//! ```no_run
//! use mock_host::{MockHost, Scenario, Script, Step};
//! let host = MockHost::load("target/demo.wasm").unwrap();
//! let mut scenario = Scenario::new(Script::steps([Step::RefuseConnect(mock_host::ErrorCode::ConnectionRefused)]));
//! scenario.seed = 7;
//! let outcome = host.run(scenario);
//! assert!(outcome.results[0].is_ok());
//! assert_eq!(outcome.sleeps().len(), 1);
//! ```

#![deny(unsafe_code)]

pub mod bindings;
mod imports;
pub mod script;

use std::path::Path;

use mqttbytes::v4::Packet;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};

pub use crate::bindings::log::Level;
pub use crate::bindings::mtls_socket::ErrorCode;
pub use crate::bindings::types::{ConnackRefusal, IterationError, IterationReport, Settings};
pub use crate::imports::{Call, MAX_IMPORT_CALLS, MockConnection, MockState};
pub use crate::script::{AfterScript, Delivery, Reply, Script, Step, auto_reply, echo_of};

use crate::bindings::{Device, DevicePre};

/// The demo's settings with the original's constants, against
/// `broker.example:8883` as client `mock-device`.
pub fn default_settings() -> Settings {
    Settings {
        broker_host: "broker.example".into(),
        broker_port: 8883,
        client_id: "mock-device".into(),
        topic: "mock-device/example/topic".into(),
        payload: "Hello World!".into(),
        publish_count: 5,
        publish_delay_ms: 2000,
        process_loop_ms: 2000,
        connack_timeout_ms: 1000,
        transport_timeout_ms: 200,
        connect_timeout_ms: 5000,
        keep_alive_secs: 60,
        pingresp_timeout_ms: 5000,
        backoff_base_ms: 500,
        backoff_max_ms: 5000,
        backoff_max_attempts: 5,
        clean_session: true,
        username: None,
        password: None,
    }
}

/// One run of a component in the mock host.
pub struct Scenario {
    /// Settings passed to every `run-iteration`.
    pub settings: Settings,
    /// The broker's behaviour.
    pub script: Script,
    /// Seed of the entropy the guest draws.
    pub seed: u64,
    /// `run-iteration` calls to make on one instance (stops at a trap).
    pub iterations: u32,
}

impl Scenario {
    /// One iteration with default settings, seed 0, and `script`.
    pub fn new(script: Script) -> Self {
        Self {
            settings: default_settings(),
            script,
            seed: 0,
            iterations: 1,
        }
    }
}

/// What a run did.
#[derive(Debug)]
pub struct Outcome {
    /// Result of each `run-iteration` that returned.
    pub results: Vec<Result<IterationReport, IterationError>>,
    /// The trap that ended the run, if one did, with its message.
    pub trap: Option<String>,
    /// Every recorded call, in order.
    pub calls: Vec<Call>,
    /// Virtual time at the end, milliseconds.
    pub now_ms: u64,
    /// Script steps left undone.
    pub steps_left: usize,
}

impl Outcome {
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
            .map(guest::packets::packet_name)
            .collect()
    }

    /// Durations of the guest's `sleep-ms` calls, milliseconds.
    pub fn sleeps(&self) -> Vec<u32> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Sleep(ms) => Some(*ms),
                _ => None,
            })
            .collect()
    }

    /// The guest's log lines.
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

    /// The only iteration's result; panics, with the trap, if there is none.
    pub fn result(&self) -> &Result<IterationReport, IterationError> {
        match self.results.first() {
            Some(r) => r,
            None => panic!("no iteration returned; trap: {:?}", self.trap),
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
    pre: DevicePre<MockState>,
}

impl MockHost {
    /// Compiles the component at `path` and checks it against the world.
    pub fn load(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let engine = Engine::default();
        let component =
            Component::from_file(&engine, path.as_ref()).map_err(anyhow::Error::from)?;
        Self::from_component(&engine, &component)
    }

    /// Uses an already compiled component.
    pub fn from_component(engine: &Engine, component: &Component) -> anyhow::Result<Self> {
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        Device::add_to_linker::<_, HasSelf<MockState>>(&mut linker, |s| s)?;
        let pre = DevicePre::new(linker.instantiate_pre(component)?)?;
        Ok(Self { pre })
    }

    /// Runs a scenario on a fresh instance.
    pub fn run(&self, scenario: Scenario) -> Outcome {
        let rng = ChaCha20Rng::seed_from_u64(scenario.seed);
        let mut store = Store::new(self.pre.engine(), MockState::new(scenario.script, rng));
        let mut results = Vec::new();
        let mut trap = None;
        match self.pre.instantiate(&mut store) {
            Ok(device) => {
                for i in 1..=scenario.iterations {
                    match device.call_run_iteration(&mut store, &scenario.settings, i) {
                        Ok(r) => results.push(r),
                        Err(e) => {
                            trap = Some(format!("{e:#}"));
                            break;
                        }
                    }
                }
            }
            Err(e) => trap = Some(format!("instantiation failed: {e:#}")),
        }
        let state = store.into_data();
        Outcome {
            results,
            trap: state.failure.clone().or(trap),
            calls: state.calls,
            now_ms: state.now_ms,
            steps_left: state.script.steps.len(),
        }
    }
}
