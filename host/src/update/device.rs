//! One device's updates over the broker: when a whole new timestamp has
//! arrived on its update topic, verify the repository against the trusted
//! keys (fetching the component as tough asks for it), build and check the
//! logic, offer it to the device's supervisor, and report on its status
//! topic: `accepted`, `refused` (with the reason), `running` (with the
//! iterations completed since), `rolled-back` (with the reason).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use host_core::observer::{Event, Observer};
use host_core::outcome::Stop;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::sandbox::Logic;
use crate::sandbox::build::Builder;
use crate::update::channel::Channel;
use crate::update::verify::{Source, Trust, verify};
use crate::update::wire::status_topic;

/// Quiet time after the last file before verifying, so an update's files
/// are all in.
const SETTLE: Duration = Duration::from_millis(150);

/// A device's update status, as published (retained JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The device's client id.
    pub device: String,
    /// The update's version (0 when it could not be read).
    pub version: u64,
    /// The update's SHA-256, hex (empty when it could not be read).
    pub sha256: String,
    /// `accepted`, `refused`, `running` or `rolled-back`.
    pub state: String,
    /// Iterations completed on the update since it took over.
    pub iterations: u64,
    /// Why it was refused or rolled back; empty otherwise.
    pub reason: String,
}

/// Reports a device's update status; also an observer of the device, to
/// see the update take over, run, or be rolled back.
pub struct StatusReporter {
    channel: Channel,
    topic: String,
    current: Mutex<(Status, String)>,
}

impl StatusReporter {
    /// Reports for `device` on the status topic under `update_topic`.
    pub fn new(channel: Channel, device: &str, update_topic: &str) -> Arc<Self> {
        Arc::new(Self {
            channel,
            topic: status_topic(update_topic),
            current: Mutex::new((
                Status {
                    device: device.to_string(),
                    version: 0,
                    sha256: String::new(),
                    state: String::new(),
                    iterations: 0,
                    reason: String::new(),
                },
                String::new(),
            )),
        })
    }

    /// Sets the status of an update (known by its logic's label) and
    /// publishes it.
    fn set(&self, version: u64, sha256: &str, label: &str, state: &str, reason: String) {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        cur.0.version = version;
        cur.0.sha256 = sha256.to_string();
        cur.0.state = state.to_string();
        cur.0.iterations = 0;
        cur.0.reason = reason;
        cur.1 = label.to_string();
        self.publish(&cur.0);
    }

    fn publish(&self, status: &Status) {
        let json = serde_json::to_vec(status).expect("a status serializes");
        self.channel.publish_retained(self.topic.clone(), json);
    }
}

fn stop_reason(stop: &Stop) -> String {
    match stop {
        Stop::Limit(hit) => hit.to_string(),
        Stop::Trap { message, .. } => message.clone(),
    }
}

impl Observer for StatusReporter {
    fn observe(&self, event: &Event) {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let (status, label) = &mut *cur;
        if label.is_empty() {
            return;
        }
        match event {
            Event::SwappedIn { to, .. } if to == label => {
                status.state = "running".into();
                status.iterations = 0;
            }
            Event::IterationCompleted { .. } if status.state == "running" => {
                status.iterations += 1;
                // Every iteration at first (a rollout waits for a few),
                // then every tenth.
                if status.iterations > 10 && status.iterations % 10 != 0 {
                    return;
                }
            }
            Event::FellBack { from, stop, .. } if from == label => {
                status.state = "rolled-back".into();
                status.reason = stop_reason(stop);
            }
            _ => return,
        }
        let snapshot = status.clone();
        drop(cur);
        self.publish(&snapshot);
    }
}

/// What a device's update task needs.
pub struct Updater {
    /// The host's update session.
    pub channel: Channel,
    /// The device's client id, for log lines.
    pub device: String,
    /// The device's update topic.
    pub update_topic: String,
    /// The keys and rules updates must satisfy.
    pub trust: Trust,
    /// Builds accepted logic.
    pub builder: Builder,
    /// Where accepted logic is offered to the device.
    pub swaps: watch::Sender<Option<Arc<Logic>>>,
    /// Reports the status.
    pub status: Arc<StatusReporter>,
    /// The version running now (0 for unsigned logic).
    pub running_version: u64,
    /// SHA-256 of the logic running now, hex.
    pub running_sha256: String,
}

impl Updater {
    /// Follows the device's update topic until the host ends.
    pub async fn run(mut self) {
        let mut changed = self.channel.follow(&self.update_topic);
        let mut last_timestamp: Option<Bytes> = None;
        while changed.changed().await.is_ok() {
            // Let the rest of an update's files come.
            while let Ok(Ok(())) = tokio::time::timeout(SETTLE, changed.changed()).await {}
            let files = self.channel.metadata(&self.update_topic);
            let Some(timestamp) = files.get("metadata/timestamp.json").cloned() else {
                continue;
            };
            if last_timestamp.as_ref() == Some(&timestamp) {
                continue;
            }
            last_timestamp = Some(timestamp);
            self.consider(files).await;
        }
    }

    async fn consider(&mut self, files: std::collections::HashMap<String, Bytes>) {
        let device = &self.device;
        let source = Source::Remote {
            metadata: Arc::new(files),
            targets: Arc::new(self.channel.clone()),
        };
        let verified = match verify(&source, &self.trust, Some(self.running_version)).await {
            Ok(v) => v,
            Err(refusal) => {
                tracing::error!(target: "host::update", "[{device}] refused an update: {refusal}; the running logic goes on");
                self.status.set(0, "", "", "refused", refusal.to_string());
                return;
            }
        };
        if verified.sha256 == self.running_sha256 {
            return;
        }
        let (version, sha256) = (verified.version, verified.sha256.clone());
        match self
            .builder
            .build_shared(verified.wasm, Some(version))
            .await
        {
            Ok((logic, how)) => {
                let how = match how {
                    Some((how, millis)) => format!("{how} in {millis} ms"),
                    None => "built for another device already".into(),
                };
                tracing::info!(
                    target: "host::update",
                    "[{device}] update {logic} accepted ({how}); it takes over at the next iteration"
                );
                self.status.set(
                    version,
                    &sha256,
                    &logic.to_string(),
                    "accepted",
                    String::new(),
                );
                self.running_version = version;
                self.running_sha256 = sha256;
                let _ = self.swaps.send(Some(logic));
            }
            Err(e) => {
                let reason = format!("{e:#}").replace('\n', " ");
                tracing::error!(target: "host::update", "[{device}] refused update version {version}: {reason}; the running logic goes on");
                self.status.set(version, &sha256, "", "refused", reason);
            }
        }
    }
}
