//! MQTT 3.1.1 client over a transport and a clock: CONNECT/CONNACK, QoS 1
//! publish records, acknowledgements, keep-alive, and the process loop that
//! hands incoming packets to the caller (coreMQTT's `MQTT_ProcessLoop`).

use mqttbytes::QoS;
use mqttbytes::v4::{
    ConnAck, Connect, Packet, PubAck, Publish, SubAck, Subscribe, SubscribeFilter, Unsubscribe,
};

use crate::packets::{Decoder, Version, encode_for, packet_name};
use crate::session::SessionStore;
use crate::transport::{Clock, Transport, TransportError};

/// Outgoing QoS 1 publishes awaiting PUBACK, at most (coreMQTT's 15 records).
pub const MAX_OUTGOING: usize = 15;

/// Bytes asked of the transport per receive call.
const RECEIVE_CHUNK: u32 = 4096;

/// Why a client operation failed.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientError {
    /// The transport failed.
    Transport(TransportError),
    /// A packet could not be encoded from the values given (a topic over
    /// 65,535 bytes, say); nothing was sent.
    Encode(String),
    /// The broker sent something that is not valid here; describes it.
    Protocol(String),
    /// An awaited packet did not arrive in time; names it.
    Timeout(&'static str),
    /// No PINGRESP within the allowed time after PINGREQ (MQTT 3.1.1 3.1.2.10).
    KeepAliveTimeout,
    /// All outgoing publish records are in use.
    OutgoingFull,
    /// The session's store could not keep the publish (so it was not sent);
    /// says why.
    NotKept(String),
}

/// An incoming packet the caller acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The broker acknowledged our publish with this packet id.
    PubAck(u16),
    /// A PUBACK for a packet id we have no record of (late or duplicate).
    StalePubAck(u16),
    /// The broker answered a SUBSCRIBE.
    SubAck(SubAck),
    /// The broker answered an UNSUBSCRIBE with this packet id.
    UnsubAck(u16),
    /// A message for us (already acknowledged when QoS 1).
    Publish(Publish),
    /// A packet that a client should not receive; logged, not fatal.
    Unexpected(&'static str),
}

/// What the event handler wants the process loop to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep processing until the loop's time is up.
    Continue,
    /// Return now: what the caller waited for has arrived.
    Done,
}

/// Timing settings of a client, milliseconds unless named otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Keep-alive interval, seconds; 0 = off.
    pub keep_alive_secs: u16,
    /// How long to wait for PINGRESP.
    pub pingresp_timeout_ms: u32,
    /// How long one send may take.
    pub send_timeout_ms: u32,
}

/// One MQTT session over one transport.
pub struct Client<T: Transport, C: Clock> {
    transport: T,
    clock: C,
    timing: Timing,
    decoder: Decoder,
    /// The MQTT version of the connection (its CONNECT's).
    version: Version,
    /// Last packet id handed out; ids run 1..=65535 and skip 0.
    last_pkid: u16,
    /// QoS 1 publishes sent and not yet acknowledged, oldest first.
    outgoing: Vec<Publish>,
    last_sent_ms: u64,
    /// When the outstanding PINGREQ was sent, if one is.
    ping_sent_ms: Option<u64>,
    closed: bool,
    /// Where outgoing QoS 1 state is kept durably, if anywhere.
    session: Option<Box<dyn SessionStore>>,
    /// Packet ids of stored publishes not taken over (past
    /// [`MAX_OUTGOING`]): never handed out again.
    reserved: Vec<u16>,
}

impl<T: Transport, C: Clock> Client<T, C> {
    /// Wraps an open transport.
    pub fn new(transport: T, clock: C, timing: Timing) -> Self {
        let now = clock.now_ms();
        Self {
            transport,
            clock,
            timing,
            decoder: Decoder::default(),
            version: Version::V311,
            last_pkid: 0,
            outgoing: Vec::new(),
            last_sent_ms: now,
            ping_sent_ms: None,
            closed: false,
            session: None,
            reserved: Vec::new(),
        }
    }

