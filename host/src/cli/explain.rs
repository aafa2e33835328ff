//! Every one-line message a user reads about a failure, with its fix: one
//! advice table for socket errors, and the wording of failed iterations,
//! stopped guests and failed runs. Everything else reports typed outcomes.

use host::sandbox::RunError;
use host_core::TransportError;
use host_core::outcome::{
    ConnackRefusal, IterationFailure, LimitHit, SocketFailure, Stop, TimeoutSetBy, TrapKind,
};
use host_core::settings::DeviceSettings;
use host_core::supervisor::Ending;

use crate::cli::exit;

/// What a socket error means and how to fix it: the one table. The fix
/// reads on its own, as it follows the host's detail when there is one.
pub fn socket_advice(error: TransportError) -> (&'static str, &'static str) {
    use TransportError as E;
    match error {
        E::NotPermitted => (
            "not permitted: the endpoint is neither the broker nor on the allow list",
            "add it with --allow HOST:PORT if the logic needs it",
        ),
        E::NameUnresolvable => ("name unresolvable", "check the host name in --broker"),
        E::ConnectionRefused => (
            "connection refused",
            "check that the broker runs and listens on the --broker port",
        ),
        E::TimedOut => (
            "timed out",
            "check the network path to the broker, or raise --connect-timeout-ms",
        ),
        E::ConnectionReset => ("connection reset by the broker", "check the broker's log"),
        E::ConnectionClosed => ("connection closed by the broker", "check the broker's log"),
        E::ServerCertificateUnknownIssuer => (
            "server certificate rejected: unknown issuer",
            "pass the root CA that signed the broker's certificate with --ca",
        ),
        E::ServerCertificateExpired => (
            "server certificate expired or not yet valid",
            "renew the broker's certificate, or check this machine's clock",
        ),
        E::ServerCertificateNameMismatch => (
            "server certificate is for another host name",
            "connect with the host name the broker's certificate names",
        ),
        E::ServerCertificateInvalid => (
            "server certificate invalid",
            "check the broker's certificate chain",
        ),
        E::ClientCertificateRejected => (
            "client certificate rejected by the broker",
            "pass a client certificate (--cert) issued by a CA the broker trusts, with its key (--key)",
        ),
        E::ClientCertificateRequired => (
            "the broker requires a client certificate",
            "the broker requires a client certificate: pass --cert and --key",
        ),
        E::ProtocolVersionUnsupported => (
            "no common TLS version",
            "the broker must offer TLS 1.2 or 1.3",
        ),
        E::TlsHandshakeFailed => (
            "TLS handshake failed",
            "check that the port speaks TLS and the broker's TLS settings",
        ),
        E::TooManyConnections => (
            "too many connections open at once",
            "a sandbox limit: raise --max-connections if the logic needs more",
        ),
        E::MessageTooLarge => (
            "a send or receive over the per-call limit",
            "a sandbox limit: raise --max-io-bytes if the logic needs more",
        ),
        E::IoFailed => ("I/O error on the socket", "check the broker's log"),
        E::RateLimited => (
            "connections opened faster than allowed",
            "a sandbox limit: raise --connect-burst or lower --connect-interval-ms if the logic needs more",
        ),
    }
}

/// A socket error in words with its fix, using the host's detail when there
/// is one (the runtime keeps only a detail of the same error).
fn socket(error: TransportError, detail: Option<&SocketFailure>) -> String {
    let (what, fix) = socket_advice(error);
    match detail {
        Some(d) => format!("{} ({fix})", d.detail),
        None => format!("{what} ({fix})"),
    }
}

