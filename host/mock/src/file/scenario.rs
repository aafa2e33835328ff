//! A scenario of a file as the mock host's [`Scenario`]: settings over the
//! defaults, the plan, and the broker's [`Script`] from the steps.

use host_core::settings::DeviceSettings;
use host_core::supervisor::RestartPolicy;
use mqttbytes::QoS;
use mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck,
};

use super::format::{
    AfterSpec, Common, DeliverySpec, IdOrSame, LimitsSpec, PublishSpec, ReplyPacket, ReplySpec,
    ScenarioSpec, SettingsSpec, StepSpec,
};
use crate::script::{AfterScript, Delivery, Reply, Script, Step, auto_reply, echo_of};
use crate::{Limits, Scenario, TransportError, default_settings};

/// Every packet kind a step or check may name.
pub const PACKET_KINDS: [&str; 14] = [
    "CONNECT",
    "CONNACK",
    "PUBLISH",
    "PUBACK",
    "PUBREC",
    "PUBREL",
    "PUBCOMP",
    "SUBSCRIBE",
    "SUBACK",
    "UNSUBSCRIBE",
    "UNSUBACK",
    "PINGREQ",
    "PINGRESP",
    "DISCONNECT",
];

/// Most repetitions of one step, and most iterations of one scenario.
pub const MAX_REPEAT: usize = 10_000;

/// The scenario `spec` describes, over the file's `defaults`, its limits
/// over `base` (the mock host's).
pub fn scenario(
    spec: &ScenarioSpec,
    defaults: &Common,
    base: &Limits,
) -> Result<Scenario, Invalid> {
    let mut settings = default_settings();
    apply(&mut settings, &defaults.settings);
    apply(&mut settings, &spec.settings);
    if spec.settings.topic.is_none() && defaults.settings.topic.is_none() {
        settings.topic = DeviceSettings::default_topic(&settings.client_id);
    }
    let (steps, labels) =
        steps(&spec.steps, &spec.step_lines).map_err(|(step, message)| Invalid {
            step: Some(step),
            message,
        })?;
    let mut script = Script::steps(steps);
    script.labels = labels;
    script.delivery = match spec.delivery.or(defaults.delivery) {
        Some(DeliverySpec::OneByte) => Delivery::OneByte,
        Some(DeliverySpec::Coalesced) | None => Delivery::Coalesced,
    };
    script.after = match spec.after.or(defaults.after) {
        Some(AfterSpec::Strict) => AfterScript::Strict,
        Some(AfterSpec::Auto) | None => AfterScript::Auto,
    };
    let mut scenario = Scenario::new(script);
    scenario.settings = settings;
    scenario.seed = spec.seed.or(defaults.seed).unwrap_or(0);
    let iterations = spec.iterations.or(defaults.iterations).unwrap_or(1);
    if iterations == 0 || iterations as usize > MAX_REPEAT {
        return Err(format!("iterations = {iterations}: give 1 to {MAX_REPEAT}").into());
    }
    scenario.plan.iterations = Some(iterations);
    if let Some(ms) = spec.iteration_delay_ms.or(defaults.iteration_delay_ms) {
        scenario.plan.iteration_delay_ms = ms;
    }
    let device = scenario.settings.client_id.clone();
    for (key, value) in defaults.store.iter().chain(&spec.store) {
        scenario.store.seed(&device, key, value.bytes());
    }
    scenario.limits = Some(limits(spec.limits.or(defaults.limits), base)?);
    if let Some(n) = spec.fail_writes.or(defaults.fail_writes) {
        scenario.store.fail_writes(n);
    }
    let mut config = defaults.logic_config.clone();
    config.extend(spec.logic_config.clone());
    scenario.logic_config = config
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
    if let Some(r) = spec.restart.or(defaults.restart) {
        scenario.plan.restart = RestartPolicy {
            base_ms: r.base_ms,
            max_ms: r.max_ms,
            max_attempts: r.max_attempts,
        };
    }
    Ok(scenario)
}

/// What is wrong with a scenario, and the step it is in (from 0), if one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The step, from 0.
    pub step: Option<usize>,
    /// What is wrong, naming the key.
    pub message: String,
}

impl From<String> for Invalid {
    fn from(message: String) -> Self {
        Self {
            step: None,
            message,
        }
    }
}

