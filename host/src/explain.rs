//! One-line messages for users: why an iteration failed, why a guest was
//! stopped, what a socket error code means, each with the fix.

use crate::bindings::mtls_socket::ErrorCode;
use crate::bindings::types::{ConnackRefusal, IterationError, Settings};
use crate::limits::Limits;
use crate::tls::Failure;

/// A guest-facing error code in words, with the fix where there is one.
pub fn describe_code(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::NotPermitted => {
            "not permitted: the endpoint is not the broker nor on --allow (add it with --allow HOST:PORT if the logic needs it)"
        }
        ErrorCode::NameUnresolvable => "name unresolvable (check the host name in --broker)",
        ErrorCode::ConnectionRefused => {
            "connection refused (check that the broker runs and listens on the --broker port)"
        }
        ErrorCode::TimedOut => "timed out (check the network path to the broker)",
        ErrorCode::ConnectionReset => "connection reset by the broker (check the broker's log)",
        ErrorCode::ConnectionClosed => "connection closed by the broker (check the broker's log)",
        ErrorCode::ServerCertificateUnknownIssuer => {
            "server certificate rejected: unknown issuer (pass the broker's root CA with --ca)"
        }
        ErrorCode::ServerCertificateExpired => {
            "server certificate expired or not yet valid (renew it, or check the clock)"
        }
        ErrorCode::ServerCertificateNameMismatch => {
            "server certificate is for another host name (connect with the name it names)"
        }
        ErrorCode::ServerCertificateInvalid => {
            "server certificate invalid (check the broker's certificate chain)"
        }
        ErrorCode::ClientCertificateRejected => {
            "client certificate rejected by the broker (pass one issued by a CA it trusts with --cert/--key)"
        }
        ErrorCode::ClientCertificateRequired => {
            "the broker requires a client certificate (pass --cert and --key)"
        }
        ErrorCode::ProtocolVersionUnsupported => {
            "no common TLS version (the broker must offer TLS 1.2 or 1.3)"
        }
        ErrorCode::TlsHandshakeFailed => "TLS handshake failed (check that the port speaks TLS)",
        ErrorCode::TooManyConnections => {
            "too many connections open at once (limit --max-connections)"
        }
        ErrorCode::MessageTooLarge => {
            "a send or receive over the per-call limit (limit --max-io-bytes)"
        }
        ErrorCode::IoFailed => "I/O error on the socket",
    }
}

/// One line for a trap: its message and, when recognisable, the limit hit.
pub fn describe_trap(trap: &wasmtime::Error, limits: &Limits) -> String {
    // The root cause is the trap itself; the outer layers are backtraces.
    let cause = trap.root_cause().to_string().replace('\n', " ");
    match crate::limits::trap_hint(&cause, limits) {
        Some(hint) => format!("{cause} ({hint})"),
        None => cause,
    }
}

/// One line naming the cause of a failed iteration and the fix.
pub fn describe(error: &IterationError, settings: &Settings, failure: Option<&Failure>) -> String {
    let broker = format!("{}:{}", settings.broker_host, settings.broker_port);
    let detail = |code: &ErrorCode| match failure {
        Some(f) => f.to_string(),
        None => describe_code(*code).to_string(),
    };
    match error {
        IterationError::ConnectRetriesExhausted(code) => format!(
            "could not connect to {broker}, all {} retries exhausted: {}",
            settings.backoff_max_attempts,
            detail(code)
        ),
        IterationError::TransportPermanent(
            code @ (ErrorCode::NotPermitted
            | ErrorCode::TooManyConnections
            | ErrorCode::MessageTooLarge),
        ) => format!(
            "the device logic hit a sandbox limit: {}",
            describe_code(*code)
        ),
        IterationError::TransportPermanent(code) => {
            format!(
                "TLS connection to {broker} failed, not retried: {}",
                detail(code)
            )
        }
        IterationError::Transport(code) => format!("connection to {broker} lost: {}", detail(code)),
        IterationError::ConnackRefused(refusal) => {
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
        IterationError::SubscribeRetriesExhausted(topic) => format!(
            "the broker {broker} rejected the subscription to {topic} after all retries (allow the topic in the broker's policy)"
        ),
        IterationError::TimedOut(what) => {
            format!(
                "timed out waiting for {what} from {broker} (check the broker's log, or raise --process-loop-ms)"
            )
        }
        IterationError::ProtocolViolation(what) => format!(
            "the broker {broker} sent invalid MQTT: {what} (check that --broker points at an MQTT 3.1.1 broker)"
        ),
    }
}
