//! The flags of `host run`. Every default comes from the setting it sets
//! (`host_core::settings::defaults`, `Limits`, ...), so `--help`, the mock
//! host and the manual's table of defaults (made from these flags by a
//! test) read one source.

use std::path::PathBuf;

use clap::Args;
use host::limits::Limits;
use host::pkcs11::{Pkcs11Uri, UriError};
use host::tls::Roots;
use host::update::{chunks, wire};
use host_core::settings::defaults;
use host_core::state::Quota;

/// `host run`: every setting of the coreMQTT mutual-auth demo, with the
/// original's values as defaults. A flag given twice takes its last value.
///
/// Exit codes: 0 all iterations done; 1 a setting, file or component is
/// wrong; 2 an iteration failed (with --iterations); 3 the guest trapped or hit
/// a sandbox limit and the restarts are exhausted.
#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub struct RunArgs {
    /// The component to run (built from guest/: target/demo.wasm).
    pub component: PathBuf,

    /// Read settings from this TOML file: a key per flag, without the
    /// dashes (`broker = "mqtts://HOST:8883"`, `iterations = 3`, `trust =
    /// ["a.pub"]`, `watch = true`) and `component`. Flags and environment
    /// variables (MQTT_DEVICE_BROKER, ... one per flag) override it;
    /// relative paths in it are relative to the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Broker as mqtts://HOST:PORT (port defaults to 8883). Without it, an
    /// embedded broker (mosquitto with a throwaway PKI, client certificates
    /// required) is started on 127.0.0.1.
    #[arg(long, value_name = "URL")]
    pub broker: Option<String>,
    /// Root CAs the broker's certificate must chain to: a PEM file (RSA or
    /// ECDSA), `webpki` (the Mozilla root set built into the host, which
    /// holds Amazon Root CA 1-4 for AWS IoT Core) or `os` (this machine's
    /// trust store). A file named so is given as ./webpki.
    #[arg(long, value_name = "ROOT.pem|webpki|os", value_hint = clap::ValueHint::FilePath)]
    pub ca: Option<Roots>,
    /// Client certificate chain (PEM). Needs --key.
    #[arg(long, value_name = "CLIENT.pem")]
    pub cert: Option<PathBuf>,
    /// Client private key: a PEM file (PKCS#8, PKCS#1 or SEC1), read by the
    /// host only; or a key in a PKCS#11 token, `pkcs11:token=NAME;object=LABEL`
    /// (RFC 7512), which signs the handshake itself, so the key is in
    /// neither the sandbox nor the host's memory.
    #[arg(long, value_name = "CLIENT.key|pkcs11:URI", value_hint = clap::ValueHint::FilePath)]
    pub key: Option<KeySpec>,
    /// The token's PKCS#11 module, for --key pkcs11:... (e.g.
    /// /usr/lib/softhsm/libsofthsm2.so).
    #[arg(long, value_name = "MODULE.so")]
    pub pkcs11_module: Option<PathBuf>,
    /// A file whose first line is the token's user PIN [default: the
    /// MQTT_DEVICE_PKCS11_PIN environment variable]. Never a flag value:
    /// the command line is visible to every local user.
    #[arg(long, value_name = "FILE")]
    pub pkcs11_pin_file: Option<PathBuf>,
    /// Where the guests' `entropy` comes from: `os` (the OS RNG) or
    /// `pkcs11` (the token's C_GenerateRandom, as the original demo does;
    /// needs --key pkcs11:...).
    #[arg(long, value_name = "SOURCE", default_value = "os")]
    pub entropy: EntropyArg,
    /// ALPN protocol to offer (repeatable) [default: x-amzn-mqtt-ca when
    /// the broker port is 443, as AWS IoT Core needs; none otherwise].
    #[arg(long, value_name = "PROTOCOL")]
    pub alpn: Vec<String>,
    /// Do not send the broker's host name as SNI.
    #[arg(long)]
    pub no_sni: bool,
    /// Never resume TLS sessions: every connect makes a full handshake
    /// (by default each device keeps a few TLS 1.3 tickets of its own, so
    /// reconnecting after a network cut costs the broker much less).
    #[arg(long)]
    pub no_tls_resumption: bool,
    /// Connects this host runs at once, over all its devices: a connect
    /// holds its turn from the name lookup until the broker first answers
    /// (its CONNACK), at most 5 s past the handshake; one turn per device.
    /// The others wait their turn, at most their connect timeout; a
    /// handshake once begun gets the whole timeout. Keeps a fleet that reconnects at once from
    /// overflowing the broker's accept queue and timing out half-done
    /// connects. 0 = no limit.
    #[arg(long, default_value_t = host::tls::MAX_CONNECTING, value_name = "N")]
    pub max_connecting: usize,
    /// Further endpoints the component may connect to, HOST:PORT (repeatable).
    #[arg(long, value_name = "HOST:PORT")]
    pub allow: Vec<String>,

    /// MQTT client identifier [default: testClient-<random>].
    #[arg(long)]
    pub client_id: Option<String>,
    /// Topic to subscribe and publish to [default: <client-id>/example/topic].
    #[arg(long)]
    pub topic: Option<String>,
    /// Payload of each publish; `{iteration}` and `{publish}` in it become
    /// the iteration number and the publish's number in it (from 1).
    #[arg(long, default_value = defaults::PAYLOAD)]
    pub payload: String,
    /// Optional MQTT user name (for AWS IoT Core, the metrics string).
    #[arg(long)]
    pub username: Option<String>,
    /// Optional MQTT password.
    #[arg(long)]
    pub password: Option<String>,
    /// Keep the MQTT session across reconnects (clean session off) and
    /// resend unacknowledged publishes with DUP set.
    #[arg(long)]
    pub persistent_session: bool,

    /// Successful iterations to run before exiting 0; a failed iteration then
    /// exits non-zero. Without it, iterate forever and log failures.
    #[arg(long, value_name = "N")]
    pub iterations: Option<u32>,
    /// Wait between iterations, milliseconds.
    #[arg(long, default_value_t = defaults::ITERATION_DELAY_MS, value_name = "MS")]
    pub iteration_delay_ms: u32,
    /// Publishes per iteration.
    #[arg(long, default_value_t = defaults::PUBLISH_COUNT, value_name = "N")]
    pub publish_count: u32,
    /// Idle wait after each publish ("Keeping Connection Idle..."), milliseconds.
    #[arg(long, default_value_t = defaults::PUBLISH_DELAY_MS, value_name = "MS")]
    pub publish_delay_ms: u32,
    /// Longest run of each process loop (waiting for SUBACK, PUBACK and echo, UNSUBACK), milliseconds.
    #[arg(long, default_value_t = defaults::PROCESS_LOOP_MS, value_name = "MS")]
    pub process_loop_ms: u32,
    /// Time allowed for CONNACK, milliseconds.
    #[arg(long, default_value_t = defaults::CONNACK_TIMEOUT_MS, value_name = "MS")]
    pub connack_timeout_ms: u32,
    /// Time allowed for each transport send, milliseconds.
    #[arg(long, default_value_t = defaults::TRANSPORT_TIMEOUT_MS, value_name = "MS")]
    pub transport_timeout_ms: u32,
    /// Time allowed for the TCP connect and TLS handshake, milliseconds.
    #[arg(long, default_value_t = defaults::CONNECT_TIMEOUT_MS, value_name = "MS")]
    pub connect_timeout_ms: u32,
    /// MQTT keep-alive, seconds (0 = off).
    #[arg(long, default_value_t = defaults::KEEP_ALIVE_SECS, value_name = "S")]
    pub keep_alive_secs: u16,
    /// Time allowed for PINGRESP after PINGREQ, milliseconds.
    #[arg(long, default_value_t = defaults::PINGRESP_TIMEOUT_MS, value_name = "MS")]
    pub pingresp_timeout_ms: u32,
    /// Backoff: first jitter window, milliseconds.
    #[arg(long, default_value_t = defaults::BACKOFF_BASE_MS, value_name = "MS")]
    pub backoff_base_ms: u32,
    /// Backoff: largest jitter window, milliseconds.
    #[arg(long, default_value_t = defaults::BACKOFF_MAX_MS, value_name = "MS")]
    pub backoff_max_ms: u32,
    /// Backoff: retries after the first attempt (0 = none, 4294967295 = forever).
    #[arg(long, default_value_t = defaults::BACKOFF_MAX_ATTEMPTS, value_name = "N")]
    pub backoff_max_attempts: u32,

    /// Sandbox: linear memory per guest, MiB (growing past it stops the guest).
    #[arg(long, default_value_t = Limits::MAX_MEMORY_MIB, value_name = "MIB")]
    pub max_memory_mib: usize,
    /// Sandbox: elements per table.
    #[arg(long, default_value_t = Limits::MAX_TABLE_ELEMENTS, value_name = "N")]
    pub max_table_elements: usize,
    /// Sandbox: longest the guest may compute without calling an import, milliseconds.
    #[arg(long, default_value_t = Limits::CPU_LIMIT_MS, value_name = "MS")]
    pub cpu_limit_ms: u32,
    /// Sandbox: guest computation per iteration, milliseconds, whether or not
    /// it calls imports (waiting in a host call, such as sleep-ms or receive,
    /// does not count); 0 = no budget.
    #[arg(long, default_value_t = Limits::CPU_BUDGET_MS, value_name = "MS")]
    pub cpu_budget_ms: u32,
    /// Sandbox: longest one iteration may take, milliseconds; then the guest
    /// is stopped wherever it is, its connections closed, and the restart
    /// policy applies (0 = no limit). [default: the bound the logic
    /// declares for the iteration (the demo: its slowest legal iteration
    /// with its settings, 851950 ms with the defaults), at most an hour; an
    /// hour for a logic that declares none]
    #[arg(long, value_name = "MS")]
    pub iteration_timeout_ms: Option<u64>,
    /// Sandbox: TLS connections a guest may hold at once.
    #[arg(long, default_value_t = Limits::MAX_CONNECTIONS, value_name = "N")]
    pub max_connections: usize,
    /// Sandbox: bytes one send may carry and one receive may ask for.
    #[arg(long, default_value_t = Limits::MAX_IO_BYTES, value_name = "BYTES")]
    pub max_io_bytes: u32,
    /// Sandbox: connections a guest may open at once before
    /// --connect-interval-ms applies; more answer rate-limited.
    #[arg(long, default_value_t = Limits::CONNECT_BURST, value_name = "N")]
    pub connect_burst: u32,
    /// Sandbox: then one more connection every this many milliseconds
    /// (0 = no rate limit).
    #[arg(long, default_value_t = Limits::CONNECT_INTERVAL_MS, value_name = "MS")]
    pub connect_interval_ms: u32,
    /// Sandbox: lines of guest output (log import, stdout, stderr) per second;
    /// more are dropped and counted in a notice.
    #[arg(long, default_value_t = Limits::LOG_LINES_PER_SEC, value_name = "N")]
    pub log_lines_per_sec: u32,
    /// Sandbox: lines of guest output at once before --log-lines-per-sec applies.
    #[arg(long, default_value_t = Limits::LOG_BURST, value_name = "N")]
    pub log_burst: u32,
    /// Restarts in a row of a guest that traps or hits a limit (Full-Jitter
    /// backoff with --backoff-base-ms/--backoff-max-ms) before the host gives
    /// up with exit code 3.
    #[arg(long, default_value_t = defaults::RESTART_MAX_ATTEMPTS, value_name = "N")]
    pub restart_max_attempts: u32,

    /// Fleet mode: run this many independent devices in this one process,
    /// each its own instance with client id `<client-id>-0001`, ... its own
    /// topic and its own mTLS connection (same credentials).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub devices: u32,
    /// Fleet mode: devices started per second at most, so the broker is not
    /// stormed with TLS handshakes.
    #[arg(long, default_value_t = host::fleet::RAMP_PER_SEC, value_name = "N")]
    pub ramp_per_sec: u32,
    /// Fleet across hosts: run only slice INDEX (from 0) of COUNT equal
    /// slices of the --devices ids, so COUNT hosts started with INDEX 0 to
    /// COUNT-1 run every device exactly once (e.g. --devices 300 --shard 1/3
    /// runs <client-id>-0101 to -0200). Needs --broker and --client-id.
    #[arg(long, value_name = "INDEX/COUNT")]
    pub shard: Option<Shard>,
    /// Like --shard, with INDEX from the JOB_COMPLETION_INDEX environment
    /// variable (set by a Kubernetes Indexed Job for each of its pods);
    /// --shard wins when both are given.
    #[arg(long, value_name = "COUNT")]
    pub shard_count: Option<u32>,

    /// Watch the component file and run a replaced component from the next
    /// iteration on, without restarting (hot swap). A replacement that does
    /// not compile, does not match the world, or traps on start is refused;
    /// one stopped (trap or limit) in its first iterations is rolled back.
    /// With --devices: a local rollout, --canary devices first.
    #[arg(long)]
    pub watch: bool,
    /// Iterations new logic must return from before it stays: a stop (trap
    /// or limit) within them rolls it back to the logic it replaced. Keep
    /// it at least a rollout's --promote-after, so a canary that fails is
    /// rolled back (and stops the rollout) rather than restarted.
    #[arg(long, value_name = "N", default_value_t = defaults::PROBATION_ITERATIONS)]
    pub probation_iterations: u32,
    /// With --watch --devices: devices that get a replaced component first.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub canary: u32,
    /// With --watch --devices: iterations each canary must complete on it
    /// before the other devices get it.
    #[arg(long, value_name = "ITERATIONS", default_value_t = 3)]
    pub promote_after: u64,

    /// Run only logic signed with this key (a KEY.pub from host keygen;
    /// repeatable): the component's repository (COMPONENT.tuf, from host
    /// sign) must verify, at start and for every swap, with a version not
    /// lower than the running one.
    #[arg(long, value_name = "KEY.pub")]
    pub trust: Vec<PathBuf>,
    /// With --trust, accept a logic older than the running one.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// With --trust, where this device receives signed updates over the
    /// broker: the host keeps its own MQTT session (over the same mTLS
    /// credentials) subscribed to TOPIC/metadata/# and reports on
    /// TOPIC/status [default: <client-id>/logic; in a fleet, device i's is
    /// <client-id>-000i/logic, or TOPIC/000i when given].
    #[arg(long, value_name = "TOPIC")]
    pub update_topic: Option<String>,
    /// With --trust, where updates' components are (shared, named by their
    /// SHA-256).
    #[arg(long, value_name = "TOPIC", default_value = wire::TARGETS_TOPIC)]
    pub update_targets_topic: String,
    /// Largest MQTT payload of the update channel, bytes (AWS IoT Core's
    /// limit by default); components come in chunks of it.
    #[arg(long, value_name = "BYTES", default_value_t = chunks::PAYLOAD_LIMIT, value_parser = payload_limit)]
    pub update_payload_limit: usize,
    /// With --trust, drop an update file in progress when no chunk of it
    /// came for this long, seconds (so chunks that never complete do not
    /// hold memory).
    #[arg(long, value_name = "S", default_value_t = chunks::PARTIAL_TTL.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub update_partial_ttl_secs: u64,

    /// On SIGTERM or Ctrl-C: how long the iteration in flight may take to
    /// end (its sleeps cut short, so it sends its DISCONNECT) before it is
    /// stopped, milliseconds. A second signal stops at once.
    #[arg(long, default_value_t = STOP_TIMEOUT_MS, value_name = "MS")]
    pub stop_timeout_ms: u32,

    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464) at
    /// /metrics: iterations, publishes, acknowledgements, connections,
    /// reconnects, restarts, swaps, rollbacks, limit hits by kind, connect
    /// latency and echo round-trip histograms. No authentication: keep it on
    /// loopback or a management network.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Metrics per device (label device=<client id>) for fleets of at most
    /// this many devices; larger fleets report as one (device="fleet").
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub metrics_device_limit: usize,

    /// The host's log lines: `text` (one line per event, as the original
    /// demo prints them) or `json` (one object per line: timestamp, level,
    /// target, message, and the fields device, iteration, packet_id,
    /// limit, ... where known).
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// Directory of the precompiled-component cache [default: ~/.cache/mqtt-device-host].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile the component every time; do not read or write the cache.
    #[arg(long)]
    pub no_cache: bool,

    /// State: the directory of the devices' durable state (`state.redb`,
    /// owner-only; one database per host process, a bucket per device)
    /// [default: $XDG_DATA_HOME/mqtt-device-host, else
    /// ~/.local/share/mqtt-device-host].
    #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    pub state_dir: Option<PathBuf>,
    /// State: bytes of keys and values one device may keep.
    #[arg(long, default_value_t = Quota::MAX_BYTES, value_name = "BYTES")]
    pub state_max_bytes: u64,
    /// State: keys one device may keep.
    #[arg(long, default_value_t = Quota::MAX_KEYS, value_name = "N")]
    pub state_max_keys: u64,
    /// State: bytes of one key.
    #[arg(long, default_value_t = Quota::MAX_KEY_BYTES, value_name = "BYTES")]
    pub state_max_key_bytes: u32,
    /// State: bytes of one value.
    #[arg(long, default_value_t = Quota::MAX_VALUE_BYTES, value_name = "BYTES")]
    pub state_max_value_bytes: u32,
    /// State: writes a device may make a second (and at once); more answer
    /// an error (0 = no limit).
    #[arg(long, default_value_t = Limits::STATE_WRITES_PER_SEC, value_name = "N")]
    pub state_writes_per_sec: u32,

    /// A setting of the logic's own, KEY=VALUE (repeatable), read through
    /// wasi:config/store. Also: the config file's [logic] table and
    /// MQTT_DEVICE_LOGIC_<KEY> variables (KEY in capitals with `_` for
    /// `-`); a flag overrides a variable, which overrides the file's table.
    #[arg(long, value_name = "KEY=VALUE", value_parser = logic_setting)]
    pub logic_config: Vec<(String, String)>,
    /// The config file's [logic] table (set by --config only).
    #[arg(long, hide = true, value_parser = logic_setting)]
    pub logic_table: Vec<(String, String)>,
    /// MQTT_DEVICE_LOGIC_<KEY> variables, read once at start.
    #[arg(skip)]
    pub logic_env: Vec<(String, String)>,
}

