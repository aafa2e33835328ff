//! The sandbox's limits: memory and table growth (host-core's limiter);
//! guest computation, continuous and per iteration (epoch ticks sampled
//! while wasm runs, re-armed by a call hook whenever the guest leaves a host
//! call, so import calls neither hide computation nor count as it); the
//! iteration's wall time (the runtime's watchdog); connections, their rate
//! and bytes per call; output lines. A limit stops the guest with a typed
//! [`LimitHit`], so the host names it without reading message text.

use std::time::{Duration, Instant};

use host_core::limiter::GrowthLimiter;
use host_core::outcome::LimitHit;
use wasmtime::{CallHook, Engine, Store, UpdateDeadline};

use crate::imports::mtls_socket::SocketLimits;
use crate::imports::output::OutputLimits;
use crate::sandbox::state::DeviceState;

/// How often the engine's epoch advances.
pub const EPOCH_TICK: Duration = host_core::epoch::TICK;

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
    /// Longest one `run-iteration` may take, milliseconds, as the operator
    /// set it; 0 = no limit. `None`: what the logic declares for the
    /// iteration (`iteration.declare-bound`), at most
    /// [`Limits::ITERATION_TIMEOUT_MAX_MS`], which also applies until it
    /// declares and to a logic that never does.
    pub iteration_timeout_ms: Option<u64>,
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
    pub const MAX_MEMORY_MIB: usize = host_core::limiter::MAX_MEMORY_MIB;
    /// Default of `max_table_elements`.
    pub const MAX_TABLE_ELEMENTS: usize = host_core::limiter::MAX_TABLE_ELEMENTS;
    /// Default of `cpu_limit_ms`.
    pub const CPU_LIMIT_MS: u32 = 1000;
    /// Default of `cpu_budget_ms`: the demo computes a few milliseconds
    /// per iteration, the benchmark logic a few hundred for 20,000
    /// messages.
    pub const CPU_BUDGET_MS: u32 = 2000;
    /// The longest iteration the host allows a logic that sets its own
    /// bound (or none), milliseconds: an hour.
    pub const ITERATION_TIMEOUT_MAX_MS: u64 = 60 * 60 * 1000;
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

    /// The socket part of these limits: refusals allowed per iteration are
    /// ten connect bursts.
    pub fn sockets(&self) -> SocketLimits {
        SocketLimits {
            max_connections: self.max_connections,
            max_io_bytes: self.max_io_bytes,
            max_refusals: 10 * self.connect_burst.max(1),
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
            iteration_timeout_ms: None,
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

impl Limits {
    /// The growth limiter for these limits.
    pub fn limiter(&self) -> GrowthLimiter {
        GrowthLimiter {
            max_memory_bytes: self.max_memory_bytes,
            max_table_elements: self.max_table_elements,
        }
    }
}

/// Guest computation: wall time spent running wasm, measured between call
/// hooks (time in a host call, and time suspended at a yield, are outside
/// it), and the run of it since the last import call.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuMeter {
    /// Import calls so far (wrapping), counted by the linker's getters: call
    /// hooks also run around epoch yields, so they cannot tell an import.
    pub host_calls: u64,
    /// `host_calls` when the continuous run was last reset.
    seen_host_calls: u64,
    /// When wasm started running again, if it runs now.
    in_wasm_since: Option<Instant>,
    /// Wasm time in the iteration in flight.
    iteration: Duration,
    /// Wasm time since the last import call.
    continuous: Duration,
}

impl CpuMeter {
    /// Starts counting a new iteration.
    pub fn new_iteration(&mut self) {
        self.iteration = Duration::ZERO;
        self.continuous = Duration::ZERO;
        self.seen_host_calls = self.host_calls;
    }

    /// Wasm starts or resumes running.
    fn enter(&mut self, now: Instant) {
        self.in_wasm_since = Some(now);
    }

    /// Wasm stops running (a host call, a yield, or a return).
    fn leave(&mut self, now: Instant) {
        if let Some(since) = self.in_wasm_since.take() {
            let ran = now.saturating_duration_since(since);
            self.iteration += ran;
            self.continuous += ran;
        }
    }

    /// Checks the limits at `now` (while wasm runs); a limit passed stops
    /// the guest.
    pub fn check(&mut self, limits: &Limits, now: Instant) -> Result<(), LimitHit> {
        if self.host_calls != self.seen_host_calls {
            self.seen_host_calls = self.host_calls;
            self.continuous = Duration::ZERO;
        }
        self.leave(now);
        self.enter(now);
        let continuous = self.continuous.as_millis() as u64;
        if continuous > u64::from(limits.cpu_limit_ms) {
            return Err(LimitHit::Cpu {
                used_ms: continuous,
                limit_ms: limits.cpu_limit_ms,
            });
        }
        let used = self.iteration.as_millis() as u64;
        if limits.cpu_budget_ms > 0 && used > u64::from(limits.cpu_budget_ms) {
            return Err(LimitHit::CpuBudget {
                used_ms: used,
                budget_ms: limits.cpu_budget_ms,
            });
        }
        Ok(())
    }
}

/// A store for `state` with its limits applied: memory and tables through
/// the limiter; CPU through epoch checks that yield to other devices and
/// stop a guest past its continuous limit or its per-iteration budget.
pub fn new_store(engine: &Engine, state: DeviceState) -> Store<DeviceState> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    // The hooks time every stretch of wasm; the deadline is left alone, so
    // the callback below comes at the first check after every tick, however
    // the guest spends its time (even calling cheap host functions without
    // pause), checks the limits and yields to the other tasks.
    store.call_hook(|mut ctx, hook| {
        let now = Instant::now();
        let cpu = &mut ctx.data_mut().cpu;
        match hook {
            CallHook::ReturningFromHost | CallHook::CallingWasm => cpu.enter(now),
            CallHook::CallingHost | CallHook::ReturningFromWasm => cpu.leave(now),
        }
        Ok(())
    });
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        let state = ctx.data_mut();
        state.cpu.check(&state.limits, Instant::now())?;
        state.guard()?;
        Ok(UpdateDeadline::Yield(1))
    });
    store
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A continuous limit of 50 ms and a budget of 100 ms.
    fn limits() -> Limits {
        Limits {
            cpu_limit_ms: 50,
            cpu_budget_ms: 100,
            ..Limits::default()
        }
    }

    #[test]
    fn continuous_computation_and_the_budget_are_separate_limits() {
        let limits = limits();
        let t0 = Instant::now();
        let mut cpu = CpuMeter::default();
        cpu.new_iteration();
        cpu.enter(t0);
        assert_eq!(cpu.check(&limits, t0 + ms(40)), Ok(()));
        // An import call, then 40 ms more: the run restarts, the total goes on.
        cpu.leave(t0 + ms(40));
        cpu.host_calls += 1;
        cpu.enter(t0 + ms(1040));
        assert_eq!(cpu.check(&limits, t0 + ms(1080)), Ok(()));
        cpu.leave(t0 + ms(1080));
        cpu.host_calls += 1;
        cpu.enter(t0 + ms(2000));
        assert_eq!(
            cpu.check(&limits, t0 + ms(2030)),
            Err(LimitHit::CpuBudget {
                used_ms: 110,
                budget_ms: 100
            })
        );
        let mut spin = CpuMeter::default();
        spin.new_iteration();
        spin.enter(t0);
        assert_eq!(
            spin.check(&limits, t0 + ms(60)),
            Err(LimitHit::Cpu {
                used_ms: 60,
                limit_ms: 50
            })
        );
    }

    #[test]
    fn time_outside_wasm_does_not_count() {
        let limits = limits();
        let t0 = Instant::now();
        let mut cpu = CpuMeter::default();
        cpu.new_iteration();
        for i in 0..100u64 {
            // 1 ms of wasm, then 99 ms waiting in a host call (or suspended).
            cpu.enter(t0 + ms(100 * i));
            cpu.leave(t0 + ms(100 * i + 1));
            cpu.host_calls += 1;
        }
        cpu.enter(t0 + ms(10_000));
        assert_eq!(cpu.check(&limits, t0 + ms(10_000)), Ok(()));
        assert_eq!(cpu.iteration, ms(100));
    }
}
