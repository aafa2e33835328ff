//! The sandbox's limits: memory and table growth (wasmtime store limits), CPU
//! time between host calls (epoch interruption), connections per guest, and
//! bytes per import call. Every limit ends the guest with a message that
//! names it; the host goes on.

use std::time::Duration;

use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};

use crate::state::DeviceState;

/// How often the engine's epoch advances.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits of one device's sandbox.
#[derive(Debug, Clone, Copy)]
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

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_memory_bytes: 64 << 20,
            max_table_elements: 100_000,
            cpu_limit_ms: 1000,
            max_connections: 4,
            max_io_bytes: 1 << 20,
        }
    }
}

impl Limits {
    /// The store limits for these settings (growth beyond them traps).
    pub fn store_limits(&self) -> StoreLimits {
        StoreLimitsBuilder::new()
            .memory_size(self.max_memory_bytes)
            .table_elements(self.max_table_elements)
            .instances(64)
            .trap_on_grow_failure(true)
            .build()
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
pub fn start_epoch_ticker(engine: &Engine) {
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
        .expect("spawn the epoch ticker thread");
}

/// A store for `state` with its limits applied: memory and tables through
/// the limiter, CPU through epoch checks that yield to other devices and trap
/// a guest that computed longer than its limit without calling the host.
pub fn new_store(engine: &Engine, state: DeviceState) -> Store<DeviceState> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.store_limits);
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
        if busy > Duration::from_millis(u64::from(state.limits.cpu_limit_ms)) {
            return Err(wasmtime::Error::msg(format!(
                "CPU limit: the guest computed for {} ms without calling the host (limit --cpu-limit-ms {})",
                busy.as_millis(),
                state.limits.cpu_limit_ms
            )));
        }
        Ok(UpdateDeadline::Yield(1))
    });
    store
}

/// A hint naming the limit behind a trap message, if one is recognisable.
pub fn trap_hint(message: &str, limits: &Limits) -> Option<String> {
    if message.contains("forcing trap when growing memory") {
        Some(format!(
            "memory limit --max-memory-mib {} reached",
            limits.max_memory_bytes >> 20
        ))
    } else if message.contains("forcing trap when growing table") {
        Some(format!(
            "table limit --max-table-elements {} reached",
            limits.max_table_elements
        ))
    } else if message.contains("call stack exhausted") {
        Some("the guest recursed past the wasm stack limit".into())
    } else if message.contains("out of bounds memory access") {
        Some("the guest overran its stack or memory, e.g. by recursing without end".into())
    } else if message.contains("unreachable") {
        Some("the guest panicked or aborted; its own message, if any, is on stderr above".into())
    } else {
        None
    }
}