/// The limits `spec` sets over `base`. Each key takes what its flag's type
/// takes (the parse refuses the rest); `max-memory-mib` is also held to
/// `host test --max-memory-mib`'s range, 1 to 4096.
pub fn limits(spec: LimitsSpec, base: &Limits) -> Result<Limits, String> {
    let mut l = *base;
    if let Some(ms) = spec.iteration_timeout_ms {
        l.iteration_timeout_ms = Some(ms);
    }
    if let Some(mib) = spec.max_memory_mib {
        if !(1..=4096).contains(&mib) {
            return Err(format!("limits: max-memory-mib = {mib}: give 1 to 4096"));
        }
        l.max_memory_bytes = mib << 20;
    }
    macro_rules! set {
        ($($field:ident),*) => { $(if let Some(v) = spec.$field { l.$field = v; })* };
    }
    set!(
        cpu_limit_ms,
        cpu_budget_ms,
        max_table_elements,
        max_connections,
        max_io_bytes,
        connect_burst,
        connect_interval_ms,
        state_writes_per_sec
    );
    if let Some(n) = spec.log_lines_per_sec {
        l.output.lines_per_sec = n;
    }
    if let Some(n) = spec.log_burst {
        l.output.burst = n;
    }
    Ok(l)
}

fn apply(s: &mut DeviceSettings, o: &SettingsSpec) {
    macro_rules! set {
        ($($field:ident),*) => {
            $(if let Some(v) = &o.$field { s.$field = v.clone(); })*
        };
    }
    set!(
        broker_host,
        broker_port,
        client_id,
        topic,
        payload,
        publish_count,
        publish_delay_ms,
        process_loop_ms,
        connack_timeout_ms,
        transport_timeout_ms,
        connect_timeout_ms,
        keep_alive_secs,
        pingresp_timeout_ms,
        backoff_base_ms,
        backoff_max_ms,
        backoff_max_attempts,
        clean_session
    );
    if let Some(u) = &o.username {
        s.username = Some(u.clone());
    }
    if let Some(p) = &o.password {
        s.password = Some(p.clone());
    }
}

/// The script's steps, `times` expanded, and their labels (with the line
/// of each step when `lines` gives it); an error names the step, from 0.
fn steps(specs: &[StepSpec], lines: &[usize]) -> Result<(Vec<Step>, Vec<String>), (usize, String)> {
    let mut out = Vec::new();
    let mut labels = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let times = spec.times.unwrap_or(1);
        if times == 0 || times > MAX_REPEAT {
            return Err((i, format!("times = {times}: give 1 to {MAX_REPEAT}")));
        }
        if spec.after_ms.is_some() && spec.expect.is_none() && spec.send.is_none() {
            return Err((i, "`after-ms` goes with `expect` or `send`".into()));
        }
        let label = match lines.get(i) {
            Some(line) => format!("step {} (line {line})", i + 1),
            None => format!("step {}", i + 1),
        };
        for _ in 0..times {
            if let Some(ms) = spec.after_ms {
                out.push(Step::After(ms));
                labels.push(label.clone());
            }
            out.push(step(spec).map_err(|e| (i, e))?);
            labels.push(label.clone());
        }
    }
    Ok((out, labels))
}

fn step(spec: &StepSpec) -> Result<Step, String> {
    let actions = [
        spec.refuse_connect.is_some(),
        spec.auto.is_some(),
        spec.expect.is_some(),
        spec.swallow.is_some(),
        spec.send.is_some(),
        spec.close.is_some(),
        spec.trap.is_some(),
    ];
    if actions.iter().filter(|a| **a).count() != 1 {
        return Err(
            "give exactly one of refuse-connect, auto, expect, swallow, send, close, trap".into(),
        );
    }
    if (spec.where_.is_some() || spec.reply.is_some()) && spec.expect.is_none() {
        return Err("`where` and `reply` go with `expect`".into());
    }
    if let Some(name) = &spec.refuse_connect {
        return Ok(Step::RefuseConnect(error_code(name)?));
    }
    if let Some(n) = spec.auto {
        if n == 0 || n > MAX_REPEAT {
            return Err(format!("auto = {n}: give 1 to {MAX_REPEAT}"));
        }
        return Ok(Step::Auto(n));
    }
    if let Some(kind) = &spec.swallow {
        return Ok(Step::swallow(kind_name(kind)?));
    }
    if let Some(hex) = &spec.send {
        return Ok(Step::Send(bytes(hex)?));
    }
    if let Some(close) = spec.close {
        return if close {
            Ok(Step::Close)
        } else {
            Err("close = false is no step: write close = true, or leave the step out".into())
        };
    }
    if let Some(message) = &spec.trap {
        return Ok(Step::Trap(message.clone()));
    }
    let kind = kind_name(spec.expect.as_deref().unwrap_or_default())?;
    let reply = reply(kind, spec.reply.as_ref())?;
    Ok(match &spec.where_ {
        None => Step::Expect(kind, reply),
        Some(pattern) => {
            if pattern.kind.is_some() || pattern.at_ms.is_some() {
                return Err("`where` checks fields; `kind` and `at-ms` do not go in it".into());
            }
            let check = super::expect::PacketCheck::new(kind, pattern)?;
            Step::ExpectWhere(kind, Box::new(move |p| check.check(p)), reply)
        }
    })
}

