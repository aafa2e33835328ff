//! `host rollout`: signs a logic, publishes it to a fleet's canaries over
//! the broker, watches their statuses, promotes it to everyone when they
//! pass, stops as soon as one refuses or rolls back.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use host::fleet;
use host::publish::keys::SigningKey;
use host::publish::rollout::{Ended, Publisher, RolloutPlan, roll_out};
use host::publish::signing::{self, Signed};
use host::tls::{ClientKey, Endpoint, Handshake, Roots, TlsClient, TlsFiles};
use host::update::chunks;
use host::update::repository::repository_of;
use host::update::wire::{self, Repository};
use host_core::WORLD;
use host_core::canary::Report;
use host_core::settings::DeviceSettings;

use crate::cli::endpoint;
use crate::cli::exit;
use crate::cli::explain::Failure;

/// `host rollout`: a signed update to a fleet, canaries first.
#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// The new logic.
    pub logic: PathBuf,
    /// The private key to sign with (from host keygen).
    #[arg(long = "signing-key", alias = "key", value_name = "KEY")]
    pub key: PathBuf,
    /// The logic's version (devices refuse lower ones).
    #[arg(long, value_name = "N")]
    pub version: u64,
    /// The fleet's client id prefix (host run --devices N --client-id
    /// PREFIX): devices PREFIX-0001 to PREFIX-N.
    #[arg(long, value_name = "PREFIX")]
    pub fleet: String,
    /// Devices in the fleet.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub devices: u32,
    /// Devices that get the update first (0001 on).
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub canary: u32,
    /// Iterations each canary must complete on the update before everyone
    /// gets it.
    #[arg(long, value_name = "ITERATIONS", default_value_t = 3)]
    pub promote_after: u64,
    /// The broker, mqtts://HOST:PORT.
    #[arg(long, value_name = "URL")]
    pub broker: String,
    /// The broker's root CA: a PEM file, `webpki` (the Mozilla root set,
    /// with Amazon's roots) or `os` (this machine's trust store).
    #[arg(long, value_name = "ROOT.pem|webpki|os")]
    pub ca: Roots,
    /// This tool's client certificate (PEM), for brokers that require one.
    #[arg(long, value_name = "CLIENT.pem", requires = "client_key")]
    pub cert: Option<PathBuf>,
    /// This tool's client key (PEM).
    #[arg(long, value_name = "CLIENT.key", requires = "cert")]
    pub client_key: Option<PathBuf>,
    /// The devices' update topics: PREFIX-000i/logic, or TOPIC/000i when
    /// given (as host run --update-topic).
    #[arg(long, value_name = "TOPIC")]
    pub update_topic: Option<String>,
    /// Where the component goes (shared by the devices).
    #[arg(long, value_name = "TOPIC", default_value = wire::TARGETS_TOPIC)]
    pub targets_topic: String,
    /// Largest MQTT payload, bytes; the component goes in chunks of it.
    #[arg(long, value_name = "BYTES", default_value_t = chunks::PAYLOAD_LIMIT, value_parser = crate::cli::args::payload_limit)]
    pub payload_limit: usize,
    /// The signed repository [default: LOGIC.tuf].
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// Days the update's metadata stays valid.
    #[arg(long, value_name = "DAYS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=36500))]
    pub valid_days: u64,
    /// Longest the whole rollout may take, seconds [default: derived from
    /// the canaries' iteration timeout, as their statuses report it, so a
    /// canary that hangs is seen to stop]. A device offered the update must
    /// answer within 120 s.
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_secs: Option<u64>,
}

/// Runs `host rollout`.
pub async fn rollout(args: RolloutArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let (signed, repo) = sign(&args).await?;
    let broker = endpoint::parse(&args.broker).map_err(anyhow::Error::from)?;
    let tls = TlsClient::load_with(
        &TlsFiles {
            ca: args.ca.clone(),
            cert: args.cert.clone(),
            key: args.client_key.clone().map(ClientKey::File),
        },
        &Handshake::default(),
    )
    .map_err(anyhow::Error::from)?;
    let id = format!("rollout-{}-{}", &signed.sha256[..12], std::process::id());
    let mut publisher = Publisher::connect(&broker, &tls, &id, args.payload_limit)
        .await
        .map_err(anyhow::Error::from)?;
    let plan = plan(&args, &broker);
    let ended = roll_out(
        &mut publisher,
        &repo,
        (&signed.sha256, signed.version),
        &plan,
    )
    .await
    .map_err(anyhow::Error::from)?;
    let what = format!(
        "version {} (sha256 {})",
        signed.version,
        &signed.sha256[..12]
    );
    report(&args, &what, ended, started.elapsed().as_secs_f64())
}

