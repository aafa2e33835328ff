//! The scripted broker: a list of steps the mock broker follows, in order,
//! and an automatic broker (CONNACK, SUBACK, PUBACK plus echo, UNSUBACK,
//! PINGRESP) for the parts of a scenario that are not under test.

use std::collections::VecDeque;
use std::fmt;

use host_core::TransportError;
use mqttbytes::QoS;
use mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck,
};

/// Builds the broker's answer to a guest packet.
pub type Reply = Box<dyn Fn(&Packet) -> Vec<Packet> + Send>;

/// One thing the mock broker does.
pub enum Step {
    /// Answers the next `connect` call with this error. A `connect` with no
    /// `RefuseConnect` at the head of the script is accepted.
    RefuseConnect(TransportError),
    /// Expects the guest's next packet to be `kind` (e.g. "PUBLISH") and
    /// answers with the reply's packets; another packet fails the scenario.
    Expect(&'static str, Reply),
    /// Expects a packet of `kind` and checks it with the predicate; a
    /// mismatch fails the scenario with the predicate's message.
    ExpectWhere(&'static str, Check, Reply),
    /// Answers the next `n` guest packets as the automatic broker would.
    Auto(usize),
    /// Delivers these raw bytes to the guest now (valid or not).
    Send(Vec<u8>),
    /// Closes the connection now: the guest's next receive or send fails
    /// with `connection-closed`.
    Close,
    /// Makes the guest's next import call trap with this message.
    Trap(String),
    /// Delays what comes next by this many milliseconds of virtual time:
    /// the bytes of a `Send` step right after it, or the reply to the next
    /// packet (an `Expect` or `Auto` step). Later bytes queue behind them,
    /// as on one stream.
    After(u64),
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::RefuseConnect(c) => write!(f, "RefuseConnect({c:?})"),
            Step::Expect(k, _) | Step::ExpectWhere(k, _, _) => write!(f, "Expect({k})"),
            Step::Auto(n) => write!(f, "Auto({n})"),
            Step::Send(b) => write!(f, "Send({b:02x?})"),
            Step::Close => f.write_str("Close"),
            Step::Trap(m) => write!(f, "Trap({m:?})"),
            Step::After(ms) => write!(f, "After({ms} ms)"),
        }
    }
}

/// The step as a scenario file writes it, for failure messages.
impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::RefuseConnect(c) => write!(f, "a connect (refuse-connect = {:?})", c.name()),
            Step::Expect(k, _) | Step::ExpectWhere(k, _, _) => write!(f, "a {k} (expect)"),
            Step::Auto(n) => write!(f, "{n} packet(s) (auto = {n})"),
            Step::Send(_) => f.write_str("send"),
            Step::Close => f.write_str("close"),
            Step::Trap(_) => f.write_str("trap"),
            Step::After(ms) => write!(f, "after-ms = {ms}"),
        }
    }
}

impl Step {
    /// Expects `kind` and sends nothing back.
    pub fn swallow(kind: &'static str) -> Self {
        Step::Expect(kind, Box::new(|_| Vec::new()))
    }

    /// Expects `kind` and answers as the automatic broker would.
    pub fn expect_auto(kind: &'static str) -> Self {
        Step::Expect(kind, Box::new(auto_reply))
    }
}

/// Checks a guest packet; `Err` says what is wrong.
pub type Check = Box<dyn Fn(&Packet) -> Result<(), String> + Send>;

/// How bytes reach the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// Each receive returns everything queued (several packets in one read).
    #[default]
    Coalesced,
    /// Each receive returns at most one byte.
    OneByte,
}

/// What the script does after its last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AfterScript {
    /// Answer every further packet automatically.
    #[default]
    Auto,
    /// Fail the scenario on any further packet.
    Strict,
}

/// The broker's behaviour for one scenario.
#[derive(Debug, Default)]
pub struct Script {
    /// Steps not yet done, in order.
    pub steps: VecDeque<Step>,
    /// How bytes are delivered.
    pub delivery: Delivery,
    /// Behaviour after the last step.
    pub after: AfterScript,
    /// What failures call each step, in order ("step 3 (line 41)");
    /// a step without one is called by its number.
    pub labels: Vec<String>,
}

impl Script {
    /// A script that answers everything automatically.
    pub fn auto() -> Self {
        Self::default()
    }

    /// A script of these steps, then automatic answers.
    pub fn steps(steps: impl IntoIterator<Item = Step>) -> Self {
        Self {
            steps: steps.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Sets the delivery mode.
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// Fails on packets after the last step instead of answering them.
    pub fn strict(mut self) -> Self {
        self.after = AfterScript::Strict;
        self
    }
}

/// The automatic broker's answer: CONNACK accepted, SUBACK granting QoS 1,
/// PUBACK then the echo for a QoS 1 PUBLISH, UNSUBACK, PINGRESP.
pub fn auto_reply(packet: &Packet) -> Vec<Packet> {
    match packet {
        Packet::Connect(_) => vec![Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            false,
        ))],
        Packet::Subscribe(s) => vec![Packet::SubAck(SubAck::new(
            s.pkid,
            s.filters
                .iter()
                .map(|_| SubscribeReasonCode::Success(QoS::AtLeastOnce))
                .collect(),
        ))],
        Packet::Publish(p) => {
            let mut out = Vec::new();
            if p.qos != QoS::AtMostOnce {
                out.push(Packet::PubAck(PubAck::new(p.pkid)));
            }
            out.push(Packet::Publish(echo_of(p, 1)));
            out
        }
        Packet::Unsubscribe(u) => vec![Packet::UnsubAck(UnsubAck::new(u.pkid))],
        Packet::PingReq => vec![Packet::PingResp],
        _ => Vec::new(),
    }
}

/// The broker's copy of `p` as delivered to a subscriber, with packet id `pkid`.
pub fn echo_of(p: &Publish, pkid: u16) -> Publish {
    let mut echo = Publish::from_bytes(p.topic.clone(), QoS::AtLeastOnce, p.payload.clone());
    echo.pkid = pkid;
    echo
}
