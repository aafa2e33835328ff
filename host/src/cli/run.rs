//! `host run`: who the device is, which broker and credentials, which
//! logic, then one device or a fleet, until done or interrupted.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use host::broker::embedded::LocalBroker;
use host::fleet::rollout::LocalRollout;
use host::fleet::stats::FleetStats;
use host::fleet::{self, Fleet};
use host::imports::entropy::EntropySource;
use host::imports::mtls_socket::Endpoint;
use host::metrics::{self, Metrics};
use host::pkcs11::{Pin, Pkcs11Uri, Token};
use host::sandbox::build::Builder;
use host::sandbox::cache::{self, Source};
use host::sandbox::engine::{self, EngineError};
use host::sandbox::limits::Limits;
use host::sandbox::{DeviceState, Logic, Reach, Sandbox, Swaps, run_device};
use host::swap::watch::SwapSender;
use host::swap::watch::{self, SignedSource, SwapSource, SwapWatch};
use host::tls::{ClientKey, Handshake, TlsClient, TlsFiles};
use host::update::channel::{Channel, ChannelConfig};
use host::update::device::{StatusReporter, Updater};
use host::update::floor::Floor;
use host::update::verify::{Trust, verify_file};
use host::update::wire;
use host_core::observer::Observer;
use host_core::settings::DeviceSettings;
use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::cli::args::{EntropyArg, KeySpec, PIN_VAR, RunArgs, Shard};
use crate::cli::endpoint;
use crate::cli::explain::{self, Failure};
use crate::cli::keys;
use crate::cli::report::LogObserver;
use crate::cli::signals;

/// The host's update session, when logic must be signed (`--trust`).
struct Updates {
    channel: Channel,
    trust: Trust,
    /// `--update-topic`, if given.
    topic: Option<String>,
    /// Where devices remember their version floor, if anywhere.
    floors: Option<std::path::PathBuf>,
}

impl Updates {
    /// The update topic of the device `client_id` (`index` in a fleet).
    fn topic_for(&self, client_id: &str, index: Option<usize>) -> String {
        match (&self.topic, index) {
            (Some(topic), None) => topic.clone(),
            (Some(topic), Some(i)) => format!("{topic}/{i:04}"),
            (None, _) => wire::update_topic(client_id),
        }
    }

    /// The version floor of the device `client_id`, which starts on `logic`.
    fn floor(&self, client_id: &str, logic: &Logic) -> Arc<Floor> {
        let file = self
            .floors
            .as_ref()
            .map(|d| d.join(format!("{client_id}.floor")));
        Arc::new(Floor::new(logic.version.unwrap_or(0), file))
    }

    /// Starts the update task of one device; `reporter` is its status
    /// (also an observer of the device), `logic` what it runs now.
    #[allow(clippy::too_many_arguments, reason = "one device's parts, named")]
    fn follow(
        &self,
        device: &str,
        topic: String,
        reporter: Arc<StatusReporter>,
        builder: Builder,
        swaps: tokio::sync::watch::Sender<Option<Arc<Logic>>>,
        logic: &Logic,
        floor: Arc<Floor>,
    ) {
        tokio::spawn(
            Updater {
                channel: self.channel.clone(),
                device: device.to_string(),
                update_topic: topic,
                trust: self.trust.clone(),
                builder,
                swaps,
                status: reporter,
                floor,
                running_sha256: logic.sha256.clone(),
            }
            .run(),
        );
    }
}

/// What one device or a fleet runs with, once the command line is checked.
struct Prepared {
    logic: Arc<Logic>,
    /// The first (or only) device's settings.
    settings: DeviceSettings,
    reach: Reach,
    engine: Engine,
    linker: Arc<Linker<DeviceState>>,
    trust: Option<Trust>,
    updates: Option<Updates>,
    metrics: Option<Arc<Metrics>>,
}

