//! The host's log lines about a device, worded for any logic: an observer
//! that logs each event, explained by [`crate::cli::explain`].

use host_core::observer::{Event, Observer};
use host_core::outcome::Stop;
use host_core::settings::DeviceSettings;

use crate::cli::explain;

/// Logs one device's events.
pub struct LogObserver {
    settings: DeviceSettings,
}

impl LogObserver {
    /// Logs the events of the device with `settings`.
    pub fn new(settings: DeviceSettings) -> Self {
        Self { settings }
    }
}

impl Observer for LogObserver {
    fn observe(&self, event: &Event) {
        let device = self.settings.client_id.as_str();
        match event {
            Event::ConnectionOpened { .. } | Event::ConnectionClosed => {}
            Event::ConnectFailed {
                host,
                port,
                failure,
            } => tracing::warn!(
                target: "host",
                device,
                "[{device}] host: connection to {host}:{port} failed: {}",
                explain::socket::socket(failure.error, Some(failure))
            ),
            Event::OutputDropped {
                lines,
                lines_per_sec,
                burst,
            } => tracing::warn!(
                target: "host",
                device,
                "[{device}] {lines} guest output line(s) dropped (limit --log-lines-per-sec {lines_per_sec}, --log-burst {burst})"
            ),
            Event::SwappedIn {
                iteration,
                from,
                to,
            } => {
                tracing::info!(target: "host", device, iteration, "[{device}] {to} takes over from {from} at iteration {iteration}")
            }
            Event::IterationCompleted { iteration, report } => tracing::info!(
                target: "host",
                device,
                iteration,
                published = report.published,
                acknowledged = report.acknowledged,
                "[{device}] iteration {iteration} completed successfully: {} published, {} acknowledged, {} echoes received, {} TLS connection(s).",
                report.published,
                report.acknowledged,
                report.echoes,
                report.connections
            ),
            // A failure that ends the run is the run's final message.
            Event::IterationFailed { ends_run: true, .. } => {}
            Event::IterationFailed {
                iteration,
                failure,
                socket,
                ends_run: false,
            } => tracing::error!(
                target: "host",
                device,
                iteration,
                "[{device}] iteration {iteration} failed: {}",
                explain::iteration_failure(failure, &self.settings, socket.as_ref())
            ),
            Event::GuestStopped { iteration, stop } => tracing::error!(
                target: "host",
                device,
                iteration,
                limit = match stop { Stop::Limit(hit) => Some(hit.kind()), Stop::Trap { .. } => None },
                "[{device}] the device logic was stopped in iteration {iteration}: {}",
                explain::stop(stop)
            ),
            Event::FellBack { from, to, stop } => {
                let how = match stop {
                    Stop::Trap { .. } => "trapped",
                    Stop::Limit(_) => "was stopped by a sandbox limit",
                };
                tracing::error!(
                    target: "host",
                    device,
                    "[{device}] swapped-in {from} {how} in its first iterations ({}); back to {to}",
                    explain::stop(stop)
                )
            }
            Event::Restarting {
                delay_ms,
                attempt,
                max_attempts,
            } => tracing::warn!(
                target: "host",
                device,
                "[{device}] restarting the device logic on a fresh instance in {delay_ms} ms (restart {attempt} of {max_attempts})"
            ),
            Event::NextIteration { .. } => tracing::info!(
                target: "host",
                device,
                "[{device}] Short delay before starting the next iteration...."
            ),
            Event::Interrupted { iteration } => tracing::warn!(
                target: "host",
                device,
                iteration,
                "[{device}] iteration {iteration} cut short: the host is stopping and it did not end within --stop-timeout-ms"
            ),
        }
    }
}