/// Signs the logic into its repository and reads the repository as it
/// goes on the wire.
async fn sign(args: &RolloutArgs) -> Result<(Signed, Repository), Failure> {
    let key = SigningKey::load(&args.key).map_err(anyhow::Error::from)?;
    let repo_dir = args
        .repo
        .clone()
        .unwrap_or_else(|| repository_of(&args.logic));
    let valid = Duration::from_secs(args.valid_days.saturating_mul(24 * 3600));
    let signed = signing::sign(&args.logic, &key, args.version, WORLD, &repo_dir, valid)
        .await
        .with_context(|| format!("cannot sign {}", args.logic.display()))?;
    let repo = wire::read(&repo_dir, &args.targets_topic, args.payload_limit)
        .with_context(|| format!("cannot read {}", repo_dir.display()))?;
    tracing::info!(
        target: "host::rollout",
        "version {} (sha256 {}): {} bytes of component, {} bytes on the wire per device",
        signed.version,
        &signed.sha256[..12],
        repo.component_bytes,
        repo.wire_bytes()
    );
    Ok((signed, repo))
}

/// The fleet's devices (named as `host run --devices` names them), their
/// update topics, and the canary policy's parameters.
fn plan(args: &RolloutArgs, broker: &Endpoint) -> RolloutPlan {
    let base = DeviceSettings::new(&broker.host, broker.port, &args.fleet);
    let devices: Vec<String> = (1..=args.devices as usize)
        .map(|i| fleet::identity(&base, i, false).client_id)
        .collect();
    let topics = devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let topic = wire::device_topic(args.update_topic.as_deref(), d, Some(i + 1));
            (d.clone(), topic)
        })
        .collect();
    RolloutPlan {
        devices,
        topics,
        fleet_topic: Some(wire::fleet_topic(args.update_topic.as_deref(), &args.fleet)),
        targets_topic: args.targets_topic.clone(),
        canaries: args.canary as usize,
        promote_after: args.promote_after,
        timeout: args.timeout_secs.map(Duration::from_secs),
    }
}

/// How the rollout of `what` ended after `secs`: a line on success, or
/// the failure with its exit code.
fn report(args: &RolloutArgs, what: &str, ended: Ended, secs: f64) -> Result<(), Failure> {
    let canaries = args.canary as usize;
    match ended {
        Ended::Done(s) if s.failed == 0 => {
            println!(
                "rollout: {what} runs on {}/{} devices ({} canar{} passed {} iterations) in {secs:.1} s",
                s.running,
                args.devices,
                canaries.min(args.devices as usize),
                if canaries == 1 { "y" } else { "ies" },
                args.promote_after
            );
            Ok(())
        }
        Ended::Done(s) => Err(Failure::Rollout {
            line: format!(
                "rollout: {what} runs on {}/{} devices; {} refused it or rolled it back (their statuses say why) in {secs:.1} s",
                s.running, args.devices, s.failed
            ),
            code: exit::ITERATION_FAILED,
        }),
        Ended::Stopped {
            device,
            report,
            summary,
        } => {
            // The device's reason carries the fix for its cause.
            let why = match report {
                Report::Refused(r) => format!("refused it: {r}"),
                Report::RolledBack(r) => format!("rolled it back: {r}"),
                other => format!("{other:?}"),
            };
            Err(Failure::Rollout {
                line: format!(
                    "rollout stopped: canary {device} {why}; {} devices left on their logic",
                    summary.left_alone
                ),
                code: exit::ITERATION_FAILED,
            })
        }
        Ended::TimedOut {
            silent,
            slow,
            window,
        } => {
            let list = |d: &[String]| {
                let mut l = d.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
                if d.len() > 5 {
                    l.push_str(&format!(" and {} more", d.len() - 5));
                }
                l
            };
            let line = if !silent.is_empty() {
                format!(
                    "rollout timed out after {secs:.0} s: {} device(s) gave no answer within {} s of the offer: {} (check that they run, with --trust, and follow their update topics)",
                    silent.len(),
                    window.as_secs(),
                    list(&silent)
                )
            } else {
                format!(
                    "rollout timed out after {secs:.0} s: {} device(s) took the update but had not completed {} iteration(s) on it within {} s: {} (give a longer --timeout-secs, or leave it out)",
                    slow.len(),
                    args.promote_after,
                    window.as_secs(),
                    list(&slow)
                )
            };
            Err(Failure::Rollout {
                line,
                code: exit::GUEST_FAILED,
            })
        }
        Ended::NotStarted(why) => Err(Failure::Rollout {
            line: format!("rollout not started: {why}"),
            code: exit::SETUP,
        }),
    }
}
