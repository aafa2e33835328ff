//! `types`: settings, reports and failures to and from the guest's own
//! types ([`crate::device`]).

use mqtt_core::TransportError;

use crate::bindings::mqtt_device::runtime::types::{
    ConnackRefusal as WitRefusal, IterationError, IterationReport, Settings as WitSettings,
};
use crate::device::{ConnackRefusal, Failure, Report, Settings};

impl From<WitSettings> for Settings {
    fn from(s: WitSettings) -> Self {
        Settings {
            broker_host: s.broker_host,
            broker_port: s.broker_port,
            client_id: s.client_id,
            topic: s.topic,
            payload: s.payload,
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
            username: s.username,
            password: s.password,
        }
    }
}

impl From<Report> for IterationReport {
    fn from(r: Report) -> Self {
        IterationReport {
            published: r.published,
            acknowledged: r.acknowledged,
            echoes: r.echoes,
            connections: r.connections,
            round_trips_us: r.round_trips_us,
        }
    }
}

impl From<ConnackRefusal> for WitRefusal {
    fn from(r: ConnackRefusal) -> Self {
        match r {
            ConnackRefusal::UnacceptableProtocolVersion => Self::UnacceptableProtocolVersion,
            ConnackRefusal::IdentifierRejected => Self::IdentifierRejected,
            ConnackRefusal::ServerUnavailable => Self::ServerUnavailable,
            ConnackRefusal::BadUserNameOrPassword => Self::BadUserNameOrPassword,
            ConnackRefusal::NotAuthorized => Self::NotAuthorized,
        }
    }
}

impl From<Failure> for IterationError {
    fn from(f: Failure) -> Self {
        let code = |e: TransportError| e.into();
        match f {
            Failure::ConnectRetriesExhausted(e) => Self::ConnectRetriesExhausted(code(e)),
            Failure::TransportPermanent(e) => Self::TransportPermanent(code(e)),
            Failure::Transport(e) => Self::Transport(code(e)),
            Failure::ConnackRefused(r) => Self::ConnackRefused(r.into()),
            Failure::SubscribeRetriesExhausted(topic) => Self::SubscribeRetriesExhausted(topic),
            Failure::TimedOut(what) => Self::TimedOut(what),
            Failure::ProtocolViolation(what) => Self::ProtocolViolation(what),
            Failure::InvalidSettings(what) => Self::InvalidSettings(what),
        }
    }
}
