//! The scenario file format (TOML), as read: every table and key of a file
//! that `host test` runs. Keys are kebab-case like the flags of `host run`;
//! unknown keys are errors. What each key means is in the manual's
//! "Scenario files" section; what it becomes is in [`super::scenario`] (the
//! broker's script) and [`super::expect`] (the checks).

use std::collections::BTreeMap;

use serde::Deserialize;

/// A whole file: defaults for every scenario, then the scenarios in order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileSpec {
    /// Applied to every scenario; a scenario's own keys win.
    #[serde(default)]
    pub defaults: Common,
    /// `[[scenario]]` tables.
    #[serde(default, rename = "scenario")]
    pub scenarios: Vec<ScenarioSpec>,
}

/// Keys a scenario and `[defaults]` share.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Common {
    /// Seed of the guest's entropy (and WASI random) [0].
    pub seed: Option<u64>,
    /// Successful iterations to run [1].
    pub iterations: Option<u32>,
    /// Virtual wait between iterations, milliseconds [5000].
    pub iteration_delay_ms: Option<u32>,
    /// "coalesced" (each read returns all that is queued) or "one-byte".
    pub delivery: Option<DeliverySpec>,
    /// After the last step: "auto" (answer as a broker would) or "strict"
    /// (any packet fails the scenario).
    pub after: Option<AfterSpec>,
    /// Overrides of the settings handed to `run-iteration`.
    #[serde(default)]
    pub settings: SettingsSpec,
    /// Restarts of a stopped (trapped) guest.
    pub restart: Option<RestartSpec>,
    /// The device's state before the run: key → a string, or an integer
    /// (a counter: 8 bytes, little-endian, as `increment` keeps it).
    #[serde(default)]
    pub store: BTreeMap<String, StoreValue>,
    /// The sandbox's limits, by the names of `host run`'s flags [its
    /// defaults]; a scenario's keys win over `[defaults]`' one by one.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// The next this many writes to the state fail as on a full disk.
    pub fail_writes: Option<u32>,
    /// The logic's own settings (`wasi:config`), as `--logic-config` gives them.
    #[serde(default)]
    pub logic_config: BTreeMap<String, ConfigValue>,
}

/// One `[[scenario]]`. It repeats [`Common`]'s keys rather than
/// flattening it in: serde cannot refuse unknown keys of a struct with a
/// flattened part, and a misspelt key must be an error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScenarioSpec {
    /// Shown in the output and the JUnit report; unique in the file.
    pub name: String,
    /// Seed of the guest's entropy (and WASI random).
    pub seed: Option<u64>,
    /// Successful iterations to run.
    pub iterations: Option<u32>,
    /// Virtual wait between iterations, milliseconds.
    pub iteration_delay_ms: Option<u32>,
    /// How bytes reach the guest.
    pub delivery: Option<DeliverySpec>,
    /// What the broker does after the last step.
    pub after: Option<AfterSpec>,
    /// Overrides of the settings, over those of `[defaults]`.
    #[serde(default)]
    pub settings: SettingsSpec,
    /// Restarts of a stopped guest.
    pub restart: Option<RestartSpec>,
    /// The device's state before the run: key → a string, or an integer
    /// (a counter: 8 bytes, little-endian, as `increment` keeps it).
    #[serde(default)]
    pub store: BTreeMap<String, StoreValue>,
    /// The sandbox's limits, by the names of `host run`'s flags [its
    /// defaults]; a scenario's keys win over `[defaults]`' one by one.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// The next this many writes to the state fail as on a full disk.
    pub fail_writes: Option<u32>,
    /// The logic's own settings (`wasi:config`), as `--logic-config` gives them.
    #[serde(default)]
    pub logic_config: BTreeMap<String, ConfigValue>,
    /// Start from the state the named earlier scenario left: a power cut
    /// after it, and the logic started anew on the same disk.
    pub store_after: Option<String>,
    /// The broker's script, in order.
    #[serde(default)]
    pub steps: Vec<StepSpec>,
    /// What must have happened.
    #[serde(default)]
    pub expect: ExpectSpec,
    /// The line of each step in the file (set after reading it).
    #[serde(skip)]
    pub step_lines: Vec<usize>,
}

