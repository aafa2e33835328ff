//! `host run`: the flags resolved once ([`resolve`] into a [`config`]),
//! then the story: the broker and its credentials, what every device is
//! wired from, the logic, then one device or a fleet until done or
//! interrupted.

pub mod config;
pub mod resolve;

use std::sync::Arc;

use anyhow::Context;
use host::broker::embedded::LocalBroker;
use host::device::{self, Wiring};
use host::fleet::{self, Fleet, Watched};
use host::imports::entropy::EntropySource;
use host::metrics::{self, Metrics};
use host::pkcs11::{Pkcs11Uri, Token};
use host::sandbox::{Logic, Reach, engine, run_device, swaps};
use host::state::StateDb;
use host::tls::Endpoint;
use host::tls::{ClientKey, TlsClient, TlsFiles};
use host::update::channel::{Channel, ChannelConfig};
use host::update::floor::KeptStore;
use host::update::session::UpdateSession;
use host::update::trust::Trust;
use host_core::WORLD;
use host_core::observer::Observer;
use host_core::settings::DeviceSettings;
use host_core::state::Backend;

use crate::cli::args::EntropyArg;
use crate::cli::explain::{self, Failure};
use crate::cli::report::LogObserver;
use crate::cli::signals::{self, Stop};
pub use config::{BrokerKey, Devices, FleetDevices, RunConfig, UpdateConfig};

/// Runs `host run`.
pub async fn run(config: RunConfig) -> Result<(), Failure> {
    let stop = signals::watch(config.stop_timeout)?;
    let mut broker = broker(&config)?;
    let tls = tls_client(&config, &broker)?;
    let entropy = entropy(&config, &broker.files);
    if let Some(local) = broker.embedded.as_mut() {
        // Loaded by the host and the broker: no key needs to stay on disk.
        local
            .remove_files()
            .context("cannot remove the embedded broker's files")?;
    }
    let settings = config.settings_for(&broker.endpoint);
    let trust = match &config.updates {
        Some(u) => {
            Some(Trust::load(&u.keys, u.allow_downgrade, WORLD).map_err(anyhow::Error::from)?)
        }
        None => None,
    };
    let wiring = wiring(
        &config,
        &broker.endpoint,
        tls,
        entropy,
        &stop,
        trust.clone(),
    )
    .await?;
    let logic = device::load::load(
        &config.component,
        &wiring.engine,
        &wiring.linker,
        trust.as_ref(),
        config.cache_dir.as_deref(),
    )
    .await?;
    let work = async {
        match &config.devices {
            Devices::One => run_one(&config, &wiring, logic, settings, trust.as_ref()).await,
            Devices::Fleet(fleet) => {
                run_fleet(&config, fleet, &wiring, logic, settings, trust).await
            }
        }
    };
    let requested = stop.requested.clone();
    let result = tokio::select! {
        result = work => result,
        () = stop.forced() => {
            tracing::warn!(target: "host", "stopping at once (second signal)");
            Ok(())
        }
    };
    if *requested.borrow() {
        tracing::info!(target: "host", "stopped.");
    }
    result
}

/// The broker devices connect to and the TLS files for it.
struct Broker {
    endpoint: Endpoint,
    files: TlsFiles,
    /// The embedded broker, kept alive while the host runs.
    embedded: Option<LocalBroker>,
}

/// The broker given, or an embedded mosquitto with a throwaway PKI.
fn broker(config: &RunConfig) -> Result<Broker, Failure> {
    if let Some(given) = &config.broker {
        let key = match &given.key {
            None => None,
            Some(BrokerKey::File(path)) => Some(ClientKey::File(path.clone())),
            Some(BrokerKey::Token(uri)) => Some(ClientKey::Token(open_token(config, uri)?)),
        };
        let files = TlsFiles {
            ca: given.ca.clone(),
            cert: given.cert.clone(),
            key,
        };
        return Ok(Broker {
            endpoint: given.endpoint.clone(),
            files,
            embedded: None,
        });
    }
    let local = LocalBroker::start(&config.client_id)
        .context("cannot start the embedded broker (or pass --broker)")?;
    let endpoint = Endpoint {
        host: "localhost".into(),
        port: local.mosquitto.port,
    };
    tracing::info!(target: "host", "no --broker given: started an embedded mosquitto on 127.0.0.1:{} with client certificates required", endpoint.port);
    Ok(Broker {
        endpoint,
        files: local.files.clone(),
        embedded: Some(local),
    })
}

