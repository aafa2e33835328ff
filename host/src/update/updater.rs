//! One device's updates over the broker: when a whole new timestamp has
//! arrived on its update topic, verify the repository against the trusted
//! keys (fetching the component as tough asks for it), build and check the
//! logic, offer it to the device's supervisor, and report on its status
//! topic: `accepted`, `refused` (with the reason), `running` (with the
//! iterations completed since), `rolled-back` (with the reason).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use host_core::observer::{Event, Observer};

use crate::sandbox::SwapSender;
use crate::sandbox::build::Builder;
use crate::update::channel::Channel;
use crate::update::floor::Floor;
use crate::update::trust::Trust;
use crate::update::verify::{Refusal, Source, verify};
use crate::update::wire::{Status, status_topic};

/// Quiet time after the last file before verifying, so an update's files
/// are all in.
const SETTLE: Duration = Duration::from_millis(150);

/// Reports a device's update status; also an observer of the device, to
/// see an update take over, run, or be rolled back.
pub struct StatusReporter {
    channel: Channel,
    topic: String,
    state: Mutex<ReporterState>,
}

struct ReporterState {
    /// The status last published.
    status: Status,
    /// The update offered last (its logic's label, version and hash), which
    /// running and rollback reports are about.
    offered: Option<(String, u64, String)>,
    /// Iterations completed on it since it took over; `None` before.
    iterations: Option<u64>,
    /// Hashes of updates rolled back on this device.
    rolled_back: HashSet<String>,
}

impl StatusReporter {
    /// Reports for `device` on the status topic under `update_topic`.
    pub fn new(channel: Channel, device: &str, update_topic: &str) -> Arc<Self> {
        Arc::new(Self {
            channel,
            topic: status_topic(update_topic),
            state: Mutex::new(ReporterState {
                status: Status {
                    device: device.to_string(),
                    version: 0,
                    sha256: String::new(),
                    state: String::new(),
                    iterations: 0,
                    reason: String::new(),
                },
                offered: None,
                iterations: None,
                rolled_back: HashSet::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReporterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An update was offered to the device.
    fn accepted(&self, version: u64, sha256: &str, label: &str) {
        let mut st = self.lock();
        st.offered = Some((label.to_string(), version, sha256.to_string()));
        st.iterations = None;
        self.publish(&mut st, version, sha256, "accepted", String::new(), 0);
    }

    /// An update was refused; the one running goes on being reported.
    fn refused(&self, version: u64, sha256: &str, reason: String) {
        let mut st = self.lock();
        self.publish(&mut st, version, sha256, "refused", reason, 0);
    }

    /// Whether the update with `sha256` was rolled back here before.
    fn was_rolled_back(&self, sha256: &str) -> bool {
        self.lock().rolled_back.contains(sha256)
    }

    fn publish(
        &self,
        st: &mut ReporterState,
        version: u64,
        sha256: &str,
        state: &str,
        reason: String,
        iterations: u64,
    ) {
        st.status.version = version;
        st.status.sha256 = sha256.to_string();
        st.status.state = state.to_string();
        st.status.reason = reason;
        st.status.iterations = iterations;
        let json = serde_json::to_vec(&st.status).expect("a status serializes");
        self.channel.publish_retained(self.topic.clone(), json);
    }
}

impl Observer for StatusReporter {
    fn observe(&self, event: &Event) {
        let mut st = self.lock();
        let Some((label, version, sha256)) = st.offered.clone() else {
            return;
        };
        match event {
            Event::SwappedIn { to, .. } if *to == label => {
                st.iterations = Some(0);
                self.publish(&mut st, version, &sha256, "running", String::new(), 0);
            }
            Event::IterationCompleted { .. } => {
                let Some(n) = st.iterations.as_mut() else {
                    return;
                };
                *n += 1;
                let n = *n;
                // Every iteration at first (a rollout waits for a few),
                // then every tenth.
                if n <= 10 || n % 10 == 0 {
                    self.publish(&mut st, version, &sha256, "running", String::new(), n);
                }
            }
            Event::FellBack { from, stop, .. } if *from == label => {
                st.offered = None;
                st.iterations = None;
                st.rolled_back.insert(sha256.clone());
                self.publish(
                    &mut st,
                    version,
                    &sha256,
                    "rolled-back",
                    stop.to_string(),
                    0,
                );
            }
            _ => {}
        }
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
    pub swaps: SwapSender,
    /// Reports the status.
    pub status: Arc<StatusReporter>,
    /// The lowest version accepted, shared with the device's other sources
    /// of updates.
    pub floor: Arc<Floor>,
    /// SHA-256 of the logic running now, hex.
    pub running_sha256: String,
}

/// How long to wait before trying again an update whose files had not all
/// arrived.
const RETRY: Duration = Duration::from_secs(5);

impl Updater {
    /// Follows the device's update topic until the host ends.
    pub async fn run(mut self) {
        let mut changed = self.channel.follow(&self.update_topic);
        let mut answered: Option<Bytes> = None;
        let mut retry = false;
        loop {
            tokio::select! {
                c = changed.changed() => if c.is_err() { return },
                () = tokio::time::sleep(RETRY), if retry => {}
            }
            // Let the rest of an update's files come.
            while let Ok(Ok(())) = tokio::time::timeout(SETTLE, changed.changed()).await {}
            let files = self.channel.metadata(&self.update_topic);
            let Some(timestamp) = files.get("metadata/timestamp.json").cloned() else {
                continue;
            };
            if answered.as_ref() == Some(&timestamp) {
                continue;
            }
            // Marked answered only for an answer: an update whose files have
            // not all come is tried again.
            retry = !self.consider(files).await;
            if !retry {
                answered = Some(timestamp);
            }
        }
    }

    /// Considers an update; false when it could not be answered yet.
    async fn consider(&mut self, files: std::collections::HashMap<String, Bytes>) -> bool {
        let device = &self.device;
        let source = Source::Remote {
            metadata: Arc::new(files),
            targets: Arc::new(self.channel.clone()),
        };
        let verified = match verify(&source, &self.trust, Some(self.floor.get())).await {
            Ok(v) => v,
            Err(Refusal::Incomplete(what)) => {
                tracing::debug!(target: "host::update", "[{device}] an update is incomplete ({what}); trying again");
                return false;
            }
            Err(refusal) => {
                tracing::error!(target: "host::update", "[{device}] refused an update: {refusal}; the running logic goes on");
                self.status.refused(0, "", refusal.to_string());
                return true;
            }
        };
        let (version, sha256) = (verified.version, verified.sha256.clone());
        if sha256 == self.running_sha256 {
            return true;
        }
        if self.status.was_rolled_back(&sha256) {
            let reason =
                format!("version {version} was rolled back on this device (publish a new version)");
            tracing::error!(target: "host::update", "[{device}] refused an update: {reason}");
            self.status.refused(version, &sha256, reason);
            return true;
        }
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
                self.status.accepted(version, &sha256, &logic.to_string());
                self.floor.raise(version);
                self.running_sha256 = sha256;
                let _ = self.swaps.send(Some(logic));
            }
            Err(e) => {
                let reason = format!("{e:#}").replace('\n', " ");
                tracing::error!(target: "host::update", "[{device}] refused update version {version}: {reason}; the running logic goes on");
                self.status.refused(version, &sha256, reason);
            }
        }
        true
    }
}
