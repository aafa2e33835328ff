//! `host run`'s flags resolved into a [`RunConfig`], once: everything is
//! checked before anything starts; what needs the world (the embedded
//! broker's port, a token's login, the component's bytes) is left to
//! [`super::run`].

use std::time::Duration;

use host::limits::Limits;
use host::limits::output::OutputLimits;
use host::pkcs11::Pin;
use host::sandbox::cache;
use host::tls::Handshake;
use host::update::wire;
use host_core::canary::Canaries;
use host_core::settings::DeviceSettings;
use host_core::supervisor::{Plan, RestartPolicy};

use crate::cli::args::{EntropyArg, KeySpec, PIN_VAR, RunArgs, Shard};
use crate::cli::endpoint;
use crate::cli::run::config::{
    BrokerConfig, BrokerKey, ConfigError, Devices, FleetDevices, JOB_INDEX_VAR, MetricsConfig,
    RunConfig, StateConfig, UpdateConfig,
};
use host_core::state::Quota;

impl RunConfig {
    /// Resolves `args`; `var` reads an environment variable (the shard's
    /// index, the token's PIN).
    pub fn resolve(
        args: RunArgs,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let broker = broker(&args)?;
        let (devices, shard) = devices(&args, &var)?;
        if shard.is_some() {
            if args.client_id.is_none() {
                return Err(ConfigError::ShardNeedsClientId);
            }
            if broker.is_none() {
                return Err(ConfigError::ShardNeedsBroker);
            }
        }
        let token_key = matches!(
            broker.as_ref().and_then(|b| b.key.as_ref()),
            Some(BrokerKey::Token(_))
        );
        if args.entropy == EntropyArg::Pkcs11 && !token_key {
            return Err(ConfigError::EntropyNeedsToken);
        }
        let updates = updates(&args)?;
        let allow = args
            .allow
            .iter()
            .map(|a| {
                endpoint::parse(a).map_err(|error| ConfigError::Allow {
                    value: a.clone(),
                    error,
                })
            })
            .collect::<Result<_, _>>()?;
        let client_id = args.client_id.clone().unwrap_or_else(random_client_id);
        let (host, port) = broker.as_ref().map_or(("localhost", 0), |b| {
            (b.endpoint.host.as_str(), b.endpoint.port)
        });
        let settings = settings(&args, host, port, &client_id);
        let state = StateConfig {
            dir: args
                .state_dir
                .clone()
                .or_else(host::state::default_dir)
                .ok_or(ConfigError::NoStateDir)?,
            quota: Quota {
                max_bytes: args.state_max_bytes,
                max_keys: args.state_max_keys,
                max_key_bytes: args.state_max_key_bytes,
                max_value_bytes: args.state_max_value_bytes,
            },
        };
        // The file's table, then the variables, then the flags: the last
        // value of a key wins.
        let logic = args
            .logic_table
            .iter()
            .chain(&args.logic_env)
            .chain(&args.logic_config)
            .cloned()
            .collect();
        Ok(Self {
            state,
            logic,
            limits: limits(&args),
            plan: plan(&args),
            handshake: handshake(&args, port),
            tls_resumption: !args.no_tls_resumption,
            max_connecting: args.max_connecting,
            allow,
            entropy: args.entropy,
            pkcs11_module: args.pkcs11_module.clone(),
            pin: pin(&args, &var),
            updates,
            watch: args.watch,
            canaries: Canaries {
                count: args.canary as usize,
                promote_after: args.promote_after,
            },
            stop_timeout: Duration::from_millis(u64::from(args.stop_timeout_ms)),
            metrics: args.metrics_listen.map(|listen| MetricsConfig {
                listen,
                device_limit: args.metrics_device_limit,
            }),
            log_format: args.log_format,
            cache_dir: (!args.no_cache)
                .then(|| args.cache_dir.clone().or_else(cache::default_dir))
                .flatten(),
            component: args.component,
            broker,
            client_id,
            devices,
            settings,
        })
    }
}

/// `testClient-<6 random hex digits>`, so two demos on one broker do not
/// disconnect each other.
fn random_client_id() -> String {
    let mut b = [0u8; 3];
    let _ = getrandom::fill(&mut b);
    format!("testClient-{}", hex::encode(b))
}

/// ALPN (`x-amzn-mqtt-ca` on port 443, as AWS IoT Core needs, unless
/// `--alpn` says otherwise) and SNI.
fn handshake(args: &RunArgs, port: u16) -> Handshake {
    let alpn = if args.alpn.is_empty() && port == 443 {
        vec!["x-amzn-mqtt-ca".to_string()]
    } else {
        args.alpn.clone()
    };
    Handshake {
        alpn,
        sni: !args.no_sni,
    }
}

