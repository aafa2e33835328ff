//! `host run`: who the device is, which broker and credentials, which
//! logic, then one device or a fleet, until done or interrupted.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use host::broker::embedded::LocalBroker;
use host::fleet::stats::FleetStats;
use host::fleet::{self, Fleet};
use host::imports::mtls_socket::Endpoint;
use host::sandbox::engine::{self, EngineError};
use host::sandbox::limits::Limits;
use host::sandbox::{DeviceState, Logic, Reach, Sandbox, run_device};
use host::swap::cache::{self, Source};
use host::swap::watch::{self, SignedSource, SwapSource, SwapWatch};
use host::tls::{Handshake, TlsClient, TlsFiles};
use host::update::verify::{Trust, verify_file};
use host_core::observer::Observer;
use host_core::settings::DeviceSettings;
use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::cli::args::RunArgs;
use crate::cli::endpoint;
use crate::cli::explain::{self, Failure};
use crate::cli::keys;
use crate::cli::report::LogObserver;
use crate::cli::signals;

/// Runs `host run`.
pub async fn run(args: RunArgs) -> Result<(), Failure> {
    let stop = signals::watch(Duration::from_millis(u64::from(args.stop_timeout_ms)))?;
    let client_id = client_id(&args);
    let (broker, files, mut embedded) = broker(&args, &client_id)?;
    let tls = tls_client(&args, &broker, &files)?;
    if let Some(local) = embedded.as_mut() {
        // Loaded by the host and the broker: no key needs to stay on disk.
        local
            .remove_files()
            .context("cannot remove the embedded broker's files")?;
    }
    let allowed = allow_list(&args, &broker)?;
    let settings = args.settings(&broker.host, broker.port, &client_id);
    let limits = args.limits(&settings);
    let engine = engine_for(&args, &limits)?;
    let linker = engine::linker(&engine)
        .map_err(|e| anyhow::Error::from(e).context("cannot set up the world's imports"))?;
    let linker = Arc::new(linker);
    let trust = if args.trust.is_empty() {
        None
    } else {
        Some(keys::trust(&args.trust, args.allow_downgrade)?)
    };
    let logic = load_logic(&args, &engine, &linker, trust.as_ref()).await?;
    let reach = Reach {
        tls,
        allowed,
        limits,
        stopping: stop.requested.clone(),
        stop_timeout: stop.timeout,
    };
    let work = async {
        if args.devices > 1 {
            run_fleet(&args, logic, settings, reach).await
        } else {
            run_one(&args, logic, settings, reach, engine, linker, trust).await
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
            "--broker needs --ca ROOT.pem (the root CA that signed the broker's certificate)",
        )?;
        let files = TlsFiles {
            ca,
            cert: args.cert.clone(),
            key: args.key.clone(),
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
    Ok(TlsClient::load_with(files, &handshake).map_err(anyhow::Error::from)?)
}

/// The broker and every `--allow` endpoint.
fn allow_list(args: &RunArgs, broker: &Endpoint) -> Result<Vec<Endpoint>, Failure> {
    let mut allowed = vec![broker.clone()];
    for a in &args.allow {
        allowed.push(endpoint::parse(a).with_context(|| format!("bad --allow {a:?}"))?);
    }
    Ok(allowed)
}

/// One engine for the run: pooled in fleet mode.
fn engine_for(args: &RunArgs, limits: &Limits) -> Result<Engine, Failure> {
    if args.devices > 1 && args.watch {
        return Err(anyhow::anyhow!(
            "--watch and --devices together are not supported (run the fleet without --watch)"
        )
        .into());
    }
    let pool = (args.devices > 1).then_some((args.devices, limits));
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
    let version = match &trust {
        Some(trust) => {
            let repo = keys::repo_for(path);
            let v = verify_file(path, &repo, trust, None)
                .await
                .with_context(|| format!("refused {}", path.display()))?;
            tracing::info!(target: "host", "{}: version {} signed with a trusted key", path.display(), v.version);
            Some(v.version)
        }
        None => None,
    };
    let loaded = cache::load(engine, path, cache_dir(args).as_deref())
        .with_context(|| format!("cannot load {}", path.display()))?;
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

/// One device, with hot swap when `--watch` is given.
async fn run_one(
    args: &RunArgs,
    logic: Arc<Logic>,
    settings: DeviceSettings,
    reach: Reach,
    engine: Engine,
    linker: Arc<Linker<DeviceState>>,
    trust: Option<Trust>,
) -> Result<(), Failure> {
    let observer = Arc::new(LogObserver::new(settings.clone()));
    let sandbox = Sandbox::new(settings.client_id.clone(), &reach, observer);
    let watch: Option<SwapWatch> = if args.watch {
        let w = watch::watch(SwapSource {
            path: args.component.clone(),
            engine,
            linker,
            cache_dir: cache_dir(args),
            sandbox: sandbox.clone(),
            running_sha256: logic.sha256.clone(),
            signed: trust.map(|trust| SignedSource {
                repo: keys::repo_for(&args.component),
                trust,
                running_version: logic.version.unwrap_or(0),
            }),
        })?;
        tracing::info!(target: "host", "watching {} for new logic", args.component.display());
        Some(w)
    } else {
        None
    };
    let swaps = watch.as_ref().map(|w| w.swaps.clone());
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

/// `--devices N`: N devices, each with its own identity and sandbox.
async fn run_fleet(
    args: &RunArgs,
    logic: Arc<Logic>,
    settings: DeviceSettings,
    reach: Reach,
) -> Result<(), Failure> {
    let stats = Arc::new(FleetStats::default());
    let devices = args.devices as usize;
    let topic_given = args.topic.is_some();
    let plan = args.plan();
    let stopping = reach.stopping.clone();
    let device = {
        let stats = stats.clone();
        Arc::new(move |index: usize| {
            let settings = fleet::identity(&settings, index, topic_given);
            let observer: Arc<dyn Observer> =
                Arc::new((LogObserver::new(settings.clone()), stats.clone()));
            let sandbox = Sandbox::new(settings.client_id.clone(), &reach, observer);
            (settings, sandbox)
        })
    };
    let gave_up = Arc::new(
        |settings: &DeviceSettings, error: &host::sandbox::RunError| {
            tracing::error!(target: "host::fleet", "[{}] gave up: {}", settings.client_id, explain::run_error(error, settings));
        },
    );
    tracing::info!(target: "host::fleet", "starting {devices} devices at up to {} per second", args.ramp_per_sec);
    let failed = fleet::run(
        logic,
        Fleet {
            devices,
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
