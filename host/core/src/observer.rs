//! One interface for what happens to a device, below every place that
//! causes it: the sockets report connections, the supervisor reports
//! iterations, stops, restarts and swaps. Every counter and every log line
//! about a device's iterations comes from these events (the CLI logs them,
//! the fleet counts them; a metrics exporter would be one more observer);
//! start-up, swap and socket detail lines are logged where they happen.

use std::sync::Arc;

use crate::outcome::{IterationFailure, IterationReport, SocketFailure, Stop};

/// Something that happened to one device.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A TLS connection was opened.
    ConnectionOpened {
        /// The TCP connect and TLS handshake took this long, microseconds.
        connect_us: u64,
        /// The handshake resumed an earlier TLS session (no certificates
        /// exchanged or checked).
        resumed: bool,
    },
    /// A TLS connection was closed (by the guest, or with its store).
    ConnectionClosed,
    /// A connect the guest asked for failed (each counted against the
    /// guest's output limit, as its own lines are).
    ConnectFailed {
        /// The host asked for.
        host: String,
        /// The port asked for.
        port: u16,
        /// What failed, with the host's detail.
        failure: SocketFailure,
    },
    /// Guest output lines (log, stdout, stderr) over the output limit were
    /// dropped since the last such event (at most one a second).
    OutputDropped {
        /// Lines dropped.
        lines: u64,
        /// The limit's steady rate, lines a second.
        lines_per_sec: u32,
        /// The limit's burst, lines.
        burst: u32,
    },
    /// New logic took over at the start of `iteration`.
    SwappedIn {
        /// The iteration it starts with.
        iteration: u32,
        /// The logic replaced.
        from: String,
        /// The logic now running.
        to: String,
    },
    /// An iteration completed.
    IterationCompleted {
        /// Which, from 1.
        iteration: u32,
        /// What it did.
        report: IterationReport,
    },
    /// An iteration returned a failure.
    IterationFailed {
        /// Which, from 1.
        iteration: u32,
        /// What the guest reported.
        failure: IterationFailure,
        /// The host's detail of the socket failure behind it, when there
        /// is one for the same error.
        socket: Option<SocketFailure>,
        /// Whether it ends the run (a fixed number of iterations); else
        /// the next iteration follows.
        ends_run: bool,
    },
    /// The guest was stopped (trap or limit) in an iteration.
    GuestStopped {
        /// Which, from 1.
        iteration: u32,
        /// Why.
        stop: Stop,
    },
    /// Logic swapped in was stopped before it completed an iteration, and
    /// the logic it replaced runs again.
    FellBack {
        /// The logic that was stopped.
        from: String,
        /// The logic running again.
        to: String,
        /// Why it was stopped.
        stop: Stop,
    },
    /// The guest restarts on a fresh instance after `delay_ms`.
    Restarting {
        /// The wait first, milliseconds.
        delay_ms: u32,
        /// This restart's number in a row, from 1.
        attempt: u32,
        /// Restarts allowed in a row.
        max_attempts: u32,
    },
    /// The next iteration starts after `delay_ms`.
    NextIteration {
        /// The wait first, milliseconds.
        delay_ms: u32,
    },
    /// The host is stopping and the iteration in flight did not end within
    /// the time allowed; it was cut short.
    Interrupted {
        /// Which, from 1.
        iteration: u32,
    },
}

/// Receives a device's events. Called on the device's task: keep it cheap.
pub trait Observer: Send + Sync {
    /// One event.
    fn observe(&self, event: &Event);
}

/// Ignores every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ignore;

impl Observer for Ignore {
    fn observe(&self, _event: &Event) {}
}

impl<T: Observer + ?Sized> Observer for Arc<T> {
    fn observe(&self, event: &Event) {
        (**self).observe(event);
    }
}

/// Both observers, in order.
impl<A: Observer, B: Observer> Observer for (A, B) {
    fn observe(&self, event: &Event) {
        self.0.observe(event);
        self.1.observe(event);
    }
}
