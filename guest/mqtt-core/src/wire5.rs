//! MQTT 5 on the wire, for a client that keeps MQTT 3.1.1 packets in
//! memory: a 3.1.1 frame becomes its MQTT 5 form and back, byte by byte.
//! What 5 adds that the 3.1.1 packet cannot hold (properties, reason codes)
//! is written empty or mapped on the way out, and on the way in it is
//! dropped, except each packet's reason code, which comes back beside it.
//!
//! Why a converter and not mqttbytes' own `v5` module: the client, its
//! durable session and the mock host all speak `v4` packets, and the demo
//! component is small (its size is a goal); a few hundred bytes of frame
//! surgery cost less than a second codec with its property parsers.
//!
//! What each direction writes:
//! - CONNECT: protocol level 5; a session expiry interval of 0xFFFFFFFF
//!   (never) when the session is not clean, so a persistent session
//!   outlives the connection as in 3.1.1; empty will properties.
//! - CONNACK: the 3.1.1 return code as its MQTT 5 reason code, and back
//!   (a reason 5 has no word for in 3.1.1 becomes "server unavailable").
//! - PUBLISH, SUBSCRIBE, UNSUBSCRIBE, SUBACK: empty properties; SUBSCRIBE
//!   options keep only the QoS; a SUBACK failure is 0x80 either way.
//! - PUBACK, PUBREC, PUBREL, PUBCOMP, DISCONNECT: 3.1.1's short form is
//!   valid MQTT 5 (reason "success"); a reason and properties coming in
//!   are dropped and the reason returned.
//! - UNSUBACK: one reason, success, going out (the frame does not say how
//!   many filters it answers); reasons coming in are dropped.

use crate::packets::{DecodeError, EncodeError};

/// Session expiry interval written for a session that is not clean:
/// never expires, as a 3.1.1 persistent session.
const NEVER: [u8; 4] = [0xff; 4];

/// A frame's fixed header byte, its body, and where the body starts.
fn split(frame: &[u8]) -> Option<(u8, &[u8])> {
    let (&first, rest) = frame.split_first()?;
    let (len, used) = varint(rest)?;
    let body = rest.get(used..used + len)?;
    Some((first, body))
}