/// The sandbox's limits a scenario sets: each key is the `host run` flag
/// of the same name, with its default and its meaning; the mock host
/// applies them with the same code. Left out: the default (or `host
/// test`'s `--max-memory-mib`).
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[allow(
    missing_docs,
    reason = "each field is the `host run` flag of the same name"
)]
pub struct LimitsSpec {
    pub iteration_timeout_ms: Option<u64>,
    pub cpu_limit_ms: Option<u32>,
    pub cpu_budget_ms: Option<u32>,
    pub max_memory_mib: Option<usize>,
    pub max_table_elements: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_io_bytes: Option<u32>,
    pub connect_burst: Option<u32>,
    pub connect_interval_ms: Option<u32>,
    pub log_lines_per_sec: Option<u32>,
    pub log_burst: Option<u32>,
    pub state_writes_per_sec: Option<u32>,
}

impl LimitsSpec {
    /// Every key of `[limits]`: each is a flag of `host run`.
    pub const KEYS: [&'static str; 12] = [
        "iteration-timeout-ms",
        "cpu-limit-ms",
        "cpu-budget-ms",
        "max-memory-mib",
        "max-table-elements",
        "max-connections",
        "max-io-bytes",
        "connect-burst",
        "connect-interval-ms",
        "log-lines-per-sec",
        "log-burst",
        "state-writes-per-sec",
    ];

    /// These keys over `other`'s.
    pub fn or(self, other: LimitsSpec) -> LimitsSpec {
        macro_rules! or {
            ($($f:ident),*) => { LimitsSpec { $($f: self.$f.or(other.$f)),* } };
        }
        or!(
            iteration_timeout_ms,
            cpu_limit_ms,
            cpu_budget_ms,
            max_memory_mib,
            max_table_elements,
            max_connections,
            max_io_bytes,
            connect_burst,
            connect_interval_ms,
            log_lines_per_sec,
            log_burst,
            state_writes_per_sec
        )
    }
}

/// How bytes reach the guest.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DeliverySpec {
    /// Every read returns all queued bytes.
    Coalesced,
    /// Every read returns one byte.
    OneByte,
}

/// What the broker does after the last step.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AfterSpec {
    /// Answers as a broker would.
    Auto,
    /// Fails the scenario on any packet.
    Strict,
}

/// Overrides of the device settings (the WIT `settings` record; the
/// defaults are the original demo's, against `broker.example:8883` as
/// `mock-device`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[allow(
    missing_docs,
    reason = "each field is the WIT record field of the same name"
)]
pub struct SettingsSpec {
    pub broker_host: Option<String>,
    pub broker_port: Option<u16>,
    pub client_id: Option<String>,
    pub topic: Option<String>,
    pub payload: Option<String>,
    pub publish_count: Option<u32>,
    pub publish_delay_ms: Option<u32>,
    pub process_loop_ms: Option<u32>,
    pub connack_timeout_ms: Option<u32>,
    pub transport_timeout_ms: Option<u32>,
    pub connect_timeout_ms: Option<u32>,
    pub keep_alive_secs: Option<u16>,
    pub pingresp_timeout_ms: Option<u32>,
    pub backoff_base_ms: Option<u32>,
    pub backoff_max_ms: Option<u32>,
    pub backoff_max_attempts: Option<u32>,
    pub clean_session: Option<bool>,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// The host's restart policy for a stopped guest.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RestartSpec {
    /// First Full-Jitter window, milliseconds.
    pub base_ms: u32,
    /// Largest window, milliseconds.
    pub max_ms: u32,
    /// Restarts in a row before the run gives up.
    pub max_attempts: u32,
}

/// One step of the broker's script: exactly one action key, and optionally
/// `times` to repeat it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StepSpec {
    /// Refuse the next `connect` with this WIT `error-code`.
    pub refuse_connect: Option<String>,
    /// Answer the next N packets as a broker would.
    pub auto: Option<usize>,
    /// Expect this packet kind next (CONNECT, PUBLISH, ...).
    pub expect: Option<String>,
    /// Field checks of the expected packet.
    #[serde(rename = "where")]
    pub where_: Option<PacketSpec>,
    /// The answer to the expected packet: "auto" [default], "none", or a
    /// list of packets.
    pub reply: Option<ReplySpec>,
    /// Expect this packet kind and answer nothing.
    pub swallow: Option<String>,
    /// Deliver these bytes now (hex; spaces allowed).
    pub send: Option<String>,
    /// Close the connection now.
    pub close: Option<bool>,
    /// Make the guest's next import call trap with this message.
    pub trap: Option<String>,
    /// With `expect`: its reply reaches the logic this many milliseconds
    /// of virtual time after the packet; with `send`: the bytes reach it
    /// this long after the step's turn [0]. Bytes after them queue behind.
    pub after_ms: Option<u64>,
    /// Do the step this many times [1].
    pub times: Option<usize>,
}

