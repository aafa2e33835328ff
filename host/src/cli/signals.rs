//! SIGTERM and Ctrl-C (SIGINT): the first asks every device to stop at its
//! next safe point (sleeps cut short, the iteration in flight allowed
//! `--stop-timeout-ms` to end), the second stops at once. Either way the
//! host returns normally, so the embedded broker is stopped and its files
//! removed.

use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{oneshot, watch};

/// The host's stop.
pub struct Stop {
    /// Becomes true at the first signal.
    pub requested: watch::Receiver<bool>,
    /// How long the iteration in flight may take to end.
    pub timeout: Duration,
    forced: oneshot::Receiver<()>,
}

impl Stop {
    /// Resolves at the second signal.
    pub async fn forced(self) {
        let _ = self.forced.await;
    }
}

/// Starts listening for SIGTERM and SIGINT.
pub fn watch(timeout: Duration) -> anyhow::Result<Stop> {
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let (requested_tx, requested) = watch::channel(false);
    let (forced_tx, forced) = oneshot::channel();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            target: "host",
            "{name}: stopping; the iteration in flight ends first (up to {} ms, --stop-timeout-ms)",
            timeout.as_millis()
        );
        let _ = requested_tx.send(true);
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = forced_tx.send(());
        // Keep the sender alive until the process ends.
        std::future::pending::<()>().await;
    });
    Ok(Stop {
        requested,
        timeout,
        forced,
    })
}
