//! What `host run` runs, as its flags mean it: which broker and
//! credentials, who the devices are, their settings, limits and plan, where
//! new logic may come from, and the host's own options; and why flags may
//! not make a run. [`super::resolve`] makes one from the flags.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use host::limits::Limits;
use host::pkcs11::{Pin, Pkcs11Uri};
use host::tls::Endpoint;
use host::tls::{Handshake, Roots};
use host_core::canary::Canaries;
use host_core::settings::DeviceSettings;
use host_core::supervisor::Plan;

use crate::cli::args::{EntropyArg, LogFormat, Shard};
use crate::cli::endpoint::EndpointError;

/// The variable a Kubernetes Indexed Job sets to each pod's index.
pub const JOB_INDEX_VAR: &str = "JOB_COMPLETION_INDEX";

/// Why the flags do not make a run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No `--state-dir` and no home directory to keep the state under.
    #[error(
        "no directory for the devices' state: pass --state-dir DIR (neither XDG_DATA_HOME nor HOME is set)"
    )]
    NoStateDir,
    /// `--broker` is not an mqtts endpoint.
    #[error(transparent)]
    Broker(EndpointError),
    /// `--broker` without `--ca`.
    #[error(
        "--broker needs --ca: ROOT.pem (the root CA that signed the broker's certificate), webpki (the Mozilla roots, for AWS IoT Core) or os"
    )]
    BrokerNeedsCa,
    /// A flag about the broker's credentials without `--broker`.
    #[error(
        "{0} is for the broker given with --broker (the embedded broker makes its own PKI): pass --broker mqtts://HOST:PORT, or leave {0} out"
    )]
    NeedsBroker(&'static str),
    /// A flag about signed logic without `--trust`.
    #[error("{0} is for signed logic: pass --trust KEY.pub, or leave {0} out")]
    NeedsTrust(&'static str),
    /// An `--allow` endpoint is not one.
    #[error("bad --allow {value:?}: {error}")]
    Allow {
        /// As given.
        value: String,
        /// Why.
        error: EndpointError,
    },
    /// `--shard` or `--shard-count` cannot give this host a slice.
    #[error("{0}")]
    Shard(String),
    /// A shard without `--client-id`.
    #[error(
        "--shard and --shard-count need --client-id: every shard must number the same fleet (without it each host picks its own random name)"
    )]
    ShardNeedsClientId,
    /// A shard without `--broker`.
    #[error(
        "--shard and --shard-count need --broker: every shard must reach the same broker (the embedded one would be this host's alone)"
    )]
    ShardNeedsBroker,
    /// A shard with no device.
    #[error(
        "shard {index}/{count} of {devices} device(s) has no device: give --devices at least the shard count"
    )]
    EmptyShard {
        /// The shard's index.
        index: u32,
        /// The number of shards.
        count: u32,
        /// `--devices`.
        devices: u32,
    },
    /// `--entropy pkcs11` without a token key.
    #[error(
        "--entropy pkcs11 draws from the token of --key pkcs11:... (pass a pkcs11: URI to --key, or --entropy os)"
    )]
    EntropyNeedsToken,
    /// A `pkcs11:` URI that cannot be read (the source says why).
    #[error("--key")]
    KeyUri(#[source] host::pkcs11::UriError),
}

/// The broker given with `--broker`, and the credentials for it.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where it is.
    pub endpoint: Endpoint,
    /// The roots its certificate must chain to.
    pub ca: Roots,
    /// The client certificate chain, if any.
    pub cert: Option<PathBuf>,
    /// The client key, if any.
    pub key: Option<BrokerKey>,
}

/// Where the client key of a broker given is.
#[derive(Debug, Clone)]
pub enum BrokerKey {
    /// A PEM file.
    File(PathBuf),
    /// A key in a PKCS#11 token, named by its (checked) URI.
    Token(Pkcs11Uri),
}

/// Who the devices of this host are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Devices {
    /// One device, named by the client id itself.
    One,
    /// Numbered devices `<client-id>-0001`, ...: a fleet, or this host's
    /// slice of one.
    Fleet(FleetDevices),
}