/// Where the token's PIN comes from: `--pkcs11-pin-file`, else the
/// environment.
fn pin(args: &RunArgs, var: &impl Fn(&str) -> Option<String>) -> Pin {
    match (&args.pkcs11_pin_file, var(PIN_VAR)) {
        (Some(file), _) => Pin::File(file.clone()),
        (None, Some(value)) => Pin::Value(value.into()),
        (None, None) => Pin::None,
    }
}

/// The broker given and its credentials; flags about them need it.
fn broker(args: &RunArgs) -> Result<Option<BrokerConfig>, ConfigError> {
    let Some(url) = &args.broker else {
        for (given, flag) in [
            (args.ca.is_some(), "--ca"),
            (args.cert.is_some(), "--cert"),
            (args.key.is_some(), "--key"),
        ] {
            if given {
                return Err(ConfigError::NeedsBroker(flag));
            }
        }
        return Ok(None);
    };
    let endpoint = endpoint::parse(url).map_err(ConfigError::Broker)?;
    let ca = args.ca.clone().ok_or(ConfigError::BrokerNeedsCa)?;
    let key = match &args.key {
        None => None,
        Some(KeySpec::File(path)) => Some(BrokerKey::File(path.clone())),
        Some(spec @ KeySpec::Pkcs11(_)) => Some(BrokerKey::Token(
            spec.uri()
                .expect("a pkcs11: key has a URI")
                .map_err(ConfigError::KeyUri)?,
        )),
    };
    Ok(Some(BrokerConfig {
        endpoint,
        ca,
        cert: args.cert.clone(),
        key,
    }))
}

/// One device or a fleet, and this host's shard of it.
fn devices(
    args: &RunArgs,
    var: &impl Fn(&str) -> Option<String>,
) -> Result<(Devices, Option<Shard>), ConfigError> {
    let shard = match (args.shard, args.shard_count) {
        (Some(shard), _) => Some(shard),
        (None, None) => None,
        (None, Some(count)) => {
            let index = var(JOB_INDEX_VAR).ok_or_else(|| {
                ConfigError::Shard(format!(
                    "--shard-count needs {JOB_INDEX_VAR} (set by a Kubernetes Indexed Job), or give --shard INDEX/COUNT"
                ))
            })?;
            let index = index.trim().parse().map_err(|_| {
                ConfigError::Shard(format!("{JOB_INDEX_VAR}={index:?} is not a number"))
            })?;
            Some(Shard::new(index, count).map_err(ConfigError::Shard)?)
        }
    };
    if args.devices <= 1 && shard.is_none() {
        return Ok((Devices::One, None));
    }
    let ids = match shard {
        Some(s) => s.ids(args.devices),
        None => 1..=args.devices as usize,
    };
    if let Some(s) = shard
        && ids.is_empty()
    {
        return Err(ConfigError::EmptyShard {
            index: s.index,
            count: s.count,
            devices: args.devices,
        });
    }
    let fleet = Devices::Fleet(FleetDevices {
        ids,
        shard,
        total: args.devices,
        ramp_per_sec: args.ramp_per_sec,
        topic_given: args.topic.is_some(),
    });
    Ok((fleet, shard))
}

/// Signed logic; flags about it need `--trust`.
fn updates(args: &RunArgs) -> Result<Option<UpdateConfig>, ConfigError> {
    if args.trust.is_empty() {
        for (given, flag) in [
            (args.allow_downgrade, "--allow-downgrade"),
            (args.update_topic.is_some(), "--update-topic"),
            (
                args.update_targets_topic != wire::TARGETS_TOPIC,
                "--update-targets-topic",
            ),
        ] {
            if given {
                return Err(ConfigError::NeedsTrust(flag));
            }
        }
        return Ok(None);
    }
    Ok(Some(UpdateConfig {
        keys: args.trust.clone(),
        allow_downgrade: args.allow_downgrade,
        topic: args.update_topic.clone(),
        targets_topic: args.update_targets_topic.clone(),
        payload_limit: args.update_payload_limit,
        partial_ttl: std::time::Duration::from_secs(args.update_partial_ttl_secs),
    }))
}

