//! The sandbox's limits: memory and table growth (a resource limiter);
//! guest computation, continuous and per iteration (epoch ticks sampled
//! while wasm runs, re-armed by a call hook whenever the guest leaves a host
//! call, so import calls neither hide computation nor count as it); the
//! iteration's wall time (the runtime's watchdog); connections, their rate
//! and bytes per call; output lines. A limit stops the guest with a typed
//! [`LimitHit`], so the host names it without reading message text.

use std::time::Duration;

use host_core::outcome::LimitHit;
use wasmtime::{CallHook, Engine, ResourceLimiter, Store, UpdateDeadline};

use crate::imports::mtls_socket::SocketLimits;
use crate::imports::output::OutputLimits;
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
    /// Guest computation per iteration, import calls or not, milliseconds;
    /// 0 = no budget.
    pub cpu_budget_ms: u32,
    /// Longest one `run-iteration` may take, milliseconds; 0 = no limit.
    pub iteration_timeout_ms: u64,
    /// Connections a guest may hold at once.
    pub max_connections: usize,
    /// Bytes one `send` may carry and one `receive` may ask for.
    pub max_io_bytes: u32,
    /// Connections a guest may open at once before the rate applies.
    pub connect_burst: u32,
    /// One more connection allowed every this many milliseconds; 0 = no rate.
    pub connect_interval_ms: u32,
    /// Lines of guest output (log, stdout, stderr).
    pub output: OutputLimits,
}

impl Limits {
    /// Default of `max_memory_bytes`, MiB.
    pub const MAX_MEMORY_MIB: usize = 64;
    /// Default of `max_table_elements`.
    pub const MAX_TABLE_ELEMENTS: usize = 100_000;
    /// Default of `cpu_limit_ms`.
    pub const CPU_LIMIT_MS: u32 = 1000;
    /// Default of `cpu_budget_ms`: the demo computes a few milliseconds
    /// per iteration, the benchmark logic a few hundred for 20,000
    /// messages.
    pub const CPU_BUDGET_MS: u32 = 2000;
    /// Default of `max_connections`.
    pub const MAX_CONNECTIONS: usize = 4;
    /// Default of `max_io_bytes`.
    pub const MAX_IO_BYTES: u32 = 1 << 20;
    /// Default of `connect_burst`: the demo's first attempt and all five
    /// retries, even with backoff delays of zero.
    pub const CONNECT_BURST: u32 = 8;
    /// Default of `connect_interval_ms`.
    pub const CONNECT_INTERVAL_MS: u32 = 1000;
    /// Default of `output.lines_per_sec`.
    pub const LOG_LINES_PER_SEC: u32 = 100;
    /// Default of `output.burst`: a whole demo iteration's lines at once.
    pub const LOG_BURST: u32 = 400;

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
            cpu_budget_ms: Self::CPU_BUDGET_MS,
            iteration_timeout_ms: 0,
            max_connections: Self::MAX_CONNECTIONS,
            max_io_bytes: Self::MAX_IO_BYTES,
            connect_burst: Self::CONNECT_BURST,
            connect_interval_ms: Self::CONNECT_INTERVAL_MS,
            output: OutputLimits {
                lines_per_sec: Self::LOG_LINES_PER_SEC,
                burst: Self::LOG_BURST,
            },
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

/// Guest computation, in epoch ticks that passed while wasm ran.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuMeter {
    /// Import calls so far (wrapping), counted by the linker's getters: call
    /// hooks also run around epoch yields, so they cannot tell an import.
    pub host_calls: u64,
    /// `host_calls` at the last tick.
    seen_host_calls: u64,
    /// Ticks since the guest last called an import.
    ticks_in_a_row: u32,
    /// Ticks in the iteration in flight.
    pub ticks_this_iteration: u32,
}

impl CpuMeter {
    /// Milliseconds that `ticks` stand for.
    fn ms(ticks: u32) -> u64 {
        u64::from(ticks) * EPOCH_TICK.as_millis() as u64
    }

    /// Counts a tick that passed while wasm ran; a limit passed stops the
    /// guest.
    pub fn tick(&mut self, limits: &Limits) -> Result<(), LimitHit> {
        if self.host_calls != self.seen_host_calls {
            self.seen_host_calls = self.host_calls;
            self.ticks_in_a_row = 0;
        }
        self.ticks_in_a_row += 1;
        self.ticks_this_iteration += 1;
        let continuous = Self::ms(self.ticks_in_a_row);
        if continuous > u64::from(limits.cpu_limit_ms) {
            return Err(LimitHit::Cpu {
                used_ms: continuous,
                limit_ms: limits.cpu_limit_ms,
            });
        }
        let used = Self::ms(self.ticks_this_iteration);
        if limits.cpu_budget_ms > 0 && used > u64::from(limits.cpu_budget_ms) {
            return Err(LimitHit::CpuBudget {
                used_ms: used,
                budget_ms: limits.cpu_budget_ms,
            });
        }
        Ok(())
    }
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
/// the limiter; CPU through epoch checks that yield to other devices and
/// stop a guest past its continuous limit or its per-iteration budget.
pub fn new_store(engine: &Engine, state: DeviceState) -> Store<DeviceState> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    // Each time wasm starts running again (after an import, or a yield),
    // the deadline is one tick ahead: the callback below then fires only
    // for ticks that pass while wasm runs, a fair sample of guest
    // computation, and never for time spent waiting in a host call.
    store.call_hook(|mut ctx, hook| {
        if matches!(hook, CallHook::ReturningFromHost | CallHook::CallingWasm) {
            ctx.set_epoch_deadline(1);
        }
        Ok(())
    });
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        let state = ctx.data_mut();
        state.cpu.tick(&state.limits)?;
        Ok(UpdateDeadline::Yield(1))
    });
    store
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuous_computation_and_the_budget_are_separate_limits() {
        let limits = Limits {
            cpu_limit_ms: 50,
            cpu_budget_ms: 100,
            ..Limits::default()
        };
        let mut cpu = CpuMeter::default();
        for _ in 0..5 {
            cpu.tick(&limits).unwrap();
        }
        // An import call resets the run, not the iteration's total.
        cpu.host_calls += 1;
        for _ in 0..5 {
            cpu.tick(&limits).unwrap();
        }
        cpu.host_calls += 1;
        assert_eq!(
            cpu.tick(&limits),
            Err(LimitHit::CpuBudget {
                used_ms: 110,
                budget_ms: 100
            })
        );
        let mut spin = CpuMeter::default();
        let hit = (0..10).find_map(|_| spin.tick(&limits).err());
        assert_eq!(
            hit,
            Some(LimitHit::Cpu {
                used_ms: 60,
                limit_ms: 50
            })
        );
    }
}
