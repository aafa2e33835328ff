//! The fleet's counters: an [`Observer`] every device reports into, and the
//! summary line made from them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use host_core::observer::{Event, Observer};

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
    /// TLS connections whose handshake resumed an earlier session.
    pub resumed: AtomicU64,
    /// Echo round trips since the last summary, microseconds.
    round_trips_us: Mutex<Vec<u32>>,
}

impl Observer for FleetStats {
    fn observe(&self, event: &Event) {
        match event {
            Event::ConnectionOpened { resumed, .. } => {
                self.connected.fetch_add(1, Ordering::Relaxed);
                if *resumed {
                    self.resumed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Event::ConnectionClosed => {
                self.connected.fetch_sub(1, Ordering::Relaxed);
            }
            Event::IterationCompleted { report, .. } => {
                self.iterations.fetch_add(1, Ordering::Relaxed);
                self.acknowledged
                    .fetch_add(u64::from(report.acknowledged), Ordering::Relaxed);
                if let Ok(mut rtts) = self.round_trips_us.lock() {
                    rtts.extend_from_slice(&report.round_trips_us);
                }
            }
            Event::IterationFailed { .. } | Event::GuestStopped { .. } | Event::FellBack { .. } => {
                self.failures.fetch_add(1, Ordering::Relaxed);
            }
            Event::SwappedIn { .. }
            | Event::Restarting { .. }
            | Event::NextIteration { .. }
            | Event::Interrupted { .. }
            | Event::OutputDropped { .. }
            | Event::ConnectFailed { .. } => {}
        }
    }
}

impl FleetStats {
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
            "fleet: {}/{devices} devices connected, {} iterations done, {} publishes acknowledged, {rtt}, {} failures, {} TLS sessions resumed, host RSS {} MiB",
            self.connected.load(Ordering::Relaxed),
            self.iterations.load(Ordering::Relaxed),
            self.acknowledged.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
            self.resumed.load(Ordering::Relaxed),
            rss_bytes().unwrap_or(0) >> 20
        )
    }
}

/// Resident set size of this process, bytes (Linux).
pub fn rss_bytes() -> Option<u64> {
    rss_of("self")
}

/// Resident memory of process `pid` (a number, or `self`), bytes, from
/// `/proc/PID/status`; `None` once it has exited or off Linux.
pub fn rss_of(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The `p`th percentile (0..=100) of `sorted` values; 0 when there are none.
fn percentile(sorted: &[u32], p: usize) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use host_core::TransportError;
    use host_core::outcome::{IterationFailure, IterationReport, Stop, TrapKind};

    use super::*;

    /// Regression: a failed iteration in forever mode was not
    /// counted, so a fleet could exit 2 while its summary said "0 failures".
    #[test]
    fn failed_iterations_and_stops_both_count_as_failures() {
        let stats = FleetStats::default();
        stats.observe(&Event::IterationFailed {
            iteration: 1,
            failure: IterationFailure::Transport(TransportError::TimedOut),
            socket: None,
            ends_run: false,
        });
        stats.observe(&Event::GuestStopped {
            iteration: 2,
            stop: Stop::Trap {
                kind: TrapKind::Unreachable,
                message: "x".into(),
            },
        });
        stats.observe(&Event::IterationCompleted {
            iteration: 3,
            report: IterationReport {
                acknowledged: 5,
                round_trips_us: vec![1000, 3000],
                ..IterationReport::default()
            },
        });
        let line = stats.summary(1);
        assert!(line.contains("2 failures"), "{line}");
        assert!(
            line.contains("1 iterations done, 5 publishes acknowledged"),
            "{line}"
        );
        assert!(line.contains("p50 3.00 ms"), "{line}");
    }

    #[test]
    fn connections_are_counted_up_and_down() {
        let stats = FleetStats::default();
        stats.observe(&Event::ConnectionOpened {
            connect_us: 1,
            resumed: false,
        });
        stats.observe(&Event::ConnectionOpened {
            connect_us: 1,
            resumed: true,
        });
        stats.observe(&Event::ConnectionClosed);
        let line = stats.summary(2);
        assert!(line.starts_with("fleet: 1/2 devices connected"), "{line}");
        assert!(line.contains(", 1 TLS sessions resumed,"), "{line}");
    }

    #[test]
    fn percentiles_of_a_sorted_list() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), 51);
        assert_eq!(percentile(&v, 99), 100);
        assert_eq!(percentile(&v, 100), 100);
        assert_eq!(percentile(&v, 0), 1);
        assert_eq!(percentile(&[], 50), 0);
    }
}
