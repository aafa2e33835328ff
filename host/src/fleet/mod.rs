//! Fleet mode: many sandboxed devices in one host, each its own instance of
//! the component with its own identity, mTLS connection and supervisor, on
//! one tokio runtime, each wired as a single device is
//! ([`crate::device::Wiring`]); started at a bounded rate, summarised every
//! few seconds from the counters in [`stats`]; with a watched file, a local
//! rollout of its replacements ([`local_rollout`]).

pub mod local_rollout;
pub mod stats;

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use host_core::canary::Canaries;
use host_core::observer::{Ignore, Observer};
use host_core::settings::DeviceSettings;
use host_core::supervisor::Plan;

use crate::device::{self, Wiring};
use crate::sandbox::{Logic, RunError, Sandbox, SwapSender, Swaps, run_device, swaps};
use crate::swap::watch::{self, SwapSource, SwapWatch};
use crate::update::floor::Floor;
use crate::update::trust::Trust;
use local_rollout::LocalRollout;
use stats::FleetStats;

/// How often the summary line is logged.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(5);

/// Devices started per second at most, by default (`--ramp-per-sec`).
pub const RAMP_PER_SEC: u32 = 200;

/// The identity of device `index` (from 1): client id `<base>-0001`, and
/// its topic: `<client id>/example/topic`, or `<topic>/0001` when a topic
/// was given.
pub fn identity(base: &DeviceSettings, index: usize, topic_given: bool) -> DeviceSettings {
    let mut s = base.clone();
    s.client_id = format!("{}-{index:04}", base.client_id);
    s.topic = if topic_given {
        format!("{}/{index:04}", base.topic)
    } else {
        DeviceSettings::default_topic(&s.client_id)
    };
    s
}

/// A local rollout of a watched component file (`--watch` with a fleet).
#[derive(Debug, Clone)]
pub struct Watched {
    /// The component file.
    pub component: PathBuf,
    /// Who gets a replaced component first, and for how long.
    pub canaries: Canaries,
    /// The trust a replacement must satisfy, when logic must be signed.
    pub trust: Option<Trust>,
}

/// A fleet to run on this host.
pub struct Fleet {
    /// The device ids to run (from 1): all of a fleet, or a shard's slice.
    pub ids: RangeInclusive<usize>,
    /// Devices started per second at most (TLS handshakes cost the broker).
    pub ramp_per_sec: u32,
    /// The settings every device's are made from ([`identity`]).
    pub base: DeviceSettings,
    /// Whether a topic was given (then device i's is `<topic>/000i`).
    pub topic_given: bool,
    /// The plan every device follows.
    pub plan: Plan,
    /// A local rollout of the watched file, if any.
    pub watched: Option<Watched>,
    /// The command line's component file.
    pub component: std::path::PathBuf,
}

/// Makes each device's own observer (its log lines) from its settings.
pub type Observe = Arc<dyn Fn(&DeviceSettings) -> Arc<dyn Observer> + Send + Sync>;

/// Called when a device gives up, with its settings and why.
pub type GaveUp = Arc<dyn Fn(&DeviceSettings, &RunError) + Send + Sync>;

/// Runs `fleet`, every device wired by `wiring` and starting on `logic`,
/// each reporting to the observer `observe` makes for it and to the
/// fleet's counters, until every device has ended its plan; a device that
/// fails ends alone and is told to `gave_up`. Returns the number of
/// devices that failed, or an error if the watched file cannot be watched.
pub async fn run(
    wiring: &Wiring,
    logic: Arc<Logic>,
    fleet: Fleet,
    observe: Observe,
    gave_up: GaveUp,
) -> anyhow::Result<usize> {
    let stats = Arc::new(FleetStats::default());
    let names: Vec<(usize, String)> = fleet
        .ids
        .clone()
        .map(|i| (i, identity(&fleet.base, i, fleet.topic_given).client_id))
        .collect();
    // Every device's channel of new logic, made before the ramp: a local
    // rollout offers into them from the start.
    let channels: HashMap<usize, (SwapSender, Swaps)> =
        fleet.ids.clone().map(|i| (i, swaps())).collect();
    let mut progress: HashMap<usize, Arc<dyn Observer>> = HashMap::new();
    let _watch = match &fleet.watched {
        Some(watched) => {
            let mut local = LocalRollout::new(watched.canaries);
            for (i, id) in &names {
                progress.insert(*i, local.add(id, channels[i].0.clone()));
            }
            Some(watch_for_rollout(wiring, &logic, watched, local)?)
        }
        None => None,
    };
    let channels = Mutex::new(channels);
    let devices = fleet.ids.clone().count();
    let start = {
        let (wiring, logic, stats) = (wiring.clone(), logic.clone(), stats.clone());
        let (base, topic_given) = (fleet.base.clone(), fleet.topic_given);
        let component = fleet.component.clone();
        move |index: usize| {
            let settings = identity(&base, index, topic_given);
            let mut observer: Arc<dyn Observer> = Arc::new((observe(&settings), stats.clone()));
            if let Some(p) = progress.get(&index) {
                observer = Arc::new((observer, p.clone()));
            }
            let channel = channels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&index)
                .expect("one channel per device");
            let (wiring, logic, component) = (wiring.clone(), logic.clone(), component.clone());
            Box::pin(async move {
                wiring
                    .device(
                        settings,
                        Some(index),
                        observer,
                        (&logic, &component),
                        channel,
                    )
                    .await
            }) as Starting
        }
    };
    tracing::info!(target: "host::fleet", "starting {devices} devices at up to {} per second", fleet.ramp_per_sec);
    let failed = ramp(&fleet, wiring, &stats, start, gave_up).await;
    Ok(failed)
}

