//! The host's own MQTT session for updates: the device logic never sees it.
//! One session per host process (rumqttc, over the host's mTLS
//! credentials), one subscription per device to its update topic's
//! metadata; components are fetched from the shared targets topic when a
//! verification asks for one, once for all the host's devices. Statuses go
//! out on each device's status topic. After a reconnect every subscription
//! is renewed, so retained updates published meanwhile arrive.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::{oneshot, watch};

use crate::tls::Endpoint;
use crate::tls::TlsClient;
use crate::update::chunks::{Assembler, HEADER};
use crate::update::verify::Targets;

/// Longest a component may take to arrive once asked for.
const FETCH_WAIT: Duration = Duration::from_secs(60);

/// Completed components kept for the host's other devices.
const KEEP_TARGETS: usize = 4;

/// Root metadata files a device keeps, at most (one per root rotation),
/// and the largest size of any metadata file, bytes: a repository has four
/// roles' files, each a few kilobytes.
const MAX_ROOTS: usize = 32;
const MAX_METADATA_BYTES: usize = 1 << 20;

/// Versions of the snapshot and targets metadata a device keeps: the
/// newest two (the one it runs and one arriving).
const KEEP_VERSIONS: usize = 2;

/// Notices given about one topic, at most.
const MAX_NOTICES: usize = 16;

/// Partial metadata files of one device, bytes at most, all together.
const MAX_PARTIAL_METADATA: usize = 4 * MAX_METADATA_BYTES;

/// The host's update session.
#[derive(Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Channel { .. }")
    }
}

struct Inner {
    client: AsyncClient,
    targets_topic: String,
    routes: Mutex<Routes>,
    clear_command: String,
    partial_ttl: Duration,
}

#[derive(Default)]
struct Routes {
    /// Every subscription, to renew after a reconnect.
    subscriptions: BTreeSet<String>,
    devices: HashMap<String, DeviceRoute>,
    targets: Assembler,
    /// Completed components, newest last.
    target_files: VecDeque<(String, Bytes)>,
    waiters: HashMap<String, Vec<oneshot::Sender<Bytes>>>,
}

struct DeviceRoute {
    assembler: Assembler,
    files: HashMap<String, Bytes>,
    changed: watch::Sender<u64>,
    /// What was wrong with the topic's retained messages (unparseable
    /// files, a limit reached), each line naming the topic and the fix, not
    /// yet reported.
    notices: Vec<String>,
    /// Chunk topics already reported, so a notice is given once.
    noticed: BTreeSet<String>,
}

/// How the session is made.
pub struct ChannelConfig {
    /// The broker.
    pub broker: Endpoint,
    /// The host's TLS client (its credentials).
    pub tls: TlsClient,
    /// The session's client id.
    pub client_id: String,
    /// The shared targets topic.
    pub targets_topic: String,
    /// Largest payload, bytes (a chunk and its header).
    pub payload_limit: usize,
    /// The start of a command that deletes a retained message with the
    /// host's credentials (the topic follows), for the notices.
    pub clear_command: String,
    /// Largest component, bytes.
    pub max_component: usize,
    /// How long a file in progress waits for its next chunk.
    pub partial_ttl: Duration,
}

