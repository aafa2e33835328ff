//! One device's updates over the broker: when a whole new timestamp has
//! arrived on its update topic, verify the repository against the trusted
//! keys (fetching the component as tough asks for it), build and check the
//! logic, offer it to the device's supervisor, and report on its status
//! topic: `accepted`, `refused` (with the reason), `running` (with the
//! iterations completed since), `rolled-back` (with the reason).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use host_core::observer::{Event, Observer};

use crate::sandbox::Logic;
use crate::sandbox::SwapSender;
use crate::sandbox::build::Builder;
use crate::update::channel::Channel;
use crate::update::floor::{Accepted, Floor, Repository};
use crate::update::trust::Trust;
use crate::update::verify::{Refusal, Source, claimed, verify};
use crate::update::wire::{self, Offer, Status, status_topic};

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

/// A logic as statuses name it: its label, version and hash.
type Named = (String, u64, String);

struct ReporterState {
    /// The status last published.
    status: Status,
    /// The logic running.
    running: Option<Named>,
    /// The update offered last, until it has passed its first iterations,
    /// and the logic it replaces.
    offered: Option<(Named, Option<Named>)>,
    /// Iterations completed on the running logic since it took over;
    /// `None` while an offer waits to take over.
    iterations: Option<u64>,
    /// Hashes of updates rolled back on this device.
    rolled_back: HashSet<String>,
    /// Where a rollback is recorded.
    floor: Option<Arc<Floor>>,
}

impl StatusReporter {
    /// Reports for `device` on the status topic under `update_topic`; the
    /// device's iterations may run `iteration_timeout_ms` at most, with
    /// `iteration_delay_ms` between them.
    pub fn new(
        channel: Channel,
        device: &str,
        update_topic: &str,
        (iteration_timeout_ms, iteration_delay_ms): (u64, u64),
    ) -> Arc<Self> {
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
                    iteration_timeout_ms,
                    iteration_delay_ms,
                    offer: String::new(),
                    last_offer: None,
                },
                running: None,
                offered: None,
                iterations: None,
                rolled_back: HashSet::new(),
                floor: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReporterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The device starts on `logic` (its floor is `floor`), whose status
    /// goes out at once, with the last offer the device remembers.
    pub fn started(&self, logic: &Logic, floor: Arc<Floor>, last_offer: Option<Offer>) {
        let mut st = self.lock();
        let version = logic.version.unwrap_or(0);
        st.running = Some((logic.to_string(), version, logic.sha256.clone()));
        st.iterations = Some(0);
        st.rolled_back.extend(floor.rolled_back());
        st.floor = Some(floor);
        st.status.last_offer = last_offer;
        self.publish(&mut st, version, &logic.sha256, "running", String::new(), 0);
    }

    /// An update was offered to the device.
    fn accepted(&self, version: u64, sha256: &str, label: &str) {
        let mut st = self.lock();
        st.offered = Some((
            (label.to_string(), version, sha256.to_string()),
            st.running.clone(),
        ));
        st.iterations = None;
        self.answer(&mut st, version, sha256, "accepted", String::new(), 0);
    }

    /// The logic running was offered again as `version` (the same
    /// component): it goes on, now known by that version.
    fn same(&self, version: u64, sha256: &str) {
        let mut st = self.lock();
        if let Some(running) = st.running.as_mut() {
            running.1 = version;
        }
        let n = st.iterations.unwrap_or(0);
        self.answer(&mut st, version, sha256, "running", String::new(), n);
    }

    /// An update was refused; the one running goes on being reported.
    fn refused(&self, version: u64, sha256: &str, reason: String) {
        let mut st = self.lock();
        self.answer(&mut st, version, sha256, "refused", reason, 0);
    }

    /// Whether the update with `sha256` was rolled back here before.
    fn was_rolled_back(&self, sha256: &str) -> bool {
        self.lock().rolled_back.contains(sha256)
    }

    /// SHA-256 of the logic the device runs now (or is about to, once an
    /// accepted update takes over), hex.
    fn running_sha256(&self) -> String {
        let st = self.lock();
        match &st.offered {
            Some((offered, _)) => offered.2.clone(),
            None => st.running.as_ref().map(|r| r.2.clone()).unwrap_or_default(),
        }
    }

    /// The offer now considered: later statuses name it.
    fn considering(&self, offer: &str) {
        self.lock().status.offer = offer.to_string();
    }

