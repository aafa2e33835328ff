//! The data of one device's store: WASI (stdio only), the contexts of the
//! world's interfaces, and the sandbox's meters.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use host_core::observer::Observer;
use host_core::state::Backend;
use host_core::state::ctx::StateCtx;
use tokio::sync::watch;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::WasiConfigVariables;

use crate::imports::clock::ClockCtx;
use crate::imports::entropy::{EntropyCtx, EntropySource};
use crate::imports::iteration::IterationCtx;
use crate::imports::log::LogCtx;
use crate::imports::mtls_socket::{SocketCtx, SocketShared};
use crate::imports::types::TypesCtx;
use crate::limits::Limits;
use crate::limits::cpu::CpuMeter;
use crate::limits::output::GuestOutput;
use crate::limits::rate::TokenBucket;
use crate::tls::Endpoint;
use crate::tls::TlsClient;
use host_core::limiter::GrowthLimiter;

/// Most bytes one WASI `get-random-bytes` returns (as the `entropy` import).
const MAX_WASI_RANDOM: u64 = 4096;

/// Most WASI resources (streams) a guest holds at once.
const MAX_WASI_RESOURCES: usize = 1024;

/// Everything a device's host functions reach.
pub struct DeviceState {
    /// WASI: stdout and stderr (through the output limit); no files,
    /// environment, arguments or network.
    pub wasi: WasiCtx,
    /// WASI's resources (streams).
    pub table: ResourceTable,
    /// `mtls-socket`.
    pub sockets: SocketCtx,
    /// `clock`.
    pub clock: ClockCtx,
    /// `entropy`.
    pub entropy: EntropyCtx,
    /// `log`.
    pub log: LogCtx,
    /// `iteration`.
    pub iteration: IterationCtx,
    /// `types`.
    pub types: TypesCtx,
    /// `wasi:keyvalue`: the device's durable state.
    pub state: StateCtx,
    /// `wasi:config`: the logic's own settings.
    pub config: Arc<WasiConfigVariables>,
    /// The sandbox's limits.
    pub limits: Limits,
    /// Enforces the memory and table limits.
    pub limiter: GrowthLimiter,
    /// Host calls and busy epoch ticks, for the CPU limit.
    pub cpu: CpuMeter,
}

/// Who a device is and what it may reach: everything its sandboxes are
/// made from, and what outlives each of them (the output and connect
/// limits, so a restart does not refill them).
#[derive(Clone)]
pub struct Sandbox {
    /// The device's name in log lines (its client id).
    pub name: String,
    /// The TLS client with its credentials.
    pub tls: TlsClient,
    /// Endpoints the guest may connect to.
    pub allowed: Vec<Endpoint>,
    /// The sandbox's limits.
    pub limits: Limits,
    /// Where the device's events go.
    pub observer: Arc<dyn Observer>,
    /// Becomes true when the host is stopping.
    pub stopping: watch::Receiver<bool>,
    /// How long the iteration in flight may take to end once the host is
    /// stopping.
    pub stop_timeout: Duration,
    /// Where the guest's entropy comes from.
    pub entropy: EntropySource,
    /// Where the device's state is kept.
    pub state: Arc<dyn Backend>,
    /// The logic's own settings.
    pub config: Arc<WasiConfigVariables>,
    output: Arc<GuestOutput>,
    connects: Arc<Mutex<TokenBucket>>,
    state_writes: Arc<Mutex<TokenBucket>>,
}

/// What every device of a host shares: credentials, reach, limits, and the
/// stop signal.
#[derive(Clone)]
pub struct Reach {
    /// The TLS client with its credentials.
    pub tls: TlsClient,
    /// Endpoints the guest may connect to.
    pub allowed: Vec<Endpoint>,
    /// The sandbox's limits.
    pub limits: Limits,
    /// Becomes true when the host is stopping.
    pub stopping: watch::Receiver<bool>,
    /// How long the iteration in flight may take to end once stopping.
    pub stop_timeout: Duration,
    /// Where the guests' entropy comes from.
    pub entropy: EntropySource,
    /// Whether devices keep TLS sessions to resume (`--no-tls-resumption`
    /// turns it off).
    pub tls_resumption: bool,
    /// Where the devices' state is kept (a bucket each).
    pub state: Arc<dyn Backend>,
    /// The logic's own settings, the same for every device.
    pub config: Arc<WasiConfigVariables>,
}