impl Channel {
    /// Connects (and keeps reconnecting) in the background.
    pub fn start(config: ChannelConfig) -> Self {
        let mut opts = MqttOptions::new(config.client_id, config.broker.host, config.broker.port);
        opts.set_keep_alive(Duration::from_secs(30));
        // Larger retained messages than a chunk are dropped by rumqttc with
        // the connection: allow far more than a chunk, so a stray large
        // message on an update topic does not cut the session in a loop.
        let packet = (config.payload_limit + HEADER + 4096).max(4 << 20);
        opts.set_max_packet_size(packet, packet);
        opts.set_request_channel_capacity(100_000);
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            config.tls.client_config(),
        )));
        let (client, mut events) = AsyncClient::new(opts, 100_000);
        // A component in progress, and a few chunks of others.
        let targets = Assembler::new(
            config.max_component,
            config.max_component + 4 * config.payload_limit,
        )
        .with_ttl(config.partial_ttl);
        let inner = Arc::new(Inner {
            client,
            targets_topic: config.targets_topic,
            routes: Mutex::new(Routes {
                targets,
                ..Routes::default()
            }),
            clear_command: config.clear_command,
            partial_ttl: config.partial_ttl,
        });
        // Expiry on its own: the event loop's poll must not be interrupted.
        let expiring = Arc::downgrade(&inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(config.partial_ttl / 4);
            loop {
                tick.tick().await;
                let Some(inner) = expiring.upgrade() else {
                    return;
                };
                inner.expire();
            }
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            let mut warned = false;
            loop {
                let event = events.poll().await;
                let Some(inner) = weak.upgrade() else { return };
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        warned = false;
                        let topics: Vec<String> =
                            inner.routes().subscriptions.iter().cloned().collect();
                        for topic in topics {
                            let _ = inner.client.try_subscribe(topic, QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => inner.route(&p.topic, &p.payload),
                    Ok(_) => {}
                    Err(e) => {
                        if !warned {
                            tracing::warn!(target: "host::update", "update channel: {e}; reconnecting");
                            warned = true;
                        }
                        drop(inner);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Self { inner }
    }

    /// Follows the metadata under `update_topic`; the receiver changes when
    /// a file of it has been received whole.
    pub fn follow(&self, update_topic: &str) -> watch::Receiver<u64> {
        let topic = format!("{update_topic}/metadata/#");
        let rx = {
            let mut routes = self.inner.routes();
            // A fleet's topic is followed by each of its devices.
            if let Some(route) = routes.devices.get(update_topic) {
                return route.changed.subscribe();
            }
            let (changed, rx) = watch::channel(0);
            routes.devices.insert(
                update_topic.to_string(),
                DeviceRoute {
                    assembler: Assembler::new(MAX_METADATA_BYTES, MAX_PARTIAL_METADATA)
                        .with_ttl(self.inner.partial_ttl),
                    files: HashMap::new(),
                    changed,
                    notices: Vec::new(),
                    noticed: BTreeSet::new(),
                },
            );
            routes.subscriptions.insert(topic.clone());
            rx
        };
        let _ = self.inner.client.try_subscribe(topic, QoS::AtLeastOnce);
        rx
    }

    /// The metadata files received under `update_topic`, by name
    /// (`metadata/FILE`).
    pub fn metadata(&self, update_topic: &str) -> HashMap<String, Bytes> {
        self.inner
            .routes()
            .devices
            .get(update_topic)
            .map(|d| d.files.clone())
            .unwrap_or_default()
    }

    /// What was wrong with the retained messages under `update_topic`
    /// since last asked, a line each naming the topic and the fix.
    pub fn take_notices(&self, update_topic: &str) -> Vec<String> {
        self.inner
            .routes()
            .devices
            .get_mut(update_topic)
            .map(|d| std::mem::take(&mut d.notices))
            .unwrap_or_default()
    }

    /// Publishes `payload` retained on `topic` (a status), without waiting.
    pub fn publish_retained(&self, topic: String, payload: Vec<u8>) {
        if let Err(e) = self
            .inner
            .client
            .try_publish(topic, QoS::AtLeastOnce, true, payload)
        {
            tracing::warn!(target: "host::update", "cannot publish a status: {e}");
        }
    }
}

impl Inner {
    fn routes(&self) -> MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops files in progress whose chunks stopped coming.
    fn expire(&self) {
        let mut routes = self.routes();
        let now = std::time::Instant::now();
        let mut freed = routes.targets.expire(now);
        for device in routes.devices.values_mut() {
            freed += device.assembler.expire(now);
        }
        if freed > 0 {
            tracing::warn!(target: "host::update", "dropped {freed} bytes of update files whose chunks stopped coming for {} s (--update-partial-ttl-secs)", self.partial_ttl.as_secs());
            crate::update::chunks::release_memory();
        }
    }

    fn route(&self, topic: &str, payload: &[u8]) {
        let mut routes = self.routes();
        let Some((file, _index)) = topic.rsplit_once('/') else {
            return;
        };
        if let Some(name) = file.strip_prefix(&format!("{}/", self.targets_topic)) {
            if let Ok(Some(bytes)) = routes.targets.take(name, payload) {
                for waiter in routes.waiters.remove(name).unwrap_or_default() {
                    let _ = waiter.send(bytes.clone());
                }
                // Kept for the host's other devices only if it is what its
                // name says; tough checks every copy anyway.
                if named_by_its_hash(name, &bytes) {
                    routes.target_files.retain(|(n, _)| n != name);
                    routes.target_files.push_back((name.to_string(), bytes));
                    while routes.target_files.len() > KEEP_TARGETS {
                        routes.target_files.pop_front();
                    }
                }
            }
            return;
        }
        let Some(at) = file.rfind("/metadata/") else {
            return;
        };
        let (update, name) = (&file[..at], &file[at + 1..]);
        let Some(device) = routes.devices.get_mut(update) else {
            return;
        };
        if !is_metadata_name(name) {
            return;
        }
        if payload.is_empty() {
            // A retained file deleted by its publisher (a notice about it may
            // be given again).
            device.noticed.remove(file);
            if device.files.remove(name).is_some() {
                device.changed.send_modify(|n| *n += 1);
            }
            return;
        }
        let clear = |count: usize| clear_lines(&self.clear_command, file, count);
        let bytes = match device.assembler.take(name, payload) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return,
            Err(e) => {
                device.notice(
                    file,
                    format!("{topic}: {e}; delete it: {} '{topic}'", self.clear_command),
                );
                return;
            }
        };
        let count = chunk_count(payload);
        if let Err(why) = parse_metadata(name, &bytes) {
            device.notice(
                file,
                format!(
                    "{file} holds no TUF metadata ({why}), so no update there can verify; delete it: {}",
                    clear(count)
                ),
            );
            return;
        }
        if let Err(why) = device.keep(name, bytes) {
            device.notice(
                file,
                format!(
                    "{update}/metadata: {why}; delete the extra files there: {}",
                    clear(count)
                ),
            );
        }
    }
}

impl DeviceRoute {
    /// Notes `line` about the chunk topics of `file`, once.
    fn notice(&mut self, file: &str, line: String) {
        if self.noticed.len() >= MAX_NOTICES {
            return;
        }
        if self.noticed.len() == MAX_NOTICES - 1 {
            let update = file.rsplit_once("/metadata/").map_or(file, |(u, _)| u);
            self.noticed.insert(String::new());
            self.notices.push(format!(
                "more files under {update}/metadata are not what they should be; no more are reported"
            ));
            self.changed.send_modify(|n| *n += 1);
            return;
        }
        if self.noticed.insert(file.to_string()) {
            self.notices.push(line);
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Keeps a whole metadata file: every root (up to [`MAX_ROOTS`]), the
    /// timestamp, the newest [`KEEP_VERSIONS`] of the snapshot and the
    /// targets; older ones are dropped (no verification needs them).
    fn keep(&mut self, name: &str, bytes: Bytes) -> Result<(), String> {
        if bytes.len() > MAX_METADATA_BYTES {
            return Err(format!(
                "{name} is over the {MAX_METADATA_BYTES} bytes a metadata file may have"
            ));
        }
        match versioned(name) {
            Some((_, "root")) => {
                let roots = self
                    .files
                    .keys()
                    .filter(|n| versioned(n).is_some_and(|(_, r)| r == "root"))
                    .count();
                if roots >= MAX_ROOTS && !self.files.contains_key(name) {
                    return Err(format!(
                        "more than {MAX_ROOTS} root metadata files; {name} was not taken"
                    ));
                }
            }
            Some((version, role)) => {
                let mut same: Vec<(u64, String)> = self
                    .files
                    .keys()
                    .filter_map(|n| {
                        let (v, r) = versioned(n)?;
                        (r == role && n != name).then(|| (v, n.clone()))
                    })
                    .collect();
                same.push((version, name.to_string()));
                same.sort();
                let drop = same.len().saturating_sub(KEEP_VERSIONS);
                for (_, old) in same.drain(..drop) {
                    if old == name {
                        // Older than what is kept: stale.
                        return Ok(());
                    }
                    self.files.remove(&old);
                }
            }
            None => {}
        }
        self.files.insert(name.to_string(), bytes);
        self.changed.send_modify(|n| *n += 1);
        Ok(())
    }
}

/// The version and role of `metadata/N.ROLE.json`.
fn versioned(name: &str) -> Option<(u64, &str)> {
    let file = name.strip_prefix("metadata/")?;
    let (n, rest) = file.split_once('.')?;
    let role = rest.strip_suffix(".json")?;
    Some((n.parse().ok()?, role))
}

/// Why `bytes` are not the signed metadata the name `metadata/FILE` says.
fn parse_metadata(name: &str, bytes: &[u8]) -> Result<(), String> {
    use tough::schema::{Root, Signed, Snapshot, Targets, Timestamp};
    let role = match versioned(name) {
        Some((_, role)) => role,
        None => "timestamp",
    };
    let parsed = match role {
        "root" => serde_json::from_slice::<Signed<Root>>(bytes).map(drop),
        "snapshot" => serde_json::from_slice::<Signed<Snapshot>>(bytes).map(drop),
        "targets" => serde_json::from_slice::<Signed<Targets>>(bytes).map(drop),
        _ => serde_json::from_slice::<Signed<Timestamp>>(bytes).map(drop),
    };
    parsed.map_err(|e| format!("not {role} metadata: {e}"))
}

/// The chunk count a chunk's header claims (1 if it cannot be read).
fn chunk_count(chunk: &[u8]) -> usize {
    chunk
        .get(4..8)
        .map_or(1, |c| {
            u32::from_be_bytes(c.try_into().expect("4 bytes")) as usize
        })
        .clamp(1, crate::update::chunks::MAX_CHUNKS)
}

/// The commands that delete the `count` retained chunks of `file`
/// (`TOPIC/metadata/NAME`), from `command` (which ends before the topic).
fn clear_lines(command: &str, file: &str, count: usize) -> String {
    if count == 1 {
        format!("{command} '{file}/0'")
    } else {
        format!(
            "for i in $(seq 0 {}); do {command} \"{file}/$i\"; done",
            count - 1
        )
    }
}

/// Whether `name` (`metadata/FILE`) is a TUF metadata file:
/// `timestamp.json`, or `N.root.json`, `N.snapshot.json`, `N.targets.json`.
fn is_metadata_name(name: &str) -> bool {
    let Some(file) = name.strip_prefix("metadata/") else {
        return false;
    };
    if file == "timestamp.json" {
        return true;
    }
    ["root", "snapshot", "targets"].iter().any(|role| {
        file.strip_suffix(&format!(".{role}.json"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Whether `bytes` hash to the SHA-256 that starts `name` (`HASH.logic.wasm`).
fn named_by_its_hash(name: &str, bytes: &[u8]) -> bool {
    use sha2::Digest;
    name.split('.')
        .next()
        .is_some_and(|hash| hash == hex::encode(sha2::Sha256::digest(bytes)))
}

#[async_trait]
impl Targets for Channel {
    async fn fetch(&self, name: &str) -> Option<Bytes> {
        let topic = format!("{}/{name}/+", self.inner.targets_topic);
        let rx = {
            let mut routes = self.inner.routes();
            if let Some((_, bytes)) = routes.target_files.iter().find(|(n, _)| n == name) {
                return Some(bytes.clone());
            }
            let (tx, rx) = oneshot::channel();
            let first = !routes.waiters.contains_key(name);
            routes.waiters.entry(name.to_string()).or_default().push(tx);
            if first {
                routes.subscriptions.insert(topic.clone());
                let _ = self
                    .inner
                    .client
                    .try_subscribe(topic.clone(), QoS::AtLeastOnce);
            }
            rx
        };
        let got = tokio::time::timeout(FETCH_WAIT, rx).await.ok()?.ok();
        let mut routes = self.inner.routes();
        if !routes.waiters.contains_key(name) && routes.subscriptions.remove(&topic) {
            let _ = self.inner.client.try_unsubscribe(topic);
        }
        got
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tuf_metadata_names_are_taken() {
        for ok in [
            "metadata/timestamp.json",
            "metadata/1.root.json",
            "metadata/1795624092.targets.json",
            "metadata/7.snapshot.json",
        ] {
            assert!(is_metadata_name(ok), "{ok}");
        }
        for bad in [
            "metadata/x.json",
            "metadata/.root.json",
            "metadata/../etc",
            "metadata/a.targets.json",
            "targets/1.root.json",
            "metadata/1.root.json.x",
        ] {
            assert!(!is_metadata_name(bad), "{bad}");
        }
    }

    fn route() -> DeviceRoute {
        DeviceRoute {
            assembler: Assembler::default(),
            files: HashMap::new(),
            changed: watch::channel(0).0,
            notices: Vec::new(),
            noticed: BTreeSet::new(),
        }
    }

    #[test]
    fn a_device_keeps_the_newest_two_of_a_role_and_every_root_up_to_the_limit() {
        let mut d = route();
        for v in [5, 3, 9, 7, 1] {
            d.keep(
                &format!("metadata/{v}.targets.json"),
                Bytes::from_static(b"{}"),
            )
            .unwrap();
        }
        let mut kept: Vec<&String> = d.files.keys().collect();
        kept.sort();
        assert_eq!(kept, ["metadata/7.targets.json", "metadata/9.targets.json"]);
        for v in 1..=MAX_ROOTS {
            d.keep(
                &format!("metadata/{v}.root.json"),
                Bytes::from_static(b"{}"),
            )
            .unwrap();
        }
        let over = d.keep("metadata/999.root.json", Bytes::from_static(b"{}"));
        assert!(over.unwrap_err().contains("more than 32 root"));
        assert!(
            d.keep(
                "metadata/timestamp.json",
                Bytes::from(vec![b' '; MAX_METADATA_BYTES + 1])
            )
            .is_err()
        );
    }

    #[test]
    fn junk_is_named_once_with_the_command_that_deletes_it() {
        assert!(parse_metadata("metadata/2.root.json", b"not json").is_err());
        assert!(parse_metadata("metadata/timestamp.json", b"{}").is_err());
        assert_eq!(
            clear_lines("mosquitto_pub -r -n -t", "d/logic/metadata/2.root.json", 1),
            "mosquitto_pub -r -n -t 'd/logic/metadata/2.root.json/0'"
        );
        assert!(
            clear_lines("pub -t", "f", 3).starts_with("for i in $(seq 0 2); do pub -t \"f/$i\"")
        );
        let mut d = route();
        for i in 0..100 {
            d.notice(&format!("t/metadata/{i}.root.json"), format!("junk {i}"));
        }
        d.notice("t/metadata/0.root.json", "again".into());
        assert_eq!(d.notices.len(), MAX_NOTICES);
        assert!(d.notices.last().unwrap().contains("no more are reported"));
    }

    #[test]
    fn a_component_is_kept_only_under_its_own_hash() {
        use sha2::Digest;
        let bytes = b"component";
        let name = format!("{}.logic.wasm", hex::encode(sha2::Sha256::digest(bytes)));
        assert!(named_by_its_hash(&name, bytes));
        assert!(!named_by_its_hash(&name, b"tampered"));
    }
}