/// Opens the token of `--key pkcs11:...` and logs in.
fn open_token(config: &RunConfig, uri: &Pkcs11Uri) -> Result<Token, Failure> {
    let token = Token::open(config.pkcs11_module.as_deref(), uri, &config.pin)
        .map_err(anyhow::Error::from)?;
    tracing::info!(target: "host", "client key {} in a PKCS#11 token: the token signs the TLS handshakes", token.uri());
    Ok(token)
}

/// Where the guests' entropy comes from (resolved: `pkcs11` comes with a
/// token key).
fn entropy(config: &RunConfig, files: &TlsFiles) -> EntropySource {
    match (config.entropy, &files.key) {
        (EntropyArg::Pkcs11, Some(ClientKey::Token(token))) => {
            tracing::info!(target: "host", "guest entropy from the PKCS#11 token");
            EntropySource::Token(token.clone())
        }
        _ => EntropySource::Os,
    }
}

/// The TLS client of every device, with connect turns.
fn tls_client(config: &RunConfig, broker: &Broker) -> Result<TlsClient, Failure> {
    if broker.files.cert.is_none() {
        tracing::warn!(target: "host", "no --cert/--key: connecting without a client certificate");
    }
    Ok(TlsClient::load_with(&broker.files, &config.handshake)
        .map_err(anyhow::Error::from)?
        .with_admission(config.max_connecting))
}

/// What every device is wired from: the engine and linker, the reach, the
/// update session (with `trust`) and the metrics.
async fn wiring(
    config: &RunConfig,
    broker: &Endpoint,
    tls: TlsClient,
    entropy: EntropySource,
    stop: &Stop,
    trust: Option<Trust>,
) -> Result<Wiring, Failure> {
    let fleet = matches!(config.devices, Devices::Fleet(_));
    let devices = config.devices.count();
    let pool = fleet.then_some((u32::try_from(devices).unwrap_or(u32::MAX), &config.limits));
    let engine = engine::engine(pool).map_err(anyhow::Error::from)?;
    let linker = engine::linker(&engine)
        .map_err(|e| anyhow::Error::from(e).context("cannot set up the world's imports"))?;
    let db = Arc::new(
        StateDb::open(&config.state.dir, config.state.quota).map_err(anyhow::Error::from)?,
    );
    let kept = Arc::new(KeptStore::open(
        db.clone(),
        config.cache_dir.as_ref().map(|d| d.join("floors")),
    ));
    let state: Arc<dyn Backend> = db;
    let mut allowed = vec![broker.clone()];
    allowed.extend(config.allow.iter().cloned());
    let updates = config
        .updates
        .as_ref()
        .zip(trust)
        .map(|(u, trust)| update_session(config, u, broker, &tls, trust, kept));
    let metrics = match config.metrics {
        Some(m) => {
            let metrics = Metrics::new(devices, m.device_limit);
            let bound = metrics::server::serve(m.listen, metrics.clone())
                .await
                .map_err(anyhow::Error::from)?;
            tracing::info!(target: "host", "metrics on http://{bound}/metrics");
            Some(metrics)
        }
        None => None,
    };
    Ok(Wiring {
        engine,
        linker: Arc::new(linker),
        reach: Reach {
            tls,
            allowed,
            limits: config.limits,
            stopping: stop.requested.clone(),
            stop_timeout: stop.timeout,
            entropy,
            tls_resumption: config.tls_resumption,
            state,
            config: Arc::new(config.logic.iter().collect()),
        },
        cache_dir: config.cache_dir.clone(),
        updates,
        metrics,
        built: Arc::default(),
    })
}

/// The host's update session (`u`): its own MQTT session to `broker` over
/// the devices' credentials.
fn update_session(
    config: &RunConfig,
    u: &UpdateConfig,
    broker: &Endpoint,
    tls: &TlsClient,
    trust: Trust,
    kept: Arc<KeptStore>,
) -> UpdateSession {
    tracing::info!(target: "host", "taking signed updates over the broker (targets on {})", u.targets_topic);
    // One session per host: shards of a fleet must not take over each
    // other's.
    let client_id = match &config.devices {
        Devices::Fleet(f) if f.shard.is_some() => format!(
            "{}-updates-{:04}-{:04}",
            config.client_id,
            f.ids.start(),
            f.ids.end()
        ),
        _ => format!("{}-updates", config.client_id),
    };
    UpdateSession {
        channel: Channel::start(ChannelConfig {
            broker: broker.clone(),
            tls: tls.clone(),
            client_id,
            targets_topic: u.targets_topic.clone(),
            payload_limit: u.payload_limit,
            clear_command: clear_command(config, broker),
            max_component: host::update::chunks::MAX_FILE,
            partial_ttl: u.partial_ttl,
        }),
        fleet: matches!(config.devices, Devices::Fleet(_)).then(|| config.client_id.clone()),
        iteration_timeout_ms: config
            .limits
            .iteration_timeout_ms
            .unwrap_or(host_core::timeout::ITERATION_TIMEOUT_MAX_MS),
        iteration_delay_ms: u64::from(config.plan.iteration_delay_ms),
        trust,
        topic: u.topic.clone(),
        kept: Some(kept),
    }
}