/// Runs `host run`.
pub async fn run(args: RunArgs) -> Result<(), Failure> {
    let (ids, shard) = device_ids(&args)?;
    let stop = signals::watch(Duration::from_millis(u64::from(args.stop_timeout_ms)))?;
    let client_id = client_id(&args);
    let (broker, files, mut embedded) = broker(&args, &client_id)?;
    let tls = tls_client(&args, &broker, &files)?;
    let entropy = entropy(&args, &files)?;
    let reach_tls = tls.clone();
    if let Some(local) = embedded.as_mut() {
        // Loaded by the host and the broker: no key needs to stay on disk.
        local
            .remove_files()
            .context("cannot remove the embedded broker's files")?;
    }
    let allowed = allow_list(&args, &broker)?;
    let settings = args.settings(&broker.host, broker.port, &client_id);
    let limits = args.limits(&settings);
    let engine = engine_for(&args, &limits, ids.clone().count())?;
    let linker = engine::linker(&engine)
        .map_err(|e| anyhow::Error::from(e).context("cannot set up the world's imports"))?;
    let linker = Arc::new(linker);
    let trust = if args.trust.is_empty() {
        None
    } else {
        Some(keys::trust(&args.trust, args.allow_downgrade)?)
    };
    let logic = load_logic(&args, &engine, &linker, trust.as_ref()).await?;
    let updates = trust.clone().map(|trust| {
        tracing::info!(target: "host", "taking signed updates over the broker (targets on {})", args.update_targets_topic);
        Updates {
            channel: Channel::start(ChannelConfig {
                broker: broker.clone(),
                tls: reach_tls.clone(),
                // One session per host: shards of a fleet must not take over
                // each other's.
                client_id: match shard {
                    Some(_) => format!("{client_id}-updates-{:04}-{:04}", ids.start(), ids.end()),
                    None => format!("{client_id}-updates"),
                },
                targets_topic: args.update_targets_topic.clone(),
                payload_limit: args.update_payload_limit,
            }),
            trust,
            topic: args.update_topic.clone(),
            floors: cache_dir(&args).map(|d| d.join("floors")),
        }
    });
    let metrics = match args.metrics_listen {
        Some(addr) => {
            let metrics = Metrics::new(ids.clone().count(), args.metrics_device_limit);
            let bound = metrics::server::serve(addr, metrics.clone())
                .await
                .map_err(anyhow::Error::from)?;
            tracing::info!(target: "host", "metrics on http://{bound}/metrics");
            Some(metrics)
        }
        None => None,
    };
    let reach = Reach {
        tls,
        allowed,
        limits,
        stopping: stop.requested.clone(),
        stop_timeout: stop.timeout,
        entropy,
        tls_resumption: !args.no_tls_resumption,
    };
    let prepared = Prepared {
        logic,
        settings,
        reach,
        engine,
        linker,
        trust,
        updates,
        metrics,
    };
    let work = async {
        if args.fleet_mode() {
            run_fleet(&args, prepared, ids).await
        } else {
            run_one(&args, prepared).await
        }
    };
    let requested = stop.requested.clone();
    let forced = stop.forced();
    let result = tokio::select! {
        result = work => result,
        () = forced => {
            tracing::warn!(target: "host", "stopping at once (second signal)");
            Ok(())
        }
    };
    if *requested.borrow() {
        tracing::info!(target: "host", "stopped.");
    }
    result
}

/// The client id given, or `testClient-<6 random hex digits>` so two
/// demos on one broker do not disconnect each other.
fn client_id(args: &RunArgs) -> String {
    args.client_id.clone().unwrap_or_else(|| {
        let mut b = [0u8; 3];
        let _ = getrandom::fill(&mut b);
        format!("testClient-{}", hex::encode(b))
    })
}

