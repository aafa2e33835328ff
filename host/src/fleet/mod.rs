//! Fleet mode: many sandboxed devices in one host, each its own instance of
//! the component with its own identity, mTLS connection and supervisor, on
//! one tokio runtime; started at a bounded rate, summarised every few
//! seconds from the counters in [`stats`].

pub mod rollout;
pub mod stats;

use std::sync::Arc;
use std::time::Duration;

use host_core::settings::DeviceSettings;
use host_core::supervisor::Plan;

use crate::sandbox::{Logic, RunError, Sandbox, Swaps, run_device};
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

/// Settings, sandbox and (when it takes updates) swap channel of device
/// `index` (from 1).
pub type DeviceFactory =
    Arc<dyn Fn(usize) -> (DeviceSettings, Sandbox, Option<Swaps>) + Send + Sync>;

/// Called when a device gives up, with its settings and why.
pub type GaveUp = Arc<dyn Fn(&DeviceSettings, &RunError) + Send + Sync>;

/// What a fleet run needs.
pub struct Fleet {
    /// The device ids to run (from 1): all of a fleet, or a shard's slice.
    pub ids: std::ops::RangeInclusive<usize>,
    /// Devices started per second at most (TLS handshakes cost the broker).
    pub ramp_per_sec: u32,
    /// The plan every device follows.
    pub plan: Plan,
    /// Makes each device.
    pub device: DeviceFactory,
    /// Shared counters (also each device's observer, through its sandbox).
    pub stats: Arc<FleetStats>,
    /// Told about each device that gives up.
    pub gave_up: GaveUp,
    /// Becomes true when the host is stopping: no more devices start.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

/// Runs every device to the end of its plan; a device that fails ends alone.
/// Returns the number of devices that failed.
pub async fn run(logic: Arc<Logic>, fleet: Fleet) -> usize {
    let stats = fleet.stats.clone();
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
    let mut stopping = fleet.stopping.clone();
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
        let (settings, sandbox, swaps) = (fleet.device)(index);
        let (logic, plan, gave_up) = (logic.clone(), fleet.plan, fleet.gave_up.clone());
        tasks.push(tokio::spawn(async move {
            let result = run_device(logic, swaps, sandbox, &settings, plan).await;
            if let Err(e) = &result {
                gave_up(&settings, e);
            }
            result
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
