//! Pure MQTT packet handling: encoding to bytes and a stream decoder that
//! copes with packets split across reads and several packets per read.
//! Packets are MQTT 3.1.1's in memory; on the wire a connection speaks
//! 3.1.1 or 5 ([`Version`], through [`crate::wire5`]).

use bytes::BytesMut;
use mqttbytes::v4::{self, Packet};

/// Largest incoming packet accepted, bytes (fixed header included). Larger
/// packets are a protocol violation rather than a reason to allocate.
pub const MAX_INCOMING_PACKET: usize = 64 * 1024;

/// Why incoming bytes could not be decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a packet could not be encoded: a value the client was given does
/// not fit MQTT 3.1.1. Caught when the packet is built, so it never reaches
/// the broker as a bad frame.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodeError(pub String);

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Longest MQTT string (topic, client id, user name...), bytes: its length
/// is a 16-bit prefix (MQTT 3.1.1 section 1.5.3).
pub const MAX_STRING: usize = u16::MAX as usize;

/// The strings of `packet` that carry a 16-bit length prefix.
fn strings(packet: &Packet) -> Vec<(&'static str, &str)> {
    match packet {
        Packet::Connect(c) => {
            let mut v = vec![("client id", c.client_id.as_str())];
            if let Some(login) = &c.login {
                v.push(("user name", login.username.as_str()));
                v.push(("password", login.password.as_str()));
            }
            v
        }
        Packet::Publish(p) => vec![("topic", p.topic.as_str())],
        Packet::Subscribe(s) => s
            .filters
            .iter()
            .map(|f| ("topic filter", f.path.as_str()))
            .collect(),
        Packet::Unsubscribe(u) => u
            .topics
            .iter()
            .map(|t| ("topic filter", t.as_str()))
            .collect(),
        _ => Vec::new(),
    }
}

/// The MQTT version a connection speaks on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4), the original demo's.
    #[default]
    V311,
    /// MQTT 5 (protocol level 5).
    V5,
}

impl Version {
    /// The version a CONNECT asks for (its protocol level).
    pub fn of(connect: &v4::Connect) -> Self {
        match connect.protocol {
            mqttbytes::Protocol::V5 => Version::V5,
            mqttbytes::Protocol::V4 => Version::V311,
        }
    }
}

/// Encodes one packet to its wire form in `version`, or says why it
/// cannot be.
pub fn encode_for(packet: &Packet, version: Version) -> Result<Vec<u8>, EncodeError> {
    let bytes = encode(packet)?;
    match version {
        Version::V311 => Ok(bytes),
        #[cfg(feature = "mqtt5")]
        Version::V5 => crate::wire5::to_v5(&bytes),
        #[cfg(not(feature = "mqtt5"))]
        Version::V5 => Err(no_mqtt5()),
    }
}

/// The error of a logic built without MQTT 5 asked to speak it.
#[cfg(not(feature = "mqtt5"))]
fn no_mqtt5() -> EncodeError {
    EncodeError("this logic was built without MQTT 5 (mqtt-core's mqtt5 feature)".into())
}

/// The version a connection's first bytes ask for, when they hold a
/// CONNECT's protocol level (4: 3.1.1, 5: MQTT 5); `None` for anything else
/// or too few bytes.
pub fn connect_version(bytes: &[u8]) -> Option<Version> {
    if bytes.first()? >> 4 != 1 {
        return None;
    }
    // The remaining length (1 to 4 bytes), then the protocol name.
    let used = 1 + bytes[1..].iter().take(4).position(|b| b & 0x80 == 0)? + 1;
    let name = usize::from(u16::from_be_bytes([
        *bytes.get(used)?,
        *bytes.get(used + 1)?,
    ]));
    match bytes.get(used + 2 + name)? {
        4 => Some(Version::V311),
        5 => Some(Version::V5),
        _ => None,
    }
}