/// The broker and the TLS files for it: the one given, or an embedded
/// mosquitto with a throwaway PKI (kept alive by the returned handle).
fn broker(
    args: &RunArgs,
    client_id: &str,
) -> Result<(Endpoint, TlsFiles, Option<LocalBroker>), Failure> {
    if let Some(url) = &args.broker {
        let endpoint = endpoint::parse(url).map_err(anyhow::Error::from)?;
        let ca = args.ca.clone().context(
            "--broker needs --ca: ROOT.pem (the root CA that signed the broker's certificate), webpki (the Mozilla roots, for AWS IoT Core) or os",
        )?;
        let files = TlsFiles {
            ca,
            cert: args.cert.clone(),
            key: client_key(args)?,
        };
        return Ok((endpoint, files, None));
    }
    let local = LocalBroker::start(client_id)
        .context("cannot start the embedded broker (or pass --broker)")?;
    let endpoint = Endpoint {
        host: "localhost".into(),
        port: local.mosquitto.port,
    };
    tracing::info!(target: "host", "no --broker given: started an embedded mosquitto on 127.0.0.1:{} with client certificates required", endpoint.port);
    Ok((endpoint, local.files.clone(), Some(local)))
}

/// The client key of `--key`: a file, or the token a `pkcs11:` URI names,
/// opened and logged in.
fn client_key(args: &RunArgs) -> Result<Option<ClientKey>, Failure> {
    Ok(match &args.key {
        None => None,
        Some(KeySpec::File(path)) => Some(ClientKey::File(path.clone())),
        Some(spec @ KeySpec::Pkcs11(_)) => {
            let uri = spec
                .uri()
                .expect("a pkcs11: key has a URI")
                .map_err(|e| anyhow::anyhow!("--key: {e}"))?;
            Some(ClientKey::Token(open_token(args, &uri)?))
        }
    })
}

/// Opens the token of `--key pkcs11:...` with the PIN from
/// `--pkcs11-pin-file` or the environment.
fn open_token(args: &RunArgs, uri: &Pkcs11Uri) -> Result<Token, Failure> {
    let pin = match (&args.pkcs11_pin_file, std::env::var(PIN_VAR)) {
        (Some(file), _) => Pin::File(file.clone()),
        (None, Ok(value)) => Pin::Value(value.into()),
        (None, Err(_)) => Pin::None,
    };
    let token =
        Token::open(args.pkcs11_module.as_deref(), uri, &pin).map_err(anyhow::Error::from)?;
    tracing::info!(target: "host", "client key {} in a PKCS#11 token: the token signs the TLS handshakes", token.uri());
    Ok(token)
}

/// Where the guests' entropy comes from (`--entropy`).
fn entropy(args: &RunArgs, files: &TlsFiles) -> Result<EntropySource, Failure> {
    match (args.entropy, &files.key) {
        (EntropyArg::Os, _) => Ok(EntropySource::Os),
        (EntropyArg::Pkcs11, Some(ClientKey::Token(token))) => {
            tracing::info!(target: "host", "guest entropy from the PKCS#11 token");
            Ok(EntropySource::Token(token.clone()))
        }
        (EntropyArg::Pkcs11, _) => Err(anyhow::anyhow!(
            "--entropy pkcs11 draws from the token of --key pkcs11:... (pass a pkcs11: URI to --key, or --entropy os)"
        )
        .into()),
    }
}

/// The TLS client: the files, and ALPN `x-amzn-mqtt-ca` on port 443 (AWS
/// IoT Core) unless `--alpn` says otherwise.
fn tls_client(args: &RunArgs, broker: &Endpoint, files: &TlsFiles) -> Result<TlsClient, Failure> {
    if files.cert.is_none() {
        tracing::warn!(target: "host", "no --cert/--key: connecting without a client certificate");
    }
    let alpn = if args.alpn.is_empty() && broker.port == 443 {
        vec!["x-amzn-mqtt-ca".to_string()]
    } else {
        args.alpn.clone()
    };
    let handshake = Handshake {
        alpn,
        sni: !args.no_sni,
    };
    Ok(TlsClient::load_with(files, &handshake)
        .map_err(anyhow::Error::from)?
        .with_admission(args.max_connecting))
}

