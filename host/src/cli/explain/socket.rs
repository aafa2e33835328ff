//! Socket errors and failed iterations in the user's words: the one advice
//! table for socket errors, and the wording of every iteration failure.

use host_core::TransportError;
use host_core::outcome::{ConnackRefusal, IterationFailure, SocketFailure};
use host_core::settings::DeviceSettings;

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
pub fn socket(error: TransportError, detail: Option<&SocketFailure>) -> String {
    let (what, fix) = socket_advice(error);
    match detail {
        Some(d) if d.no_turn => format!(
            "{} (raise --max-connecting or the connect timeout)",
            d.detail
        ),
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
        // A persistent session's publish the device's state refused.
        IterationFailure::InvalidSettings(what) if what.starts_with("the device's state") => {
            format!(
                "{what} (raise --state-max-bytes, --state-max-keys or --state-writes-per-sec, or free the disk of --state-dir)"
            )
        }
        IterationFailure::InvalidSettings(what) => format!(
            "the settings do not fit MQTT: {what} (shorten --topic, --client-id, --username or --password)"
        ),
    }
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
    fn a_connect_that_got_no_turn_says_which_flag_to_raise() {
        let line = socket(
            TransportError::TimedOut,
            Some(&SocketFailure::no_turn(
                "no turn to connect to b:1 within 5 ms",
            )),
        );
        assert!(
            line.ends_with("(raise --max-connecting or the connect timeout)"),
            "{line}"
        );
    }
}