/// `KEY=VALUE` of `--logic-config`.
pub fn logic_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!(
            "`{s}` is not KEY=VALUE (write e.g. interval-ms=1000)"
        )),
    }
}

/// The logic's settings given as `MQTT_DEVICE_LOGIC_<KEY>` variables, among
/// `vars`: the key in lower case with `-` for `_` (`MQTT_DEVICE_LOGIC_INTERVAL_MS`
/// sets `interval-ms`). `MQTT_DEVICE_LOGIC_CONFIG` is --logic-config's own.
pub fn logic_env(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let prefix = format!("{}LOGIC_", host::ENV_PREFIX);
    vars.filter_map(|(name, value)| {
        let key = name.strip_prefix(&prefix)?;
        (!key.is_empty() && key != "CONFIG" && key != "TABLE")
            .then(|| (key.to_ascii_lowercase().replace('_', "-"), value))
    })
    .collect()
}

/// Where the client key is: `--key FILE` or `--key pkcs11:URI`. The URI
/// is parsed later, by [`KeySpec::uri`], so a refusal never echoes it (it
/// may hold a PIN).
#[derive(Clone)]
pub enum KeySpec {
    /// A PEM file.
    File(PathBuf),
    /// A key in a PKCS#11 token: the URI as given.
    Pkcs11(String),
}

