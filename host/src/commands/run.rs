//! `host run`: load the TLS material, start the embedded broker if no broker
//! was given, load the component through the cache, and run it.

use std::sync::Arc;

use anyhow::{Context, bail};

use crate::cli::RunArgs;
use host::bindings::types::Settings;
use host::component_cache::{self, Source};
use host::engine;
use host::fleet::{self, Fleet, FleetStats};
use host::limits::Limits;
use host::local_broker::LocalBroker;
use host::mtls_socket::{Endpoint, SocketCtx};
use host::runner::{self, Logic, Plan, RestartPolicy, RunError, StateFactory};
use host::state::DeviceState;
use host::tls::{Handshake, TlsClient, TlsFiles};
use host::watch::{self, SwapSource};

/// Six hex digits from the OS RNG, so two demos do not share a client id.
fn random_suffix() -> String {
    let mut b = [0u8; 3];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

/// Parses `mqtts://HOST:PORT`, `HOST:PORT` or `HOST` (port 8883).
pub fn parse_endpoint(s: &str) -> anyhow::Result<Endpoint> {
    let rest = s.strip_prefix("mqtts://").unwrap_or(s);
    if rest.contains("://") {
        bail!("{s:?}: only mqtts:// brokers are supported (pass mqtts://HOST:PORT)");
    }
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            let port = p
                .parse::<u16>()
                .map_err(|_| anyhow::anyhow!("{s:?}: bad port {p:?} (pass mqtts://HOST:PORT)"))?;
            (h.trim_start_matches('[').trim_end_matches(']'), port)
        }
        _ => (rest, 8883),
    };
    if host.is_empty() {
        bail!("{s:?}: no host name (pass mqtts://HOST:PORT)");
    }
    Ok(Endpoint {
        host: host.to_string(),
        port,
    })
}

