//! The sandbox's limits, one set for `host run` and the mock host: each
//! default next to its field (the CLI's flags and the scenario files' keys
//! use them), and the meters that enforce them, pure and given the time so
//! that the host runs them on the clock and the mock host on virtual time:
//! guest computation, continuous and per iteration ([`cpu`]); a token
//! bucket ([`rate`]); connects and their refusals ([`connects`]); output
//! lines ([`output`]). Memory and table growth are the [`crate::limiter`]'s;
//! the iteration's time is [`crate::timeout`]'s. A limit stops the guest
//! with a typed [`LimitHit`](crate::outcome::LimitHit).

pub mod connects;
pub mod cpu;
pub mod output;
pub mod rate;

use crate::limiter::GrowthLimiter;

/// Lines of guest output a device may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    /// Lines per second, steady.
    pub lines_per_sec: u32,
    /// Lines at once before the rate applies.
    pub burst: u32,
}

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
/// the CLI's flags and the scenario files' `[limits]` keys use them.
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
    pub const MAX_MEMORY_MIB: usize = crate::limiter::MAX_MEMORY_MIB;
    /// Default of `max_table_elements`.
    pub const MAX_TABLE_ELEMENTS: usize = crate::limiter::MAX_TABLE_ELEMENTS;
    /// Default of `cpu_limit_ms`.
    pub const CPU_LIMIT_MS: u32 = 1000;
    /// Default of `cpu_budget_ms`: the demo computes a few milliseconds
    /// per iteration, the benchmark logic a few hundred for 20,000
    /// messages.
    pub const CPU_BUDGET_MS: u32 = 2000;
    /// The longest iteration the host allows a logic that sets its own
    /// bound (or none), milliseconds: an hour.
    pub const ITERATION_TIMEOUT_MAX_MS: u64 = crate::timeout::ITERATION_TIMEOUT_MAX_MS;
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

    /// The growth limiter for these limits.
    pub fn limiter(&self) -> GrowthLimiter {
        GrowthLimiter {
            max_memory_bytes: self.max_memory_bytes,
            max_table_elements: self.max_table_elements,
        }
    }

    /// The connect rate: a burst of `connect_burst`, then one every
    /// `connect_interval_ms`, from `now`.
    pub fn connect_bucket(&self, now: std::time::Instant) -> rate::TokenBucket {
        rate::TokenBucket::new(
            self.connect_burst,
            std::time::Duration::from_millis(u64::from(self.connect_interval_ms)),
            now,
        )
    }

    /// The state's write rate: `state_writes_per_sec` at once, then as
    /// many a second, from `now`.
    pub fn state_write_bucket(&self, now: std::time::Instant) -> rate::TokenBucket {
        let per_sec = self.state_writes_per_sec;
        rate::TokenBucket::new(
            per_sec,
            std::time::Duration::from_secs(1)
                .checked_div(per_sec)
                .unwrap_or(std::time::Duration::ZERO),
            now,
        )
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