impl std::fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySpec::File(p) => f.debug_tuple("File").field(p).finish(),
            KeySpec::Pkcs11(_) => f.write_str("Pkcs11(..)"),
        }
    }
}

impl std::str::FromStr for KeySpec {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s.starts_with("pkcs11:") {
            KeySpec::Pkcs11(s.to_string())
        } else {
            KeySpec::File(PathBuf::from(s))
        })
    }
}

impl KeySpec {
    /// The parsed `pkcs11:` URI (`None` for a file).
    pub fn uri(&self) -> Option<Result<Pkcs11Uri, UriError>> {
        match self {
            KeySpec::File(_) => None,
            KeySpec::Pkcs11(uri) => Some(uri.parse()),
        }
    }
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `--entropy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EntropyArg {
    /// The operating system's RNG.
    Os,
    /// The PKCS#11 token of --key.
    Pkcs11,
}

/// The environment variable that may hold the token's user PIN.
pub const PIN_VAR: &str = "MQTT_DEVICE_PKCS11_PIN";

/// A payload limit of at least [`chunks::MIN_PAYLOAD_LIMIT`] bytes.
pub fn payload_limit(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if n < chunks::MIN_PAYLOAD_LIMIT {
        return Err(format!(
            "at least {} bytes (a component of up to 64 MiB in at most {} chunks)",
            chunks::MIN_PAYLOAD_LIMIT,
            chunks::MAX_CHUNKS
        ));
    }
    Ok(n)
}

/// Default of `--stop-timeout-ms`: below the 10 s Docker waits before
/// SIGKILL.
pub const STOP_TIMEOUT_MS: u32 = 8000;

/// One slice of a fleet's device ids (`--shard INDEX/COUNT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which slice, from 0.
    pub index: u32,
    /// How many slices.
    pub count: u32,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (index, count) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: give INDEX/COUNT, such as 0/3"))?;
        let number = |what: &str, v: &str| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| format!("{s:?}: {what} {v:?} is not a number"))
        };
        Shard::new(number("INDEX", index)?, number("COUNT", count)?)
    }
}

