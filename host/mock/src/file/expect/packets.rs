//! Checks of the packets a logic sent: one packet's fields ([`PacketCheck`]),
//! lists of them in order, as a prefix or as a subsequence, and the rule
//! on packet ids.

use mqtt_core::packets::packet_name;
use mqttbytes::v4::Packet;
use regex::Regex;

use super::super::format::{PacketSpec, SentSpec};
use super::super::scenario::{kind_name, qos};
use super::regex;
use crate::Call;

/// Field checks of one packet, compiled.
pub struct PacketCheck {
    kind: &'static str,
    spec: PacketSpec,
    payload: Option<Regex>,
}

impl PacketCheck {
    /// A check of a packet of `kind` against `spec`'s fields; a field the
    /// kind does not carry is an error (it could never fail).
    pub fn new(kind: &'static str, spec: &PacketSpec) -> Result<Self, String> {
        if let Some(q) = spec.qos {
            qos(q)?;
        }
        let given = [
            ("topic", spec.topic.is_some()),
            ("payload", spec.payload.is_some()),
            ("payload-matches", spec.payload_matches.is_some()),
            ("qos", spec.qos.is_some()),
            ("dup", spec.dup.is_some()),
            ("retain", spec.retain.is_some()),
            ("packet-id", spec.packet_id.is_some()),
            ("filters", spec.filters.is_some()),
            ("client-id", spec.client_id.is_some()),
            ("clean-session", spec.clean_session.is_some()),
            ("keep-alive", spec.keep_alive.is_some()),
            ("username", spec.username.is_some()),
            ("password", spec.password.is_some()),
        ];
        let carries = fields_of(kind);
        if let Some((field, _)) = given.iter().find(|(f, set)| *set && !carries.contains(f)) {
            let fields = if carries.is_empty() {
                "none".to_string()
            } else {
                carries.join(", ")
            };
            return Err(format!(
                "a {kind} has no `{field}` to check (its fields: {fields})"
            ));
        }
        let payload = spec.payload_matches.as_deref().map(regex).transpose()?;
        Ok(Self {
            kind,
            spec: spec.clone(),
            payload,
        })
    }

