//! What the host hands a logic each iteration and what the iteration ends
//! in, as the guest's own types: the WIT `types` interface, converted at
//! the edge ([`crate::wit::types`]) so the workflow never names generated
//! types.

use mqtt_core::TransportError;

/// A device's settings for one iteration (the WIT `settings` record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Broker host name, also the TLS server name.
    pub broker_host: String,
    /// Broker port.
    pub broker_port: u16,
    /// MQTT client identifier.
    pub client_id: String,
    /// Topic subscribed and published to.
    pub topic: String,
    /// Payload of every publish; `{iteration}` and `{publish}` are numbered.
    pub payload: String,
    /// Publishes per iteration.
    pub publish_count: u32,
    /// Idle wait after each publish, milliseconds.
    pub publish_delay_ms: u32,
    /// Longest run of each process loop, milliseconds.
    pub process_loop_ms: u32,
    /// Time allowed for CONNACK, milliseconds.
    pub connack_timeout_ms: u32,
    /// Time allowed for one send, milliseconds.
    pub transport_timeout_ms: u32,
    /// Time allowed for TCP connect and TLS handshake, milliseconds.
    pub connect_timeout_ms: u32,
    /// MQTT keep-alive, seconds; 0 = off.
    pub keep_alive_secs: u16,
    /// Time allowed for PINGRESP, milliseconds.
    pub pingresp_timeout_ms: u32,
    /// First Full-Jitter window, milliseconds.
    pub backoff_base_ms: u32,
    /// Largest Full-Jitter window, milliseconds.
    pub backoff_max_ms: u32,
    /// Retries after the first attempt; 0 = none, `u32::MAX` = forever.
    pub backoff_max_attempts: u32,
    /// MQTT clean session.
    pub clean_session: bool,
    /// Optional MQTT user name.
    pub username: Option<String>,
    /// Optional MQTT password.
    pub password: Option<String>,
}

impl Settings {
    /// The MQTT client's timing these settings give.
    pub fn timing(&self) -> mqtt_core::Timing {
        mqtt_core::Timing {
            keep_alive_secs: self.keep_alive_secs,
            pingresp_timeout_ms: self.pingresp_timeout_ms,
            send_timeout_ms: self.transport_timeout_ms,
        }
    }

    /// The CONNECT these settings give: client id, keep-alive, clean
    /// session, and the user name and password when set.
    pub fn connect_packet(&self) -> mqttbytes::v4::Connect {
        let mut connect = mqttbytes::v4::Connect::new(self.client_id.clone());
        connect.keep_alive = self.keep_alive_secs;
        connect.clean_session = self.clean_session;
        if let Some(user) = &self.username {
            connect.login = Some(mqttbytes::v4::Login::new(
                user.clone(),
                self.password.clone().unwrap_or_default(),
            ));
        }
        connect
    }
}

/// What an iteration did (the WIT `iteration-report` record).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Publishes sent.
    pub published: u32,
    /// PUBACKs received.
    pub acknowledged: u32,
    /// Echoes of the publishes received on the subscribed topic.
    pub echoes: u32,
    /// TLS connections opened.
    pub connections: u32,
    /// Publish-to-echo round trips, microseconds.
    pub round_trips_us: Vec<u32>,
}

/// Why the broker refused an MQTT connection (CONNACK's return code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnackRefusal {
    /// The broker does not speak this MQTT version.
    UnacceptableProtocolVersion,
    /// The client identifier is not allowed.
    IdentifierRejected,
    /// The MQTT service is unavailable.
    ServerUnavailable,
    /// The user name or password is wrong.
    BadUserNameOrPassword,
    /// The client is not authorized to connect.
    NotAuthorized,
}

/// Why an iteration failed (the WIT `iteration-error` variant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Every connect attempt failed; the last error.
    ConnectRetriesExhausted(TransportError),
    /// A failure that retrying cannot fix (certificates, permissions).
    TransportPermanent(TransportError),
    /// The connection failed after it was set up.
    Transport(TransportError),
    /// The broker refused the MQTT connection.
    ConnackRefused(ConnackRefusal),
    /// The broker rejected the subscription to this topic every time.
    SubscribeRetriesExhausted(String),
    /// What was awaited did not come in time.
    TimedOut(String),
    /// The broker sent something MQTT does not allow.
    ProtocolViolation(String),
    /// A setting does not fit MQTT.
    InvalidSettings(String),
}
