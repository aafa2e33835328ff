//! Publishing signed logic to devices over the broker, and a fleet rollout
//! driven by their statuses with the canary policy of
//! [`host_core::canary`].

use std::collections::HashMap;
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
    pub async fn subscribe(&self, topic: &str) -> Result<(), PublishError> {
        self.subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(topic.to_string());
        self.client
            .subscribe(topic, QoS::AtLeastOnce)
            .await
            .map_err(PublishError::Client)
    }

    /// The next message of a subscription, or `None` after `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<(String, Vec<u8>)> {
        tokio::time::timeout(wait, self.messages.recv())
            .await
            .ok()
            .flatten()
    }
}

/// Publishes `repo` to the devices with update topics `topics`: the
/// components once, then each device's metadata (timestamp last).
pub async fn offer(
    publisher: &mut Publisher,
    repo: &Repository,
    topics: &[String],
) -> Result<(), PublishError> {
    publisher.publish(&repo.targets).await?;
    for topic in topics {
        publisher.publish(&repo.metadata_for(topic)).await?;
    }
    publisher.flush().await
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
    /// The time ran out; these devices had not reported an outcome.
    TimedOut(Vec<String>),
}

/// A fleet rollout: which devices, their update topics, the policy.
pub struct RolloutPlan {
    /// The devices' client ids, canaries first.
    pub devices: Vec<String>,
    /// Each device's update topic, by client id.
    pub topics: HashMap<String, String>,
    /// Canaries.
    pub canaries: usize,
    /// Iterations each canary must complete on the update.
    pub promote_after: u64,
    /// Longest the whole rollout may take.
    pub timeout: Duration,
}

/// Rolls `repo` (whose component has SHA-256 `sha256` and is `version`)
/// out per `plan`.
pub async fn roll_out(
    publisher: &mut Publisher,
    repo: &Repository,
    (sha256, version): (&str, u64),
    plan: &RolloutPlan,
) -> Result<Ended, PublishError> {
    let mut rollout = CanaryPolicy::new(plan.devices.clone(), plan.canaries, plan.promote_after);
    let mut device_of = HashMap::new();
    // Old statuses would read as reports about this update: clear them.
    for device in &plan.devices {
        let status = status_topic(&plan.topics[device]);
        publisher.clear(&status).await?;
        device_of.insert(status.clone(), device.clone());
    }
    publisher.flush().await?;
    for status in device_of.keys() {
        publisher.subscribe(status).await?;
    }
    let canaries: Vec<String> = rollout
        .canaries()
        .iter()
        .map(|d| plan.topics[d].clone())
        .collect();
    tracing::info!(target: "host::rollout", "offering sha256 {} to {} canar{}", &sha256[..12], canaries.len(), if canaries.len() == 1 { "y" } else { "ies" });
    offer(publisher, repo, &canaries).await?;
    let deadline = Instant::now() + plan.timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some((topic, payload)) = publisher.next(left).await else {
            return Ok(Ended::TimedOut(rollout.waiting_for()));
        };
        let (Some(device), Ok(status)) = (
            device_of.get(&topic),
            serde_json::from_slice::<Status>(&payload),
        ) else {
            continue;
        };
        // A status of another update (but a refusal may not know which).
        let ours = status.sha256 == sha256 && status.version == version;
        let unknown_refusal = status.state == "refused" && status.sha256.is_empty();
        if !(ours || unknown_refusal) {
            continue;
        }
        let report = match status.state.as_str() {
            "accepted" => Report::Accepted,
            "running" => Report::Running(status.iterations),
            "refused" => Report::Refused(status.reason),
            "rolled-back" => Report::RolledBack(status.reason),
            _ => continue,
        };
        match &report {
            Report::Running(n) => {
                tracing::info!(target: "host::rollout", "{device}: running, {n} iteration(s)")
            }
            Report::Refused(why) | Report::RolledBack(why) => {
                tracing::warn!(target: "host::rollout", "{device}: {}: {why}", status.state)
            }
            Report::Accepted => tracing::info!(target: "host::rollout", "{device}: accepted"),
        }
        match rollout.on_report(device, report) {
            Step::Wait => {}
            Step::Promote(rest) => {
                tracing::info!(target: "host::rollout", "canaries passed: offering to the {} other devices", rest.len());
                let topics: Vec<String> = rest.iter().map(|d| plan.topics[d].clone()).collect();
                offer(publisher, repo, &topics).await?;
            }
            Step::Done(summary) => return Ok(Ended::Done(summary)),
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
