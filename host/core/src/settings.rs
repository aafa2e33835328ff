//! A device's settings as the host knows them, and their defaults (the
//! coreMQTT demo's values) with the supervisor's: the CLI's flags, the mock
//! host and `--help` read the constants in [`defaults`]. Each default lives
//! next to what it sets (the sandbox's limits on `Limits` in the host, the
//! fleet's next to its flag); the one list of them all is the
//! configuration chapter's table, which a test makes from the flags.

/// The default of every setting, next to what it sets. Units are in the
/// names; each is the coreMQTT demo's value unless its doc says otherwise.
pub mod defaults {
    /// `broker_port`: MQTT over TLS.
    pub const BROKER_PORT: u16 = 8883;
    /// `payload` of every publish.
    pub const PAYLOAD: &str = "Hello World!";
    /// `publish_count` per iteration.
    pub const PUBLISH_COUNT: u32 = 5;
    /// `publish_delay_ms`: the idle wait after each publish.
    pub const PUBLISH_DELAY_MS: u32 = 2000;
    /// `process_loop_ms`: the longest run of one process loop.
    pub const PROCESS_LOOP_MS: u32 = 2000;
    /// `connack_timeout_ms`.
    pub const CONNACK_TIMEOUT_MS: u32 = 1000;
    /// `transport_timeout_ms`: one send.
    pub const TRANSPORT_TIMEOUT_MS: u32 = 200;
    /// `connect_timeout_ms`: TCP connect plus TLS handshake (this project's
    /// choice; the original uses its 200 ms transport timeout).
    pub const CONNECT_TIMEOUT_MS: u32 = 5000;
    /// `keep_alive_secs`.
    pub const KEEP_ALIVE_SECS: u16 = 60;
    /// `pingresp_timeout_ms` (coreMQTT's `MQTT_PINGRESP_TIMEOUT_MS`).
    pub const PINGRESP_TIMEOUT_MS: u32 = 5000;
    /// `backoff_base_ms`: the first Full-Jitter window.
    pub const BACKOFF_BASE_MS: u32 = 500;
    /// `backoff_max_ms`: the largest Full-Jitter window.
    pub const BACKOFF_MAX_MS: u32 = 5000;
    /// `backoff_max_attempts`: retries after the first attempt.
    pub const BACKOFF_MAX_ATTEMPTS: u32 = 5;
    /// The wait between iterations, milliseconds.
    pub const ITERATION_DELAY_MS: u32 = 5000;
    /// Restarts in a row of a stopped guest before giving up (this
    /// project's choice; the original asserts).
    pub const RESTART_MAX_ATTEMPTS: u32 = 5;
    /// Iterations swapped-in logic must return from before it stays; a
    /// stop within them rolls back to the logic it replaced.
    pub const PROBATION_ITERATIONS: u32 = 3;
}

/// What the host hands the device logic each iteration (the WIT `settings`
/// record, as the host's own type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSettings {
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

impl DeviceSettings {
    /// The demo's settings against `broker_host`:`broker_port` as
    /// `client_id`, with the default topic and every default value.
    pub fn new(broker_host: &str, broker_port: u16, client_id: &str) -> Self {
        Self {
            broker_host: broker_host.to_string(),
            broker_port,
            client_id: client_id.to_string(),
            topic: Self::default_topic(client_id),
            payload: defaults::PAYLOAD.to_string(),
            publish_count: defaults::PUBLISH_COUNT,
            publish_delay_ms: defaults::PUBLISH_DELAY_MS,
            process_loop_ms: defaults::PROCESS_LOOP_MS,
            connack_timeout_ms: defaults::CONNACK_TIMEOUT_MS,
            transport_timeout_ms: defaults::TRANSPORT_TIMEOUT_MS,
            connect_timeout_ms: defaults::CONNECT_TIMEOUT_MS,
            keep_alive_secs: defaults::KEEP_ALIVE_SECS,
            pingresp_timeout_ms: defaults::PINGRESP_TIMEOUT_MS,
            backoff_base_ms: defaults::BACKOFF_BASE_MS,
            backoff_max_ms: defaults::BACKOFF_MAX_MS,
            backoff_max_attempts: defaults::BACKOFF_MAX_ATTEMPTS,
            clean_session: true,
            username: None,
            password: None,
        }
    }

    /// The demo's topic for a client id: `<client-id>/example/topic`.
    pub fn default_topic(client_id: &str) -> String {
        format!("{client_id}/example/topic")
    }

    /// `host:port` of the broker, for messages.
    pub fn broker(&self) -> String {
        format!("{}:{}", self.broker_host, self.broker_port)
    }
}