    /// `Ok` when `packet` is of the kind and has every field given; else
    /// what differs.
    pub fn check(&self, packet: &Packet) -> Result<(), String> {
        let name = packet_name(packet);
        if name != self.kind {
            return Err(format!("expected {}, got {name}", self.kind));
        }
        let s = &self.spec;
        let mut wrong = Vec::new();
        match packet {
            Packet::Publish(p) => {
                if let Some(t) = &s.topic {
                    field(
                        &mut wrong,
                        "topic",
                        format!("{t:?}"),
                        format!("{:?}", p.topic),
                    );
                }
                let text = String::from_utf8_lossy(&p.payload);
                if let Some(want) = &s.payload {
                    field(
                        &mut wrong,
                        "payload",
                        format!("{want:?}"),
                        format!("{text:?}"),
                    );
                }
                if let Some(re) = &self.payload
                    && !re.is_match(&text)
                {
                    wrong.push(format!("payload matches /{re}/ (got {text:?})"));
                }
                if let Some(q) = s.qos {
                    field(&mut wrong, "qos", q.to_string(), (p.qos as u8).to_string());
                }
                if let Some(d) = s.dup {
                    field(&mut wrong, "dup", d.to_string(), p.dup.to_string());
                }
                if let Some(r) = s.retain {
                    field(&mut wrong, "retain", r.to_string(), p.retain.to_string());
                }
                if let Some(id) = s.packet_id {
                    field(&mut wrong, "packet-id", id.to_string(), p.pkid.to_string());
                }
            }
            Packet::Connect(c) => {
                if let Some(id) = &s.client_id {
                    field(
                        &mut wrong,
                        "client-id",
                        format!("{id:?}"),
                        format!("{:?}", c.client_id),
                    );
                }
                if let Some(v) = s.clean_session {
                    field(
                        &mut wrong,
                        "clean-session",
                        v.to_string(),
                        c.clean_session.to_string(),
                    );
                }
                if let Some(v) = s.keep_alive {
                    field(
                        &mut wrong,
                        "keep-alive",
                        v.to_string(),
                        c.keep_alive.to_string(),
                    );
                }
                // "" stands for no user name (and so no login at all).
                let login = |text: Option<&String>| match text {
                    None => "(none)".to_string(),
                    Some(t) => format!("{t:?}"),
                };
                if let Some(u) = &s.username {
                    let want = login(Some(u).filter(|u| !u.is_empty()));
                    let got = login(c.login.as_ref().map(|l| &l.username));
                    field(&mut wrong, "username", want, got);
                }
                if let Some(p) = &s.password {
                    let want = login(Some(p).filter(|p| !p.is_empty()));
                    let got = login(
                        c.login
                            .as_ref()
                            .map(|l| &l.password)
                            .filter(|p| !p.is_empty()),
                    );
                    field(&mut wrong, "password", want, got);
                }
            }
            Packet::Subscribe(sub) => {
                if let Some(f) = &s.filters {
                    let got: Vec<_> = sub.filters.iter().map(|f| f.path.clone()).collect();
                    field(&mut wrong, "filters", format!("{f:?}"), format!("{got:?}"));
                }
                if let Some(q) = s.qos {
                    let got: Vec<String> = sub
                        .filters
                        .iter()
                        .map(|f| (f.qos as u8).to_string())
                        .collect();
                    let want = vec![q.to_string(); got.len().max(1)];
                    field(&mut wrong, "qos", want.join(","), got.join(","));
                }
                if let Some(id) = s.packet_id {
                    field(
                        &mut wrong,
                        "packet-id",
                        id.to_string(),
                        sub.pkid.to_string(),
                    );
                }
            }
            Packet::Unsubscribe(u) => {
                if let Some(f) = &s.filters {
                    field(
                        &mut wrong,
                        "filters",
                        format!("{f:?}"),
                        format!("{:?}", u.topics),
                    );
                }
                if let Some(id) = s.packet_id {
                    field(&mut wrong, "packet-id", id.to_string(), u.pkid.to_string());
                }
            }
            Packet::PubAck(a) => {
                if let Some(id) = s.packet_id {
                    field(&mut wrong, "packet-id", id.to_string(), a.pkid.to_string());
                }
            }
            _ => {}
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(format!("expected {} with {}", self.kind, wrong.join(", ")))
        }
    }

    /// The packet's virtual send time, when the pattern gives one.
    fn at_ms(&self) -> Option<super::super::format::AtMs> {
        self.spec.at_ms
    }

    /// `Ok` when `packet`, sent at `at_ms`, matches the fields and the time.
    fn check_at(&self, packet: &Packet, at_ms: u64) -> Result<(), String> {
        self.check(packet)?;
        match self.at_ms() {
            Some(want) if !want.holds(at_ms) => Err(format!(
                "expected {} {want} of virtual time, sent at {at_ms} ms",
                self.kind
            )),
            _ => Ok(()),
        }
    }
}

/// The fields a packet of `kind` has for checks.
pub(super) fn fields_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "PUBLISH" => &[
            "topic",
            "payload",
            "payload-matches",
            "qos",
            "dup",
            "retain",
            "packet-id",
        ],
        "CONNECT" => &[
            "client-id",
            "clean-session",
            "keep-alive",
            "username",
            "password",
        ],
        "SUBSCRIBE" => &["filters", "qos", "packet-id"],
        "UNSUBSCRIBE" => &["filters", "packet-id"],
        "PUBACK" => &["packet-id"],
        _ => &[],
    }
}

/// Notes `key` as wrong when `want` and `got` differ.
pub(super) fn field(wrong: &mut Vec<String>, key: &str, want: String, got: String) {
    if want != got {
        wrong.push(format!("{key} = {want} (got {got})"));
    }
}