/// The start of a `mosquitto_pub` command that deletes a retained message
/// on `broker` with the host's credentials (the topic follows).
fn clear_command(config: &RunConfig, broker: &Endpoint) -> String {
    let mut line = format!("mosquitto_pub -h {} -p {}", broker.host, broker.port);
    if let Some(given) = &config.broker {
        match &given.ca {
            host::tls::Roots::File(ca) => line.push_str(&format!(" --cafile {}", ca.display())),
            host::tls::Roots::Webpki | host::tls::Roots::Os => {
                line.push_str(" --capath /etc/ssl/certs")
            }
        }
        if let (Some(cert), Some(BrokerKey::File(key))) = (&given.cert, &given.key) {
            line.push_str(&format!(
                " --cert {} --key {}",
                cert.display(),
                key.display()
            ));
        }
    }
    line.push_str(" -r -n -t");
    line
}

/// One device, with hot swap when `--watch` is given.
async fn run_one(
    config: &RunConfig,
    wiring: &Wiring,
    logic: Arc<Logic>,
    settings: DeviceSettings,
    trust: Option<&Trust>,
) -> Result<(), Failure> {
    let log: Arc<dyn Observer> = Arc::new(LogObserver::new(settings.clone()));
    let device = wiring
        .device(settings, None, log, (&logic, &config.component), swaps())
        .await
        .map_err(anyhow::Error::from)?;
    let logic = device.logic.clone();
    let _watch = match config.watch {
        true => Some(device::watch_file(
            &device,
            &config.component,
            trust,
            &logic,
        )?),
        false => None,
    };
    match run_device(
        logic,
        Some(device.swaps),
        device.sandbox,
        &device.settings,
        config.plan,
    )
    .await
    {
        Ok(n) => {
            tracing::info!(target: "host", "{n} iteration(s) completed successfully.");
            Ok(())
        }
        Err(error) => Err(Failure::Device {
            error,
            settings: Box::new(device.settings),
        }),
    }
}

/// `--devices N`: N devices, each with its own identity and sandbox; with
/// `--watch`, a local rollout of the watched file.
async fn run_fleet(
    config: &RunConfig,
    devices: &FleetDevices,
    wiring: &Wiring,
    logic: Arc<Logic>,
    base: DeviceSettings,
    trust: Option<Trust>,
) -> Result<(), Failure> {
    let FleetDevices {
        ids,
        shard,
        total,
        ramp_per_sec,
        topic_given,
    } = devices.clone();
    if let Some(s) = shard {
        if config.watch {
            tracing::warn!(target: "host::fleet", "--watch with a shard: this host runs its own local rollout (its own canaries) for its slice only");
        }
        tracing::info!(target: "host::fleet", "shard {}/{}: devices {} to {} of {}", s.index, s.count, ids.start(), ids.end(), total);
    }
    let devices = ids.clone().count();
    let fleet = Fleet {
        ids,
        ramp_per_sec,
        base,
        topic_given,
        plan: config.plan,
        component: config.component.clone(),
        watched: config.watch.then(|| Watched {
            component: config.component.clone(),
            canaries: config.canaries,
            trust,
        }),
    };
    let failed = fleet::run(
        wiring,
        logic,
        fleet,
        Arc::new(|settings: &DeviceSettings| -> Arc<dyn Observer> {
            Arc::new(LogObserver::new(settings.clone()))
        }),
        Arc::new(|settings: &DeviceSettings, error: &host::sandbox::RunError| {
            tracing::error!(target: "host::fleet", "[{}] gave up: {}", settings.client_id, explain::run_error(error, settings));
        }),
    )
    .await?;
    if failed > 0 {
        return Err(Failure::Fleet { failed, devices });
    }
    tracing::info!(target: "host::fleet", "all {devices} devices completed their iterations.");
    Ok(())
}
