//! Fleet mode: many sandboxed devices in one host, each its own instance of
//! the component with its own client id, topic, mTLS connection and
//! restarts, on one tokio runtime; started at a bounded rate, summarised
//! every few seconds.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guest::bench::percentile;

use crate::bindings::types::{IterationReport, Settings};
use crate::runner::{self, Logic, Plan, StateFactory};

/// How often the summary line is logged.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(5);

/// Counters shared by every device of a fleet.
#[derive(Debug, Default)]
pub struct FleetStats {
    /// TLS connections open now.
    pub connected: AtomicUsize,
    /// Iterations completed.
    pub iterations: AtomicU64,
    /// Publishes acknowledged.
    pub acknowledged: AtomicU64,
    /// Failed iterations and guest stops.
    pub failures: AtomicU64,
    /// Echo round trips since the last summary, microseconds.
    round_trips_us: Mutex<Vec<u32>>,
}

impl FleetStats {
    /// Records a completed iteration.
    pub fn iteration_done(&self, report: &IterationReport) {
        self.iterations.fetch_add(1, Ordering::Relaxed);
        self.acknowledged
            .fetch_add(u64::from(report.acknowledged), Ordering::Relaxed);
        if let Ok(mut rtts) = self.round_trips_us.lock() {
            rtts.extend_from_slice(&report.round_trips_us);
        }
    }

    /// Records a failed iteration or a stopped guest.
    pub fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The summary line, taking the round trips seen since the last one.
    pub fn summary(&self, devices: usize) -> String {
        let mut rtts = self
            .round_trips_us
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        rtts.sort_unstable();
        let rtt = if rtts.is_empty() {
            "no echo round trips yet".to_string()
        } else {
            format!(
                "echo round trip p50 {:.2} ms p99 {:.2} ms",
                f64::from(percentile(&rtts, 50)) / 1000.0,
                f64::from(percentile(&rtts, 99)) / 1000.0
            )
        };
        format!(
            "fleet: {}/{devices} devices connected, {} iterations done, {} publishes acknowledged, {rtt}, {} failures, host RSS {} MiB",
            self.connected.load(Ordering::Relaxed),
            self.iterations.load(Ordering::Relaxed),
            self.acknowledged.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
            rss_bytes().unwrap_or(0) >> 20
        )
    }
}

/// Resident set size of this process, bytes (Linux).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The identity of device `index` (from 1): `<base>-0001`, and its topic.
pub fn device_settings(base: &Settings, index: usize, topic_given: bool) -> Settings {
    let mut s = base.clone();
    s.client_id = format!("{}-{index:04}", base.client_id);
    s.topic = if topic_given {
        format!("{}/{index:04}", base.topic)
    } else {
        format!("{}/example/topic", s.client_id)
    };
    s
}

/// What a fleet run needs.
pub struct Fleet {
    /// Devices to run.
    pub devices: usize,
    /// Devices started per second at most (TLS handshakes cost the broker).
    pub ramp_per_sec: u32,
    /// Per-device settings and sandbox for device `index` (from 1).
    pub device: Arc<dyn Fn(usize) -> (Plan, StateFactory) + Send + Sync>,
    /// Shared counters.
    pub stats: Arc<FleetStats>,
}

/// Runs every device to the end of its plan; a device that fails ends alone.
/// Returns the number of devices that failed.
pub async fn run(logic: Arc<Logic>, fleet: Fleet) -> usize {
    let stats = fleet.stats.clone();
    let devices = fleet.devices;
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
    for index in 1..=devices {
        tokio::time::sleep_until(next_start).await;
        next_start += gap;
        let (plan, state) = (fleet.device)(index);
        let logic = logic.clone();
        tasks.push(tokio::spawn(async move {
            let result = runner::run(logic, None, &state, &plan).await;
            if let Err(e) = &result {
                tracing::error!(target: "host::fleet", "[{}] gave up: {e}", plan.settings.client_id);
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