/// The broker's answer to an expected packet.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "a reply: \"auto\", \"none\" or a list of packets such as [{ puback = true }]"
)]
pub enum ReplySpec {
    /// "auto" or "none".
    Word(String),
    /// These packets, in order.
    Packets(Vec<ReplyPacket>),
}

/// One packet the broker answers with: exactly one kind key.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReplyPacket {
    /// CONNACK with this return code: "accepted" or a WIT
    /// `connack-refusal` name.
    pub connack: Option<String>,
    /// With `connack`: the session-present flag [false].
    pub session_present: Option<bool>,
    /// SUBACK for the SUBSCRIBE answered, one code per filter: "qos0",
    /// "qos1", "qos2" or "failure".
    pub suback: Option<Vec<String>>,
    /// PUBACK: `true` for the packet id of the PUBLISH answered, or an id.
    pub puback: Option<IdOrSame>,
    /// UNSUBACK for the UNSUBSCRIBE answered.
    pub unsuback: Option<bool>,
    /// PINGRESP.
    pub pingresp: Option<bool>,
    /// The broker's copy of the PUBLISH answered, QoS 1, with this packet id.
    pub echo: Option<u16>,
    /// Any PUBLISH.
    pub publish: Option<PublishSpec>,
}

/// `true` (the id of the packet answered) or a packet id.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(
    untagged,
    expecting = "true (the id of the packet answered) or a packet id"
)]
pub enum IdOrSame {
    /// `true`: the same id.
    Same(bool),
    /// This id.
    Id(u16),
}

/// A PUBLISH the broker sends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PublishSpec {
    /// Topic name.
    pub topic: String,
    /// Payload, as text.
    #[serde(default)]
    pub payload: String,
    /// 0, 1 or 2 [1].
    pub qos: Option<u8>,
    /// Packet id [1].
    pub packet_id: Option<u16>,
    /// DUP flag [false].
    #[serde(default)]
    pub dup: bool,
    /// RETAIN flag [false].
    #[serde(default)]
    pub retain: bool,
}

/// A packet pattern: the kind (in `expect.sent`) and any fields to check.
/// A field left out is not checked.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PacketSpec {
    /// CONNECT, PUBLISH, ... (implied by the step in `where`).
    pub kind: Option<String>,
    /// PUBLISH topic.
    pub topic: Option<String>,
    /// PUBLISH payload, exactly (as text).
    pub payload: Option<String>,
    /// PUBLISH payload matches this regular expression.
    pub payload_matches: Option<String>,
    /// PUBLISH QoS, or the QoS every SUBSCRIBE filter asks for.
    pub qos: Option<u8>,
    /// PUBLISH DUP flag.
    pub dup: Option<bool>,
    /// PUBLISH RETAIN flag.
    pub retain: Option<bool>,
    /// Packet id (PUBLISH, PUBACK, SUBSCRIBE, UNSUBSCRIBE).
    pub packet_id: Option<u16>,
    /// SUBSCRIBE or UNSUBSCRIBE topic filters, in order.
    pub filters: Option<Vec<String>>,
    /// CONNECT client id.
    pub client_id: Option<String>,
    /// CONNECT clean-session flag.
    pub clean_session: Option<bool>,
    /// CONNECT keep-alive, seconds.
    pub keep_alive: Option<u16>,
    /// CONNECT user name ("" = none).
    pub username: Option<String>,
    /// CONNECT password ("" = none).
    pub password: Option<String>,
    /// Virtual time the packet was sent at, milliseconds: a number, or
    /// `[from, to]` inclusive (in the `expect` lists of packets).
    pub at_ms: Option<AtMs>,
}