/// Why an iteration failed, naming the broker and the fix.
pub fn iteration_failure(
    failure: &IterationFailure,
    settings: &DeviceSettings,
    detail: Option<&SocketFailure>,
) -> String {
    let broker = settings.broker();
    match failure {
        IterationFailure::ConnectRetriesExhausted(e) => format!(
            "could not connect to {broker}, all {} retries exhausted: {}",
            settings.backoff_max_attempts,
            socket(*e, detail)
        ),
        IterationFailure::TransportPermanent(
            e @ (TransportError::NotPermitted
            | TransportError::TooManyConnections
            | TransportError::MessageTooLarge
            | TransportError::RateLimited),
        ) => format!("the device logic hit a sandbox limit: {}", socket(*e, None)),
        IterationFailure::TransportPermanent(e) => format!(
            "TLS connection to {broker} failed, not retried: {}",
            socket(*e, detail)
        ),
        IterationFailure::Transport(e) => {
            format!("connection to {broker} lost: {}", socket(*e, detail))
        }
        IterationFailure::ConnackRefused(refusal) => {
            let (what, fix) = match refusal {
                ConnackRefusal::UnacceptableProtocolVersion => (
                    "unacceptable protocol version",
                    "use a broker that speaks MQTT 3.1.1",
                ),
                ConnackRefusal::IdentifierRejected => {
                    ("identifier rejected", "pass another --client-id")
                }
                ConnackRefusal::ServerUnavailable => {
                    ("server unavailable", "retry later or check the broker")
                }
                ConnackRefusal::BadUserNameOrPassword => (
                    "bad user name or password",
                    "check --username and --password",
                ),
                ConnackRefusal::NotAuthorized => (
                    "not authorized",
                    "allow this client id in the broker's policy",
                ),
            };
            format!("the broker {broker} refused the MQTT connection: {what} ({fix})")
        }
        IterationFailure::SubscribeRetriesExhausted(topic) => format!(
            "the broker {broker} rejected the subscription to {topic} after all retries (allow the topic in the broker's policy)"
        ),
        IterationFailure::TimedOut(what) => format!(
            "timed out waiting for {what} from {broker} (check the broker's log, or raise --process-loop-ms)"
        ),
        IterationFailure::ProtocolViolation(what) => format!(
            "the broker {broker} sent invalid MQTT: {what} (check that --broker points at an MQTT 3.1.1 broker)"
        ),
        IterationFailure::InvalidSettings(what) => format!(
            "the settings do not fit MQTT: {what} (shorten --topic, --client-id, --username or --password)"
        ),
    }
}

/// Why a guest was stopped, naming the limit's flag or the trap's likely cause.
pub fn stop(stop: &Stop) -> String {
    match stop {
        Stop::Limit(LimitHit::Memory { limit_bytes }) => format!(
            "memory limit --max-memory-mib {} reached (the guest grew its linear memory past it)",
            limit_bytes >> 20
        ),
        Stop::Limit(LimitHit::Table { limit }) => {
            format!("table limit --max-table-elements {limit} reached")
        }
        Stop::Limit(limit @ LimitHit::Cpu { limit_ms, .. }) => {
            format!("{limit} (limit --cpu-limit-ms {limit_ms})")
        }
        Stop::Limit(limit @ LimitHit::CpuBudget { budget_ms, .. }) => format!(
            "{limit}, import calls or not (budget --cpu-budget-ms {budget_ms}; the guest spins)"
        ),
        Stop::Limit(hit @ LimitHit::OutputFlood { limit, .. }) => format!(
            "{hit} (it kept writing past --log-lines-per-sec; the limit is {limit} dropped lines, ten seconds' worth)"
        ),
        Stop::Limit(limit @ LimitHit::ConnectStorm { limit: max, .. }) => format!(
            "{limit} (it kept connecting past --connect-burst and --connect-interval-ms; the limit is {max} refusals, ten bursts)"
        ),
        Stop::Limit(
            limit @ LimitHit::IterationTimeout {
                limit_ms,
                set_by: TimeoutSetBy::Operator,
            },
        ) => format!(
            "{limit} (limit --iteration-timeout-ms {limit_ms}; the guest hangs or waits too long)"
        ),
        Stop::Limit(
            limit @ LimitHit::IterationTimeout {
                set_by: TimeoutSetBy::Logic,
                ..
            },
        ) => format!(
            "{limit} (the bound the logic declared for its iteration; it hangs, or declared too little: --iteration-timeout-ms MS overrides it)"
        ),
        Stop::Limit(
            limit @ LimitHit::IterationTimeout {
                set_by: TimeoutSetBy::Maximum,
                ..
            },
        ) => format!(
            "{limit} (the host's maximum for a logic that declares no bound; the guest hangs, or set --iteration-timeout-ms MS)"
        ),
        Stop::Trap { kind, message } => {
            let hint = match kind {
                TrapKind::Unreachable => {
                    " (the guest panicked or aborted; its own message, if any, is in its stderr lines above)"
                }
                TrapKind::StackOverflow => " (the guest recursed past the wasm stack limit)",
                TrapKind::MemoryOutOfBounds => {
                    " (the guest overran its stack or memory, e.g. by recursing without end)"
                }
                TrapKind::Other => "",
            };
            format!("{message}{hint}")
        }
    }
}