/// Watches the fleet's component file and runs a local rollout of each
/// replacement, checked in a trial sandbox of its own.
fn watch_for_rollout(
    wiring: &Wiring,
    logic: &Logic,
    watched: &Watched,
    local: LocalRollout,
) -> anyhow::Result<SwapWatch> {
    let (tx, rx) = swaps();
    let trial = Sandbox::new("rollout-trial".into(), &wiring.reach, Arc::new(Ignore));
    let floor = Arc::new(Floor::new(
        logic.version.unwrap_or(0),
        "rollout-trial",
        None,
    ));
    let w = watch::watch(
        SwapSource {
            path: watched.component.clone(),
            builder: wiring.builder(trial),
            running_sha256: logic.sha256.clone(),
            signed: watched
                .trust
                .as_ref()
                .map(|t| device::signed_file(&watched.component, t, floor)),
        },
        tx,
    )?;
    tokio::spawn(local.run(rx));
    tracing::info!(
        target: "host",
        "watching {} for new logic: a local rollout, {} canar{} first, the rest once they completed {} iterations on it",
        watched.component.display(),
        watched.canaries.count,
        if watched.canaries.count == 1 { "y" } else { "ies" },
        watched.canaries.promote_after
    );
    Ok(w)
}

/// A device being wired.
type Starting = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<device::Device, device::StartRefused>> + Send>,
>;

/// Starts the devices at the fleet's rate (until the host stops), each
/// wired by `start`, and waits for them. Returns how many failed.
async fn ramp(
    fleet: &Fleet,
    wiring: &Wiring,
    stats: &Arc<FleetStats>,
    start: impl Fn(usize) -> Starting,
    gave_up: GaveUp,
) -> usize {
    let devices = fleet.ids.clone().count();
    let first = *fleet.ids.start();
    let summary = tokio::spawn({
        let stats = stats.clone();
        async move {
            let mut tick = tokio::time::interval(SUMMARY_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                tracing::info!(target: "host::fleet", "{}", stats.summary(devices));
            }
        }
    });
    let gap = Duration::from_secs_f64(1.0 / f64::from(fleet.ramp_per_sec.max(1)));
    let mut tasks = Vec::with_capacity(devices);
    let mut next_start = tokio::time::Instant::now();
    let mut stopping = wiring.reach.stopping.clone();
    for index in fleet.ids.clone() {
        tokio::select! {
            () = tokio::time::sleep_until(next_start) => {}
            _ = stopping.wait_for(|stopping| *stopping) => {}
        }
        if *stopping.borrow() {
            tracing::info!(target: "host::fleet", "stopping: {} of {devices} devices were not started", devices - (index - first));
            break;
        }
        next_start += gap;
        let starting = start(index);
        let (plan, gave_up) = (fleet.plan, gave_up.clone());
        tasks.push(tokio::spawn(async move {
            let device = match starting.await {
                Ok(device) => device,
                Err(refused) => {
                    tracing::error!(target: "host::fleet", "{refused}");
                    return Err(());
                }
            };
            let result = run_device(
                device.logic.clone(),
                Some(device.swaps),
                device.sandbox,
                &device.settings,
                plan,
            )
            .await;
            if let Err(e) = &result {
                gave_up(&device.settings, e);
            }
            result.map(drop).map_err(drop)
        }));
    }
    let mut failed = 0;
    for task in tasks {
        match task.await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => failed += 1,
        }
    }
    summary.abort();
    tracing::info!(target: "host::fleet", "{}", stats.summary(devices));
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_identities_are_numbered_with_their_topics() {
        let base = DeviceSettings::new("b", 8883, "plant");
        let d = identity(&base, 42, false);
        assert_eq!(
            (d.client_id.as_str(), d.topic.as_str()),
            ("plant-0042", "plant-0042/example/topic")
        );
        let mut given = base.clone();
        given.topic = "site/t".into();
        assert_eq!(identity(&given, 7, true).topic, "site/t/0007");
    }
}