pub(super) fn sent_check(key: &str, spec: &SentSpec) -> Result<PacketCheck, String> {
    match spec {
        SentSpec::Kind(kind) => PacketCheck::new(kind_name(kind)?, &PacketSpec::default()),
        SentSpec::Packet(p) => {
            let kind = p
                .kind
                .as_deref()
                .ok_or_else(|| format!("a packet in `{key}` needs its `kind`"))?;
            PacketCheck::new(kind_name(kind)?, p)
        }
    }
}

/// Compares packets in order: all of them (`exact`) or the first ones.
pub(super) fn packet_failures(
    f: &mut Vec<String>,
    key: &str,
    checks: &[PacketCheck],
    sent: &[(Packet, u64)],
    exact: bool,
) {
    for (i, check) in checks.iter().enumerate() {
        let Some((packet, at_ms)) = sent.get(i) else {
            f.push(format!(
                "{key}: expected packet {} to be {}, but the logic sent only {} packets: {}",
                i + 1,
                check.kind,
                sent.len(),
                names(sent)
            ));
            return;
        };
        if let Err(why) = check.check(packet) {
            f.push(format!("{key}: packet {}: {why}; actual {packet:?}", i + 1));
            return;
        }
        if let Some(want) = check.at_ms()
            && !want.holds(*at_ms)
        {
            f.push(format!(
                "{key}: packet {} ({}): expected {want} of virtual time, sent at {at_ms} ms",
                i + 1,
                check.kind
            ));
        }
    }
    if exact && sent.len() > checks.len() {
        f.push(format!(
            "{key}: expected {} packets, the logic sent {}: {}",
            checks.len(),
            sent.len(),
            names(sent)
        ));
    }
}

pub(super) fn names(sent: &[(Packet, u64)]) -> String {
    sent.iter()
        .map(|(p, _)| packet_name(p))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Compares packets as a subsequence: each check matches a later packet
/// than the one before it.
pub(super) fn in_order_failures(
    f: &mut Vec<String>,
    checks: &[PacketCheck],
    sent: &[(Packet, u64)],
) {
    let mut from = 0;
    for (i, check) in checks.iter().enumerate() {
        match (from..sent.len()).find(|&j| check.check_at(&sent[j].0, sent[j].1).is_ok()) {
            Some(j) => from = j + 1,
            None => {
                // The nearest miss says what differed.
                let near = (from..sent.len()).find_map(|j| {
                    check
                        .check_at(&sent[j].0, sent[j].1)
                        .err()
                        .filter(|_| packet_name(&sent[j].0) == check.kind)
                });
                f.push(format!(
                    "sent-in-order: entry {} ({}) matches no packet after packet {from}{}; sent: {}",
                    i + 1,
                    check.kind,
                    near.map(|why| format!(" (the first {} after it: {why})", check.kind))
                        .unwrap_or_default(),
                    names(sent)
                ));
                return;
            }
        }
    }
}

/// The first packet id used twice on one connection, or zero, if any:
/// PUBLISH at QoS 1 or 2 (a DUP resend excepted), SUBSCRIBE, UNSUBSCRIBE.
pub(super) fn packet_id_reuse(calls: &[Call]) -> Option<String> {
    let mut used = std::collections::HashMap::new();
    let mut connection = 0;
    for call in calls {
        let (kind, id) = match call {
            Call::Connect { refused: None, .. } => {
                connection += 1;
                used.clear();
                continue;
            }
            Call::Sent { packet, .. } => match packet {
                Packet::Publish(p) if p.qos as u8 > 0 && !p.dup => ("PUBLISH", p.pkid),
                Packet::Subscribe(s) => ("SUBSCRIBE", s.pkid),
                Packet::Unsubscribe(u) => ("UNSUBSCRIBE", u.pkid),
                _ => continue,
            },
            _ => continue,
        };
        if id == 0 {
            return Some(format!(
                "a {kind} on connection {connection} has packet id 0"
            ));
        }
        if let Some(first) = used.insert(id, kind) {
            return Some(format!(
                "packet id {id} is used by a {first} and then a {kind} on connection {connection}"
            ));
        }
    }
    None
}