/// The device's settings against `broker_host`:`broker_port` as
/// `client_id`, with the topic given or the demo's.
fn settings(
    args: &RunArgs,
    broker_host: &str,
    broker_port: u16,
    client_id: &str,
) -> DeviceSettings {
    let mut s = DeviceSettings::new(broker_host, broker_port, client_id);
    if let Some(topic) = &args.topic {
        s.topic = topic.clone();
    }
    s.payload = args.payload.clone();
    s.publish_count = args.publish_count;
    s.publish_delay_ms = args.publish_delay_ms;
    s.process_loop_ms = args.process_loop_ms;
    s.connack_timeout_ms = args.connack_timeout_ms;
    s.transport_timeout_ms = args.transport_timeout_ms;
    s.connect_timeout_ms = args.connect_timeout_ms;
    s.keep_alive_secs = args.keep_alive_secs;
    s.pingresp_timeout_ms = args.pingresp_timeout_ms;
    s.backoff_base_ms = args.backoff_base_ms;
    s.backoff_max_ms = args.backoff_max_ms;
    s.backoff_max_attempts = args.backoff_max_attempts;
    s.clean_session = !args.persistent_session;
    s.username = args.username.clone();
    s.password = args.password.clone();
    s
}

/// The sandbox limits the flags set.
fn limits(args: &RunArgs) -> Limits {
    Limits {
        max_memory_bytes: args.max_memory_mib << 20,
        max_table_elements: args.max_table_elements,
        cpu_limit_ms: args.cpu_limit_ms,
        cpu_budget_ms: args.cpu_budget_ms,
        iteration_timeout_ms: args.iteration_timeout_ms,
        max_connections: args.max_connections,
        max_io_bytes: args.max_io_bytes,
        connect_burst: args.connect_burst,
        connect_interval_ms: args.connect_interval_ms,
        state_writes_per_sec: args.state_writes_per_sec,
        output: OutputLimits {
            lines_per_sec: args.log_lines_per_sec,
            burst: args.log_burst,
        },
    }
}