/// Encodes one packet to its MQTT 3.1.1 wire form, or says why it cannot be.
pub fn encode(packet: &Packet) -> Result<Vec<u8>, EncodeError> {
    let name = packet_name(packet);
    if let Some((what, s)) = strings(packet)
        .into_iter()
        .find(|(_, s)| s.len() > MAX_STRING)
    {
        return Err(EncodeError(format!(
            "cannot encode {name}: its {what} is {} bytes, over MQTT's limit of {MAX_STRING}",
            s.len()
        )));
    }
    let mut buf = BytesMut::new();
    let written = match packet {
        Packet::Connect(p) => p.write(&mut buf),
        Packet::ConnAck(p) => p.write(&mut buf),
        Packet::Publish(p) => p.write(&mut buf),
        Packet::PubAck(p) => p.write(&mut buf),
        Packet::PubRec(p) => p.write(&mut buf),
        Packet::PubRel(p) => p.write(&mut buf),
        Packet::PubComp(p) => p.write(&mut buf),
        Packet::Subscribe(p) => p.write(&mut buf),
        Packet::SubAck(p) => p.write(&mut buf),
        Packet::Unsubscribe(p) => p.write(&mut buf),
        Packet::UnsubAck(p) => p.write(&mut buf),
        Packet::PingReq => v4::PingReq.write(&mut buf),
        Packet::PingResp => v4::PingResp.write(&mut buf),
        Packet::Disconnect => v4::Disconnect.write(&mut buf),
    };
    match written {
        Ok(_) => Ok(buf.to_vec()),
        Err(e) => Err(EncodeError(format!("cannot encode {name}: {e:?}"))),
    }
}

/// Accumulates received bytes and yields whole packets.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
    version: Version,
    /// The reason code the last MQTT 5 packet carried, if any.
    reason: Option<u8>,
}

impl Decoder {
    /// A decoder of packets in `version`.
    pub fn new(version: Version) -> Self {
        Self {
            version,
            ..Self::default()
        }
    }

    /// Reads the packets that follow in `version` (after a CONNECT).
    pub fn set_version(&mut self, version: Version) {
        self.version = version;
    }

    /// The reason code the last packet carried: MQTT 5's CONNACK, PUBACK,
    /// SUBACK failure, UNSUBACK or DISCONNECT reason (0 is success), or
    /// `None` (MQTT 3.1.1, or a packet without one).
    pub fn last_reason(&self) -> Option<u8> {
        self.reason
    }

    /// Appends bytes as they came off the transport.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held that do not yet form a whole packet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Forgets buffered bytes (after a reconnect).
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// The next whole packet, `Ok(None)` when more bytes are needed, or an
    /// error for bytes that can never become a valid packet.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, DecodeError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        if self.version == Version::V5 {
            return self.next_v5();
        }
        match v4::read(&mut self.buf, MAX_INCOMING_PACKET) {
            Ok(packet) => Ok(Some(packet)),
            Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(mqttbytes::Error::PayloadSizeLimitExceeded(n)) => Err(DecodeError(format!(
                "incoming packet of {n} bytes is over the limit of {MAX_INCOMING_PACKET} bytes"
            ))),
            Err(e) => Err(DecodeError(format!("malformed MQTT packet: {e:?}"))),
        }
    }
}

impl Decoder {
    /// The next whole MQTT 5 packet, read in its 3.1.1 form.
    #[cfg(not(feature = "mqtt5"))]
    fn next_v5(&mut self) -> Result<Option<Packet>, DecodeError> {
        Err(DecodeError(no_mqtt5().0))
    }

    /// The next whole MQTT 5 packet, read in its 3.1.1 form.
    #[cfg(feature = "mqtt5")]
    fn next_v5(&mut self) -> Result<Option<Packet>, DecodeError> {
        let header = match mqttbytes::check(self.buf.iter(), MAX_INCOMING_PACKET) {
            Ok(header) => header,
            Err(mqttbytes::Error::InsufficientBytes(_)) => return Ok(None),
            Err(mqttbytes::Error::PayloadSizeLimitExceeded(n)) => {
                return Err(DecodeError(format!(
                    "incoming packet of {n} bytes is over the limit of {MAX_INCOMING_PACKET} bytes"
                )));
            }
            Err(e) => return Err(DecodeError(format!("malformed MQTT packet: {e:?}"))),
        };
        let frame = self.buf.split_to(header.frame_length());
        let (v311, reason) = crate::wire5::from_v5(&frame)?;
        self.reason = reason;
        let mut v311 = BytesMut::from(&v311[..]);
        // The frame is whole: too few bytes now is a malformed packet.
        v4::read(&mut v311, MAX_INCOMING_PACKET)
            .map(Some)
            .map_err(|e| DecodeError(format!("malformed MQTT 5 packet: {e:?}")))
    }
}

