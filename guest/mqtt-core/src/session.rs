//! Where a persistent session keeps its outgoing QoS 1 state, so it
//! outlives the process: coreMQTT's stateful QoS records, made durable.
//! The client saves a PUBLISH before it sends it (a publish the store
//! refuses is not sent) and removes it on its PUBACK; a new client loads
//! what is left, in the order it was saved, and resends it.

use mqttbytes::v4::{Packet, Publish};

use crate::packets::{Decoder, encode};

/// Durable storage of the publishes awaiting PUBACK.
pub trait SessionStore {
    /// Keeps `publish` (with its packet id) until [`SessionStore::remove`];
    /// an error says why it could not.
    fn save(&mut self, publish: &Publish) -> Result<(), String>;
    /// Forgets the publish with packet id `pkid` (a failure only means it
    /// may be sent once more after a restart).
    fn remove(&mut self, pkid: u16);
    /// Every publish kept, in the order they were saved.
    fn load(&mut self) -> Vec<Publish>;
}

/// A publish as stored: its packet's bytes.
pub fn to_bytes(publish: &Publish) -> Vec<u8> {
    encode(&Packet::Publish(publish.clone())).unwrap_or_default()
}

/// A stored publish back, if the bytes are one.
pub fn from_bytes(bytes: &[u8]) -> Option<Publish> {
    let mut decoder = Decoder::default();
    decoder.push(bytes);
    match decoder.next_packet() {
        Ok(Some(Packet::Publish(p))) => Some(p),
        _ => None,
    }
}

/// A store in memory, for tests and platforms without storage.
#[derive(Debug, Default, Clone)]
pub struct MemorySession(pub std::rc::Rc<std::cell::RefCell<Vec<Publish>>>);

impl SessionStore for MemorySession {
    fn save(&mut self, publish: &Publish) -> Result<(), String> {
        let mut kept = self.0.borrow_mut();
        kept.retain(|p| p.pkid != publish.pkid);
        kept.push(publish.clone());
        Ok(())
    }
    fn remove(&mut self, pkid: u16) {
        self.0.borrow_mut().retain(|p| p.pkid != pkid);
    }
    fn load(&mut self) -> Vec<Publish> {
        self.0.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use mqttbytes::QoS;

    use super::*;

    #[test]
    fn a_publish_round_trips_through_its_bytes() {
        let mut p = Publish::new("a/b", QoS::AtLeastOnce, b"reading 7".to_vec());
        p.pkid = 513;
        assert_eq!(from_bytes(&to_bytes(&p)), Some(p));
        assert_eq!(from_bytes(b"junk"), None);
    }
}