/// The iteration and restart plan the flags set.
fn plan(args: &RunArgs) -> Plan {
    Plan {
        iterations: args.iterations,
        iteration_delay_ms: args.iteration_delay_ms,
        restart: RestartPolicy {
            base_ms: args.backoff_base_ms,
            max_ms: args.backoff_max_ms,
            max_attempts: args.restart_max_attempts,
        },
        probation_iterations: args.probation_iterations,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use host::tls::Roots;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(argv: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(["host", "run", "demo.wasm"].iter().chain(argv))
            .unwrap_or_else(|e| panic!("{e}"));
        match cli.command {
            Command::Run(args) => *args,
            _ => unreachable!(),
        }
    }

    fn resolve(argv: &[&str]) -> Result<RunConfig, ConfigError> {
        RunConfig::resolve(args(argv), |_| None)
    }

    fn resolve_with(argv: &[&str], vars: &[(&str, &str)]) -> Result<RunConfig, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RunConfig::resolve(args(argv), move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn without_flags_one_device_runs_the_demo_against_the_embedded_broker() {
        let c = resolve(&[]).unwrap();
        assert!(c.broker.is_none());
        assert_eq!(c.devices, Devices::One);
        assert!(c.client_id.starts_with("testClient-") && c.client_id.len() == 17);
        assert_eq!(c.settings.topic, format!("{}/example/topic", c.client_id));
        assert_eq!(c.settings.publish_count, 5);
        assert!(c.settings.clean_session);
        assert_eq!(
            c.limits.iteration_timeout_ms, None,
            "what the logic declares"
        );
        assert_eq!(c.plan.iterations, None);
        assert!(c.updates.is_none() && c.metrics.is_none() && !c.watch);
        assert_eq!(c.stop_timeout, Duration::from_millis(8000));
        assert!(c.handshake.sni && c.handshake.alpn.is_empty());
        assert!(matches!(c.pin, Pin::None));
    }

    #[test]
    fn a_broker_brings_its_credentials_and_port_443_its_alpn() {
        let c = resolve(&[
            "--broker",
            "mqtts://iot.example:443",
            "--ca",
            "webpki",
            "--cert",
            "d.pem",
            "--key",
            "d.key",
            "--client-id",
            "dev",
        ])
        .unwrap();
        let b = c.broker.as_ref().unwrap();
        assert_eq!(
            (b.endpoint.host.as_str(), b.endpoint.port),
            ("iot.example", 443)
        );
        assert_eq!(b.ca, Roots::Webpki);
        assert_eq!(c.handshake.alpn, ["x-amzn-mqtt-ca"]);
        assert_eq!(c.settings.broker(), "iot.example:443");
        assert_eq!(c.client_id, "dev");
        let c = resolve(&["--broker", "b:443", "--ca", "os", "--alpn", "mqtt"]).unwrap();
        assert_eq!(c.handshake.alpn, ["mqtt"]);
    }

    #[test]
    fn credentials_without_a_broker_and_a_broker_without_a_ca_are_refused() {
        for flag in ["--ca", "--cert", "--key"] {
            let e = resolve(&[flag, "x.pem"]).unwrap_err();
            assert!(matches!(e, ConfigError::NeedsBroker(f) if f == flag), "{e}");
        }
        let e = resolve(&["--broker", "mqtts://b"]).unwrap_err();
        assert!(matches!(e, ConfigError::BrokerNeedsCa), "{e}");
        let e = resolve(&["--broker", "mqtt://b", "--ca", "os"]).unwrap_err();
        assert!(e.to_string().contains("only mqtts://"), "{e}");
        let e = resolve(&["--allow", "x:port"]).unwrap_err();
        assert!(e.to_string().starts_with("bad --allow \"x:port\""), "{e}");
    }

    #[test]
    fn signed_logic_flags_need_trust() {
        for argv in [
            &["--allow-downgrade"][..],
            &["--update-topic", "t"],
            &["--update-targets-topic", "t"],
        ] {
            let e = resolve(argv).unwrap_err();
            assert!(matches!(e, ConfigError::NeedsTrust(_)), "{e}");
        }
        let c = resolve(&["--trust", "k.pub", "--allow-downgrade"]).unwrap();
        let u = c.updates.unwrap();
        assert!(u.allow_downgrade && u.targets_topic == wire::TARGETS_TOPIC);
    }

    #[test]
    fn a_fleet_numbers_its_devices_and_a_shard_takes_its_slice() {
        let c = resolve(&["--devices", "10", "--topic", "site"]).unwrap();
        assert_eq!(
            c.devices,
            Devices::Fleet(FleetDevices {
                ids: 1..=10,
                shard: None,
                total: 10,
                ramp_per_sec: 200,
                topic_given: true
            })
        );
        let shard = [
            "--devices",
            "300",
            "--broker",
            "b",
            "--ca",
            "os",
            "--client-id",
            "plant",
        ];
        let c = resolve(&[&shard[..], &["--shard", "1/3"]].concat()).unwrap();
        assert!(matches!(c.devices, Devices::Fleet(ref f) if f.ids == (101..=200)));
        let c = resolve_with(
            &[&shard[..], &["--shard-count", "3"]].concat(),
            &[(JOB_INDEX_VAR, "2")],
        )
        .unwrap();
        assert!(matches!(c.devices, Devices::Fleet(ref f) if f.ids == (201..=300)));
        // --shard wins over the index.
        let c = resolve_with(
            &[&shard[..], &["--shard", "0/3", "--shard-count", "3"]].concat(),
            &[(JOB_INDEX_VAR, "2")],
        )
        .unwrap();
        assert!(matches!(c.devices, Devices::Fleet(ref f) if f.ids == (1..=100)));
        // A shard of one device is still numbered.
        let c = resolve(&[
            "--broker",
            "b",
            "--ca",
            "os",
            "--client-id",
            "p",
            "--shard",
            "0/1",
        ])
        .unwrap();
        assert!(matches!(c.devices, Devices::Fleet(ref f) if f.ids == (1..=1)));
    }

    #[test]
    fn bad_shards_say_what_they_need() {
        let e = resolve(&[
            "--devices",
            "3",
            "--broker",
            "b",
            "--ca",
            "os",
            "--shard",
            "0/2",
        ])
        .unwrap_err();
        assert!(matches!(e, ConfigError::ShardNeedsClientId), "{e}");
        let e = resolve(&["--devices", "3", "--client-id", "p", "--shard", "0/2"]).unwrap_err();
        assert!(matches!(e, ConfigError::ShardNeedsBroker), "{e}");
        let e = resolve(&[
            "--devices",
            "2",
            "--client-id",
            "p",
            "--broker",
            "b",
            "--ca",
            "os",
            "--shard",
            "0/3",
        ])
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("shard 0/3 of 2 device(s) has no device"),
            "{e}"
        );
        let e = resolve(&["--shard-count", "3"]).unwrap_err();
        assert!(e.to_string().contains(JOB_INDEX_VAR), "{e}");
        let e = resolve_with(&["--shard-count", "3"], &[(JOB_INDEX_VAR, "x")]).unwrap_err();
        assert!(e.to_string().contains("is not a number"), "{e}");
    }

    #[test]
    fn token_entropy_needs_a_token_key_and_the_pin_comes_from_a_file_or_the_environment() {
        let e = resolve(&["--entropy", "pkcs11"]).unwrap_err();
        assert!(matches!(e, ConfigError::EntropyNeedsToken), "{e}");
        let token = [
            "--broker",
            "b",
            "--ca",
            "os",
            "--key",
            "pkcs11:token=t;object=k",
        ];
        let c = resolve_with(
            &[&token[..], &["--entropy", "pkcs11"]].concat(),
            &[(PIN_VAR, "1234")],
        )
        .unwrap();
        assert!(matches!(c.pin, Pin::Value(_)));
        let c = resolve_with(
            &[&token[..], &["--pkcs11-pin-file", "pin"]].concat(),
            &[(PIN_VAR, "1")],
        )
        .unwrap();
        assert!(matches!(c.pin, Pin::File(ref f) if f == std::path::Path::new("pin")));
        let e = resolve(&[
            "--broker",
            "b",
            "--ca",
            "os",
            "--key",
            "pkcs11:token=t;pin-value=1",
        ])
        .unwrap_err();
        assert!(matches!(e, ConfigError::KeyUri(_)), "{e}");
        let line =
            crate::cli::explain::failure_line(&crate::cli::explain::Failure::Setup(e.into()));
        assert!(!line.contains("pin-value=1"), "{line}");
        assert!(
            line.starts_with("--key: a pin-value in the PKCS#11 URI would be visible in ps (put the PIN in a file for --pkcs11-pin-file"),
            "{line}"
        );
    }

    #[test]
    fn settings_limits_and_plan_follow_the_flags() {
        let c = resolve(&[
            "--publish-count",
            "2",
            "--persistent-session",
            "--max-memory-mib",
            "16",
            "--iteration-timeout-ms",
            "900",
            "--iterations",
            "3",
            "--restart-max-attempts",
            "1",
            "--no-cache",
            "--stop-timeout-ms",
            "10",
        ])
        .unwrap();
        assert_eq!(c.settings.publish_count, 2);
        assert!(!c.settings.clean_session);
        assert_eq!(c.limits.max_memory_bytes, 16 << 20);
        assert_eq!(c.limits.iteration_timeout_ms, Some(900));
        assert_eq!(c.plan.iterations, Some(3));
        assert_eq!(c.plan.restart.max_attempts, 1);
        assert_eq!(c.cache_dir, None);
        assert_eq!(c.stop_timeout, Duration::from_millis(10));
        let c = resolve(&["--cache-dir", "/c"]).unwrap();
        assert_eq!(c.cache_dir.as_deref(), Some(std::path::Path::new("/c")));
    }

    #[test]
    fn logic_settings_come_from_the_file_then_variables_then_flags() {
        let mut a = args(&[
            "--logic-config",
            "a=flag",
            "--logic-table",
            "a=file",
            "--logic-table",
            "b=file",
            "--logic-table",
            "c=file",
        ]);
        a.logic_env = crate::cli::args::logic_env(
            [
                ("MQTT_DEVICE_LOGIC_A", "env"),
                ("MQTT_DEVICE_LOGIC_B", "env"),
                ("MQTT_DEVICE_LOGIC_CONFIG", "z=1"),
                ("MQTT_DEVICE_BROKER", "x"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into_iter(),
        );
        let c = RunConfig::resolve(a, |_| None).unwrap();
        let got: Vec<(&str, &str)> = c
            .logic
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(got, [("a", "flag"), ("b", "env"), ("c", "file")]);
        let bad = Cli::try_parse_from(["host", "run", "d.wasm", "--logic-config", "novalue"]);
        assert!(bad.unwrap_err().to_string().contains("is not KEY=VALUE"));
    }

    #[test]
    fn the_state_directory_and_quotas_are_the_flags() {
        let c = resolve(&["--state-dir", "/s", "--state-max-keys", "5"]).unwrap();
        assert_eq!(c.state.dir, std::path::Path::new("/s"));
        assert_eq!(c.state.quota.max_keys, 5);
        assert_eq!(c.state.quota.max_bytes, Quota::MAX_BYTES);
        let c = resolve(&["--state-writes-per-sec", "7"]).unwrap();
        assert_eq!(c.limits.state_writes_per_sec, 7);
    }
}
