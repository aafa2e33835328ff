//! Command-line interface of the `host` binary.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Runs sandboxed MQTT device logic (a WebAssembly component) with a
/// mutually-authenticated TLS socket and OS entropy; the TLS key never enters
/// the sandbox.
#[derive(Debug, Parser)]
#[command(name = "host", version, args_override_self = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a device component (for example demo.wasm) against a broker.
    Run(RunArgs),
}

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

    /// Broker as mqtts://HOST:PORT (port defaults to 8883). Without it, an
    /// embedded broker (mosquitto with a throwaway PKI, client certificates
    /// required) is started on 127.0.0.1.
    #[arg(long, value_name = "URL")]
    pub broker: Option<String>,
    /// Root CA the broker's certificate must chain to (PEM; RSA or ECDSA).
    #[arg(long, value_name = "ROOT.pem", requires = "broker")]
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM). Needs --key.
    #[arg(long, value_name = "CLIENT.pem", requires = "broker")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM: PKCS#8, PKCS#1 or SEC1). Read by the host only.
    #[arg(long, value_name = "CLIENT.key", requires = "broker")]
    pub key: Option<PathBuf>,
    /// ALPN protocol to offer (repeatable) [default: x-amzn-mqtt-ca when
    /// the broker port is 443, as AWS IoT Core needs; none otherwise].
    #[arg(long, value_name = "PROTOCOL")]
    pub alpn: Vec<String>,
    /// Do not send the broker's host name as SNI.
    #[arg(long)]
    pub no_sni: bool,
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
    #[arg(long, default_value = "Hello World!")]
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
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub iteration_delay_ms: u32,
    /// Publishes per iteration.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub publish_count: u32,
    /// Idle wait after each publish ("Keeping Connection Idle..."), milliseconds.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    pub publish_delay_ms: u32,
    /// Longest run of each process loop (waiting for SUBACK, PUBACK and echo, UNSUBACK), milliseconds.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    pub process_loop_ms: u32,
    /// Time allowed for CONNACK, milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub connack_timeout_ms: u32,
    /// Time allowed for each transport send, milliseconds.
    #[arg(long, default_value_t = 200, value_name = "MS")]
    pub transport_timeout_ms: u32,
    /// Time allowed for the TCP connect and TLS handshake, milliseconds.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub connect_timeout_ms: u32,
    /// MQTT keep-alive, seconds (0 = off).
    #[arg(long, default_value_t = 60, value_name = "S")]
    pub keep_alive_secs: u16,
    /// Time allowed for PINGRESP after PINGREQ, milliseconds.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub pingresp_timeout_ms: u32,
    /// Backoff: first jitter window, milliseconds.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub backoff_base_ms: u32,
    /// Backoff: largest jitter window, milliseconds.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub backoff_max_ms: u32,
    /// Backoff: retries after the first attempt (0 = none, 4294967295 = forever).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub backoff_max_attempts: u32,

    /// Sandbox: linear memory per guest, MiB (growing past it stops the guest).
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub max_memory_mib: usize,
    /// Sandbox: elements per table.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub max_table_elements: usize,
    /// Sandbox: longest the guest may compute without calling an import, milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub cpu_limit_ms: u32,
    /// Sandbox: TLS connections a guest may hold at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub max_connections: usize,
    /// Sandbox: bytes one send may carry and one receive may ask for.
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    pub max_io_bytes: u32,
    /// Restarts in a row of a guest that traps or hits a limit (Full-Jitter
    /// backoff with --backoff-base-ms/--backoff-max-ms) before the host gives
    /// up with exit code 3.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub restart_max_attempts: u32,

    /// Fleet mode: run this many independent devices in this one process,
    /// each its own instance with client id `<client-id>-0001`, ... its own
    /// topic and its own mTLS connection (same credentials).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub devices: u32,
    /// Fleet mode: devices started per second at most, so the broker is not
    /// stormed with TLS handshakes.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub ramp_per_sec: u32,

    /// Watch the component file and run a replaced component from the next
    /// iteration on, without restarting (hot swap). A replacement that does
    /// not compile, does not match the world, or traps on start is refused.
    #[arg(long)]
    pub watch: bool,

    /// Directory of the precompiled-component cache [default: ~/.cache/mqtt-device-host].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile the component every time; do not read or write the cache.
    #[arg(long)]
    pub no_cache: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
