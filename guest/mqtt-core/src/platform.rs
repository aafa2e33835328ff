//! What a device workflow needs from the world it runs in: connections,
//! a clock, a log, randomness, and a watchdog to declare its bound to. The
//! component's glue implements it on the WIT imports; a native program
//! implements it on sockets and threads.

use crate::transport::{Clock, Transport, TransportError};

/// How much a log line matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Detail for debugging.
    Debug,
    /// The normal story.
    Info,
    /// Something unexpected that was handled.
    Warn,
    /// A failure.
    Error,
}

/// The world a workflow runs in.
pub trait Platform {
    /// An open connection to the broker.
    type Conn: Transport;
    /// The clock the client and the waits use.
    type Clock: Clock + Clone;
    /// Opens a mutually-authenticated TLS connection to `host`:`port`
    /// within `timeout_ms` milliseconds (0 = no limit).
    fn connect(
        &mut self,
        host: &str,
        port: u16,
        timeout_ms: u32,
    ) -> Result<Self::Conn, TransportError>;
    /// The clock.
    fn clock(&self) -> Self::Clock;
    /// Writes one log line.
    fn log(&self, level: Level, message: &str);
    /// A uniformly random number (for backoff jitter).
    fn random_u32(&mut self) -> u32;
    /// Declares the longest the iteration in flight can take, milliseconds
    /// from its start (the host stops it after). A platform without such a
    /// watchdog ignores it.
    fn declare_iteration_bound(&mut self, _ms: u64) {}
    /// Durable storage for a persistent session's outgoing QoS 1 state, so
    /// it outlives the process. A platform without storage gives none (the
    /// session then lives as long as the client).
    fn session_store(&mut self) -> Option<Box<dyn crate::SessionStore>> {
        None
    }
}