/// A variable byte integer at the start of `bytes`: its value and length.
fn varint(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, b) in bytes.iter().take(4).enumerate() {
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// `first` and `body` as a frame.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        out.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// Length of the MQTT string (2-byte length prefix) at `at`, prefix included.
fn string_len(body: &[u8], at: usize) -> Option<usize> {
    let hi = *body.get(at)?;
    let lo = *body.get(at + 1)?;
    Some(2 + usize::from(u16::from_be_bytes([hi, lo])))
}

/// `body` with `insert` put at `at`.
fn insert(body: &[u8], at: usize, insert: &[u8]) -> Option<Vec<u8>> {
    let (head, tail) = (body.get(..at)?, body.get(at..)?);
    Some([head, insert, tail].concat())
}

/// `body` without the properties (length and content) at `at`.
fn strip(body: &[u8], at: usize) -> Option<Vec<u8>> {
    let (len, used) = varint(body.get(at..)?)?;
    let end = at.checked_add(used)?.checked_add(len)?;
    Some([body.get(..at)?, body.get(end..)?].concat())
}

/// Where a PUBLISH's properties go: after its topic and, at QoS 1 or 2,
/// its packet id.
fn publish_props_at(first: u8, body: &[u8]) -> Option<usize> {
    let qos = (first >> 1) & 0x03;
    Some(string_len(body, 0)? + if qos > 0 { 2 } else { 0 })
}

/// Where a CONNECT's properties go, and where its payload starts after them
/// in 3.1.1 form: after the protocol name, level, flags and keep-alive.
fn connect_props_at(body: &[u8]) -> Option<usize> {
    Some(string_len(body, 0)? + 4)
}

/// MQTT 5 reason code of a 3.1.1 CONNACK return code.
fn connack_to_5(code: u8) -> u8 {
    match code {
        0 => 0x00,
        1 => 0x84, // unsupported protocol version
        2 => 0x85, // client identifier not valid
        3 => 0x88, // server unavailable
        4 => 0x86, // bad user name or password
        5 => 0x87, // not authorized
        _ => 0x80,
    }
}

/// 3.1.1 return code of an MQTT 5 CONNACK reason code.
fn connack_to_311(reason: u8) -> u8 {
    match reason {
        0x00 => 0,
        0x84 => 1,
        0x85 => 2,
        0x86 => 4,
        0x87 | 0x8a => 5, // not authorized, banned
        _ => 3,
    }
}

/// A 3.1.1 frame as MQTT 5.
pub fn to_v5(frame311: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let bad = || EncodeError(format!("cannot write {} bytes as MQTT 5", frame311.len()));
    let (first, body) = split(frame311).ok_or_else(bad)?;
    let body = match first >> 4 {
        1 => {
            let at = connect_props_at(body).ok_or_else(bad)?;
            let mut b = body.to_vec();
            // The level after the protocol name.
            *b.get_mut(at - 4).ok_or_else(bad)? = 5;
            let flags = *b.get(at - 3).ok_or_else(bad)?;
            let props: &[u8] = if flags & 0x02 == 0 {
                &[5, 0x11, NEVER[0], NEVER[1], NEVER[2], NEVER[3]]
            } else {
                &[0]
            };
            let mut b = insert(&b, at, props).ok_or_else(bad)?;
            if flags & 0x04 != 0 {
                // A will: its (empty) properties before its topic.
                let will = at + props.len() + string_len(&b, at + props.len()).ok_or_else(bad)?;
                b = insert(&b, will, &[0]).ok_or_else(bad)?;
            }
            b
        }
        2 => {
            let mut b = body.to_vec();
            let code = b.get_mut(1).ok_or_else(bad)?;
            *code = connack_to_5(*code);
            b.push(0);
            b
        }
        3 => insert(body, publish_props_at(first, body).ok_or_else(bad)?, &[0]).ok_or_else(bad)?,
        8..=10 => insert(body, 2, &[0]).ok_or_else(bad)?,
        11 => [body, &[0, 0]].concat(),
        _ => body.to_vec(),
    };
    Ok(frame(first, &body))
}

/// An MQTT 5 frame as 3.1.1, and the reason code it carried, if any.
pub fn from_v5(frame5: &[u8]) -> Result<(Vec<u8>, Option<u8>), DecodeError> {
    let bad = || DecodeError(format!("malformed MQTT 5 packet of {} bytes", frame5.len()));
    let (first, body) = split(frame5).ok_or_else(bad)?;
    let mut reason = None;
    let body = match first >> 4 {
        1 => {
            let at = connect_props_at(body).ok_or_else(bad)?;
            let mut b = strip(body, at).ok_or_else(bad)?;
            *b.get_mut(at - 4).ok_or_else(bad)? = 4;
            if b.get(at - 3).ok_or_else(bad)? & 0x04 != 0 {
                let will = at + string_len(&b, at).ok_or_else(bad)?;
                b = strip(&b, will).ok_or_else(bad)?;
            }
            b
        }
        2 => {
            let code = *body.get(1).ok_or_else(bad)?;
            reason = Some(code);
            vec![*body.first().ok_or_else(bad)?, connack_to_311(code)]
        }
        3 => strip(body, publish_props_at(first, body).ok_or_else(bad)?).ok_or_else(bad)?,
        4..=7 => {
            reason = body.get(2).copied().or(Some(0));
            body.get(..2).ok_or_else(bad)?.to_vec()
        }
        11 => {
            let b = strip(body, 2).ok_or_else(bad)?;
            reason = b.get(2).copied().or(Some(0));
            b.get(..2).ok_or_else(bad)?.to_vec()
        }
        8 => {
            let mut b = strip(body, 2).ok_or_else(bad)?;
            // Each filter's options: only the QoS is 3.1.1's.
            let mut at = 2;
            while at < b.len() {
                at += string_len(&b, at).ok_or_else(bad)?;
                let options = b.get_mut(at).ok_or_else(bad)?;
                *options &= 0x03;
                at += 1;
            }
            b
        }
        9 => {
            let mut b = strip(body, 2).ok_or_else(bad)?;
            for code in b.iter_mut().skip(2) {
                if *code >= 0x80 {
                    reason.get_or_insert(*code);
                    *code = 0x80;
                }
            }
            b
        }
        10 => strip(body, 2).ok_or_else(bad)?,
        14 => {
            reason = body.first().copied().or(Some(0));
            Vec::new()
        }
        _ => body.to_vec(),
    };
    Ok((frame(first, &body), reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packets::encode;
    use mqttbytes::QoS;
    use mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, LastWill, Login, Packet, Publish};

    fn hex(text: &str) -> Vec<u8> {
        text.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    /// What a mosquitto 2.0 broker sent a client speaking MQTT 5, as the
    /// client reads it.
    #[test]
    fn a_brokers_mqtt5_frames_read_as_their_311_forms() {
        let cases = [
            // CONNACK with topic alias maximum 10 and receive maximum 20.
            ("20 09 00 00 06 22 00 0a 21 00 14", "20 02 00 00", Some(0)),
            // PUBACK "no matching subscribers".
            ("40 03 00 07 10", "40 02 00 07", Some(0x10)),
            ("90 04 00 08 00 01", "90 03 00 08 01", None),
            (
                "32 0a 00 03 74 2f 78 00 01 00 68 69",
                "32 09 00 03 74 2f 78 00 01 68 69",
                None,
            ),
            ("b0 04 00 09 00 00", "b0 02 00 09", Some(0)),
            ("d0 00", "d0 00", None),
            // A refused CONNACK: not authorized.
            ("20 03 00 87 00", "20 02 00 05", Some(0x87)),
            // A SUBACK refusing the filter: not authorized.
            ("90 04 00 01 00 87", "90 03 00 01 80", Some(0x87)),
            // The server's DISCONNECT: session taken over.
            ("e0 01 8e", "e0 00", Some(0x8e)),
        ];
        for (v5, v311, want) in cases {
            let (got, reason) = from_v5(&hex(v5)).unwrap();
            assert_eq!(got, hex(v311), "{v5}");
            assert_eq!(reason, want, "{v5}");
        }
    }

    /// Every packet the client and the mock broker send goes to MQTT 5
    /// and comes back the same.
    #[test]
    fn every_packet_survives_the_round_trip() {
        let mut persistent = Connect::new("thing-1");
        persistent.clean_session = false;
        persistent.keep_alive = 60;
        persistent.login = Some(Login::new("user", "pass"));
        let mut with_will = Connect::new("thing-2");
        with_will.last_will = Some(LastWill::new("will/topic", "gone", QoS::AtLeastOnce, false));
        // Those 3.1.1 itself has, and the CONNECTs and CONNACK whose MQTT 5
        // forms differ most.
        let mut packets = crate::packets::tests::samples();
        packets.extend([
            Packet::Connect(persistent),
            Packet::Connect(with_will),
            Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, true)),
            Packet::ConnAck(ConnAck::new(ConnectReturnCode::NotAuthorized, false)),
            Packet::Publish(Publish::new("a/b", QoS::AtMostOnce, "x")),
        ]);
        for packet in packets {
            let v311 = encode(&packet).unwrap();
            let v5 = to_v5(&v311).unwrap();
            let (back, _) = from_v5(&v5).unwrap();
            assert_eq!(back, v311, "{packet:?}: {v5:02x?}");
        }
    }

    /// What goes out is MQTT 5 as the standard writes it.
    #[test]
    fn frames_going_out_are_mqtt5() {
        let mut c = Connect::new("d");
        c.keep_alive = 60;
        c.clean_session = false;
        let out = to_v5(&encode(&Packet::Connect(c)).unwrap()).unwrap();
        // Level 5, flags (not clean), keep-alive 60, then a session expiry
        // interval (0x11) of never.
        assert_eq!(
            out,
            hex("10 13 00 04 4d 51 54 54 05 00 00 3c 05 11 ff ff ff ff 00 01 64")
        );
        let mut p = Publish::new("t", QoS::AtLeastOnce, "x");
        p.pkid = 1;
        let out = to_v5(&encode(&Packet::Publish(p)).unwrap()).unwrap();
        assert_eq!(out, hex("32 07 00 01 74 00 01 00 78"));
        let refused = to_v5(&hex("20 02 00 05")).unwrap();
        assert_eq!(refused, hex("20 03 00 87 00"), "not authorized");
    }

    #[test]
    fn truncated_frames_are_errors_not_panics() {
        for bytes in [
            "",
            "20",
            "20 05 00",
            "32 03 00 09 74",
            "10 02 00 04",
            "90 03 00 01 05",
        ] {
            assert!(from_v5(&hex(bytes)).is_err(), "{bytes}");
        }
        assert!(to_v5(&hex("32 03 00 09 74")).is_err());
    }
}
