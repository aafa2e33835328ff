//! `wasi:keyvalue`: the device's bucket as [`State`] (errors as text), and
//! mqtt-core's [`SessionStore`] on it, so a persistent session's outgoing
//! QoS 1 state outlives the host process.

use mqtt_core::session::{from_bytes, to_bytes};
use mqtt_core::{Level, SessionStore};
use mqttbytes::v4::Publish;

use crate::bindings::wasi::keyvalue::{atomics, batch, store};

/// The device's own bucket, kept by the host across restarts, swaps and
/// updates.
pub struct State(store::Bucket);

fn text(e: store::Error) -> String {
    match e {
        store::Error::NoSuchStore => "the host has no such store".to_string(),
        store::Error::AccessDenied => "the host denies access to the store".to_string(),
        store::Error::Other(s) => s,
    }
}

impl State {
    /// Opens the device's bucket.
    pub fn open() -> Result<Self, String> {
        store::open("default").map(State).map_err(text)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.0.get(key).map_err(text)
    }

    /// Sets `key`; on disk once it returns.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.0.set(key, value).map_err(text)
    }

    /// Removes `key`.
    pub fn delete(&self, key: &str) -> Result<(), String> {
        self.0.delete(key).map_err(text)
    }

    /// Sets every pair (on this host, all or none, in one durable write).
    pub fn set_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), String> {
        batch::set_many(&self.0, pairs).map_err(text)
    }

    /// Adds `delta` to the counter at `key`; its new value.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, String> {
        atomics::increment(&self.0, key, delta).map_err(text)
    }

    /// Every key starting with `prefix`, in order.
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>, String> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.0.list_keys(cursor.as_deref()).map_err(text)?;
            keys.extend(page.keys.into_iter().filter(|k| k.starts_with(prefix)));
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
    }
}

/// Where a persistent session's publishes are kept in the device's state.
const SESSION_PREFIX: &str = "mqtt/outgoing/";

/// A persistent session's outgoing QoS 1 state in the device's bucket, one
/// key per publish, `mqtt/outgoing/<sequence number, 20 digits>` (so keys
/// sort in the order the publishes were first saved, whatever their packet
/// ids), the publish's packet as its value.
pub struct KeyValueSession {
    state: Option<State>,
    /// The key of each packet id kept.
    keys: Vec<(u16, String)>,
    /// The next sequence number.
    next: u64,
}

impl KeyValueSession {
    /// The session in the device's bucket (kept in memory only, and said
    /// so, if the host has no store).
    pub fn open() -> Self {
        let state = match State::open() {
            Ok(state) => Some(state),
            Err(e) => {
                warn(&format!(
                    "The device's state cannot be opened ({e}); the session is kept in memory only."
                ));
                None
            }
        };
        Self {
            state,
            keys: Vec::new(),
            next: 1,
        }
    }
}

fn warn(message: &str) {
    super::log::write(Level::Warn, message);
}

impl SessionStore for KeyValueSession {
    fn save(&mut self, publish: &Publish) -> Result<(), String> {
        let Some(state) = &self.state else {
            return Ok(());
        };
        if self.keys.iter().any(|(id, _)| *id == publish.pkid) {
            return Err(format!("packet id {} is still kept", publish.pkid));
        }
        let key = format!("{SESSION_PREFIX}{:020}", self.next);
        state.set(&key, &to_bytes(publish))?;
        self.next += 1;
        self.keys.push((publish.pkid, key));
        Ok(())
    }

    fn remove(&mut self, pkid: u16) {
        let (Some(state), Some(i)) = (
            &self.state,
            self.keys.iter().position(|(id, _)| *id == pkid),
        ) else {
            return;
        };
        let (_, key) = self.keys.remove(i);
        if let Err(e) = state.delete(&key) {
            warn(&format!(
                "Could not remove acknowledged publish {pkid} from the device's state ({e}); it may be sent once more."
            ));
        }
    }

    fn load(&mut self) -> Vec<Publish> {
        let Some(state) = &self.state else {
            return Vec::new();
        };
        let keys = state.keys(SESSION_PREFIX).unwrap_or_else(|e| {
            warn(&format!(
                "Could not read the session from the device's state: {e}."
            ));
            Vec::new()
        });
        let mut kept = Vec::new();
        for key in keys {
            if let Ok(n) = key[SESSION_PREFIX.len()..].parse::<u64>() {
                self.next = self.next.max(n + 1);
            }
            let Some(publish) = state.get(&key).ok().flatten().and_then(|b| from_bytes(&b)) else {
                continue;
            };
            // A packet id saved again replaced an earlier record whose
            // removal failed: that one was acknowledged.
            if let Some(i) = self.keys.iter().position(|(id, _)| *id == publish.pkid) {
                let (_, stale) = self.keys.remove(i);
                let _ = state.delete(&stale);
                kept.retain(|p: &Publish| p.pkid != publish.pkid);
            }
            self.keys.push((publish.pkid, key));
            kept.push(publish);
        }
        kept
    }
}
