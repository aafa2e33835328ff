//! The sandbox's limits, each default next to its field, and the meters
//! that enforce them: memory and table growth (host-core's limiter); guest
//! computation, continuous and per iteration ([`cpu`]); the iteration's
//! wall time (the sandbox runtime's watchdog); connections, their rate
//! ([`rate`]) and bytes per call; output lines ([`output`]). A limit stops
//! the guest with a typed [`LimitHit`](host_core::outcome::LimitHit), so
//! the host names it without reading message text.

pub mod cpu;
pub mod output;
pub mod rate;

use std::time::Duration;

use host_core::limiter::GrowthLimiter;

use crate::limits::output::OutputLimits;

/// How often the engine's epoch advances.
pub const EPOCH_TICK: Duration = host_core::epoch::TICK;

/// The socket limits of one guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketLimits {
    /// Connections the guest may hold at once.
    pub max_connections: usize,
    /// Bytes one `send` may carry and one `receive` may ask for.
    pub max_io_bytes: u32,
    /// Connects refused in one iteration (not permitted, too many, too
    /// often) before the guest is stopped as a storm.
    pub max_refusals: u32,
}

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
    /// Writes to the device's state a second (also its burst); 0 = no rate.
    pub state_writes_per_sec: u32,
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
    pub const ITERATION_TIMEOUT_MAX_MS: u64 = host_core::timeout::ITERATION_TIMEOUT_MAX_MS;
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
    /// Default of `state_writes_per_sec`: the demo with a persistent
    /// session writes twice per publish, the telemetry example three
    /// times per reading; a hundred a second leaves room for both at ten
    /// times their pace and holds a logic that writes in a loop.
    pub const STATE_WRITES_PER_SEC: u32 = 100;

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
            state_writes_per_sec: Self::STATE_WRITES_PER_SEC,
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
