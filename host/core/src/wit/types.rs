//! `types`: settings, reports and failures to and from the host's types.

use mqtt_core::TransportError;

use super::types_bindings::ConnackRefusal as WitRefusal;
pub use super::types_bindings::{Host, IterationError, IterationReport, Settings, add_to_linker};
use crate::outcome::{self, ConnackRefusal, IterationFailure};
use crate::settings::DeviceSettings;

impl From<&DeviceSettings> for Settings {
    fn from(s: &DeviceSettings) -> Self {
        Settings {
            broker_host: s.broker_host.clone(),
            broker_port: s.broker_port,
            client_id: s.client_id.clone(),
            topic: s.topic.clone(),
            payload: s.payload.clone(),
            publish_count: s.publish_count,
            publish_delay_ms: s.publish_delay_ms,
            process_loop_ms: s.process_loop_ms,
            connack_timeout_ms: s.connack_timeout_ms,
            transport_timeout_ms: s.transport_timeout_ms,
            connect_timeout_ms: s.connect_timeout_ms,
            keep_alive_secs: s.keep_alive_secs,
            pingresp_timeout_ms: s.pingresp_timeout_ms,
            backoff_base_ms: s.backoff_base_ms,
            backoff_max_ms: s.backoff_max_ms,
            backoff_max_attempts: s.backoff_max_attempts,
            clean_session: s.clean_session,
            username: s.username.clone(),
            password: s.password.clone(),
        }
    }
}

impl From<IterationReport> for outcome::IterationReport {
    fn from(r: IterationReport) -> Self {
        Self {
            published: r.published,
            acknowledged: r.acknowledged,
            echoes: r.echoes,
            connections: r.connections,
            round_trips_us: r.round_trips_us,
        }
    }
}

impl From<WitRefusal> for ConnackRefusal {
    fn from(r: WitRefusal) -> Self {
        match r {
            WitRefusal::UnacceptableProtocolVersion => Self::UnacceptableProtocolVersion,
            WitRefusal::IdentifierRejected => Self::IdentifierRejected,
            WitRefusal::ServerUnavailable => Self::ServerUnavailable,
            WitRefusal::BadUserNameOrPassword => Self::BadUserNameOrPassword,
            WitRefusal::NotAuthorized => Self::NotAuthorized,
        }
    }
}

impl From<IterationError> for IterationFailure {
    fn from(e: IterationError) -> Self {
        match e {
            IterationError::ConnectRetriesExhausted(c) => {
                Self::ConnectRetriesExhausted(TransportError::from(c))
            }
            IterationError::TransportPermanent(c) => {
                Self::TransportPermanent(TransportError::from(c))
            }
            IterationError::Transport(c) => Self::Transport(TransportError::from(c)),
            IterationError::ConnackRefused(r) => Self::ConnackRefused(r.into()),
            IterationError::SubscribeRetriesExhausted(t) => Self::SubscribeRetriesExhausted(t),
            IterationError::TimedOut(what) => Self::TimedOut(what),
            IterationError::ProtocolViolation(what) => Self::ProtocolViolation(what),
            IterationError::InvalidSettings(what) => Self::InvalidSettings(what),
        }
    }
}