/// The broker and every `--allow` endpoint.
fn allow_list(args: &RunArgs, broker: &Endpoint) -> Result<Vec<Endpoint>, Failure> {
    let mut allowed = vec![broker.clone()];
    for a in &args.allow {
        allowed.push(endpoint::parse(a).with_context(|| format!("bad --allow {a:?}"))?);
    }
    Ok(allowed)
}

/// The device ids this host runs: all of `--devices`, or its shard's, and
/// the shard when it runs one.
fn device_ids(args: &RunArgs) -> Result<(RangeInclusive<usize>, Option<Shard>), Failure> {
    let shard = args.shard().map_err(anyhow::Error::msg)?;
    let ids = args.device_ids(shard);
    if let Some(s) = shard {
        if args.client_id.is_none() {
            return Err(anyhow::anyhow!(
                "--shard and --shard-count need --client-id: every shard must number the same fleet (without it each host picks its own random name)"
            )
            .into());
        }
        if args.watch {
            tracing::warn!(target: "host::fleet", "--watch with a shard: this host runs its own local rollout (its own canaries) for its slice only");
        }
        if args.broker.is_none() {
            return Err(anyhow::anyhow!(
                "--shard and --shard-count need --broker: every shard must reach the same broker (the embedded one would be this host's alone)"
            )
            .into());
        }
        if ids.is_empty() {
            return Err(anyhow::anyhow!(
                "shard {}/{} of {} device(s) has no device: give --devices at least the shard count",
                s.index,
                s.count,
                args.devices
            )
            .into());
        }
        tracing::info!(target: "host::fleet", "shard {}/{}: devices {} to {} of {}", s.index, s.count, ids.start(), ids.end(), args.devices);
    }
    Ok((ids, shard))
}

/// One engine for the run: pooled in fleet mode, for `devices` devices.
fn engine_for(args: &RunArgs, limits: &Limits, devices: usize) -> Result<Engine, Failure> {
    let pool = args
        .fleet_mode()
        .then_some((u32::try_from(devices).unwrap_or(u32::MAX), limits));
    Ok(engine::engine(pool).map_err(anyhow::Error::from)?)
}

/// Loads the component through the cache and checks it against the world
/// (and, with `trust`, its signature).
async fn load_logic(
    args: &RunArgs,
    engine: &Engine,
    linker: &Linker<DeviceState>,
    trust: Option<&Trust>,
) -> Result<Arc<Logic>, Failure> {
    let path = &args.component;
    // Signed: run the bytes that were verified, not a second read.
    let (loaded, version) = match &trust {
        Some(trust) => {
            let repo = keys::repo_for(path);
            let local = Trust {
                check_expiry: false,
                ..(*trust).clone()
            };
            let v = verify_file(path, &repo, &local, None)
                .await
                .with_context(|| format!("refused {}", path.display()))?;
            tracing::info!(target: "host", "{}: version {} signed with a trusted key", path.display(), v.version);
            let loaded = cache::load_bytes(engine, &v.wasm, cache_dir(args).as_deref())
                .with_context(|| format!("cannot load {}", path.display()))?;
            (loaded, Some(v.version))
        }
        None => {
            let loaded = cache::load(engine, path, cache_dir(args).as_deref())
                .with_context(|| format!("cannot load {}", path.display()))?;
            (loaded, None)
        }
    };
    tracing::info!(
        target: "host",
        "loaded {}: sha256 {}, {} in {} ms",
        path.display(),
        &loaded.sha256[..12],
        match loaded.source {
            Source::CacheHit => "precompiled cache hit",
            Source::Compiled => "compiled",
        },
        loaded.millis
    );
    let pre = engine::prepare(linker, &loaded.component).map_err(|e: EngineError| {
        anyhow::Error::from(e).context(format!("cannot run {}", path.display()))
    })?;
    Ok(Arc::new(Logic {
        pre,
        sha256: loaded.sha256,
        version,
    }))
}

fn cache_dir(args: &RunArgs) -> Option<std::path::PathBuf> {
    if args.no_cache {
        None
    } else {
        args.cache_dir.clone().or_else(cache::default_dir)
    }
}

