//! What an iteration ends in, as the host's own types: a report, a failure
//! the guest returned, or a stop (the guest trapped or hit a sandbox limit).
//! Typed so that the CLI, the fleet's counters and the mock host each read
//! the same facts and word them their own way.

use mqtt_core::TransportError;

/// What one successful iteration did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IterationReport {
    /// PUBLISH packets sent (not counting resends).
    pub published: u32,
    /// PUBACKs received for them.
    pub acknowledged: u32,
    /// Echoed PUBLISH packets received.
    pub echoes: u32,
    /// TLS connections opened.
    pub connections: u32,
    /// Echo round trips, microseconds.
    pub round_trips_us: Vec<u32>,
}

/// CONNACK return codes other than "accepted" (MQTT 3.1.1, 3.2.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnackRefusal {
    /// 0x01: the broker does not speak MQTT 3.1.1.
    UnacceptableProtocolVersion,
    /// 0x02: the client identifier is not allowed.
    IdentifierRejected,
    /// 0x03: the MQTT service is unavailable.
    ServerUnavailable,
    /// 0x04: bad user name or password.
    BadUserNameOrPassword,
    /// 0x05: the client is not authorised.
    NotAuthorized,
}

/// Why an iteration failed, as the guest reported it (the WIT
/// `iteration-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IterationFailure {
    /// Connecting failed and the backoff retries are exhausted.
    ConnectRetriesExhausted(TransportError),
    /// A permanent transport failure: not retried.
    TransportPermanent(TransportError),
    /// The connection failed after set-up and reconnecting did not help.
    Transport(TransportError),
    /// The broker refused the MQTT CONNECT.
    ConnackRefused(ConnackRefusal),
    /// The broker kept rejecting the subscription to this filter.
    SubscribeRetriesExhausted(String),
    /// An expected acknowledgement did not arrive in time; names it.
    TimedOut(String),
    /// Invalid MQTT from the broker; describes it.
    ProtocolViolation(String),
    /// A packet could not be formed from the settings; describes which value.
    InvalidSettings(String),
}

impl IterationFailure {
    /// The transport error it carries, if any.
    pub fn transport_error(&self) -> Option<TransportError> {
        match self {
            Self::ConnectRetriesExhausted(e) | Self::TransportPermanent(e) | Self::Transport(e) => {
                Some(*e)
            }
            _ => None,
        }
    }

    /// The host's detail of `last`, the last socket failure, when it
    /// explains this failure: only a socket failure of the same error does.
    pub fn explained_by(&self, last: Option<SocketFailure>) -> Option<SocketFailure> {
        last.filter(|s| self.transport_error() == Some(s.error))
    }
}

/// A socket failure with the host's detail (the rustls or OS message),
/// which the guest never sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketFailure {
    /// What the guest was told.
    pub error: TransportError,
    /// What exactly happened.
    pub detail: String,
    /// The connect timed out waiting for a turn behind the host's other
    /// connects (`timed-out` then says nothing about the network).
    pub no_turn: bool,
}

impl SocketFailure {
    /// A failure of kind `error` with `detail`.
    pub fn new(error: TransportError, detail: impl Into<String>) -> Self {
        Self {
            error,
            detail: detail.into(),
            no_turn: false,
        }
    }

    /// A connect that timed out waiting for its turn, with `detail`.
    pub fn no_turn(detail: impl Into<String>) -> Self {
        Self {
            no_turn: true,
            ..Self::new(TransportError::TimedOut, detail)
        }
    }
}

impl std::fmt::Display for SocketFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// A sandbox limit a guest ran into. Returned as the error of the limiter
/// or the epoch callback, so a stop is classified by type, not by text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitHit {
    /// Linear memory would grow past the limit.
    #[error("memory limit of {} MiB reached", limit_bytes >> 20)]
    Memory {
        /// The limit, bytes.
        limit_bytes: usize,
    },
    /// A table would grow past the limit.
    #[error("table limit of {limit} elements reached")]
    Table {
        /// The limit, elements.
        limit: usize,
    },
    /// The guest computed for too long without calling the host.
    #[error("CPU limit: the guest computed for {used_ms} ms without calling the host")]
    Cpu {
        /// How long it computed, milliseconds.
        used_ms: u64,
        /// The limit, milliseconds.
        limit_ms: u32,
    },
    /// The guest computed more than its budget in one iteration, import
    /// calls or not (time waiting in host calls does not count).
    #[error("CPU budget: the guest computed for about {used_ms} ms in one iteration")]
    CpuBudget {
        /// How long it computed, milliseconds (sampled every epoch tick).
        used_ms: u64,
        /// The budget, milliseconds.
        budget_ms: u32,
    },
    /// The guest kept writing past its output limit: it is flooding, not
    /// logging.
    #[error("output flood: {dropped} lines over the output limit in one iteration")]
    OutputFlood {
        /// Lines dropped in the iteration.
        dropped: u64,
        /// Lines that may be dropped in one iteration before the guest is
        /// stopped.
        limit: u64,
    },
    /// The guest kept connecting past its connect limit: it is storming the
    /// broker, not retrying.
    #[error("connect storm: {refused} connects refused in one iteration")]
    ConnectStorm {
        /// Connects refused (too many, too often) in the iteration.
        refused: u32,
        /// Refusals allowed in one iteration before the guest is stopped.
        limit: u32,
    },
    /// The iteration did not return in time.
    #[error("iteration timeout: run-iteration did not return within {limit_ms} ms")]
    IterationTimeout {
        /// The timeout, milliseconds.
        limit_ms: u64,
        /// Who set it.
        set_by: TimeoutSetBy,
    },
}