/// A packet kind's canonical name.
pub fn kind_name(kind: &str) -> Result<&'static str, String> {
    let upper = kind.to_ascii_uppercase();
    PACKET_KINDS
        .iter()
        .find(|k| **k == upper)
        .copied()
        .ok_or_else(|| {
            format!(
                "unknown packet kind {kind:?} (one of {})",
                PACKET_KINDS.join(", ")
            )
        })
}

/// A WIT `error-code` by name.
pub fn error_code(name: &str) -> Result<TransportError, String> {
    TransportError::ALL
        .iter()
        .find(|e| e.name() == name)
        .copied()
        .ok_or_else(|| {
            let names: Vec<_> = TransportError::ALL.iter().map(|e| e.name()).collect();
            format!("unknown error-code {name:?} (one of {})", names.join(", "))
        })
}

/// Bytes from hex, spaces allowed.
pub fn bytes(hex: &str) -> Result<Vec<u8>, String> {
    let compact: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(&compact).map_err(|e| format!("bad hex {hex:?}: {e}"))
}

/// The answer to a packet of `kind`.
fn reply(kind: &'static str, spec: Option<&ReplySpec>) -> Result<Reply, String> {
    match spec {
        None => Ok(Box::new(auto_reply)),
        Some(ReplySpec::Word(w)) if w == "auto" => Ok(Box::new(auto_reply)),
        Some(ReplySpec::Word(w)) if w == "none" => Ok(Box::new(|_| Vec::new())),
        Some(ReplySpec::Word(w)) => Err(format!(
            "reply {w:?}: give \"auto\", \"none\" or a list of packets"
        )),
        Some(ReplySpec::Packets(list)) => {
            let makers = list
                .iter()
                .map(|p| reply_packet(kind, p))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Box::new(move |p| makers.iter().map(|m| m(p)).collect()))
        }
    }
}

/// Makes one answer packet from the packet answered.
type Maker = Box<dyn Fn(&Packet) -> Packet + Send>;

