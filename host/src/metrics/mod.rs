//! Prometheus metrics of a host's devices (`--metrics-listen`): one more
//! [`Observer`] per device, counting what the host sees happen (iterations,
//! connections, restarts, swaps, limit hits) and what the guest reports
//! (publishes, acknowledgements, echo round trips), served as OpenMetrics
//! text by [`server`].
//!
//! Series carry a `device` label: the client id when the fleet is at most
//! `--metrics-device-limit` devices, else `fleet` for all of them, so a
//! large fleet costs a fixed number of series. Fleet totals are
//! `sum without (device)`.

pub mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use host_core::observer::{Event, Observer};
use host_core::outcome::Stop;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Labels of a device's series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceLabel {
    device: String,
}

/// Labels of an iteration's outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    device: String,
    result: &'static str,
}

/// Labels of a stop.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StopLabels {
    device: String,
    kind: &'static str,
}

type Histograms = Family<DeviceLabel, Histogram, fn() -> Histogram>;

fn connect_buckets() -> Histogram {
    // 0.5 ms to 8 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

fn round_trip_buckets() -> Histogram {
    // 50 µs to 1.6 s.
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

/// The host's metrics.
pub struct Metrics {
    registry: Registry,
    per_device: bool,
    iterations: Family<ResultLabels, Counter>,
    published: Family<DeviceLabel, Counter>,
    acknowledged: Family<DeviceLabel, Counter>,
    echoes: Family<DeviceLabel, Counter>,
    connections: Family<DeviceLabel, Counter>,
    resumed: Family<DeviceLabel, Counter>,
    connections_open: Family<DeviceLabel, Gauge>,
    reconnects: Family<DeviceLabel, Counter>,
    restarts: Family<DeviceLabel, Counter>,
    swaps: Family<DeviceLabel, Counter>,
    rollbacks: Family<DeviceLabel, Counter>,
    stops: Family<StopLabels, Counter>,
    connect_latency: Histograms,
    round_trip: Histograms,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics { .. }")
    }
}

impl Metrics {
    /// The metrics of a host running `devices` devices; per device when
    /// they are at most `device_limit`.
    pub fn new(devices: usize, device_limit: usize) -> Arc<Self> {
        let mut registry = Registry::with_prefix("mqtt_device");
        let m = Metrics {
            per_device: devices <= device_limit,
            iterations: Family::default(),
            published: Family::default(),
            acknowledged: Family::default(),
            echoes: Family::default(),
            connections: Family::default(),
            resumed: Family::default(),
            connections_open: Family::default(),
            reconnects: Family::default(),
            restarts: Family::default(),
            swaps: Family::default(),
            rollbacks: Family::default(),
            stops: Family::default(),
            connect_latency: Family::new_with_constructor(connect_buckets),
            round_trip: Family::new_with_constructor(round_trip_buckets),
            registry: Registry::default(),
        };
        let devices_gauge: Gauge = Gauge::default();
        devices_gauge.set(i64::try_from(devices).unwrap_or(i64::MAX));
        registry.register("devices", "Devices this host runs", devices_gauge);
        registry.register(
            "iterations",
            "Iterations that returned, by result (ok, failed)",
            m.iterations.clone(),
        );
        registry.register(
            "publishes",
            "PUBLISH packets the logic reports it sent",
            m.published.clone(),
        );
        registry.register(
            "acknowledgements",
            "PUBACKs the logic reports it received",
            m.acknowledged.clone(),
        );
        registry.register(
            "echoes",
            "Echoed PUBLISH packets the logic reports",
            m.echoes.clone(),
        );
        registry.register(
            "connections",
            "TLS connections to the broker the host opened for the logic",
            m.connections.clone(),
        );
        registry.register(
            "connections_open",
            "TLS connections open now",
            m.connections_open.clone(),
        );
        registry.register(
            "tls_resumptions",
            "TLS connections whose handshake resumed an earlier session",
            m.resumed.clone(),
        );
        registry.register(
            "reconnects",
            "Connections opened in an iteration after its first",
            m.reconnects.clone(),
        );
        registry.register(
            "restarts",
            "Restarts of a stopped logic on a fresh instance",
            m.restarts.clone(),
        );
        registry.register("swaps", "New logic taking over", m.swaps.clone());
        registry.register(
            "rollbacks",
            "New logic stopped in probation and rolled back",
            m.rollbacks.clone(),
        );
        registry.register(
            "stops",
            "Logic stopped by a sandbox limit (kind = the limit) or a trap (kind = trap)",
            m.stops.clone(),
        );
        registry.register_with_unit(
            "connect_latency",
            "Name lookup, TCP connect and TLS handshake (with a PKCS#11 key, the token's signature too)",
            Unit::Seconds,
            m.connect_latency.clone(),
        );
        registry.register_with_unit(
            "echo_round_trip",
            "Echo round trips the logic reports",
            Unit::Seconds,
            m.round_trip.clone(),
        );
        Arc::new(Metrics { registry, ..m })
    }

    /// The observer of the device `client_id`.
    pub fn device(self: &Arc<Self>, client_id: &str) -> DeviceMetrics {
        let device = if self.per_device {
            client_id.to_string()
        } else {
            "fleet".to_string()
        };
        let label = DeviceLabel {
            device: device.clone(),
        };
        let counter = |family: &Family<DeviceLabel, Counter>| family.get_or_create_owned(&label);
        let result = |result| ResultLabels {
            device: device.clone(),
            result,
        };
        let ok = self.iterations.get_or_create_owned(&result("ok"));
        let failed = self.iterations.get_or_create_owned(&result("failed"));
        let open = self.connections_open.get_or_create_owned(&label);
        let connect_latency = self.connect_latency.get_or_create_owned(&label);
        let round_trip = self.round_trip.get_or_create_owned(&label);
        DeviceMetrics {
            ok,
            failed,
            published: counter(&self.published),
            acknowledged: counter(&self.acknowledged),
            echoes: counter(&self.echoes),
            connections: counter(&self.connections),
            resumed: counter(&self.resumed),
            open,
            reconnects: counter(&self.reconnects),
            restarts: counter(&self.restarts),
            swaps: counter(&self.swaps),
            rollbacks: counter(&self.rollbacks),
            connect_latency,
            round_trip,
            opened_this_iteration: AtomicU64::new(0),
            metrics: self.clone(),
            device,
        }
    }

    /// The metrics as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// One device's series, as an observer of its events.
pub struct DeviceMetrics {
    metrics: Arc<Metrics>,
    device: String,
    ok: Counter,
    failed: Counter,
    published: Counter,
    acknowledged: Counter,
    echoes: Counter,
    connections: Counter,
    resumed: Counter,
    open: Gauge,
    reconnects: Counter,
    restarts: Counter,
    swaps: Counter,
    rollbacks: Counter,
    connect_latency: Histogram,
    round_trip: Histogram,
    /// Connections opened since the iteration began.
    opened_this_iteration: AtomicU64,
}

impl DeviceMetrics {
    /// Ends an iteration: connections after its first were reconnects.
    fn iteration_ended(&self) {
        let opened = self.opened_this_iteration.swap(0, Ordering::Relaxed);
        self.reconnects.inc_by(opened.saturating_sub(1));
    }
}

impl Observer for DeviceMetrics {
    fn observe(&self, event: &Event) {
        match event {
            Event::ConnectionOpened {
                connect_us,
                resumed,
            } => {
                self.connections.inc();
                if *resumed {
                    self.resumed.inc();
                }
                self.open.inc();
                self.opened_this_iteration.fetch_add(1, Ordering::Relaxed);
                self.connect_latency.observe(*connect_us as f64 / 1e6);
            }
            Event::ConnectionClosed => {
                self.open.dec();
            }
            Event::IterationCompleted { report, .. } => {
                self.ok.inc();
                self.published.inc_by(u64::from(report.published));
                self.acknowledged.inc_by(u64::from(report.acknowledged));
                self.echoes.inc_by(u64::from(report.echoes));
                for us in &report.round_trips_us {
                    self.round_trip.observe(f64::from(*us) / 1e6);
                }
                self.iteration_ended();
            }
            Event::IterationFailed { .. } => {
                self.failed.inc();
                self.iteration_ended();
            }
            Event::GuestStopped { stop, .. } => {
                let kind = match stop {
                    Stop::Limit(hit) => hit.kind(),
                    Stop::Trap { .. } => "trap",
                };
                self.metrics
                    .stops
                    .get_or_create(&StopLabels {
                        device: self.device.clone(),
                        kind,
                    })
                    .inc();
                self.iteration_ended();
            }
            Event::SwappedIn { .. } => {
                self.swaps.inc();
            }
            Event::FellBack { .. } => {
                self.rollbacks.inc();
            }
            Event::Restarting { .. } => {
                self.restarts.inc();
            }
            Event::NextIteration { .. }
            | Event::Interrupted { .. }
            | Event::OutputDropped { .. }
            | Event::ConnectFailed { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use host_core::outcome::{IterationReport, LimitHit, TimeoutSetBy};

    use super::*;

    fn report() -> IterationReport {
        IterationReport {
            published: 5,
            acknowledged: 5,
            echoes: 5,
            connections: 2,
            round_trips_us: vec![100, 200],
        }
    }

    #[test]
    fn events_become_series_per_device_or_for_the_fleet() {
        let m = Metrics::new(2, 20);
        let a = m.device("a");
        a.observe(&Event::ConnectionOpened {
            connect_us: 1500,
            resumed: false,
        });
        a.observe(&Event::ConnectionOpened {
            connect_us: 900,
            resumed: true,
        });
        a.observe(&Event::IterationCompleted {
            iteration: 1,
            report: report(),
        });
        a.observe(&Event::GuestStopped {
            iteration: 2,
            stop: Stop::Limit(LimitHit::IterationTimeout {
                limit_ms: 10,
                set_by: TimeoutSetBy::Operator,
            }),
        });
        let text = m.encode();
        for line in [
            "mqtt_device_devices 2",
            "mqtt_device_iterations_total{device=\"a\",result=\"ok\"} 1",
            "mqtt_device_iterations_total{device=\"a\",result=\"failed\"} 0",
            "mqtt_device_publishes_total{device=\"a\"} 5",
            "mqtt_device_reconnects_total{device=\"a\"} 1",
            "mqtt_device_connections_open{device=\"a\"} 2",
            "mqtt_device_tls_resumptions_total{device=\"a\"} 1",
            "mqtt_device_stops_total{device=\"a\",kind=\"iteration_timeout\"} 1",
            "mqtt_device_connect_latency_seconds_count{device=\"a\"} 2",
            "mqtt_device_echo_round_trip_seconds_count{device=\"a\"} 2",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        let big = Metrics::new(100, 20);
        big.device("x").observe(&Event::IterationFailed {
            iteration: 1,
            failure: host_core::outcome::IterationFailure::Transport(
                host_core::TransportError::TimedOut,
            ),
            socket: None,
            ends_run: false,
        });
        big.device("y").observe(&Event::Restarting {
            delay_ms: 1,
            attempt: 1,
            max_attempts: 5,
        });
        let text = big.encode();
        assert!(
            text.contains("mqtt_device_iterations_total{device=\"fleet\",result=\"failed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mqtt_device_restarts_total{device=\"fleet\"} 1"),
            "{text}"
        );
        assert!(!text.contains("device=\"x\""), "{text}");
    }
}