/// A virtual time, exactly or within a range.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(
    untagged,
    expecting = "milliseconds, or a range [from, to] such as [1000, 2000]"
)]
pub enum AtMs {
    /// Exactly.
    Exactly(u64),
    /// From the first to the second, inclusive.
    Within([u64; 2]),
}

impl AtMs {
    /// Whether `ms` is it.
    pub fn holds(&self, ms: u64) -> bool {
        match *self {
            AtMs::Exactly(want) => ms == want,
            AtMs::Within([from, to]) => (from..=to).contains(&ms),
        }
    }
}

impl std::fmt::Display for AtMs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AtMs::Exactly(ms) => write!(f, "at {ms} ms"),
            AtMs::Within([from, to]) => write!(f, "between {from} and {to} ms"),
        }
    }
}

/// An entry of `expect.sent`: a kind, or a pattern.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "a packet kind such as \"PUBLISH\", or a table such as { kind = \"PUBLISH\", qos = 1 } (with only the fields of that kind)"
)]
pub enum SentSpec {
    /// Just the kind.
    Kind(String),
    /// A kind and field checks.
    Packet(Box<PacketSpec>),
}

/// An iteration's result: "ok", or the WIT `iteration-error` case
/// (`timed-out`, `connect-retries-exhausted`, ...).
pub type ResultSpec = String;

/// The checks of a scenario. Every key is optional; a scenario also fails
/// when the script has steps left undone (unless `steps-left` says how many).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExpectSpec {
    /// Keys of the device's state after the run and their values.
    #[serde(default)]
    pub store: BTreeMap<String, StoreValue>,
    /// Keys the state must not hold after the run.
    #[serde(default)]
    pub store_absent: Vec<String>,
    /// How many keys start with each prefix after the run.
    #[serde(default)]
    pub store_keys: BTreeMap<String, usize>,
    /// The first iteration's result.
    pub result: Option<ResultSpec>,
    /// Every iteration's result, in order.
    pub results: Option<Vec<ResultSpec>>,
    /// Text in the first iteration's error (its WIT payload).
    pub error_contains: Option<String>,
    /// Fields of the first iteration's report.
    pub report: Option<ReportSpec>,
    /// The run ended early (a scripted expectation failed, or the restarts
    /// ran out) with a message containing this text.
    pub aborted_contains: Option<String>,
    /// Times the guest was stopped (trapped or limited) [0].
    pub stops: Option<usize>,
    /// Text in the first stop's message.
    pub stop_contains: Option<String>,
    /// The limit of the first stop, by name: "iteration-timeout", "cpu",
    /// "cpu-budget", "memory", "table", "output-flood", "connect-storm",
    /// or "trap" for a stop by no limit.
    pub stop_limit: Option<String>,
    /// Output lines dropped over the output limit (`log-lines-per-sec`,
    /// `log-burst`).
    pub dropped_lines: Option<u64>,
    /// Instances of the component made (1 + restarts).
    pub instances: Option<u64>,
    /// Every packet the guest sent, in order.
    pub sent: Option<Vec<SentSpec>>,
    /// The first packets the guest sent, in order.
    pub sent_start: Option<Vec<SentSpec>>,
    /// Packets the guest sent in this order, others allowed between them.
    pub sent_in_order: Option<Vec<SentSpec>>,
    /// "distinct": every packet id the logic sent on a connection
    /// (PUBLISH at QoS 1 or 2 but not a DUP resend, SUBSCRIBE,
    /// UNSUBSCRIBE) is non-zero and not used before on it.
    pub packet_ids: Option<PacketIdsSpec>,
    /// Packets sent, by kind.
    pub sent_count: Option<BTreeMap<String, usize>>,
    /// `connect` calls.
    pub connects: Option<usize>,
    /// `sleep-ms` durations, in order, exactly.
    pub sleeps: Option<Vec<u32>>,
    /// The first `sleep-ms` durations, in order.
    pub sleeps_start: Option<Vec<u32>>,
    /// Number of `sleep-ms` calls.
    pub sleep_count: Option<usize>,
    /// The i-th sleep is at most the i-th bound (a backoff window); one
    /// bound per sleep.
    pub sleeps_at_most: Option<Vec<u32>>,
    /// The i-th sleep is at least the i-th bound; one bound per sleep.
    pub sleeps_at_least: Option<Vec<u32>>,
    /// Which sleeps the sleep checks see: "all" [default], "connected"
    /// (with a connection open: idle and publish waits) or "disconnected"
    /// (none open: backoff waits before a connection attempt).
    pub sleep_kind: Option<SleepKind>,
    /// Each entry matches some log line: a regular expression, or a table
    /// `{ matches = "...", level = "warn" }` that also names the level.
    pub log: Option<Vec<LogSpec>>,
    /// Log lines matching these, in this order (others between them).
    pub log_in_order: Option<Vec<LogSpec>>,
    /// Each regular expression matches no log line.
    pub no_log: Option<Vec<String>>,
    /// Lines matching each regular expression, counted.
    pub log_count: Option<Vec<LogCount>>,
    /// Virtual time at the end, at least, milliseconds.
    pub virtual_ms_at_least: Option<u64>,
    /// Virtual time at the end, at most, milliseconds.
    pub virtual_ms_at_most: Option<u64>,
    /// `get-random-bytes` calls.
    pub entropy_calls: Option<usize>,
    /// The length asked for by each `get-random-bytes` call, in order.
    pub entropy_bytes: Option<Vec<u32>>,
    /// Connections the guest closed (`close`).
    pub closes: Option<usize>,
    /// Recorded calls (imports, packets, waits), at most: a bound against
    /// a looping logic.
    pub calls_at_most: Option<usize>,
    /// Script steps left undone [0].
    pub steps_left: Option<usize>,
}