/// One answer packet to a packet of `kind`; an answer that needs what the
/// packet does not have (an echo of a CONNECT, a SUBACK to a PUBLISH) is
/// an error.
fn reply_packet(kind: &'static str, spec: &ReplyPacket) -> Result<Maker, String> {
    let kinds = [
        spec.connack.is_some(),
        spec.suback.is_some(),
        spec.puback.is_some(),
        spec.unsuback.is_some(),
        spec.pingresp.is_some(),
        spec.echo.is_some(),
        spec.publish.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        return Err(
            "a reply packet is exactly one of connack, suback, puback, unsuback, pingresp, echo, publish (raw bytes: a `send` step after the expect)"
                .into(),
        );
    }
    if spec.session_present.is_some() && spec.connack.is_none() {
        return Err("`session-present` goes with `connack`".into());
    }
    let flags = [
        ("unsuback", spec.unsuback),
        ("pingresp", spec.pingresp),
        (
            "puback",
            match spec.puback {
                Some(IdOrSame::Same(b)) => Some(b),
                _ => None,
            },
        ),
    ];
    if let Some((key, _)) = flags.iter().find(|(_, v)| *v == Some(false)) {
        return Err(format!(
            "{key} = false sends nothing: write {key} = true, or leave it out"
        ));
    }
    let answers = |needs: &str, what: &str| {
        if kind == needs {
            Ok(())
        } else {
            Err(format!(
                "{what} answers a {needs}, and this step expects a {kind}"
            ))
        }
    };
    if spec.suback.is_some() {
        answers("SUBSCRIBE", "suback")?;
    }
    if spec.unsuback.is_some() {
        answers("UNSUBSCRIBE", "unsuback")?;
    }
    if spec.echo.is_some() {
        answers("PUBLISH", "echo")?;
    }
    if matches!(spec.puback, Some(IdOrSame::Same(_))) {
        answers("PUBLISH", "puback = true (the id of the PUBLISH answered)")?;
    }
    if let Some(code) = &spec.connack {
        let code = connack_code(code)?;
        let present = spec.session_present.unwrap_or(false);
        return Ok(Box::new(move |_| {
            Packet::ConnAck(ConnAck::new(code, present))
        }));
    }
    if let Some(codes) = &spec.suback {
        let codes = codes
            .iter()
            .map(|c| suback_code(c))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Box::new(move |p| {
            Packet::SubAck(SubAck::new(packet_id(p), codes.clone()))
        }));
    }
    if let Some(id) = spec.puback {
        return Ok(Box::new(move |p| {
            Packet::PubAck(PubAck::new(match id {
                IdOrSame::Id(id) => id,
                IdOrSame::Same(_) => packet_id(p),
            }))
        }));
    }
    if spec.unsuback.is_some() {
        return Ok(Box::new(|p| Packet::UnsubAck(UnsubAck::new(packet_id(p)))));
    }
    if spec.pingresp.is_some() {
        return Ok(Box::new(|_| Packet::PingResp));
    }
    if let Some(id) = spec.echo {
        return Ok(Box::new(move |p| match p {
            Packet::Publish(p) => Packet::Publish(echo_of(p, id)),
            _ => Packet::Publish(Publish::new("", QoS::AtLeastOnce, Vec::new())),
        }));
    }
    let publish = spec.publish.as_ref().ok_or("a reply packet needs a kind")?;
    let packet = publish_packet(publish)?;
    Ok(Box::new(move |_| packet.clone()))
}

fn publish_packet(spec: &PublishSpec) -> Result<Packet, String> {
    let qos = qos(spec.qos.unwrap_or(1))?;
    let mut p = Publish::new(spec.topic.clone(), qos, spec.payload.clone().into_bytes());
    p.pkid = if qos == QoS::AtMostOnce {
        0
    } else {
        spec.packet_id.unwrap_or(1)
    };
    p.dup = spec.dup;
    p.retain = spec.retain;
    Ok(Packet::Publish(p))
}

/// QoS from 0, 1 or 2.
pub fn qos(level: u8) -> Result<QoS, String> {
    match level {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Ok(QoS::ExactlyOnce),
        n => Err(format!("QoS {n}: give 0, 1 or 2")),
    }
}

/// The packet id of the packet answered (0 when it has none).
fn packet_id(p: &Packet) -> u16 {
    match p {
        Packet::Publish(p) => p.pkid,
        Packet::Subscribe(s) => s.pkid,
        Packet::Unsubscribe(u) => u.pkid,
        Packet::PubAck(a) => a.pkid,
        _ => 0,
    }
}

fn connack_code(name: &str) -> Result<ConnectReturnCode, String> {
    Ok(match name {
        "accepted" => ConnectReturnCode::Success,
        "unacceptable-protocol-version" => ConnectReturnCode::RefusedProtocolVersion,
        "identifier-rejected" => ConnectReturnCode::BadClientId,
        "server-unavailable" => ConnectReturnCode::ServiceUnavailable,
        "bad-user-name-or-password" => ConnectReturnCode::BadUserNamePassword,
        "not-authorized" => ConnectReturnCode::NotAuthorized,
        other => {
            return Err(format!(
                "connack {other:?}: give accepted, unacceptable-protocol-version, identifier-rejected, server-unavailable, bad-user-name-or-password or not-authorized"
            ));
        }
    })
}