    /// Keeps the outgoing QoS 1 state in `store` from now on, and takes
    /// over what it holds (publishes a previous client, in this process or
    /// an earlier one, left unacknowledged), in the order they were first
    /// sent, at most [`MAX_OUTGOING`] (the rest stay stored for a later
    /// client); returns their ids. They go out again after the next
    /// CONNECT ([`Client::resend_outstanding`] or
    /// [`Client::forget_outstanding`]). New packet ids continue after the
    /// newest and never reuse an id still stored.
    pub fn keep_session_in(&mut self, mut store: Box<dyn SessionStore>) -> Vec<u16> {
        let mut kept = store.load();
        kept.retain(|p| p.pkid != 0 && !self.outgoing.iter().any(|o| o.pkid == p.pkid));
        if let Some(last) = kept.last() {
            self.last_pkid = last.pkid;
        }
        let room = MAX_OUTGOING.saturating_sub(self.outgoing.len());
        self.reserved = kept.iter().skip(room).map(|p| p.pkid).collect();
        kept.truncate(room);
        let ids = kept.iter().map(|p| p.pkid).collect();
        self.outgoing.extend(kept);
        self.session = Some(store);
        ids
    }

    /// Replaces the transport after a reconnect, keeping publish records.
    pub fn replace_transport(&mut self, transport: T) {
        self.transport.close();
        self.transport = transport;
        self.decoder.clear();
        self.ping_sent_ms = None;
        self.closed = false;
        self.last_sent_ms = self.clock.now_ms();
    }

    /// Sends CONNECT and waits up to `timeout_ms` for CONNACK, which must be
    /// the first packet. The caller checks its return code.
    pub fn connect(&mut self, connect: &Connect, timeout_ms: u32) -> Result<ConnAck, ClientError> {
        self.version = Version::of(connect);
        self.decoder.set_version(self.version);
        self.send_packet(&Packet::Connect(connect.clone()))?;
        let start = self.clock.now_ms();
        loop {
            if let Some(packet) = self
                .decoder
                .next_packet()
                .map_err(|e| ClientError::Protocol(e.0))?
            {
                return match packet {
                    Packet::ConnAck(ack) => Ok(ack),
                    other => Err(ClientError::Protocol(format!(
                        "expected CONNACK, got {}",
                        packet_name(&other)
                    ))),
                };
            }
            let elapsed = self.clock.now_ms().saturating_sub(start);
            if elapsed >= u64::from(timeout_ms) {
                return Err(ClientError::Timeout("CONNACK"));
            }
            self.receive_some((u64::from(timeout_ms) - elapsed) as u32)?;
        }
    }

    /// Sends SUBSCRIBE for `filters`; returns its packet id.
    pub fn subscribe(&mut self, filters: &[(String, QoS)]) -> Result<u16, ClientError> {
        let pkid = self.next_pkid();
        let filters = filters
            .iter()
            .map(|(path, qos)| SubscribeFilter::new(path.clone(), *qos))
            .collect();
        self.send_packet(&Packet::Subscribe(Subscribe { pkid, filters }))?;
        Ok(pkid)
    }

    /// Sends UNSUBSCRIBE for `topics`; returns its packet id.
    pub fn unsubscribe(&mut self, topics: &[String]) -> Result<u16, ClientError> {
        let pkid = self.next_pkid();
        self.send_packet(&Packet::Unsubscribe(Unsubscribe {
            pkid,
            topics: topics.to_vec(),
        }))?;
        Ok(pkid)
    }

