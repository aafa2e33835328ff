//! Publishing signed logic to devices over the broker, and a fleet rollout
//! driven by their statuses with the canary policy of
//! [`host_core::canary`].

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use host_core::canary::{CanaryPolicy, Report, Step, Summary};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::{Notify, mpsc};

use crate::tls::Endpoint;
use crate::tls::TlsClient;
use crate::update::chunks::HEADER;
use crate::update::wire::{Message, Repository, Status, status_topic};

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker did not accept the session in time.
    #[error("cannot connect to the broker {0} within 10 s")]
    Connect(String),
    /// The broker did not acknowledge in time.
    #[error("the broker did not acknowledge the update's messages within 60 s")]
    Unacknowledged,
    /// The broker did not answer a subscription in time.
    #[error("the broker did not acknowledge a subscription within 30 s")]
    Unsubscribed,
    /// The client failed.
    #[error("the MQTT client failed")]
    Client(#[source] rumqttc::ClientError),
}

/// An MQTT session that publishes retained messages, waits until the broker
/// has acknowledged them all, and collects the messages of its
/// subscriptions.
pub struct Publisher {
    client: AsyncClient,
    /// Topics subscribed to, renewed after a reconnect.
    subscriptions: Arc<std::sync::Mutex<Vec<String>>>,
    published: u64,
    acked: Arc<AtomicU64>,
    progress: Arc<Notify>,
    messages: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    /// Messages taken while looking for others, returned first.
    backlog: std::collections::VecDeque<(String, Vec<u8>)>,
    /// SUBACKs received.
    subacked: Arc<AtomicU64>,
    /// SUBSCRIBEs sent.
    subscribed: u64,
}