/// Who set an iteration's timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutSetBy {
    /// The host's operator (a flag, or the mock host's scenario).
    Operator,
    /// The logic, declaring its slowest legal iteration.
    Logic,
    /// Nobody: the host's maximum.
    Maximum,
}

impl LimitHit {
    /// The limit's name in metrics and structured logs.
    pub fn kind(&self) -> &'static str {
        match self {
            LimitHit::Memory { .. } => "memory",
            LimitHit::Table { .. } => "table",
            LimitHit::Cpu { .. } => "cpu",
            LimitHit::CpuBudget { .. } => "cpu_budget",
            LimitHit::OutputFlood { .. } => "output_flood",
            LimitHit::ConnectStorm { .. } => "connect_storm",
            LimitHit::IterationTimeout { .. } => "iteration_timeout",
        }
    }
}

/// What kind of trap stopped a guest, from wasmtime's trap code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrapKind {
    /// `unreachable` ran: a Rust guest panicked or aborted.
    Unreachable,
    /// The wasm stack overflowed.
    StackOverflow,
    /// A load or store outside linear memory (often a stack overrun).
    MemoryOutOfBounds,
    /// Any other trap code, or a host function failing.
    Other,
}

/// Why a guest was stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A sandbox limit stopped it.
    Limit(LimitHit),
    /// It trapped; the message is wasmtime's, on one line.
    Trap {
        /// The trap code's kind.
        kind: TrapKind,
        /// The trap's message.
        message: String,
    },
}

/// One line: the limit and what passed it, or the trap's message.
impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Limit(hit) => hit.fmt(f),
            Stop::Trap { message, .. } => f.write_str(message),
        }
    }
}

impl Stop {
    /// Classifies the error a guest call ended in: a limit by its type, a
    /// trap by wasmtime's trap code.
    pub fn from_error(error: &wasmtime::Error) -> Self {
        if let Some(limit) = error.downcast_ref::<LimitHit>() {
            return Self::Limit(*limit);
        }
        let kind = match error.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::UnreachableCodeReached) => TrapKind::Unreachable,
            Some(wasmtime::Trap::StackOverflow) => TrapKind::StackOverflow,
            Some(wasmtime::Trap::MemoryOutOfBounds) => TrapKind::MemoryOutOfBounds,
            _ => TrapKind::Other,
        };
        // The root cause is the trap itself; outer layers are backtraces.
        let message = error.root_cause().to_string().replace('\n', " ");
        Self::Trap { kind, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the last recorded socket failure explained a
    /// failure of another kind (a keep-alive timeout by an earlier refusal).
    #[test]
    fn only_a_socket_failure_of_the_same_error_explains_a_failure() {
        let refused = SocketFailure::new(TransportError::ConnectionRefused, "os error 111");
        let keep_alive = IterationFailure::Transport(TransportError::TimedOut);
        assert_eq!(keep_alive.explained_by(Some(refused.clone())), None);
        let exhausted =
            IterationFailure::ConnectRetriesExhausted(TransportError::ConnectionRefused);
        assert_eq!(exhausted.explained_by(Some(refused.clone())), Some(refused));
        assert_eq!(
            IterationFailure::TimedOut("PUBACK".into()).explained_by(None),
            None
        );
    }

    #[test]
    fn limits_and_traps_are_classified_by_type() {
        let e = wasmtime::Error::new(LimitHit::Memory {
            limit_bytes: 16 << 20,
        });
        assert_eq!(
            Stop::from_error(&e),
            Stop::Limit(LimitHit::Memory {
                limit_bytes: 16 << 20
            })
        );
        let e = wasmtime::Error::new(wasmtime::Trap::StackOverflow).context("backtrace");
        assert!(matches!(
            Stop::from_error(&e),
            Stop::Trap {
                kind: TrapKind::StackOverflow,
                ..
            }
        ));
        let e = wasmtime::Error::msg("scripted fault");
        assert_eq!(
            Stop::from_error(&e),
            Stop::Trap {
                kind: TrapKind::Other,
                message: "scripted fault".into()
            }
        );
    }

    #[test]
    fn a_stop_reads_as_its_limit_or_its_trap_message() {
        let limit = Stop::Limit(LimitHit::Memory {
            limit_bytes: 16 << 20,
        });
        assert_eq!(limit.to_string(), "memory limit of 16 MiB reached");
        let trap = Stop::Trap {
            kind: TrapKind::Other,
            message: "scripted fault".into(),
        };
        assert_eq!(trap.to_string(), "scripted fault");
    }
}