impl Shard {
    /// Slice `index` of `count`; `index` must be below `count`.
    pub fn new(index: u32, count: u32) -> Result<Self, String> {
        if count == 0 || index >= count {
            return Err(format!(
                "shard {index}/{count}: INDEX goes from 0 to COUNT-1 and COUNT is at least 1"
            ));
        }
        Ok(Self { index, count })
    }

    /// The device ids (from 1) of this slice of `devices`: contiguous, in
    /// slices whose sizes differ by one at most.
    pub fn ids(&self, devices: u32) -> std::ops::RangeInclusive<usize> {
        let (i, n, d) = (
            u64::from(self.index),
            u64::from(self.count),
            u64::from(devices),
        );
        let start = i * d / n + 1;
        let end = (i + 1) * d / n;
        start as usize..=end as usize
    }
}

#[cfg(test)]
mod shard_tests {
    use super::Shard;

    #[test]
    fn shards_cover_every_device_exactly_once_in_near_equal_slices() {
        for (devices, count) in [(300, 3), (10, 3), (7, 7), (1000, 16), (5, 2)] {
            let mut seen = Vec::new();
            let mut sizes = Vec::new();
            for index in 0..count {
                let ids = Shard::new(index, count).unwrap().ids(devices);
                sizes.push(ids.clone().count());
                seen.extend(ids);
            }
            assert_eq!(seen, (1..=devices as usize).collect::<Vec<_>>());
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(max - min <= 1, "{devices}/{count}: {sizes:?}");
        }
        assert_eq!(Shard::new(1, 3).unwrap().ids(300), 101..=200);
    }

    #[test]
    fn the_pin_variable_is_named_as_every_setting_is() {
        assert_eq!(
            super::PIN_VAR,
            crate::cli::config_file::env_var("pkcs11_pin")
        );
    }

    #[test]
    fn bad_shards_are_refused_with_the_form() {
        for bad in ["3/3", "1", "a/3", "0/0", "-1/2"] {
            let err = bad.parse::<Shard>().unwrap_err();
            assert!(err.contains("INDEX"), "{bad}: {err}");
        }
        assert_eq!(
            "2/5".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 5 }
        );
    }
}