impl Publisher {
    /// Connects to `broker` with the host's TLS client as `client_id`.
    pub async fn connect(
        broker: &Endpoint,
        tls: &TlsClient,
        client_id: &str,
        payload_limit: usize,
    ) -> Result<Self, PublishError> {
        let mut opts = MqttOptions::new(client_id, broker.host.clone(), broker.port);
        opts.set_keep_alive(Duration::from_secs(30));
        let packet = payload_limit + HEADER + 4096;
        opts.set_max_packet_size(packet, packet);
        opts.set_request_channel_capacity(100_000);
        opts.set_inflight(256);
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls.client_config(),
        )));
        let (client, mut events) = AsyncClient::new(opts, 100_000);
        let acked = Arc::new(AtomicU64::new(0));
        let progress = Arc::new(Notify::new());
        let (tx, messages) = mpsc::unbounded_channel();
        let (connected_tx, connected) = tokio::sync::oneshot::channel();
        let (a, p) = (acked.clone(), progress.clone());
        let subacked = Arc::new(AtomicU64::new(0));
        let sa = subacked.clone();
        let subscriptions: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let (subs, renew) = (subscriptions.clone(), client.clone());
        tokio::spawn(async move {
            let mut connected_tx = Some(connected_tx);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(c) = connected_tx.take() {
                            let _ = c.send(());
                        }
                        let topics = subs.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        for topic in topics {
                            let _ = renew.try_subscribe(topic, QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        sa.fetch_add(1, Ordering::Relaxed);
                        p.notify_waiters();
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, Ordering::Relaxed);
                        p.notify_waiters();
                    }
                    Ok(Event::Incoming(Packet::Publish(m))) => {
                        if tx.send((m.topic, m.payload.to_vec())).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), connected)
            .await
            .map_err(|_| PublishError::Connect(format!("{}:{}", broker.host, broker.port)))?
            .map_err(|_| PublishError::Connect(format!("{}:{}", broker.host, broker.port)))?;
        Ok(Self {
            client,
            subscriptions,
            published: 0,
            acked,
            progress,
            messages,
            backlog: Default::default(),
            subacked,
            subscribed: 0,
        })
    }

    /// Publishes `messages`, retained, at QoS 1.
    pub async fn publish(&mut self, messages: &[Message]) -> Result<(), PublishError> {
        for m in messages {
            self.client
                .publish(m.topic.clone(), QoS::AtLeastOnce, true, m.payload.clone())
                .await
                .map_err(PublishError::Client)?;
            self.published += 1;
        }
        Ok(())
    }

    /// Deletes the retained message of `topic`.
    pub async fn clear(&mut self, topic: &str) -> Result<(), PublishError> {
        self.publish(&[Message {
            topic: topic.to_string(),
            payload: Vec::new(),
        }])
        .await
    }

    /// Waits until the broker has acknowledged everything published.
    pub async fn flush(&self) -> Result<(), PublishError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.acked.load(Ordering::Relaxed) < self.published {
            let wait = self.progress.notified();
            if self.acked.load(Ordering::Relaxed) >= self.published {
                break;
            }
            if tokio::time::timeout_at(deadline, wait).await.is_err() {
                return Err(PublishError::Unacknowledged);
            }
        }
        Ok(())
    }

    /// Subscribes to `topic` at QoS 1.
    pub async fn subscribe(&mut self, topic: &str) -> Result<(), PublishError> {
        self.subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(topic.to_string());
        self.subscribed += 1;
        self.client
            .subscribe(topic, QoS::AtLeastOnce)
            .await
            .map_err(PublishError::Client)
    }

    /// The next message of a subscription, or `None` after `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<(String, Vec<u8>)> {
        if let Some(m) = self.backlog.pop_front() {
            return Some(m);
        }
        tokio::time::timeout(wait, self.messages.recv())
            .await
            .ok()
            .flatten()
    }

    /// The retained messages under the filter `filter` now, as the broker
    /// sends them on subscribing (taken until none came for a moment);
    /// other messages wait for [`Publisher::next`].
    pub async fn retained(
        &mut self,
        filters: &[String],
    ) -> Result<Vec<(String, Vec<u8>)>, PublishError> {
        if filters.is_empty() {
            return Ok(Vec::new());
        }
        // Every subscription sent so far answered, these last.
        self.subscribed += filters.len().div_ceil(100) as u64;
        let subacked = self.subscribed;
        for batch in filters.chunks(100) {
            self.client
                .subscribe_many(
                    batch
                        .iter()
                        .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce)),
                )
                .await
                .map_err(PublishError::Client)?;
        }
        // The broker sends the retained messages right after its SUBACK.
        let acked = tokio::time::Instant::now() + RETAINED_WAIT;
        while self.subacked.load(Ordering::Relaxed) < subacked {
            let wait = self.progress.notified();
            if self.subacked.load(Ordering::Relaxed) >= subacked {
                break;
            }
            if tokio::time::timeout_at(acked, wait).await.is_err() {
                return Err(PublishError::Unsubscribed);
            }
        }
        let mut found = Vec::new();
        let started = Instant::now();
        // Until none came for a moment (other messages do not count).
        let mut until = started + RETAINED_QUIET;
        loop {
            let left = until.min(started + RETAINED_WAIT);
            let Ok(Some((topic, payload))) =
                tokio::time::timeout_at(left.into(), self.messages.recv()).await
            else {
                break;
            };
            if filters.iter().any(|f| matches_filter(f, &topic)) {
                found.push((topic, payload));
                until = Instant::now() + RETAINED_QUIET;
            } else {
                self.backlog.push_back((topic, payload));
            }
        }
        for filter in filters {
            self.client
                .unsubscribe(filter)
                .await
                .map_err(PublishError::Client)?;
        }
        Ok(found)
    }
}

/// How long to wait, after the SUBACK, for the next retained message of a
/// subscription, and for all of them.
const RETAINED_QUIET: Duration = Duration::from_millis(300);
const RETAINED_WAIT: Duration = Duration::from_secs(30);