/// Runs `host run`.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client_id = args
        .client_id
        .clone()
        .unwrap_or_else(|| format!("testClient-{}", random_suffix()));
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("{client_id}/example/topic"));

    let (endpoint, files, _local) = match &args.broker {
        Some(url) => {
            let endpoint = parse_endpoint(url)?;
            let ca = args.ca.clone().context(
                "--broker needs --ca ROOT.pem (the root CA that signed the broker's certificate)",
            )?;
            let files = TlsFiles {
                ca,
                cert: args.cert.clone(),
                key: args.key.clone(),
            };
            (endpoint, files, None)
        }
        None => {
            let local = LocalBroker::start(&client_id)
                .map_err(|e| anyhow::anyhow!("{e} (or pass --broker)"))?;
            let endpoint = Endpoint {
                host: "localhost".into(),
                port: local.mosquitto.port,
            };
            tracing::info!(target: "host", "no --broker given: started an embedded mosquitto on 127.0.0.1:{} with client certificates required", endpoint.port);
            (endpoint, local.files.clone(), Some(local))
        }
    };
    if files.cert.is_none() {
        tracing::warn!(target: "host", "no --cert/--key: connecting without a client certificate");
    }
    let alpn = if args.alpn.is_empty() && endpoint.port == 443 {
        vec!["x-amzn-mqtt-ca".to_string()]
    } else {
        args.alpn.clone()
    };
    let handshake = Handshake {
        alpn,
        sni: !args.no_sni,
    };
    let tls = TlsClient::load_with(&files, &handshake)?;
    let allow = args
        .allow
        .iter()
        .map(|a| parse_endpoint(a).with_context(|| format!("bad --allow {a:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let settings = Settings {
        broker_host: endpoint.host.clone(),
        broker_port: endpoint.port,
        client_id: client_id.clone(),
        topic,
        payload: args.payload.clone(),
        publish_count: args.publish_count,
        publish_delay_ms: args.publish_delay_ms,
        process_loop_ms: args.process_loop_ms,
        connack_timeout_ms: args.connack_timeout_ms,
        transport_timeout_ms: args.transport_timeout_ms,
        connect_timeout_ms: args.connect_timeout_ms,
        keep_alive_secs: args.keep_alive_secs,
        pingresp_timeout_ms: args.pingresp_timeout_ms,
        backoff_base_ms: args.backoff_base_ms,
        backoff_max_ms: args.backoff_max_ms,
        backoff_max_attempts: args.backoff_max_attempts,
        clean_session: !args.persistent_session,
        username: args.username.clone(),
        password: args.password.clone(),
    };

    let limits = Limits {
        max_memory_bytes: args.max_memory_mib << 20,
        max_table_elements: args.max_table_elements,
        cpu_limit_ms: args.cpu_limit_ms,
        max_connections: args.max_connections,
        max_io_bytes: args.max_io_bytes,
    };
    if args.devices > 1 && args.watch {
        bail!("--watch and --devices together are not supported (run the fleet without --watch)");
    }
    let engine = if args.devices > 1 {
        engine::engine_for(Some((args.devices, &limits)))?
    } else {
        engine::engine()?
    };
    let cache_dir = if args.no_cache {
        None
    } else {
        args.cache_dir.clone().or_else(component_cache::default_dir)
    };
    let loaded = component_cache::load(&engine, &args.component, cache_dir.as_deref())
        .with_context(|| format!("cannot load {}", args.component.display()))?;
    tracing::info!(
        target: "host",
        "loaded {}: sha256 {}, {} in {} ms",
        args.component.display(),
        &loaded.sha256[..12],
        match loaded.source {
            Source::CacheHit => "precompiled cache hit",
            Source::Compiled => "compiled",
        },
        loaded.millis
    );
    let linker = Arc::new(engine::linker(&engine)?);
    let pre = engine::prepare(&linker, &loaded.component)
        .with_context(|| format!("cannot run {}", args.component.display()))?;
    let logic = Arc::new(Logic {
        pre,
        sha256: loaded.sha256.clone(),
    });

    let plan = Plan {
        settings: settings.clone(),
        iterations: args.iterations,
        iteration_delay_ms: args.iteration_delay_ms,
        restart: RestartPolicy {
            base_ms: args.backoff_base_ms,
            max_ms: args.backoff_max_ms,
            max_attempts: args.restart_max_attempts,
        },
        stats: None,
    };
    if args.devices > 1 {
        return run_fleet(&args, logic, plan, settings, tls, allow, limits).await;
    }
    let make_state: StateFactory = {
        let settings = settings.clone();
        Arc::new(move || {
            DeviceState::new(
                client_id.clone(),
                SocketCtx::for_broker(&settings, tls.clone(), &allow),
                limits,
            )
        })
    };
    let watch = if args.watch {
        let w = watch::watch(SwapSource {
            path: args.component.clone(),
            engine: engine.clone(),
            linker: linker.clone(),
            cache_dir: cache_dir.clone(),
            state: make_state.clone(),
            running_sha256: loaded.sha256.clone(),
        })?;
        tracing::info!(target: "host", "watching {} for new logic", args.component.display());
        Some(w)
    } else {
        None
    };
    let swaps = watch.as_ref().map(|w| w.swaps.clone());
    tokio::select! {
        result = runner::run(logic, swaps, &make_state, &plan) => {
            let n = result?;
            tracing::info!(target: "host", "{n} iteration(s) completed successfully.");
            Ok(())
        }
        _ = tokio::signal::ctrl_c() => {
            tracing::info!(target: "host", "interrupted; stopping.");
            Ok(())
        }
    }
}

/// `--devices N`: N devices, each with its own identity and sandbox.
async fn run_fleet(
    args: &RunArgs,
    logic: Arc<Logic>,
    plan: Plan,
    settings: Settings,
    tls: TlsClient,
    allow: Vec<Endpoint>,
    limits: Limits,
) -> anyhow::Result<()> {
    let stats = Arc::new(FleetStats::default());
    let devices = args.devices as usize;
    let topic_given = args.topic.is_some();
    let device = {
        let stats = stats.clone();
        Arc::new(move |index: usize| {
            let settings = fleet::device_settings(&settings, index, topic_given);
            let plan = Plan {
                settings: settings.clone(),
                stats: Some(stats.clone()),
                ..plan.clone()
            };
            let (tls, allow, stats) = (tls.clone(), allow.clone(), stats.clone());
            let state: StateFactory = Arc::new(move || {
                let mut sockets = SocketCtx::for_broker(&settings, tls.clone(), &allow);
                sockets.stats = Some(stats.clone());
                DeviceState::new(settings.client_id.clone(), sockets, limits)
            });
            (plan, state)
        })
    };
    tracing::info!(target: "host::fleet", "starting {devices} devices at up to {} per second", args.ramp_per_sec);
    let fleet = Fleet {
        devices,
        ramp_per_sec: args.ramp_per_sec,
        device,
        stats,
    };
    tokio::select! {
        failed = fleet::run(logic, fleet) => {
            if failed > 0 {
                return Err(RunError::FleetFailed { failed, devices }.into());
            }
            tracing::info!(target: "host::fleet", "all {devices} devices completed their iterations.");
            Ok(())
        }
        _ = tokio::signal::ctrl_c() => {
            tracing::info!(target: "host", "interrupted; stopping.");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let e = parse_endpoint("mqtts://broker.example:1883").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("broker.example", 1883));
        let e = parse_endpoint("localhost").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("localhost", 8883));
        assert!(parse_endpoint("mqtt://x:1").is_err());
        assert!(parse_endpoint("mqtts://:1").is_err());
        assert!(parse_endpoint("x:notaport").is_err());
    }
}