/// The devices of a fleet this host runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetDevices {
    /// This host's device ids (from 1).
    pub ids: RangeInclusive<usize>,
    /// This host's slice, when the fleet spans hosts.
    pub shard: Option<Shard>,
    /// Devices in the whole fleet (`--devices`), this host's or not.
    pub total: u32,
    /// Devices started per second at most.
    pub ramp_per_sec: u32,
    /// Whether `--topic` was given (then device i's is `<topic>/000i`).
    pub topic_given: bool,
}

impl Devices {
    /// How many devices this host runs.
    pub fn count(&self) -> usize {
        match self {
            Devices::One => 1,
            Devices::Fleet(fleet) => fleet.ids.clone().count(),
        }
    }
}

/// Where signed logic comes from and how it is checked (`--trust`).
#[derive(Debug, Clone)]
pub struct UpdateConfig {
    /// The trusted keys (`KEY.pub` files).
    pub keys: Vec<PathBuf>,
    /// Whether a logic older than the running one is accepted.
    pub allow_downgrade: bool,
    /// `--update-topic`, if given.
    pub topic: Option<String>,
    /// Where updates' components are.
    pub targets_topic: String,
    /// Largest MQTT payload of the update channel, bytes.
    pub payload_limit: usize,
    /// How long an update file in progress waits for its next chunk.
    pub partial_ttl: std::time::Duration,
}

/// `--metrics-listen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Where to serve them.
    pub listen: std::net::SocketAddr,
    /// Fleets up to this size get a series per device.
    pub device_limit: usize,
}

/// What `host run` runs, resolved from its flags, variables and file.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The component file.
    pub component: PathBuf,
    /// The broker given; `None` starts the embedded one.
    pub broker: Option<BrokerConfig>,
    /// The client id (of the device, or the fleet's prefix): given, or
    /// `testClient-<6 random hex digits>`.
    pub client_id: String,
    /// One device or a fleet.
    pub devices: Devices,
    /// The settings the logic gets. Against the broker given; with the
    /// embedded broker, `localhost` and port 0 until it has started.
    pub settings: DeviceSettings,
    /// The sandbox's limits.
    pub limits: Limits,
    /// Iterations, their delay, restarts and probation.
    pub plan: Plan,
    /// ALPN and SNI.
    pub handshake: Handshake,
    /// Whether devices keep TLS sessions to resume.
    pub tls_resumption: bool,
    /// Connects in flight at once over all devices; 0 = no limit.
    pub max_connecting: usize,
    /// Endpoints besides the broker the logic may reach.
    pub allow: Vec<Endpoint>,
    /// Where the guests' `entropy` comes from.
    pub entropy: EntropyArg,
    /// The token's module, for a `pkcs11:` key.
    pub pkcs11_module: Option<PathBuf>,
    /// Where the token's PIN comes from.
    pub pin: Pin,
    /// Signed logic, when `--trust` is given.
    pub updates: Option<UpdateConfig>,
    /// Whether the component file is watched for new logic.
    pub watch: bool,
    /// With `watch` and a fleet: the local rollout's canaries.
    pub canaries: Canaries,
    /// How long the iteration in flight may take to end when stopping.
    pub stop_timeout: Duration,
    /// Prometheus metrics, when served.
    pub metrics: Option<MetricsConfig>,
    /// The log's format.
    pub log_format: LogFormat,
    /// The precompiled-component cache's directory; `None` = no cache.
    pub cache_dir: Option<PathBuf>,
    /// The devices' durable state.
    pub state: StateConfig,
    /// The logic's own settings (`wasi:config`), by key.
    pub logic: std::collections::BTreeMap<String, String>,
}

/// Where the devices' state is kept, and each device's quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// The state directory.
    pub dir: PathBuf,
    /// Each device's quota.
    pub quota: host_core::state::Quota,
}

impl RunConfig {
    /// The settings of the first (or only) device against `broker`.
    pub fn settings_for(&self, broker: &Endpoint) -> DeviceSettings {
        DeviceSettings {
            broker_host: broker.host.clone(),
            broker_port: broker.port,
            ..self.settings.clone()
        }
    }
}