/// Whether the MQTT filter `filter` (`+`, a final `#`) matches `topic`.
pub fn matches_filter(filter: &str, topic: &str) -> bool {
    let (mut f, mut t) = (filter.split('/'), topic.split('/'));
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Publishes `repo` to the devices with update topics `topics`: the
/// components once, then each device's metadata (timestamp last), then
/// deletes what the new metadata supersedes under those topics (earlier
/// versions' files, and anything else retained there), so the broker holds
/// exactly the files a device needs. Returns the components the
/// superseded metadata named.
pub async fn offer(
    publisher: &mut Publisher,
    repo: &Repository,
    topics: &[String],
) -> Result<BTreeSet<String>, PublishError> {
    let filters: Vec<String> = topics.iter().map(|t| format!("{t}/metadata/#")).collect();
    let before = publisher.retained(&filters).await?;
    publisher.publish(&repo.targets).await?;
    let mut now = BTreeSet::new();
    for topic in topics {
        let messages = repo.metadata_for(topic);
        now.extend(messages.iter().map(|m| m.topic.clone()));
        publisher.publish(&messages).await?;
    }
    let mut superseded = BTreeSet::new();
    for (topic, payload) in before {
        if now.contains(&topic) || payload.is_empty() {
            continue;
        }
        if let Some(name) = named_component(&topic, &payload) {
            superseded.insert(name);
        }
        publisher.clear(&topic).await?;
    }
    publisher.flush().await?;
    Ok(superseded)
}

/// The component a retained targets metadata chunk names
/// (`SHA256.logic.wasm`), when it is a whole file in one chunk.
fn named_component(topic: &str, chunk: &[u8]) -> Option<String> {
    topic.contains(".targets.json/").then_some(())?;
    let json: serde_json::Value = serde_json::from_slice(chunk.get(HEADER..)?).ok()?;
    let sha = json["signed"]["targets"][crate::update::repository::TARGET]["hashes"]["sha256"]
        .as_str()?;
    Some(format!("{sha}.{}", crate::update::repository::TARGET))
}

/// Deletes the retained chunks of the components `names` under
/// `targets_topic`, except `keep` (the one just published).
pub async fn clear_components(
    publisher: &mut Publisher,
    targets_topic: &str,
    names: &BTreeSet<String>,
    keep: &str,
) -> Result<usize, PublishError> {
    let mut cleared = 0;
    let filters: Vec<String> = names
        .iter()
        .filter(|n| n.as_str() != keep)
        .map(|name| format!("{targets_topic}/{name}/+"))
        .collect();
    for (topic, payload) in publisher.retained(&filters).await? {
        if !payload.is_empty() {
            publisher.clear(&topic).await?;
            cleared += 1;
        }
    }
    publisher.flush().await?;
    Ok(cleared)
}

/// How a rollout ended.
#[derive(Debug)]
pub enum Ended {
    /// Every device offered the update reported an outcome.
    Done(Summary),
    /// A canary refused the update or rolled it back.
    Stopped {
        /// The canary.
        device: String,
        /// What it reported.
        report: Report,
        /// The outcome so far.
        summary: Summary,
    },
    /// The time ran out.
    TimedOut {
        /// Devices offered the update that sent no answer about it.
        silent: Vec<String>,
        /// Devices that accepted it but had not completed their iterations.
        slow: Vec<String>,
        /// The window that ran out.
        window: Duration,
    },
    /// Nothing was published: the rollout could not see a canary finish.
    NotStarted(String),
}

/// A fleet rollout: which devices, their update topics, the policy.
pub struct RolloutPlan {
    /// The devices' client ids, canaries first.
    pub devices: Vec<String>,
    /// Each device's update topic, by client id.
    pub topics: HashMap<String, String>,
    /// The fleet's update topic, published to once every device has it.
    pub fleet_topic: Option<String>,
    /// Where components go.
    pub targets_topic: String,
    /// Canaries.
    pub canaries: usize,
    /// Iterations each canary must complete on the update.
    pub promote_after: u64,
    /// Longest the whole rollout may take; `None`: derived from the
    /// canaries' iteration timeout.
    pub timeout: Option<Duration>,
}

/// Longest an offered device may take to answer (accepted or refused).
pub const ANSWER_WAIT: Duration = Duration::from_secs(120);

/// The window that lets a rollout see canaries whose iterations may take
/// `iteration_timeout` finish `promote_after` of them (or be stopped), for
/// the canaries and then the rest.
pub fn derived_window(iteration_timeout: Duration, promote_after: u64) -> Duration {
    let stage = iteration_timeout
        .saturating_mul(u32::try_from(promote_after + 1).unwrap_or(u32::MAX))
        + Duration::from_secs(60);
    stage.saturating_mul(2)
}

/// The rollout's window: the one given, or derived from the canaries'
/// statuses; why the rollout cannot start otherwise.
fn window(
    plan: &RolloutPlan,
    statuses: &HashMap<String, Status>,
    canaries: &[String],
) -> Result<Duration, String> {
    let mut longest = Duration::ZERO;
    for canary in canaries {
        let topic = status_topic(&plan.topics[canary]);
        let Some(status) = statuses.get(canary) else {
            return Err(format!(
                "no status from canary {canary} on {topic}: check that it runs (host run with --trust) and follows this fleet's update topics (--fleet, --update-topic); nothing was published"
            ));
        };
        if status.iteration_timeout_ms == 0 && plan.timeout.is_none() {
            return Err(format!(
                "canary {canary} runs with no iteration timeout (--iteration-timeout-ms 0), so a hanging update would never be seen to stop: give --timeout-secs; nothing was published"
            ));
        }
        longest = longest.max(Duration::from_millis(
            status.iteration_timeout_ms + status.iteration_delay_ms,
        ));
    }
    match plan.timeout {
        None => Ok(derived_window(longest, plan.promote_after)),
        Some(given) if given >= longest + Duration::from_secs(30) => Ok(given),
        Some(given) => Err(format!(
            "--timeout-secs {} is shorter than the canaries' iteration timeout and delay ({} s) and 30 s more, so a canary that hangs would not be seen to stop: leave --timeout-secs out (then {} s) or give at least {}; nothing was published",
            given.as_secs(),
            longest.as_secs(),
            derived_window(longest, plan.promote_after).as_secs(),
            longest.as_secs() + 30
        )),
    }
}

/// Rolls `repo` (whose component has SHA-256 `sha256` and is `version`)
/// out per `plan`. Statuses already on the broker are read, never cleared:
/// only what a device says about this update counts.
pub async fn roll_out(
    publisher: &mut Publisher,
    repo: &Repository,
    (sha256, version): (&str, u64),
    plan: &RolloutPlan,
) -> Result<Ended, PublishError> {
    let mut rollout = CanaryPolicy::new(plan.devices.clone(), plan.canaries, plan.promote_after);
    let device_of: HashMap<String, String> = plan
        .devices
        .iter()
        .map(|d| (status_topic(&plan.topics[d]), d.clone()))
        .collect();
    for status in device_of.keys() {
        publisher.subscribe(status).await?;
    }
    let canaries: Vec<String> = rollout.canaries().to_vec();
    // The statuses the broker keeps: the canaries' iteration timeouts.
    let mut latest: HashMap<String, Status> = HashMap::new();
    // Each device's last status message, to read again once it is offered
    // the update (a re-run finds devices that run it already).
    let mut raw: HashMap<String, (String, Vec<u8>)> = HashMap::new();
    let waited = Instant::now() + Duration::from_secs(3);
    while !canaries.iter().all(|c| latest.contains_key(c)) {
        let left = waited.saturating_duration_since(Instant::now());
        let Some((topic, payload)) = publisher.next(left).await else {
            break;
        };
        if let (Some(device), Ok(status)) = (
            device_of.get(&topic),
            serde_json::from_slice::<Status>(&payload),
        ) {
            latest.insert(device.clone(), status);
            raw.insert(device.clone(), (topic, payload));
        }
    }
    let window = match window(plan, &latest, &canaries) {
        Ok(w) => w,
        Err(why) => return Ok(Ended::NotStarted(why)),
    };
    tracing::info!(target: "host::rollout", "offering sha256 {} to {} canar{} (window {} s)", &sha256[..12], canaries.len(), if canaries.len() == 1 { "y" } else { "ies" }, window.as_secs());
    let topics = |devices: &[String]| -> Vec<String> {
        devices.iter().map(|d| plan.topics[d].clone()).collect()
    };
    let mut superseded = offer(publisher, repo, &topics(&canaries)).await?;
    let mut offered_at: HashMap<String, Instant> = canaries
        .iter()
        .map(|c| (c.clone(), Instant::now()))
        .collect();
    let mut answered: std::collections::HashSet<String> = Default::default();
    let deadline = Instant::now() + window;
    let mut pending: std::collections::VecDeque<(String, Vec<u8>)> = canaries
        .iter()
        .filter_map(|c| raw.get(c).cloned())
        .collect();
    loop {
        // Devices offered the update that have not answered in time.
        let answer_by = offered_at
            .iter()
            .filter(|(d, _)| !answered.contains(*d))
            .map(|(_, t)| *t + ANSWER_WAIT)
            .min();
        let until = answer_by.map_or(deadline, |a| a.min(deadline));
        let left = until.saturating_duration_since(Instant::now());
        let next = match pending.pop_front() {
            Some(m) => Some(m),
            None => publisher.next(left).await,
        };
        let Some((topic, payload)) = next else {
            let waiting = rollout.waiting_for();
            let (slow, silent) = waiting.into_iter().partition(|d| answered.contains(d));
            return Ok(Ended::TimedOut {
                silent,
                slow,
                window: if Instant::now() >= deadline {
                    window
                } else {
                    ANSWER_WAIT
                },
            });
        };
        let (Some(device), Ok(status)) = (
            device_of.get(&topic),
            serde_json::from_slice::<Status>(&payload),
        ) else {
            continue;
        };
        raw.insert(device.clone(), (topic, payload));
        let Some((state, reason, iterations)) = status.about(&repo.offer_id, version, sha256)
        else {
            continue;
        };
        answered.insert(device.clone());
        let report = match state {
            "accepted" => Report::Accepted,
            "running" => Report::Running(iterations),
            "refused" => Report::Refused(reason.to_string()),
            "rolled-back" => Report::RolledBack(reason.to_string()),
            _ => continue,
        };
        match &report {
            Report::Running(n) => {
                tracing::info!(target: "host::rollout", "{device}: running, {n} iteration(s)")
            }
            Report::Refused(why) | Report::RolledBack(why) => {
                tracing::warn!(target: "host::rollout", "{device}: {state}: {why}")
            }
            Report::Accepted => tracing::info!(target: "host::rollout", "{device}: accepted"),
        }
        match rollout.on_report(device, report) {
            Step::Wait => {}
            Step::Promote(rest) => {
                tracing::info!(target: "host::rollout", "canaries passed: offering to the {} other devices", rest.len());
                superseded.extend(offer(publisher, repo, &topics(&rest)).await?);
                for d in &rest {
                    offered_at.insert(d.clone(), Instant::now());
                }
                // Their statuses so far are read again now that they are
                // offered it.
                pending.extend(rest.iter().filter_map(|d| raw.get(d).cloned()));
            }
            Step::Done(summary) => {
                if summary.failed == 0 {
                    finish(publisher, repo, plan, sha256, &superseded).await?;
                }
                return Ok(Ended::Done(summary));
            }
            Step::Stop {
                device,
                report,
                summary,
            } => {
                return Ok(Ended::Stopped {
                    device,
                    report,
                    summary,
                });
            }
        }
    }
}

/// Once every device runs the update: the fleet's topic gets it (for
/// devices that join later) and the components it supersedes are deleted.
async fn finish(
    publisher: &mut Publisher,
    repo: &Repository,
    plan: &RolloutPlan,
    sha256: &str,
    superseded: &BTreeSet<String>,
) -> Result<(), PublishError> {
    let mut superseded = superseded.clone();
    if let Some(fleet) = &plan.fleet_topic {
        superseded.extend(offer(publisher, repo, std::slice::from_ref(fleet)).await?);
        tracing::info!(target: "host::rollout", "published to the fleet's topic {fleet}: devices that join later get it");
    }
    let keep = format!("{sha256}.{}", crate::update::repository::TARGET);
    let cleared = clear_components(publisher, &plan.targets_topic, &superseded, &keep).await?;
    if cleared > 0 {
        tracing::info!(target: "host::rollout", "deleted {cleared} retained chunk(s) of {} superseded component(s)", superseded.len().saturating_sub(usize::from(superseded.contains(&keep))));
    }
    Ok(())
}