    /// The answer to an offer: kept as the last offer in every later
    /// status (and in the device's state, so it survives a restart), and
    /// published.
    fn answer(
        &self,
        st: &mut ReporterState,
        version: u64,
        sha256: &str,
        state: &str,
        reason: String,
        iterations: u64,
    ) {
        let offer = Offer {
            version,
            sha256: sha256.to_string(),
            state: state.to_string(),
            reason: reason.clone(),
            offer: st.status.offer.clone(),
        };
        if let Some(floor) = &st.floor {
            floor.remember_offer(&offer);
        }
        st.status.last_offer = Some(offer);
        self.publish(st, version, sha256, state, reason, iterations);
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
        match event {
            Event::SwappedIn { to, .. } => {
                let Some((offered, before)) = st.offered.take_if(|(o, _)| o.0 == *to) else {
                    return;
                };
                let (version, sha256) = (offered.1, offered.2.clone());
                st.running = Some(offered.clone());
                // What it replaced is kept, should it fall back.
                st.offered = Some((offered, before));
                st.iterations = Some(0);
                self.publish(&mut st, version, &sha256, "running", String::new(), 0);
            }
            Event::IterationCompleted { .. } => {
                let Some((_, version, sha256)) = st.running.clone() else {
                    return;
                };
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
            Event::FellBack { from, stop, .. } => {
                let Some((_, version, sha256)) = st.running.clone().filter(|r| r.0 == *from) else {
                    return;
                };
                let before = st.offered.take().and_then(|(_, before)| before);
                st.rolled_back.insert(sha256.clone());
                let reason = format!("{stop} (fix the logic and publish a new version)");
                self.answer(&mut st, version, &sha256, "rolled-back", reason, 0);
                st.iterations = Some(0);
                st.running = before.clone();
                if let (Some(floor), Some((_, _, sha)), Ok(runtime)) = (
                    st.floor.clone(),
                    before,
                    tokio::runtime::Handle::try_current(),
                ) {
                    runtime.spawn(async move { floor.fell_back(&sha).await });
                }
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
    /// The fleet's update topic, which every device of the fleet reads
    /// besides its own (a device that joins later gets the fleet's update).
    pub fleet_topic: Option<String>,
    /// The keys and rules updates must satisfy.
    pub trust: Trust,
    /// Builds accepted logic.
    pub builder: Builder,
    /// Where accepted logic is offered to the device.
    pub swaps: SwapSender,
    /// Reports the status.
    pub status: Arc<StatusReporter>,
    /// The lowest version accepted and the logic kept, shared with the
    /// device's other sources of updates.
    pub floor: Arc<Floor>,
}

/// How long to wait before trying again an update whose files had not all
/// arrived.
const RETRY: Duration = Duration::from_secs(5);

/// One topic an updater follows.
struct Followed {
    topic: String,
    changed: tokio::sync::watch::Receiver<u64>,
    /// The timestamp answered last.
    answered: Option<Bytes>,
    /// Try again after [`RETRY`] (files were missing).
    retry: bool,
    /// The fleet's topic: an older or equal update there is no offer to
    /// answer.
    fleet: bool,
    /// Tries of the current update whose files had not all come.
    misses: u32,
}

/// Tries after which an update whose files do not all come is reported
/// (with [`RETRY`], about a minute and a half, besides the fetch's wait).
const MISSES_REPORTED: u32 = 3;

impl Updater {
    /// Follows the device's update topics until the host ends.
    pub async fn run(mut self) {
        let mut topics = vec![Followed {
            changed: self.channel.follow(&self.update_topic),
            topic: self.update_topic.clone(),
            answered: None,
            retry: false,
            fleet: false,
            misses: 0,
        }];
        if let Some(fleet) = self.fleet_topic.clone() {
            topics.push(Followed {
                changed: self.channel.follow(&fleet),
                topic: fleet,
                answered: None,
                retry: false,
                fleet: true,
                misses: 0,
            });
        }
        loop {
            let retry = topics.iter().any(|t| t.retry);
            let changes = futures::future::select_all(
                topics.iter_mut().map(|t| Box::pin(t.changed.changed())),
            );
            tokio::select! {
                (c, _, _) = changes => if c.is_err() { return },
                () = tokio::time::sleep(RETRY), if retry => {}
            }
            for t in &mut topics {
                // Let the rest of an update's files come.
                while let Ok(Ok(())) = tokio::time::timeout(SETTLE, t.changed.changed()).await {}
                let files = self.channel.metadata(&t.topic);
                for notice in self.channel.take_notices(&t.topic) {
                    let device = &self.device;
                    tracing::error!(target: "host::update", "[{device}] {notice}");
                    if !t.fleet {
                        // About the topic, not about an update.
                        self.status.considering("");
                        self.status.refused(0, "", notice);
                    }
                }
                let Some(timestamp) = files.get("metadata/timestamp.json").cloned() else {
                    continue;
                };
                if t.answered.as_ref() == Some(&timestamp) {
                    continue;
                }
                // Marked answered only for an answer: an update whose files
                // have not all come is tried again, and after a while said
                // to be missing (once).
                t.retry = !self.consider(&t.topic, Arc::new(files), t.fleet).await;
                if t.retry {
                    t.misses += 1;
                    if t.misses == MISSES_REPORTED && !t.fleet {
                        self.missing(&t.topic);
                    }
                } else {
                    t.answered = Some(timestamp);
                    t.misses = 0;
                }
            }
        }
    }

    /// An update on `topic` whose files keep missing: said once, as a
    /// refusal the rollout sees.
    fn missing(&self, topic: &str) {
        let device = &self.device;
        let files = self.channel.metadata(topic);
        let (version, sha256) = claimed(&files).unwrap_or_default();
        let reason = format!(
            "a file of update version {version} never arrived (its component is not on the targets topic, deleted by a later rollout or never published): publish it again"
        );
        tracing::warn!(target: "host::update", "[{device}] {reason}");
        self.status.refused(version, &sha256, reason);
    }

    /// Considers an update from `topic` (the fleet's when `fleet`); false
    /// when it could not be answered yet.
    async fn consider(
        &mut self,
        topic: &str,
        files: Arc<HashMap<String, Bytes>>,
        fleet: bool,
    ) -> bool {
        let device = &self.device;
        // Statuses about this offer name it by its timestamp's hash.
        if let Some(timestamp) = files.get("metadata/timestamp.json") {
            self.status.considering(&wire::offer_id(timestamp));
        }
        let source = Source::Remote {
            metadata: files.clone(),
            targets: Arc::new(self.channel.clone()),
        };
        let verified = match verify(&source, &self.trust, Some(self.floor.get())).await {
            Ok(v) => v,
            Err(Refusal::Incomplete(what)) => {
                tracing::debug!(target: "host::update", "[{device}] an update on {topic} is incomplete ({what}); trying again");
                return false;
            }
            Err(Refusal::Downgrade { offered, running }) if fleet => {
                tracing::debug!(target: "host::update", "[{device}] the fleet's update on {topic} is version {offered}, not above {running}");
                return true;
            }
            Err(refusal) => {
                let (version, sha256) = claimed(&files).unwrap_or_default();
                let refusal = match refusal {
                    Refusal::Downgrade { running, .. } => {
                        format!("{refusal} (publish a version above {running})")
                    }
                    other => other.to_string(),
                };
                tracing::error!(
                    target: "host::update",
                    "[{device}] refused update version {version} (sha256 {}) on {topic}: {refusal}; the running logic goes on",
                    short(&sha256)
                );
                self.status.refused(version, &sha256, refusal);
                return true;
            }
        };
        let (version, sha256) = (verified.version, verified.sha256.clone());
        // The fleet's update only ever moves a device forward.
        if fleet && version < self.floor.get() {
            return true;
        }
        if self.status.was_rolled_back(&sha256) {
            let reason = format!(
                "version {version} (sha256 {}) was rolled back on this device (fix the logic and publish a new version)",
                short(&sha256)
            );
            if !fleet {
                tracing::error!(target: "host::update", "[{device}] refused an update: {reason}");
                self.status.refused(version, &sha256, reason);
            }
            return true;
        }
        if sha256 == self.status.running_sha256() {
            let known = self
                .floor
                .record()
                .is_some_and(|r| r.sha256 == sha256 && r.version >= version);
            if fleet && known {
                return true;
            }
            self.floor
                .accept(Accepted {
                    version,
                    sha256: &sha256,
                    kept: Some((Repository::Files(&files), &verified.wasm)),
                })
                .await;
            tracing::info!(target: "host::update", "[{device}] update version {version} on {topic} is the logic running (sha256 {}): it goes on, as version {version}", short(&sha256));
            self.status.same(version, &sha256);
            return true;
        }
        let wasm = verified.wasm;
        match self.builder.build_shared(wasm.clone(), Some(version)).await {
            Ok((logic, how)) => {
                let how = match how {
                    Some((how, millis)) => format!("{how} in {millis} ms"),
                    None => "built for another device already".into(),
                };
                // Kept before it is announced: a kill from here on restarts
                // the device on it.
                self.floor
                    .accept(Accepted {
                        version,
                        sha256: &sha256,
                        kept: Some((Repository::Files(&files), &wasm)),
                    })
                    .await;
                tracing::info!(
                    target: "host::update",
                    "[{device}] update {logic} accepted ({how}; {} metadata files held for {topic}); it takes over at the next iteration",
                    files.len()
                );
                self.status.accepted(version, &sha256, &logic.to_string());
                let _ = self.swaps.send(Some(logic));
            }
            Err(e) => {
                let reason =
                    format!("{e:#} (fix the logic and publish a new version)").replace('\n', " ");
                tracing::error!(target: "host::update", "[{device}] refused update version {version}: {reason}; the running logic goes on");
                self.status.refused(version, &sha256, reason);
            }
        }
        true
    }
}

/// The first 12 hex digits of a SHA-256 (or "unknown").
fn short(sha256: &str) -> &str {
    if sha256.is_empty() {
        "unknown"
    } else {
        &sha256[..12.min(sha256.len())]
    }
}