/// What `host run` ended in, when it did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// A setting, file or component is wrong.
    #[error(transparent)]
    Setup(#[from] anyhow::Error),
    /// The device's run failed.
    #[error("the device's run failed")]
    Device {
        /// Why.
        #[source]
        error: RunError,
        /// Its settings, for the message.
        settings: Box<DeviceSettings>,
    },
    /// A rollout did not reach every device.
    #[error("{line}")]
    Rollout {
        /// The summary line.
        line: String,
        /// The exit code.
        code: u8,
    },
    /// `host inspect`: this host would not run the logic, or its signature
    /// does not verify (the output above says why).
    #[error("{0}")]
    Refused(String),
    /// `host test`: scenarios failed (the output above says how).
    #[error("{failed} scenario(s) failed")]
    Scenarios {
        /// How many.
        failed: usize,
    },
    /// Devices of a fleet gave up.
    #[error("{failed} of {devices} devices failed (their log lines say why)")]
    Fleet {
        /// Devices that gave up.
        failed: usize,
        /// Devices in the fleet.
        devices: usize,
    },
}

impl Failure {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Setup(_)
            | Failure::Device {
                error: RunError::Instantiate(_),
                ..
            } => exit::SETUP,
            Failure::Device {
                error: RunError::Ended(Ending::IterationFailed { .. }),
                ..
            }
            | Failure::Fleet { .. } => exit::ITERATION_FAILED,
            Failure::Rollout { code, .. } => *code,
            Failure::Refused(_) => exit::REFUSED,
            Failure::Scenarios { .. } => exit::SCENARIOS_FAILED,
            Failure::Device {
                error: RunError::Ended(Ending::GuestFailed { .. }),
                ..
            } => exit::GUEST_FAILED,
        }
    }
}

/// A device's failed run on one line.
pub fn run_error(error: &RunError, settings: &DeviceSettings) -> String {
    match error {
        RunError::Ended(Ending::IterationFailed {
            iteration,
            failure,
            socket,
        }) => format!(
            "iteration {iteration} failed: {}",
            iteration_failure(failure, settings, socket.as_ref())
        ),
        RunError::Ended(Ending::GuestFailed { stops, last }) => format!(
            "the device logic was stopped {stops} time(s) in a row and the restarts are exhausted; last: {} (fix the guest or raise the limit; the host was unaffected)",
            stop(last)
        ),
        RunError::Instantiate(e) => format!("cannot start the device logic: {e:#}"),
    }
}

/// The last line `host run` prints on failure (after `error: `).
pub fn failure_line(failure: &Failure) -> String {
    let line = match failure {
        Failure::Setup(e) => format!("{e:#}"),
        Failure::Device { error, settings } => run_error(error, settings),
        Failure::Fleet { .. }
        | Failure::Rollout { .. }
        | Failure::Refused(_)
        | Failure::Scenarios { .. } => failure.to_string(),
    };
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: two tables gave different advice for the same
    /// failure; now every socket error's fix comes from one.
    #[test]
    fn every_socket_error_has_one_description_and_a_fix() {
        for e in TransportError::ALL {
            let (what, fix) = socket_advice(e);
            assert!(!what.is_empty() && !fix.is_empty(), "{e}");
            let line = socket(e, None);
            assert!(line.contains(fix), "{line}");
        }
        let with_detail = socket(
            TransportError::ServerCertificateUnknownIssuer,
            Some(&SocketFailure::new(
                TransportError::ServerCertificateUnknownIssuer,
                "TLS: invalid peer certificate: UnknownIssuer",
            )),
        );
        assert!(
            with_detail.contains("UnknownIssuer") && with_detail.contains("--ca"),
            "{with_detail}"
        );
    }

    #[test]
    fn stops_name_the_limit_flag() {
        let line = stop(&Stop::Limit(LimitHit::Cpu {
            used_ms: 210,
            limit_ms: 200,
        }));
        assert!(
            line.contains("CPU limit") && line.contains("--cpu-limit-ms 200"),
            "{line}"
        );
        let line = stop(&Stop::Limit(LimitHit::Memory {
            limit_bytes: 16 << 20,
        }));
        assert!(line.contains("memory limit --max-memory-mib 16"), "{line}");
    }
}