/// Short name of a packet for logs and error messages.
pub fn packet_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mqttbytes::QoS;
    use mqttbytes::v4::{
        ConnAck, Connect, ConnectReturnCode, PubAck, Publish, SubAck, Subscribe,
        SubscribeReasonCode, UnsubAck, Unsubscribe,
    };

    /// One packet of every kind the client and a broker exchange (also
    /// the MQTT 5 converter's round-trip cases).
    pub(crate) fn samples() -> Vec<Packet> {
        let mut connect = Connect::new("thing-1");
        connect.keep_alive = 60;
        connect.clean_session = true;
        let mut publish = Publish::new("thing-1/example/topic", QoS::AtLeastOnce, "Hello World!");
        publish.pkid = 7;
        vec![
            Packet::Connect(connect),
            Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)),
            Packet::Publish(publish),
            Packet::PubAck(PubAck::new(7)),
            Packet::Subscribe(Subscribe {
                pkid: 1,
                filters: vec![v4::SubscribeFilter::new("a/b".into(), QoS::AtLeastOnce)],
            }),
            Packet::SubAck(SubAck::new(
                1,
                vec![
                    SubscribeReasonCode::Success(QoS::AtLeastOnce),
                    SubscribeReasonCode::Failure,
                ],
            )),
            Packet::Unsubscribe(Unsubscribe {
                pkid: 2,
                topics: vec!["a/b".into()],
            }),
            Packet::UnsubAck(UnsubAck::new(2)),
            Packet::PingReq,
            Packet::PingResp,
            Packet::Disconnect,
        ]
    }

    #[test]
    fn a_connects_first_bytes_say_its_version() {
        let mut c = Connect::new("d");
        let v311 = encode(&Packet::Connect(c.clone())).unwrap();
        assert_eq!(connect_version(&v311), Some(Version::V311));
        c.protocol = mqttbytes::Protocol::V5;
        let v5 = encode(&Packet::Connect(c)).unwrap();
        assert_eq!(connect_version(&v5), Some(Version::V5));
        assert_eq!(connect_version(&v5[..5]), None, "too few bytes");
        assert_eq!(connect_version(&[0x30, 0x00]), None, "not a CONNECT");
    }

    #[test]
    fn every_packet_round_trips() {
        for packet in samples() {
            let mut d = Decoder::default();
            d.push(&encode(&packet).unwrap());
            assert_eq!(
                d.next_packet().unwrap(),
                Some(packet.clone()),
                "{}",
                packet_name(&packet)
            );
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn split_reads_yield_nothing_until_the_packet_is_whole() {
        for packet in samples() {
            let bytes = encode(&packet).unwrap();
            for cut in 1..bytes.len() {
                let mut d = Decoder::default();
                d.push(&bytes[..cut]);
                assert_eq!(
                    d.next_packet().unwrap(),
                    None,
                    "{} cut at {cut}",
                    packet_name(&packet)
                );
                d.push(&bytes[cut..]);
                assert_eq!(d.next_packet().unwrap(), Some(packet.clone()));
            }
        }
    }

    #[test]
    fn several_packets_in_one_read_come_out_in_order() {
        let all = samples();
        let bytes: Vec<u8> = all.iter().flat_map(|p| encode(p).unwrap()).collect();
        let mut d = Decoder::default();
        d.push(&bytes);
        let mut got = Vec::new();
        while let Some(p) = d.next_packet().unwrap() {
            got.push(p);
        }
        assert_eq!(got, all);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_wait() {
        let mut d = Decoder::default();
        d.push(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert!(d.next_packet().is_err(), "5-byte remaining length");
        let mut d = Decoder::default();
        d.push(&[0xf0, 0x00]);
        assert!(d.next_packet().is_err(), "reserved packet type 15");
    }

    #[test]
    fn oversize_packet_is_refused_before_it_arrives() {
        let mut d = Decoder::default();
        // PUBLISH announcing 1 MiB of remaining length.
        d.push(&[0x30, 0x80, 0x80, 0x40]);
        let err = d.next_packet().unwrap_err();
        assert!(err.0.contains("over the limit"), "{err}");
    }

    /// Regression: a value that does not fit MQTT used to encode
    /// to an empty frame, which surfaced later as a timeout.
    #[test]
    fn values_that_do_not_fit_mqtt_are_an_error_at_once() {
        let long = "t".repeat(MAX_STRING + 1);
        let publish = Publish::new(long.clone(), QoS::AtLeastOnce, "x");
        let e = encode(&Packet::Publish(publish)).unwrap_err();
        assert!(
            e.0.contains("PUBLISH") && e.0.contains("topic") && e.0.contains("65536"),
            "{e}"
        );
        let e = encode(&Packet::Connect(Connect::new(long))).unwrap_err();
        assert!(e.0.contains("client id"), "{e}");
        let mut ok = Publish::new("t".repeat(MAX_STRING), QoS::AtLeastOnce, "x");
        ok.pkid = 1;
        assert!(encode(&Packet::Publish(ok)).is_ok());
    }
}
