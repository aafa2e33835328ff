//! Where a logic repository lives on the broker, and publishing it there.
//!
//! - `UPDATE/metadata/FILE/I`: the repository's metadata files (root,
//!   targets, snapshot, timestamp), retained, for the device whose update
//!   topic is `UPDATE` (by default `<client-id>/logic`);
//! - `TARGETS/FILE/I`: components, named by their SHA-256
//!   (`HASH.logic.wasm`), retained, shared by every device that uses the
//!   same targets topic (by default `logic/targets`): the broker keeps one
//!   copy, a host's one session receives it once for all its devices;
//! - `UPDATE/status`: what the device did with it (retained JSON).
//!
//! Every file travels in chunks ([`crate::update::chunks`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::update::chunks;

/// The default update topic of a device.
pub fn update_topic(client_id: &str) -> String {
    format!("{client_id}/logic")
}

/// The update topic of the device `client_id` (`index` in a fleet, from
/// 1): the topic `given` (`TOPIC/000i` in a fleet), else the default.
pub fn device_topic(given: Option<&str>, client_id: &str, index: Option<usize>) -> String {
    match (given, index) {
        (Some(topic), None) => topic.to_string(),
        (Some(topic), Some(i)) => format!("{topic}/{i:04}"),
        (None, _) => update_topic(client_id),
    }
}

/// The fleet's update topic, which every device of the fleet `prefix`
/// reads besides its own: `TOPIC/fleet` when an update topic is `given`,
/// else `PREFIX/logic`. A rollout publishes there last, so a device that
/// joins later gets the update the fleet runs.
pub fn fleet_topic(given: Option<&str>, prefix: &str) -> String {
    match given {
        Some(topic) => format!("{topic}/fleet"),
        None => update_topic(prefix),
    }
}

/// The default shared targets topic.
pub const TARGETS_TOPIC: &str = "logic/targets";

/// The status topic under an update topic.
pub fn status_topic(update: &str) -> String {
    format!("{update}/status")
}

/// One message to publish, retained.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// What publishing a repository takes.
#[derive(Debug, Clone, Default)]
pub struct Repository {
    /// The components' chunks (publish first; shared by all devices).
    pub targets: Vec<Message>,
    /// The metadata chunks for one device, timestamp last, in the order to
    /// publish them; `{update}` stands for the device's update topic.
    pub metadata: Vec<(String, Vec<u8>)>,
    /// Bytes of the component.
    pub component_bytes: usize,
    /// Its offer's name in statuses ([`offer_id`] of its timestamp).
    pub offer_id: String,
}

impl Repository {
    /// The messages of the metadata for the device with update topic
    /// `update`.
    pub fn metadata_for(&self, update: &str) -> Vec<Message> {
        self.metadata
            .iter()
            .map(|(suffix, payload)| Message {
                topic: format!("{update}/{suffix}"),
                payload: payload.clone(),
            })
            .collect()
    }

    /// Bytes one device receives: the component and its metadata, with
    /// chunk headers (MQTT framing aside).
    pub fn wire_bytes(&self) -> usize {
        self.targets.iter().map(|m| m.payload.len()).sum::<usize>()
            + self.metadata.iter().map(|(_, p)| p.len()).sum::<usize>()
    }
}

/// Reads a repository that `host sign` wrote into messages: targets under
/// `targets_topic`, metadata per device, each chunk at most `limit` bytes.
pub fn read(repo: &Path, targets_topic: &str, limit: usize) -> std::io::Result<Repository> {
    let mut out = Repository::default();
    let invalid = |e: chunks::ChunkError| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    for entry in std::fs::read_dir(repo.join("targets"))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let bytes = std::fs::read(entry.path())?;
        out.component_bytes += bytes.len();
        for (i, chunk) in chunks::split(&bytes, limit)
            .map_err(invalid)?
            .into_iter()
            .enumerate()
        {
            out.targets.push(Message {
                topic: format!("{targets_topic}/{name}/{i}"),
                payload: chunk,
            });
        }
    }
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(repo.join("metadata"))?
        .flatten()
        .map(|e| {
            Ok((
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path())?,
            ))
        })
        .collect::<std::io::Result<_>>()?;
    // The timestamp last: it is what tells a device a whole update is there.
    files.sort_by_key(|(name, _)| (name == "timestamp.json", name.clone()));
    if let Some((_, timestamp)) = files.iter().find(|(n, _)| n == "timestamp.json") {
        out.offer_id = offer_id(timestamp);
    }
    for (name, bytes) in files {
        for (i, chunk) in chunks::split(&bytes, limit)
            .map_err(invalid)?
            .into_iter()
            .enumerate()
        {
            out.metadata.push((format!("metadata/{name}/{i}"), chunk));
        }
    }
    Ok(out)
}

/// A device's update status, as published (retained JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The device's client id.
    pub device: String,
    /// The version this status is about (the one offered, or the one
    /// running; the version a refused update's metadata claims when it
    /// could not be verified).
    pub version: u64,
    /// That logic's SHA-256, hex (as claimed, for a refusal before
    /// verification; empty only when nothing could be read).
    pub sha256: String,
    /// `accepted`, `refused`, `running` or `rolled-back`.
    pub state: String,
    /// Iterations completed on it since it took over.
    pub iterations: u64,
    /// Why it was refused or rolled back, with the fix; empty otherwise.
    pub reason: String,
    /// The longest an iteration may run on the device, milliseconds: its
    /// `--iteration-timeout-ms`, else the host's maximum (0: no limit). A
    /// rollout waits at least this long to see a canary stop.
    #[serde(default)]
    pub iteration_timeout_ms: u64,
    /// The delay between the device's iterations, milliseconds.
    #[serde(default)]
    pub iteration_delay_ms: u64,
    /// The offer this status answers ([`offer_id`]; empty for none).
    #[serde(default)]
    pub offer: String,
    /// The last update offered to the device and its answer, kept in every
    /// later status (a `running` report does not hide a refusal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_offer: Option<Offer>,
}

/// An update offered to a device and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// Its version (as claimed when it could not be verified).
    pub version: u64,
    /// Its SHA-256, hex (as claimed when it could not be verified).
    pub sha256: String,
    /// `accepted`, `refused`, `running` (the same logic, already running)
    /// or `rolled-back`.
    pub state: String,
    /// Why it was refused or rolled back, with the fix; empty otherwise.
    pub reason: String,
    /// Which offer ([`offer_id`]).
    #[serde(default)]
    pub offer: String,
}

/// An offer's name in statuses: the first 16 hex digits of the SHA-256 of
/// its `timestamp.json` (a new signing of the same logic and version is a
/// new offer).
pub fn offer_id(timestamp: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(timestamp)[..8])
}

impl Status {
    /// What this status says about the offer `offer` ([`offer_id`]) of
    /// `version` with `sha256`: its state and reason, from the status itself
    /// or from its last offer; `None` when it is about another logic or
    /// another offer. A device running that logic answers any offer of it;
    /// an acceptance, refusal or rollback counts for this offer only.
    pub fn about(&self, offer: &str, version: u64, sha256: &str) -> Option<(&str, &str, u64)> {
        let same = self.version == version && self.sha256 == sha256;
        if same && (self.state == "running" || self.offer == offer) {
            return Some((&self.state, &self.reason, self.iterations));
        }
        let last = self.last_offer.as_ref()?;
        (last.version == version
            && last.sha256 == sha256
            && last.offer == offer
            && last.state != "accepted")
            .then_some((&last.state, &last.reason, 0))
    }
}
