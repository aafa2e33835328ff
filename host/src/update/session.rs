//! The host's update session (`--trust`): one MQTT channel for all its
//! devices, the keys they trust, and for each device its update topic, its
//! version floor and its update task.

use std::sync::Arc;

use crate::sandbox::build::Builder;
use crate::sandbox::{Logic, SwapSender};
use crate::update::channel::Channel;
use crate::update::floor::{Floor, KeptStore};
use crate::update::trust::Trust;
use crate::update::updater::{StatusReporter, Updater};
use crate::update::wire;

/// The host's update session.
#[derive(Clone)]
pub struct UpdateSession {
    /// The host's MQTT session for updates.
    pub channel: Channel,
    /// The keys and rules updates must satisfy.
    pub trust: Trust,
    /// The update topic given (`--update-topic`), if any.
    pub topic: Option<String>,
    /// Where devices keep their floor and accepted logic, if anywhere.
    pub kept: Option<Arc<KeptStore>>,
    /// The fleet's client id prefix, when the host runs a fleet: its
    /// devices also read the fleet's update topic.
    pub fleet: Option<String>,
    /// The longest an iteration may run on these devices, milliseconds (0:
    /// no limit), as their statuses report it.
    pub iteration_timeout_ms: u64,
    /// The delay between their iterations, milliseconds.
    pub iteration_delay_ms: u64,
}

/// One device's part of the session, before its task starts.
pub struct Follow {
    channel: Channel,
    device: String,
    topic: String,
    fleet_topic: Option<String>,
    trust: Trust,
    /// The device's update status, also an observer of the device (to see
    /// an update take over, run, or be rolled back).
    pub status: Arc<StatusReporter>,
}

impl UpdateSession {
    /// The update topic of the device `client_id` (`index` in a fleet).
    pub fn topic_for(&self, client_id: &str, index: Option<usize>) -> String {
        wire::device_topic(self.topic.as_deref(), client_id, index)
    }

    /// The version floor of the device `client_id`, which starts on version
    /// `start`.
    pub fn floor(&self, client_id: &str, start: u64) -> Arc<Floor> {
        Arc::new(Floor::new(start, client_id, self.kept.clone()))
    }

    /// The part of the session of device `client_id` (`index` in a fleet).
    pub fn device(&self, client_id: &str, index: Option<usize>) -> Follow {
        let topic = self.topic_for(client_id, index);
        if index.is_none() {
            tracing::info!(target: "host", "[{client_id}] following updates on {topic}");
        }
        let fleet_topic = self
            .fleet
            .as_deref()
            .filter(|_| index.is_some())
            .map(|prefix| wire::fleet_topic(self.topic.as_deref(), prefix));
        Follow {
            status: StatusReporter::new(
                self.channel.clone(),
                client_id,
                &topic,
                (self.iteration_timeout_ms, self.iteration_delay_ms),
            ),
            channel: self.channel.clone(),
            device: client_id.to_string(),
            topic,
            fleet_topic,
            trust: self.trust.clone(),
        }
    }
}

impl Follow {
    /// Starts the device's update task: updates are built with `builder`
    /// and offered on `offer`; the device runs `running` now, and accepts
    /// no version below `floor`.
    pub fn start(self, builder: Builder, offer: SwapSender, running: &Logic, floor: Arc<Floor>) {
        self.status
            .started(running, floor.clone(), floor.last_offer());
        tokio::spawn(
            Updater {
                channel: self.channel,
                device: self.device,
                update_topic: self.topic,
                fleet_topic: self.fleet_topic,
                trust: self.trust,
                builder,
                swaps: offer,
                status: self.status,
                floor,
            }
            .run(),
        );
    }
}
