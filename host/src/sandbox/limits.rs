//! The sandbox's limits: memory and table growth (a resource limiter),
//! CPU time between host calls (epoch interruption), connections per guest,
//! and bytes per import call. A limit stops the guest with a typed
//! [`LimitHit`], so the host names it without reading message text.

use std::time::Duration;

use host_core::outcome::LimitHit;
use wasmtime::{Engine, ResourceLimiter, Store, UpdateDeadline};

use crate::imports::mtls_socket::SocketLimits;
use crate::sandbox::state::DeviceState;

/// How often the engine's epoch advances.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits of one device's sandbox. Each default is next to its field, and
/// the CLI's flags use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory per guest, bytes.
    pub max_memory_bytes: usize,
    /// Table elements per table.
    pub max_table_elements: usize,
    /// Longest the guest may compute without calling the host, milliseconds.
    pub cpu_limit_ms: u32,
    /// Connections a guest may hold at once.
    pub max_connections: usize,
    /// Bytes one `send` may carry and one `receive` may ask for.
    pub max_io_bytes: u32,
}

impl Limits {
    /// Default of `max_memory_bytes`, MiB.
    pub const MAX_MEMORY_MIB: usize = 64;
    /// Default of `max_table_elements`.
    pub const MAX_TABLE_ELEMENTS: usize = 100_000;
    /// Default of `cpu_limit_ms`.
    pub const CPU_LIMIT_MS: u32 = 1000;
    /// Default of `max_connections`.
    pub const MAX_CONNECTIONS: usize = 4;
    /// Default of `max_io_bytes`.
    pub const MAX_IO_BYTES: u32 = 1 << 20;

    /// The socket part of these limits.
    pub fn sockets(&self) -> SocketLimits {
        SocketLimits {
            max_connections: self.max_connections,
            max_io_bytes: self.max_io_bytes,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_memory_bytes: Self::MAX_MEMORY_MIB << 20,
            max_table_elements: Self::MAX_TABLE_ELEMENTS,
            cpu_limit_ms: Self::CPU_LIMIT_MS,
            max_connections: Self::MAX_CONNECTIONS,
            max_io_bytes: Self::MAX_IO_BYTES,
        }
    }
}

/// Stops a guest that grows memory or a table past its limit.
#[derive(Debug, Clone, Copy)]
pub struct Limiter {
    limits: Limits,
}

impl Limiter {
    /// A limiter enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }
}

/// Growth to `desired` is allowed up to `limit`; past it, the guest stops
/// with `hit`.
fn grow(desired: usize, limit: usize, hit: LimitHit) -> wasmtime::Result<bool> {
    if desired > limit {
        return Err(hit.into());
    }
    Ok(true)
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _: usize,
        desired: usize,
        _: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let limit_bytes = self.limits.max_memory_bytes;
        grow(desired, limit_bytes, LimitHit::Memory { limit_bytes })
    }

    fn table_growing(
        &mut self,
        _: usize,
        desired: usize,
        _: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let limit = self.limits.max_table_elements;
        grow(desired, limit, LimitHit::Table { limit })
    }

    fn instances(&self) -> usize {
        64
    }
}

/// What the CPU limit tracks: host calls (counted by the linker's getters)
/// and epoch ticks without one.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuMeter {
    /// Import calls so far (wrapping).
    pub host_calls: u64,
    /// `host_calls` at the last epoch check.
    pub seen_host_calls: u64,
    /// Epoch ticks in a row without a host call.
    pub busy_ticks: u32,
}

/// Starts the thread that advances `engine`'s epoch every [`EPOCH_TICK`].
pub fn start_epoch_ticker(engine: &Engine) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(drop)
}

/// A store for `state` with its limits applied: memory and tables through
/// the limiter, CPU through epoch checks that yield to other devices and stop
/// a guest that computed longer than its limit without calling the host.
pub fn new_store(engine: &Engine, state: DeviceState) -> Store<DeviceState> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    // The callback runs each epoch tick while wasm code runs (never while
    // the guest waits in a host call). A tick with no host call since the
    // last one is a tick of pure guest computation.
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        let state = ctx.data_mut();
        let cpu = &mut state.cpu;
        if cpu.host_calls != cpu.seen_host_calls {
            cpu.seen_host_calls = cpu.host_calls;
            cpu.busy_ticks = 0;
        } else {
            cpu.busy_ticks += 1;
        }
        let busy = EPOCH_TICK * cpu.busy_ticks;
        let limit_ms = state.limits.cpu_limit_ms;
        if busy > Duration::from_millis(u64::from(limit_ms)) {
            return Err(LimitHit::Cpu {
                used_ms: busy.as_millis() as u64,
                limit_ms,
            }
            .into());
        }
        Ok(UpdateDeadline::Yield(1))
    });
    store
}
