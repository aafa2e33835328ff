//! The sandbox's limits: host-core's (`host_core::limits`, which the mock
//! host applies too, from the same code and defaults), and how the host
//! writes a guest's output ([`output`]). Memory and tables are limited by
//! host-core's limiter; guest computation by the store's epoch checks
//! (`crate::sandbox::store`); the iteration's wall time by the sandbox
//! runtime's watchdog; connections and their rate by the socket import
//! through host-core's connect gate. A limit stops the guest with a typed
//! [`LimitHit`](host_core::outcome::LimitHit), so the host names it
//! without reading message text.

pub mod output;

use std::time::Duration;

pub use host_core::limits::{Limits, OutputLimits, SocketLimits, connects, cpu, rate};

/// How often the engine's epoch advances.
pub const EPOCH_TICK: Duration = host_core::epoch::TICK;