/// `observer`, and the device's metrics when they are served.
fn with_metrics(
    observer: Arc<dyn Observer>,
    metrics: Option<&Arc<Metrics>>,
    client_id: &str,
) -> Arc<dyn Observer> {
    match metrics {
        Some(m) => Arc::new((observer, m.device(client_id))),
        None => observer,
    }
}

/// One device, with hot swap when `--watch` is given.
/// How `--watch` checks the signed repository next to the component: the
/// same trust and version floor as the broker, but without expiry, since a
/// local file is the operator's own and may be re-signed at leisure.
fn local_signed(args: &RunArgs, trust: Trust, floor: Arc<Floor>) -> SignedSource {
    SignedSource {
        repo: keys::repo_for(&args.component),
        trust: Trust {
            check_expiry: false,
            ..trust
        },
        floor,
    }
}

async fn run_one(args: &RunArgs, prepared: Prepared) -> Result<(), Failure> {
    let Prepared {
        logic,
        settings,
        reach,
        engine,
        linker,
        trust,
        updates,
        metrics,
    } = prepared;
    let id = settings.client_id.clone();
    let log = with_metrics(
        Arc::new(LogObserver::new(settings.clone())),
        metrics.as_ref(),
        &id,
    );
    let topic = updates.as_ref().map(|u| u.topic_for(&id, None));
    let reporter = updates
        .as_ref()
        .zip(topic.as_ref())
        .map(|(u, topic)| StatusReporter::new(u.channel.clone(), &id, topic));
    let observer: Arc<dyn Observer> = match &reporter {
        Some(r) => Arc::new((log, r.clone())),
        None => log,
    };
    let sandbox = Sandbox::new(id.clone(), &reach, observer);
    let (swap_tx, swaps) = watch::swaps();
    let builder = Builder::new(engine, linker, cache_dir(args), sandbox.clone());
    // One floor for every source of new logic of this device.
    let floor = match &updates {
        Some(u) => u.floor(&id, &logic),
        None => Arc::new(Floor::new(logic.version.unwrap_or(0), None)),
    };
    if let (Some(u), Some(topic), Some(reporter)) = (&updates, topic, reporter) {
        tracing::info!(target: "host", "[{id}] following updates on {topic}");
        u.follow(
            &id,
            topic,
            reporter,
            builder.clone(),
            swap_tx.clone(),
            &logic,
            floor.clone(),
        );
    }
    let _watch: Option<SwapWatch> = if args.watch {
        let w = watch::watch(
            SwapSource {
                path: args.component.clone(),
                builder,
                running_sha256: logic.sha256.clone(),
                signed: trust.map(|trust| local_signed(args, trust, floor)),
            },
            swap_tx,
        )?;
        tracing::info!(target: "host", "watching {} for new logic", args.component.display());
        Some(w)
    } else {
        None
    };
    let swaps = Some(swaps);
    match run_device(logic, swaps, sandbox, &settings, args.plan()).await {
        Ok(n) => {
            tracing::info!(target: "host", "{n} iteration(s) completed successfully.");
            Ok(())
        }
        Err(error) => Err(Failure::Device {
            error,
            settings: Box::new(settings),
        }),
    }
}