impl Sandbox {
    /// The sandbox of the device called `name`, with its own output and
    /// connect limits.
    pub fn new(name: String, reach: &Reach, observer: Arc<dyn Observer>) -> Self {
        let limits = reach.limits;
        let connects = limits.connect_bucket(Instant::now());
        let state_writes = limits.state_write_bucket(Instant::now());
        Self {
            output: GuestOutput::new(name.clone(), limits.output, observer.clone()),
            connects: Arc::new(Mutex::new(connects)),
            state_writes: Arc::new(Mutex::new(state_writes)),
            state: reach.state.clone(),
            config: reach.config.clone(),
            name,
            tls: reach.tls.with_own_sessions(reach.tls_resumption),
            allowed: reach.allowed.clone(),
            limits,
            observer,
            stopping: reach.stopping.clone(),
            stop_timeout: reach.stop_timeout,
            entropy: reach.entropy.clone(),
        }
    }

    /// Says how many output lines were dropped, if any were.
    pub fn flush_output_notice(&self) {
        self.output.flush_notice();
    }

    /// A new instance starts with no dropped output lines counted against
    /// its flood limit.
    pub fn restarted(&self) {
        self.output.restarted();
    }

    /// Starts counting iteration `iteration`'s dropped output lines.
    pub fn new_iteration(&self, iteration: u32) {
        self.output.new_iteration(iteration);
    }

    /// The data of a fresh store.
    pub fn state(&self) -> DeviceState {
        let wasi = WasiCtx::builder()
            .stdout(self.output.stdio("stdout"))
            .stderr(self.output.stdio("stderr"))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .max_random_size(MAX_WASI_RANDOM)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_WASI_RESOURCES);
        DeviceState {
            wasi,
            table,
            sockets: SocketCtx::new(
                self.tls.clone(),
                self.allowed.clone(),
                self.limits.sockets(),
                SocketShared {
                    observer: self.observer.clone(),
                    output: self.output.clone(),
                    connects: self.connects.clone(),
                },
            ),
            clock: ClockCtx::new(self.stopping.clone()),
            entropy: EntropyCtx {
                source: self.entropy.clone(),
            },
            log: LogCtx {
                output: self.output.clone(),
            },
            iteration: IterationCtx::default(),
            types: TypesCtx,
            state: self.state_ctx(),
            config: self.config.clone(),
            limits: self.limits,
            limiter: self.limits.limiter(),
            cpu: CpuMeter::default(),
        }
    }
}

impl Sandbox {
    /// The device's state, its writes held to the device's write rate
    /// (which, like the output limit, outlives a restart).
    fn state_ctx(&self) -> StateCtx {
        let writes = self.state_writes.clone();
        let unlimited = self.limits.state_writes_per_sec == 0;
        let permit = Box::new(move |n: u32| {
            if unlimited {
                return true;
            }
            let mut bucket = writes.lock().unwrap_or_else(|e| e.into_inner());
            bucket.try_take_n(n, Instant::now())
        });
        StateCtx::new(
            self.name.as_str().into(),
            self.state.clone(),
            permit,
            self.limits.state_writes_per_sec,
        )
    }
}

impl DeviceState {
    /// The limits checked at every epoch tick besides CPU: an output flood
    /// through stdout or stderr (the log import checks it at each call).
    pub fn guard(&self) -> Result<(), host_core::outcome::LimitHit> {
        self.log.output.flood()
    }
}

impl WasiView for DeviceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.cpu.host_calls = self.cpu.host_calls.wrapping_add(1);
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