    /// Sends a QoS 1 PUBLISH with a fresh packet id and records it as
    /// outstanding until its PUBACK; returns the id.
    pub fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<u16, ClientError> {
        if self.outgoing.len() >= MAX_OUTGOING {
            return Err(ClientError::OutgoingFull);
        }
        let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload.to_vec());
        publish.pkid = self.next_pkid();
        let bytes = encode_for(&Packet::Publish(publish.clone()), self.version)
            .map_err(|e| ClientError::Encode(e.0))?;
        // Kept before it is sent: a crash in between resends it (once
        // more, with DUP) rather than losing it.
        if let Some(store) = &mut self.session {
            store.save(&publish).map_err(ClientError::NotKept)?;
        }
        let pkid = publish.pkid;
        self.outgoing.push(publish);
        self.send_bytes(&bytes)?;
        Ok(pkid)
    }

    /// Resends every outstanding publish with DUP set and its packet id
    /// (after resuming a session, MQTT 3.1.1 4.4); returns their ids.
    pub fn resend_outstanding(&mut self) -> Result<Vec<u16>, ClientError> {
        let pending: Vec<Publish> = self.outgoing.clone();
        for mut publish in pending.iter().cloned() {
            publish.dup = true;
            self.send_packet(&Packet::Publish(publish))?;
        }
        Ok(pending.iter().map(|p| p.pkid).collect())
    }

    /// Forgets outstanding publishes (the broker started a clean session)
    /// and returns them.
    /// (They stay in the session's store until [`Client::republish`]
    /// replaces each.)
    pub fn forget_outstanding(&mut self) -> Vec<Publish> {
        self.outgoing.drain(..).collect()
    }

    /// Publishes a message again as a new publish with a fresh packet id
    /// (one `old` had on a session the broker no longer has); in the
    /// session's store the new record replaces the old only once it is
    /// kept, so a crash in between loses neither.
    pub fn republish(&mut self, old: &Publish) -> Result<u16, ClientError> {
        if self.outgoing.len() >= MAX_OUTGOING {
            return Err(ClientError::OutgoingFull);
        }
        let mut publish = Publish::new(&old.topic, QoS::AtLeastOnce, old.payload.to_vec());
        publish.pkid = self.next_pkid_besides(old.pkid);
        let bytes = encode_for(&Packet::Publish(publish.clone()), self.version)
            .map_err(|e| ClientError::Encode(e.0))?;
        if let Some(store) = &mut self.session {
            store.save(&publish).map_err(ClientError::NotKept)?;
            store.remove(old.pkid);
        }
        let pkid = publish.pkid;
        self.outgoing.push(publish);
        self.send_bytes(&bytes)?;
        Ok(pkid)
    }

    /// Packet ids of publishes still waiting for PUBACK, oldest first.
    pub fn outstanding(&self) -> Vec<u16> {
        self.outgoing.iter().map(|p| p.pkid).collect()
    }

    /// Receives and dispatches packets for up to `limit_ms`, or until the
    /// handler answers [`Flow::Done`]. Sends PINGREQ when nothing was sent for
    /// the keep-alive interval and fails when PINGRESP does not follow in time.
    pub fn process_loop(
        &mut self,
        limit_ms: u32,
        on_event: &mut dyn FnMut(Event) -> Flow,
    ) -> Result<(), ClientError> {
        let start = self.clock.now_ms();
        loop {
            if self.dispatch_received(on_event)? == Flow::Done {
                return Ok(());
            }
            let now = self.clock.now_ms();
            let elapsed = now.saturating_sub(start);
            if elapsed >= u64::from(limit_ms) {
                return Ok(());
            }
            let keep_alive_wait = self.keep_alive_step(now)?;
            let wait = (u64::from(limit_ms) - elapsed).min(keep_alive_wait);
            self.receive_some(wait as u32)?;
        }
    }

    /// Waits `ms` milliseconds without reading the connection, as the demo's
    /// "Keeping Connection Idle..." does, except that the wait pauses when a
    /// PINGREQ falls due: the PINGREQ goes out and packets are handled (to
    /// `on_event`) until its PINGRESP, so a wait longer than the keep-alive
    /// does not get the connection dropped by the broker. A sleep that
    /// comes back early (the host is stopping) ends the wait.
    pub fn idle(
        &mut self,
        ms: u32,
        on_event: &mut dyn FnMut(Event) -> Flow,
    ) -> Result<(), ClientError> {
        let end = self.clock.now_ms().saturating_add(u64::from(ms));
        loop {
            let now = self.clock.now_ms();
            if now >= end {
                return Ok(());
            }
            let due_in = self.keep_alive_due_in(now);
            if due_in > 0 {
                // At most `ms`, so it fits.
                let nap = (end - now).min(due_in) as u32;
                self.clock.sleep_ms(nap);
                if self.clock.now_ms() < now.saturating_add(u64::from(nap)) {
                    return Ok(());
                }
                continue;
            }
            self.keep_alive_step(now)?;
            while self.ping_sent_ms.is_some() {
                self.dispatch_received(on_event)?;
                if self.ping_sent_ms.is_none() {
                    break;
                }
                let wait = self.keep_alive_step(self.clock.now_ms())?;
                self.receive_some(wait.min(u64::from(u32::MAX)) as u32)?;
            }
        }
    }

    /// Handles every packet received so far and hands its event to
    /// `on_event`, stopping early when that answers [`Flow::Done`].
    fn dispatch_received(
        &mut self,
        on_event: &mut dyn FnMut(Event) -> Flow,
    ) -> Result<Flow, ClientError> {
        while let Some(packet) = self
            .decoder
            .next_packet()
            .map_err(|e| ClientError::Protocol(e.0))?
        {
            if let Some(event) = self.handle(packet)?
                && on_event(event) == Flow::Done
            {
                return Ok(Flow::Done);
            }
        }
        Ok(Flow::Continue)
    }

    /// Milliseconds until a PINGREQ is due (0: due now, or one is waiting
    /// for its PINGRESP; `u64::MAX`: no keep-alive).
    fn keep_alive_due_in(&self, now: u64) -> u64 {
        if self.timing.keep_alive_secs == 0 {
            return u64::MAX;
        }
        if self.ping_sent_ms.is_some() {
            return 0;
        }
        let interval = u64::from(self.timing.keep_alive_secs) * 1000;
        interval.saturating_sub(now.saturating_sub(self.last_sent_ms))
    }

    /// Sends DISCONNECT (best effort) and closes the transport. Harmless on a
    /// client whose transport already failed.
    pub fn disconnect(&mut self) {
        if !self.closed {
            let _ = self.send_packet(&Packet::Disconnect);
        }
        self.close();
    }

    /// Closes the transport without DISCONNECT.
    pub fn close(&mut self) {
        self.transport.close();
        self.closed = true;
    }

    /// Does keep-alive work due at `now`; returns how long until the next
    /// keep-alive action, milliseconds.
    fn keep_alive_step(&mut self, now: u64) -> Result<u64, ClientError> {
        if self.timing.keep_alive_secs == 0 {
            return Ok(u64::MAX);
        }
        if let Some(sent) = self.ping_sent_ms {
            let waited = now.saturating_sub(sent);
            let allowed = u64::from(self.timing.pingresp_timeout_ms);
            if waited >= allowed {
                return Err(ClientError::KeepAliveTimeout);
            }
            return Ok(allowed - waited);
        }
        let interval = u64::from(self.timing.keep_alive_secs) * 1000;
        let idle = now.saturating_sub(self.last_sent_ms);
        if idle >= interval {
            self.send_packet(&Packet::PingReq)?;
            self.ping_sent_ms = Some(now);
            return Ok(u64::from(self.timing.pingresp_timeout_ms));
        }
        Ok(interval - idle)
    }

    /// Handles one incoming packet: acknowledges QoS 1 publishes, settles
    /// records, and returns the event for the caller, if any.
    fn handle(&mut self, packet: Packet) -> Result<Option<Event>, ClientError> {
        Ok(Some(match packet {
            Packet::PubAck(PubAck { pkid }) => {
                match self.outgoing.iter().position(|p| p.pkid == pkid) {
                    Some(i) => {
                        self.outgoing.remove(i);
                        if let Some(store) = &mut self.session {
                            store.remove(pkid);
                        }
                        Event::PubAck(pkid)
                    }
                    None => Event::StalePubAck(pkid),
                }
            }
            Packet::Publish(publish) => {
                if publish.qos != QoS::AtMostOnce {
                    self.send_packet(&Packet::PubAck(PubAck::new(publish.pkid)))?;
                }
                Event::Publish(publish)
            }
            Packet::SubAck(ack) => Event::SubAck(ack),
            Packet::UnsubAck(ack) => Event::UnsubAck(ack.pkid),
            Packet::PingResp => {
                self.ping_sent_ms = None;
                return Ok(None);
            }
            other => Event::Unexpected(packet_name(&other)),
        }))
    }

    /// One receive of at most `timeout_ms` into the decoder.
    fn receive_some(&mut self, timeout_ms: u32) -> Result<(), ClientError> {
        let data = self
            .transport
            .receive(RECEIVE_CHUNK, timeout_ms)
            .map_err(|e| self.fail(e))?;
        self.decoder.push(&data);
        Ok(())
    }

    fn send_packet(&mut self, packet: &Packet) -> Result<(), ClientError> {
        let bytes = encode_for(packet, self.version).map_err(|e| ClientError::Encode(e.0))?;
        self.send_bytes(&bytes)
    }

    fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.transport
            .send(bytes, self.timing.send_timeout_ms)
            .map_err(|e| self.fail(e))?;
        self.last_sent_ms = self.clock.now_ms();
        Ok(())
    }

    fn fail(&mut self, code: TransportError) -> ClientError {
        self.closed = true;
        ClientError::Transport(code)
    }

    fn next_pkid(&mut self) -> u16 {
        self.next_pkid_besides(0)
    }

    /// The next free packet id that is not `besides`.
    fn next_pkid_besides(&mut self, besides: u16) -> u16 {
        loop {
            self.last_pkid = self.last_pkid.wrapping_add(1);
            let pkid = self.last_pkid;
            if pkid != 0
                && pkid != besides
                && !self.reserved.contains(&pkid)
                && !self.outgoing.iter().any(|p| p.pkid == pkid)
            {
                return pkid;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;
    use std::rc::Rc;

    use mqttbytes::v4::{ConnectReturnCode, SubscribeReasonCode};

    use super::*;
    use crate::packets::encode;

    /// Virtual clock: sleeping and waiting advance it.
    #[derive(Clone, Default)]
    pub struct TestClock(pub Rc<Cell<u64>>);

    impl Clock for TestClock {
        fn now_ms(&self) -> u64 {
            self.0.get()
        }
        fn sleep_ms(&self, ms: u32) {
            self.0.set(self.0.get() + u64::from(ms));
        }
    }

    /// Transport fed by a queue of reads; records what was sent.
    #[derive(Clone)]
    pub struct TestTransport {
        pub reads: Rc<RefCell<VecDeque<Vec<u8>>>>,
        pub sent: Rc<RefCell<Vec<u8>>>,
        pub clock: TestClock,
    }

    impl Transport for TestTransport {
        fn send(&mut self, data: &[u8], _timeout_ms: u32) -> Result<(), TransportError> {
            self.sent.borrow_mut().extend_from_slice(data);
            Ok(())
        }
        fn receive(&mut self, _max_len: u32, timeout_ms: u32) -> Result<Vec<u8>, TransportError> {
            match self.reads.borrow_mut().pop_front() {
                Some(bytes) => Ok(bytes),
                None => {
                    self.clock.sleep_ms(timeout_ms);
                    Ok(Vec::new())
                }
            }
        }
        fn close(&mut self) {}
    }

    fn timing() -> Timing {
        Timing {
            keep_alive_secs: 60,
            pingresp_timeout_ms: 5000,
            send_timeout_ms: 200,
        }
    }

    fn client(reads: Vec<Vec<u8>>) -> (Client<TestTransport, TestClock>, TestTransport) {
        let clock = TestClock::default();
        let t = TestTransport {
            reads: Rc::new(RefCell::new(reads.into())),
            sent: Rc::default(),
            clock: clock.clone(),
        };
        (Client::new(t.clone(), clock, timing()), t)
    }

    fn sent_packets(t: &TestTransport) -> Vec<Packet> {
        let mut d = Decoder::default();
        d.push(&t.sent.borrow());
        std::iter::from_fn(|| d.next_packet().unwrap()).collect()
    }

    fn connack() -> Vec<u8> {
        encode(&Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            false,
        )))
        .unwrap()
    }

    /// A client whose CONNECT asks for MQTT 5 speaks it both ways: what it
    /// sends is 5's, and a broker's 5 answers (here mosquitto's bytes) are
    /// read, a PUBACK's reason code "no matching subscribers" included.
    #[cfg(feature = "mqtt5")]
    #[test]
    fn a_connection_in_mqtt5_speaks_it_both_ways() {
        let connack5 = vec![
            0x20, 0x09, 0x00, 0x00, 0x06, 0x22, 0x00, 0x0a, 0x21, 0x00, 0x14,
        ];
        let puback5 = vec![0x40, 0x03, 0x00, 0x01, 0x10];
        let (mut c, t) = client(vec![connack5, puback5]);
        let mut connect = Connect::new("id");
        connect.protocol = mqttbytes::Protocol::V5;
        let ack = c.connect(&connect, 1000).unwrap();
        assert_eq!(ack.code, ConnectReturnCode::Success);
        let id = c.publish("t", b"x").unwrap();
        let mut events = Vec::new();
        c.process_loop(10, &mut |e| {
            events.push(e.clone());
            Flow::Continue
        })
        .unwrap();
        assert_eq!(events, [Event::PubAck(id)]);
        assert_eq!(c.outstanding(), Vec::<u16>::new());
        assert_eq!(c.decoder.last_reason(), Some(0x10));
        let sent = t.sent.borrow().clone();
        assert_eq!(sent[8], 5, "protocol level 5: {sent:02x?}");
        let mut d = Decoder::new(Version::V5);
        d.push(&sent);
        let packets: Vec<Packet> = std::iter::from_fn(|| d.next_packet().unwrap()).collect();
        assert!(matches!(&packets[..], [Packet::Connect(_), Packet::Publish(p)] if p.pkid == id));
    }

    #[test]
    fn a_kept_session_outlives_its_client_and_is_resent_with_dup() {
        use crate::session::MemorySession;
        let disk = MemorySession::default();
        let (mut first, _) = client(vec![connack()]);
        assert!(first.keep_session_in(Box::new(disk.clone())).is_empty());
        first.connect(&Connect::new("id"), 1000).unwrap();
        let a = first.publish("t", b"1").unwrap();
        let b = first.publish("t", b"2").unwrap();
        first.process_loop(10, &mut |_| Flow::Continue).unwrap();
        assert_eq!(disk.0.borrow().len(), 2, "kept before the PUBACK");
        // The PUBACK of `a` arrives; then the process dies.
        let (mut c, _) = client(vec![encode(&Packet::PubAck(PubAck::new(a))).unwrap()]);
        c.keep_session_in(Box::new(disk.clone()));
        c.process_loop(10, &mut |_| Flow::Continue).unwrap();
        assert_eq!(c.outstanding(), [b]);
        assert_eq!(disk.0.borrow().len(), 1, "forgotten on its PUBACK");
        // A new process: the record is taken over and resent with DUP.
        let (mut next, t) = client(vec![connack()]);
        assert_eq!(next.keep_session_in(Box::new(disk.clone())), [b]);
        next.connect(&Connect::new("id"), 1000).unwrap();
        assert_eq!(next.resend_outstanding().unwrap(), [b]);
        let resent = sent_packets(&t);
        assert!(
            matches!(&resent[1], Packet::Publish(p) if p.dup && p.pkid == b && &p.payload[..] == b"2")
        );
        assert_ne!(
            next.publish("t", b"3").unwrap(),
            b,
            "new ids skip kept ones"
        );
        // On a session the broker lost, the message goes out anew and its
        // new record replaces the old.
        let old = next.forget_outstanding();
        let fresh: Vec<u16> = old.iter().map(|p| next.republish(p).unwrap()).collect();
        assert!(fresh.iter().all(|id| *id != b));
        let kept: Vec<u16> = disk.0.borrow().iter().map(|p| p.pkid).collect();
        assert_eq!(kept, fresh);
    }

    #[test]
    fn at_most_fifteen_kept_publishes_are_taken_over_and_their_ids_stay_reserved() {
        use crate::session::MemorySession;
        let disk = MemorySession::default();
        // Saved in this order: fifteen, then 26 and 25, the newest.
        for id in (10..=24u16).chain([26, 25]) {
            let mut p = Publish::new("t", QoS::AtLeastOnce, vec![id as u8]);
            p.pkid = id;
            disk.0.borrow_mut().push(p);
        }
        let (mut c, _) = client(vec![connack()]);
        let taken = c.keep_session_in(Box::new(disk.clone()));
        assert_eq!(taken, (10..=24).collect::<Vec<u16>>());
        c.connect(&Connect::new("id"), 1000).unwrap();
        c.forget_outstanding();
        // New ids continue after the newest (25) and skip 26, still stored.
        assert_eq!(c.publish("t", b"n").unwrap(), 27);
    }

    #[test]
    fn connack_split_one_byte_per_read_is_assembled() {
        let reads = connack().into_iter().map(|b| vec![b]).collect();
        let (mut c, _) = client(reads);
        let ack = c.connect(&Connect::new("id"), 1000).unwrap();
        assert_eq!(ack.code, ConnectReturnCode::Success);
    }

    #[test]
    fn several_packets_in_one_read_are_all_dispatched() {
        let (mut c, t) = client(vec![connack()]);
        c.connect(&Connect::new("id"), 1000).unwrap();
        let id = c.publish("t", b"x").unwrap();
        let mut echo = Publish::new("t", QoS::AtLeastOnce, "x");
        echo.pkid = 9;
        let mut one_read = encode(&Packet::PubAck(PubAck::new(id))).unwrap();
        one_read.extend(encode(&Packet::Publish(echo.clone())).unwrap());
        one_read.extend(
            encode(&Packet::SubAck(SubAck::new(
                3,
                vec![SubscribeReasonCode::Failure],
            )))
            .unwrap(),
        );
        t.reads.borrow_mut().push_back(one_read);
        let mut events = Vec::new();
        c.process_loop(2000, &mut |e| {
            events.push(e);
            Flow::Continue
        })
        .unwrap();
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[0], Event::PubAck(id));
        assert_eq!(events[1], Event::Publish(echo));
        assert!(c.outstanding().is_empty());
        // The echo was acknowledged with its own packet id.
        assert_eq!(
            sent_packets(&t).last(),
            Some(&Packet::PubAck(PubAck::new(9)))
        );
    }

    #[test]
    fn stale_puback_is_not_fatal() {
        let (mut c, t) = client(vec![connack()]);
        c.connect(&Connect::new("id"), 1000).unwrap();
        t.reads
            .borrow_mut()
            .push_back(encode(&Packet::PubAck(PubAck::new(42))).unwrap());
        let mut events = Vec::new();
        c.process_loop(100, &mut |e| {
            events.push(e);
            Flow::Continue
        })
        .unwrap();
        assert_eq!(events, vec![Event::StalePubAck(42)]);
    }

    #[test]
    fn pingreq_after_idle_keep_alive_and_missing_pingresp_fails() {
        let (mut c, t) = client(vec![connack()]);
        c.connect(&Connect::new("id"), 1000).unwrap();
        let err = c
            .process_loop(120_000, &mut |_| Flow::Continue)
            .unwrap_err();
        assert_eq!(err, ClientError::KeepAliveTimeout);
        assert_eq!(sent_packets(&t).last(), Some(&Packet::PingReq));
    }

    #[test]
    fn pingresp_keeps_the_connection() {
        let (mut c, t) = client(vec![connack()]);
        c.connect(&Connect::new("id"), 1000).unwrap();
        c.process_loop(60_000, &mut |_| Flow::Continue).unwrap();
        t.reads
            .borrow_mut()
            .push_back(encode(&Packet::PingResp).unwrap());
        c.process_loop(1000, &mut |_| Flow::Continue).unwrap();
        assert_eq!(c.ping_sent_ms, None);
    }

    #[test]
    fn idle_shorter_than_the_keep_alive_only_sleeps() {
        let (mut c, t) = client(vec![connack()]);
        c.connect(&Connect::new("id"), 1000).unwrap();
        let (sent, start) = (sent_packets(&t).len(), c.clock.now_ms());
        c.idle(2000, &mut |_| Flow::Continue).unwrap();
        assert_eq!(c.clock.now_ms() - start, 2000);
        assert_eq!(sent_packets(&t).len(), sent, "nothing sent");
    }

    #[test]
    fn idle_longer_than_the_keep_alive_pings_and_keeps_the_connection() {
        let pingresp = encode(&Packet::PingResp).unwrap();
        let (mut c, t) = client(vec![connack()]);
        c.connect(&Connect::new("id"), 1000).unwrap();
        t.reads.borrow_mut().extend([pingresp.clone(), pingresp]);
        let start = c.clock.now_ms();
        // 150 s with a 60 s keep-alive: PINGREQ at 60 s and at 120 s.
        c.idle(150_000, &mut |_| Flow::Continue).unwrap();
        assert_eq!(c.clock.now_ms() - start, 150_000);
        let pings = sent_packets(&t)
            .into_iter()
            .filter(|p| *p == Packet::PingReq)
            .count();
        assert_eq!(pings, 2);
        assert_eq!(c.ping_sent_ms, None);
    }

    #[test]
    fn idle_past_the_keep_alive_without_pingresp_fails() {
        let (mut c, _) = client(vec![connack()]);
        c.connect(&Connect::new("id"), 1000).unwrap();
        let err = c.idle(150_000, &mut |_| Flow::Continue).unwrap_err();
        assert_eq!(err, ClientError::KeepAliveTimeout);
    }

    #[test]
    fn idle_ends_when_a_sleep_comes_back_early() {
        /// A clock whose sleeps return at once, as while the host stops;
        /// a wait that kept sleeping would call it again and again.
        struct Stopping(TestClock, Cell<u32>);
        impl Clock for Stopping {
            fn now_ms(&self) -> u64 {
                self.0.now_ms()
            }
            fn sleep_ms(&self, _ms: u32) {
                self.1.set(self.1.get() + 1);
                assert!(self.1.get() < 10, "the wait went on sleeping");
            }
        }
        let clock = TestClock::default();
        let t = TestTransport {
            reads: Rc::new(RefCell::new(vec![connack()].into())),
            sent: Rc::default(),
            clock: clock.clone(),
        };
        let mut c = Client::new(t.clone(), Stopping(clock, Cell::new(0)), timing());
        c.connect(&Connect::new("id"), 1000).unwrap();
        c.idle(150_000, &mut |_| Flow::Continue).unwrap();
        assert_eq!(c.clock.1.get(), 1, "one sleep, cut short, ends the wait");
        assert_eq!(c.clock.now_ms(), 0);
        assert_eq!(sent_packets(&t).len(), 1, "CONNECT only, no PINGREQ");
    }

    #[test]
    fn packet_ids_skip_zero_and_outstanding_ones() {
        let (mut c, _) = client(vec![]);
        c.last_pkid = u16::MAX - 1;
        assert_eq!(c.publish("t", b"a").unwrap(), u16::MAX);
        assert_eq!(c.publish("t", b"b").unwrap(), 1);
        c.last_pkid = u16::MAX - 1;
        assert_eq!(c.subscribe(&[("t".into(), QoS::AtLeastOnce)]).unwrap(), 2);
    }

    #[test]
    fn resend_sets_dup_and_keeps_packet_ids() {
        let (mut c, t) = client(vec![]);
        let a = c.publish("t", b"a").unwrap();
        let b = c.publish("t", b"b").unwrap();
        t.sent.borrow_mut().clear();
        assert_eq!(c.resend_outstanding().unwrap(), vec![a, b]);
        let resent = sent_packets(&t);
        assert_eq!(resent.len(), 2);
        for (p, id) in resent.iter().zip([a, b]) {
            match p {
                Packet::Publish(p) => assert!(p.dup && p.pkid == id),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn malformed_bytes_are_a_protocol_error() {
        let (mut c, _) = client(vec![vec![0x20, 0xff, 0xff, 0xff, 0xff, 0x7f]]);
        let err = c.connect(&Connect::new("id"), 1000).unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
    }

    /// Regression: an unencodable packet fails at once with the
    /// reason, instead of sending an empty frame and timing out later.
    #[test]
    fn an_unencodable_publish_fails_at_once_and_sends_nothing() {
        let (mut c, t) = client(vec![]);
        let long = "t".repeat(70_000);
        let err = c.publish(&long, b"x").unwrap_err();
        assert!(
            matches!(&err, ClientError::Encode(why) if why.contains("topic")),
            "{err:?}"
        );
        assert!(t.sent.borrow().is_empty());
        assert!(
            c.outstanding().is_empty(),
            "nothing recorded as outstanding"
        );
    }
}