/// Fields of an iteration report; those left out are not checked.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[allow(
    missing_docs,
    reason = "each field is the WIT record field of the same name"
)]
pub struct ReportSpec {
    pub published: Option<u32>,
    pub acknowledged: Option<u32>,
    pub echoes: Option<u32>,
    pub connections: Option<u32>,
}

/// A log line: a regular expression, or one and its level.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "a regular expression, or a table such as { matches = \"lost\", level = \"warn\" }"
)]
pub enum LogSpec {
    /// A line matching it, at any level.
    Pattern(String),
    /// A line matching it at this level.
    Line(LogLine),
}

/// A log line's pattern and level.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LogLine {
    /// Regular expression.
    pub matches: String,
    /// "debug", "info", "warn" or "error" [any].
    pub level: Option<LevelSpec>,
}

/// A log level.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs, reason = "the WIT log levels")]
pub enum LevelSpec {
    Debug,
    Info,
    Warn,
    Error,
}

/// Which sleeps the sleep checks see.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SleepKind {
    /// Every `sleep-ms`.
    #[default]
    All,
    /// Those with a connection open.
    Connected,
    /// Those with none open (backoff before a connection attempt).
    Disconnected,
}

/// A rule on the packet ids the logic sent.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PacketIdsSpec {
    /// Non-zero, and new on each connection (DUP resends excepted).
    Distinct,
}

/// Lines matching `matches`: exactly `count`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LogCount {
    /// Regular expression.
    pub matches: String,
    /// Lines that must match it.
    pub count: usize,
}

/// A value in the device's state.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum StoreValue {
    /// UTF-8 text.
    Text(String),
    /// A counter.
    Counter(i64),
}

impl StoreValue {
    /// The bytes kept.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            StoreValue::Text(s) => s.as_bytes().to_vec(),
            StoreValue::Counter(n) => n.to_le_bytes().to_vec(),
        }
    }
}

/// A value of the logic's settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ConfigValue {
    /// Text.
    Text(String),
    /// A number.
    Number(i64),
    /// A switch.
    Switch(bool),
}

impl std::fmt::Display for ConfigValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigValue::Text(s) => f.write_str(s),
            ConfigValue::Number(n) => write!(f, "{n}"),
            ConfigValue::Switch(b) => write!(f, "{b}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`LimitsSpec::KEYS`] are exactly its fields: each is taken, and a
    /// table of all of them leaves none unset.
    #[test]
    fn the_limit_keys_are_the_fields() {
        let all: String = LimitsSpec::KEYS
            .iter()
            .map(|k| format!("{k} = 1\n"))
            .collect();
        let spec: LimitsSpec = toml::from_str(&all).expect(&all);
        assert!(!format!("{spec:?}").contains("None"), "{spec:?}");
        assert!(toml::from_str::<LimitsSpec>("cpu-limit = 1").is_err());
    }
}