/// `--devices N`: N devices, each with its own identity and sandbox; each
/// takes new logic from its update topic (`--trust`) and from a local
/// rollout of the watched file (`--watch`).
async fn run_fleet(
    args: &RunArgs,
    prepared: Prepared,
    ids: RangeInclusive<usize>,
) -> Result<(), Failure> {
    let Prepared {
        logic,
        settings,
        reach,
        engine,
        linker,
        trust,
        updates,
        metrics,
    } = prepared;
    let stats = Arc::new(FleetStats::default());
    let devices = ids.clone().count();
    let topic_given = args.topic.is_some();
    let plan = args.plan();
    let stopping = reach.stopping.clone();
    let cache = cache_dir(args);
    let built: Arc<tokio::sync::Mutex<_>> = Arc::default();
    let names: Vec<(usize, String)> = ids
        .clone()
        .map(|i| (i, fleet::identity(&settings, i, topic_given).client_id))
        .collect();
    // Every device's swap channel, made before the ramp: the local rollout
    // offers into them from the start.
    let channels: HashMap<usize, (SwapSender, Swaps)> =
        ids.clone().map(|i| (i, watch::swaps())).collect();
    let mut local = args
        .watch
        .then(|| LocalRollout::new(args.canary as usize, args.promote_after));
    let mut progress: HashMap<usize, Arc<dyn Observer>> = HashMap::new();
    if let Some(local) = local.as_mut() {
        for (i, id) in &names {
            let tx = channels[i].0.clone();
            progress.insert(*i, local.add(id, tx));
        }
    }
    let channels = Mutex::new(channels);
    let device = {
        let stats = stats.clone();
        let logic = logic.clone();
        let (engine, linker, reach) = (engine.clone(), linker.clone(), reach.clone());
        Arc::new(move |index: usize| {
            let settings = fleet::identity(&settings, index, topic_given);
            let id = settings.client_id.clone();
            let mut observer: Arc<dyn Observer> = with_metrics(
                Arc::new((LogObserver::new(settings.clone()), stats.clone())),
                metrics.as_ref(),
                &id,
            );
            if let Some(p) = progress.get(&index) {
                observer = Arc::new((observer, p.clone()));
            }
            let (swap_tx, swaps) = channels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&index)
                .expect("one channel per device");
            let Some(u) = &updates else {
                let sandbox = Sandbox::new(id, &reach, observer);
                return (settings, sandbox, Some(swaps));
            };
            let topic = u.topic_for(&id, Some(index));
            let reporter = StatusReporter::new(u.channel.clone(), &id, &topic);
            let sandbox = Sandbox::new(id.clone(), &reach, Arc::new((observer, reporter.clone())));
            let builder = Builder {
                built: built.clone(),
                ..Builder::new(
                    engine.clone(),
                    linker.clone(),
                    cache.clone(),
                    sandbox.clone(),
                )
            };
            let floor = u.floor(&id, &logic);
            u.follow(&id, topic, reporter, builder, swap_tx, &logic, floor);
            (settings, sandbox, Some(swaps))
        })
    };
    let gave_up = Arc::new(
        |settings: &DeviceSettings, error: &host::sandbox::RunError| {
            tracing::error!(target: "host::fleet", "[{}] gave up: {}", settings.client_id, explain::run_error(error, settings));
        },
    );
    let _watch = match local {
        Some(local) => {
            let (tx, rx) = watch::swaps();
            let trial = Sandbox::new(
                "rollout-trial".into(),
                &reach,
                Arc::new(host_core::observer::Ignore),
            );
            let w = watch::watch(
                SwapSource {
                    path: args.component.clone(),
                    builder: Builder::new(engine, linker, cache_dir(args), trial),
                    running_sha256: logic.sha256.clone(),
                    signed: trust.map(|trust| {
                        let floor = Arc::new(Floor::new(logic.version.unwrap_or(0), None));
                        local_signed(args, trust, floor)
                    }),
                },
                tx,
            )?;
            tokio::spawn(local.run(rx));
            tracing::info!(
                target: "host",
                "watching {} for new logic: a local rollout, {} canar{} first, the rest once they completed {} iterations on it",
                args.component.display(),
                args.canary,
                if args.canary == 1 { "y" } else { "ies" },
                args.promote_after
            );
            Some(w)
        }
        None => None,
    };
    tracing::info!(target: "host::fleet", "starting {devices} devices at up to {} per second", args.ramp_per_sec);
    let failed = fleet::run(
        logic,
        Fleet {
            ids,
            ramp_per_sec: args.ramp_per_sec,
            plan,
            device,
            stats,
            gave_up,
            stopping,
        },
    )
    .await;
    if failed > 0 {
        return Err(Failure::Fleet { failed, devices });
    }
    tracing::info!(target: "host::fleet", "all {devices} devices completed their iterations.");
    Ok(())
}
