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

/// Metadata files a device keeps, at most, and their largest size, bytes:
/// a repository has four roles' files, each a few kilobytes.
const MAX_METADATA_FILES: usize = 64;
const MAX_METADATA_BYTES: usize = 1 << 20;

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
        let inner = Arc::new(Inner {
            client,
            targets_topic: config.targets_topic,
            routes: Mutex::new(Routes::default()),
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
        let (changed, rx) = watch::channel(0);
        let topic = format!("{update_topic}/metadata/#");
        {
            let mut routes = self.inner.routes();
            routes.devices.insert(
                update_topic.to_string(),
                DeviceRoute {
                    assembler: Assembler::default(),
                    files: HashMap::new(),
                    changed,
                },
            );
            routes.subscriptions.insert(topic.clone());
        }
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
            // A retained file deleted by its publisher.
            if device.files.remove(name).is_some() {
                device.changed.send_modify(|n| *n += 1);
            }
        } else if let Ok(Some(bytes)) = device.assembler.take(name, payload) {
            let room = device.files.len() < MAX_METADATA_FILES || device.files.contains_key(name);
            if room && bytes.len() <= MAX_METADATA_BYTES {
                device.files.insert(name.to_string(), bytes);
                device.changed.send_modify(|n| *n += 1);
            }
        }
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

    #[test]
    fn a_component_is_kept_only_under_its_own_hash() {
        use sha2::Digest;
        let bytes = b"component";
        let name = format!("{}.logic.wasm", hex::encode(sha2::Sha256::digest(bytes)));
        assert!(named_by_its_hash(&name, bytes));
        assert!(!named_by_its_hash(&name, b"tampered"));
    }
}