fn suback_code(name: &str) -> Result<SubscribeReasonCode, String> {
    Ok(match name {
        "qos0" => SubscribeReasonCode::Success(QoS::AtMostOnce),
        "qos1" => SubscribeReasonCode::Success(QoS::AtLeastOnce),
        "qos2" => SubscribeReasonCode::Success(QoS::ExactlyOnce),
        "failure" => SubscribeReasonCode::Failure,
        other => {
            return Err(format!(
                "suback {other:?}: give qos0, qos1, qos2 or failure"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(steps: &str) -> String {
        let text = format!("name = \"x\"\nsteps = [{steps}]\n");
        let spec: ScenarioSpec = toml::from_str(&text).expect(&text);
        match scenario(&spec, &Common::default(), &Limits::default()) {
            Ok(_) => panic!("{steps} was taken"),
            Err(e) => match e.step {
                Some(step) => format!("step {}: {}", step + 1, e.message),
                None => e.message,
            },
        }
    }

    #[test]
    fn steps_that_could_not_mean_what_they_say_are_refused() {
        for (steps, want) in [
            ("{ auto = 0 }", "auto = 0"),
            ("{ auto = 1, times = 0 }", "times = 0"),
            ("{ auto = 1, times = 10001 }", "times = 10001"),
            ("{ close = false }", "close = false"),
            ("{ auto = 1, close = true }", "exactly one"),
            ("{ auto = 1, reply = \"none\" }", "go with `expect`"),
            (
                "{ expect = \"CONNECT\", reply = [{ echo = 1 }] }",
                "echo answers a PUBLISH",
            ),
            (
                "{ expect = \"PUBLISH\", reply = [{ suback = [\"qos1\"] }] }",
                "suback answers a SUBSCRIBE",
            ),
            (
                "{ expect = \"PUBLISH\", reply = [{ pingresp = false }] }",
                "pingresp = false",
            ),
            ("{ expect = \"PUBLISH\", reply = \"maybe\" }", "\"maybe\""),
            (
                "{ expect = \"PUBLISH\", where = { kind = \"PUBLISH\" } }",
                "`kind`",
            ),
            (
                "{ expect = \"PUBACK\", where = { topic = \"t\" } }",
                "no `topic`",
            ),
            ("{ send = \"zz\" }", "bad hex"),
            ("{ refuse-connect = \"nope\" }", "unknown error-code"),
        ] {
            let e = error(steps);
            assert!(e.contains(want), "{steps}: {e}");
        }
    }

    #[test]
    fn defaults_apply_and_a_scenario_overrides_them() {
        let defaults: Common =
            toml::from_str("seed = 5\niterations = 2\nsettings = { client-id = \"d\" }").unwrap();
        let spec: ScenarioSpec =
            toml::from_str("name = \"x\"\nseed = 6\nsettings = { clean-session = false }").unwrap();
        let s = scenario(&spec, &defaults, &Limits::default()).unwrap();
        assert_eq!(s.seed, 6);
        assert_eq!(s.plan.iterations, Some(2));
        assert_eq!(s.settings.client_id, "d");
        assert_eq!(
            s.settings.topic, "d/example/topic",
            "the topic follows the client id"
        );
        assert!(!s.settings.clean_session);
        assert_eq!(
            error_in("iterations = 0"),
            "iterations = 0: give 1 to 10000"
        );
    }

    /// Every `[limits]` key changes the limit of its flag's name.
    #[test]
    fn every_limit_key_is_applied() {
        let base = Limits::default();
        let all: String = LimitsSpec::KEYS
            .iter()
            .map(|k| format!("{k} = 7\n"))
            .collect();
        let l = limits(toml::from_str(&all).expect(&all), &base).unwrap();
        let changed = [
            l.iteration_timeout_ms != base.iteration_timeout_ms,
            l.cpu_limit_ms != base.cpu_limit_ms,
            l.cpu_budget_ms != base.cpu_budget_ms,
            l.max_memory_bytes != base.max_memory_bytes,
            l.max_table_elements != base.max_table_elements,
            l.max_connections != base.max_connections,
            l.max_io_bytes != base.max_io_bytes,
            l.connect_burst != base.connect_burst,
            l.connect_interval_ms != base.connect_interval_ms,
            l.output.lines_per_sec != base.output.lines_per_sec,
            l.output.burst != base.output.burst,
            l.state_writes_per_sec != base.state_writes_per_sec,
        ];
        assert_eq!(changed.len(), LimitsSpec::KEYS.len());
        assert!(changed.iter().all(|c| *c), "{changed:?}");
    }

    fn error_in(keys: &str) -> String {
        let spec: ScenarioSpec = toml::from_str(&format!("name = \"x\"\n{keys}")).unwrap();
        scenario(&spec, &Common::default(), &Limits::default())
            .err()
            .unwrap()
            .message
    }
}
