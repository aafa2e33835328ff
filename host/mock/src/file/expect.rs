//! The checks of a scenario file against what a run did: packets (kinds
//! and fields, in order), results, sleeps, log lines, stops, virtual time.
//! Each failed check is one message saying what was expected and what
//! happened.

use host_core::outcome::ConnackRefusal;
use mqtt_core::packets::packet_name;
use mqttbytes::v4::Packet;
use regex::Regex;

use super::format::{
    ExpectSpec, LevelSpec, LogSpec, PacketIdsSpec, PacketSpec, SentSpec, SleepKind,
};
use super::scenario::{kind_name, qos};
use crate::{Call, IterationFailure, IterationReport, Level, Record, Stop};

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
    fn at_ms(&self) -> Option<super::format::AtMs> {
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
fn fields_of(kind: &str) -> &'static [&'static str] {
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
fn field(wrong: &mut Vec<String>, key: &str, want: String, got: String) {
    if want != got {
        wrong.push(format!("{key} = {want} (got {got})"));
    }
}

fn regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| format!("bad regular expression /{pattern}/: {e}"))
}

/// The checks of `expect`, ready to run against outcomes.
pub struct Checks {
    spec: ExpectSpec,
    sent: Option<Vec<PacketCheck>>,
    sent_start: Option<Vec<PacketCheck>>,
    sent_in_order: Option<Vec<PacketCheck>>,
    log: Vec<LogCheck>,
    log_in_order: Vec<LogCheck>,
    no_log: Vec<Regex>,
    log_count: Vec<(Regex, usize)>,
}

impl Checks {
    /// Compiles `spec`; a bad kind, QoS or pattern is an error.
    pub fn new(spec: ExpectSpec) -> Result<Self, String> {
        let packets = |list: &Option<Vec<SentSpec>>| -> Result<Option<Vec<PacketCheck>>, String> {
            list.as_ref()
                .map(|l| l.iter().map(sent_check).collect())
                .transpose()
        };
        for r in spec.result.iter().chain(spec.results.iter().flatten()) {
            result_kind_known(r)?;
        }
        if let Some(counts) = &spec.sent_count {
            for kind in counts.keys() {
                kind_name(kind)?;
            }
        }
        let all = |list: &Option<Vec<String>>| -> Result<Vec<Regex>, String> {
            list.iter().flatten().map(|p| regex(p)).collect()
        };
        let lines = |list: &Option<Vec<LogSpec>>| -> Result<Vec<LogCheck>, String> {
            list.iter().flatten().map(LogCheck::new).collect()
        };
        if let Some(name) = &spec.stop_limit
            && !STOP_LIMITS.contains(&name.as_str())
        {
            return Err(format!(
                "stop-limit = {name:?}: one of {}",
                STOP_LIMITS.join(", ")
            ));
        }
        Ok(Self {
            sent: packets(&spec.sent)?,
            sent_start: packets(&spec.sent_start)?,
            sent_in_order: packets(&spec.sent_in_order)?,
            log: lines(&spec.log)?,
            log_in_order: lines(&spec.log_in_order)?,
            no_log: all(&spec.no_log)?,
            log_count: spec
                .log_count
                .iter()
                .flatten()
                .map(|c| Ok((regex(&c.matches)?, c.count)))
                .collect::<Result<_, String>>()?,
            spec,
        })
    }

    /// Every failed check's message; empty when the scenario passed. A
    /// run that ended early when the scenario did not say it would is one
    /// failure, that end: the other checks would only repeat its cause.
    pub fn failures(&self, out: &Record) -> Vec<String> {
        let mut f = Vec::new();
        let s = &self.spec;
        if out.calls_cut > 0 && self.uses_calls() {
            return vec![format!(
                "the record of calls was full at {} MiB ({} calls not kept): the expectations on calls saw only its start; expect less of a run this long (result, report, stops, store, virtual time need no record)",
                crate::MAX_RECORDED_BYTES >> 20,
                out.calls_cut
            )];
        }
        match (&s.aborted_contains, &out.aborted) {
            (Some(text), Some(msg)) if !msg.contains(text.as_str()) => {
                return vec![format!(
                    "aborted-contains: expected {text:?} in the run's end, got {msg:?}"
                )];
            }
            (None, Some(msg)) => return vec![format!("the run ended early: {msg}")],
            _ => {}
        }
        for (key, want) in &s.store {
            let want = want.bytes();
            match out.store.get(key) {
                Some(got) if *got == want => {}
                Some(got) => f.push(format!(
                    "store: expected {key:?} = {}, got {}",
                    shown(&want),
                    shown(got)
                )),
                None => f.push(format!(
                    "store: expected {key:?}, but the state has no such key"
                )),
            }
        }
        for key in &s.store_absent {
            if out.store.contains_key(key) {
                f.push(format!("store-absent: the state still holds {key:?}"));
            }
        }
        for (prefix, want) in &s.store_keys {
            let got = out
                .store
                .keys()
                .filter(|k| k.starts_with(prefix.as_str()))
                .count();
            if got != *want {
                f.push(format!(
                    "store-keys: expected {want} key(s) starting with {prefix:?}, got {got}"
                ));
            }
        }
        let first = out.results.first();
        if let Some(want) = &s.result {
            match first {
                Some(r) if result_kind(r) == *want => {}
                Some(r) => f.push(format!(
                    "result: expected {want}, got {}",
                    describe_result(r)
                )),
                None => f.push(format!(
                    "result: expected {want}, but no iteration returned ({})",
                    ended(out)
                )),
            }
        }
        if let Some(want) = &s.results {
            let got: Vec<String> = out.results.iter().map(result_kind).collect();
            if &got != want {
                f.push(results_failure(want, &got));
            }
        }
        if let Some(text) = &s.error_contains {
            match first {
                Some(Err(e)) if error_text(e).contains(text.as_str()) => {}
                Some(r) => f.push(format!(
                    "error-contains: expected an error with {text:?}, got {}",
                    describe_result(r)
                )),
                None => f.push(format!(
                    "error-contains: no iteration returned ({})",
                    ended(out)
                )),
            }
        }
        if let Some(want) = &s.report {
            match first {
                Some(Ok(r)) => report_failures(&mut f, want, r),
                Some(r) => f.push(format!(
                    "report: expected a report, got {}",
                    describe_result(r)
                )),
                None => f.push(format!("report: no iteration returned ({})", ended(out))),
            }
        }
        if let (Some(text), None) = (&s.aborted_contains, &out.aborted) {
            f.push(format!(
                "aborted-contains: expected the run to end early with {text:?}; it ran to its end"
            ));
        }
        // Without `stops`, a guest that trapped and recovered still fails.
        let n = s.stops.unwrap_or(0);
        if out.stops.len() != n {
            f.push(format!(
                "stops: expected {n}, got {} {:?}",
                out.stops.len(),
                out.stops
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            ));
        }
        if let Some(text) = &s.stop_contains {
            match out.stops.first().map(ToString::to_string) {
                Some(m) if m.contains(text.as_str()) => {}
                other => f.push(format!("stop-contains: expected {text:?}, got {other:?}")),
            }
        }
        if let Some(want) = &s.stop_limit {
            let got = out.stops.first().map(stop_name);
            if got.as_deref() != Some(want.as_str()) {
                f.push(format!(
                    "stop-limit: expected the first stop to be {want}, got {}",
                    match (got, out.stops.first()) {
                        (Some(name), Some(stop)) => format!("{name} ({stop})"),
                        _ => "no stop".into(),
                    }
                ));
            }
        }
        if let Some(n) = s.dropped_lines
            && out.dropped_lines != n
        {
            f.push(format!(
                "dropped-lines: expected {n} output lines dropped, got {}",
                out.dropped_lines
            ));
        }
        let count = |pred: &dyn Fn(&Call) -> bool| out.calls.iter().filter(|c| pred(c)).count();
        if let Some(n) = s.instances {
            let got = count(&|c| *c == Call::Instantiate) as u64;
            if got != n {
                f.push(format!("instances: expected {n}, got {got}"));
            }
        }
        let sent: Vec<(Packet, u64)> = out
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Sent { packet, at_ms } => Some((packet.clone(), *at_ms)),
                _ => None,
            })
            .collect();
        if let Some(checks) = &self.sent {
            packet_failures(&mut f, "sent", checks, &sent, true);
        }
        if let Some(checks) = &self.sent_start {
            packet_failures(&mut f, "sent-start", checks, &sent, false);
        }
        if let Some(checks) = &self.sent_in_order {
            in_order_failures(&mut f, checks, &sent);
        }
        if s.packet_ids == Some(PacketIdsSpec::Distinct)
            && let Some(why) = packet_id_reuse(&out.calls)
        {
            f.push(format!("packet-ids: expected distinct non-zero ids, {why}"));
        }
        if let Some(counts) = &s.sent_count {
            for (kind, n) in counts {
                let kind = kind_name(kind).unwrap_or("?");
                let got = sent.iter().filter(|(p, _)| packet_name(p) == kind).count();
                if got != *n {
                    f.push(format!("sent-count: expected {n} {kind}, got {got}"));
                }
            }
        }
        if let Some(n) = s.connects {
            let got = out.connects();
            if got != n {
                f.push(format!("connects: expected {n}, got {got}"));
            }
        }
        let kind = s.sleep_kind.unwrap_or_default();
        let sleeps = sleeps_of(&out.calls, kind);
        let which = match kind {
            SleepKind::All => String::new(),
            SleepKind::Connected => " (connected)".into(),
            SleepKind::Disconnected => " (disconnected)".into(),
        };
        if let Some(want) = &s.sleeps
            && &sleeps != want
        {
            f.push(format!("sleeps{which}: expected {want:?}, got {sleeps:?}"));
        }
        if let Some(want) = &s.sleeps_start
            && !sleeps.starts_with(want)
        {
            f.push(format!(
                "sleeps-start{which}: expected {want:?} first, got {sleeps:?}"
            ));
        }
        if let Some(n) = s.sleep_count
            && sleeps.len() != n
        {
            f.push(format!(
                "sleep-count{which}: expected {n}, got {} {sleeps:?}",
                sleeps.len()
            ));
        }
        for (key, bounds, holds) in [
            (
                "sleeps-at-most",
                &s.sleeps_at_most,
                (|got, bound| got <= bound) as fn(u32, u32) -> bool,
            ),
            ("sleeps-at-least", &s.sleeps_at_least, |got, bound| {
                got >= bound
            }),
        ] {
            let Some(bounds) = bounds else { continue };
            if bounds.len() != sleeps.len() {
                f.push(format!(
                    "{key}{which}: {} bounds for {} sleeps {sleeps:?} (give one per sleep)",
                    bounds.len(),
                    sleeps.len()
                ));
            } else if let Some(i) = (0..sleeps.len()).find(|&i| !holds(sleeps[i], bounds[i])) {
                f.push(format!(
                    "{key}{which}: sleep {} is {} ms against a bound of {} ms; sleeps {sleeps:?}",
                    i + 1,
                    sleeps[i],
                    bounds[i]
                ));
            }
        }
        let leveled = log_lines(&out.calls);
        for check in &self.log {
            if !leveled.iter().any(|l| check.holds(l)) {
                f.push(format!(
                    "log: no line matches {check}; lines: {}",
                    lines(&leveled)
                ));
            }
        }
        if !self.log_in_order.is_empty() {
            let mut rest = leveled.iter();
            for (i, check) in self.log_in_order.iter().enumerate() {
                if !rest.any(|l| check.holds(l)) {
                    let anywhere = leveled.iter().find(|l| check.holds(l));
                    f.push(format!(
                        "log-in-order: entry {} ({check}) {}; lines: {}",
                        i + 1,
                        match anywhere {
                            Some(l) =>
                                format!("matches only before the entry ahead of it: {:?}", l.1),
                            None => "matches no line".into(),
                        },
                        lines(&leveled)
                    ));
                    break;
                }
            }
        }
        let log = out.log();
        for re in &self.no_log {
            if let Some(line) = log.iter().find(|l| re.is_match(l)) {
                f.push(format!("no-log: /{re}/ matches {line:?}"));
            }
        }
        for (re, n) in &self.log_count {
            let got = log.iter().filter(|l| re.is_match(l)).count();
            if got != *n {
                f.push(format!(
                    "log-count: expected {n} lines matching /{re}/, got {got}"
                ));
            }
        }
        if let Some(ms) = s.virtual_ms_at_least
            && out.now_ms < ms
        {
            f.push(format!(
                "virtual-ms-at-least: expected {ms} ms, ran {} ms",
                out.now_ms
            ));
        }
        if let Some(ms) = s.virtual_ms_at_most
            && out.now_ms > ms
        {
            f.push(format!(
                "virtual-ms-at-most: expected {ms} ms, ran {} ms",
                out.now_ms
            ));
        }
        if let Some(n) = s.closes {
            let got = count(&|c| *c == Call::Close);
            if got != n {
                f.push(format!(
                    "closes: expected {n} connections closed, got {got}"
                ));
            }
        }
        if let Some(n) = s.calls_at_most
            && out.calls.len() > n
        {
            f.push(format!(
                "calls-at-most: expected at most {n} recorded calls, got {}",
                out.calls.len()
            ));
        }
        if let Some(want) = &s.entropy_bytes {
            let got: Vec<u32> = out
                .calls
                .iter()
                .filter_map(|c| match c {
                    Call::Entropy(n) => Some(*n),
                    _ => None,
                })
                .collect();
            if &got != want {
                f.push(format!(
                    "entropy-bytes: expected draws of {want:?} bytes, got {got:?}"
                ));
            }
        }
        if let Some(n) = s.entropy_calls {
            let got = count(&|c| matches!(c, Call::Entropy(_)));
            if got != n {
                f.push(format!("entropy-calls: expected {n}, got {got}"));
            }
        }
        let left = s.steps_left.unwrap_or(0);
        if out.steps_left != left {
            f.push(format!(
                "steps-left: expected {left} script steps left undone, got {}",
                out.steps_left
            ));
        }
        f
    }
}

impl Checks {
    /// Whether any expectation reads the record of calls.
    fn uses_calls(&self) -> bool {
        let s = &self.spec;
        self.sent.is_some()
            || self.sent_start.is_some()
            || self.sent_in_order.is_some()
            || !self.log.is_empty()
            || !self.log_in_order.is_empty()
            || !self.no_log.is_empty()
            || !self.log_count.is_empty()
            || s.packet_ids.is_some()
            || s.sent_count.is_some()
            || s.connects.is_some()
            || s.sleeps.is_some()
            || s.sleeps_start.is_some()
            || s.sleep_count.is_some()
            || s.sleeps_at_most.is_some()
            || s.sleeps_at_least.is_some()
            || s.entropy_calls.is_some()
            || s.entropy_bytes.is_some()
            || s.closes.is_some()
            || s.calls_at_most.is_some()
            || s.instances.is_some()
    }
}

/// Expected and actual results, shortened to their counts and the first
/// difference when long.
fn results_failure(want: &[String], got: &[String]) -> String {
    if want.len() + got.len() <= 20 {
        return format!("results: expected {want:?}, got {got:?}");
    }
    let at = want.iter().zip(got).position(|(w, g)| w != g);
    match at {
        Some(i) => format!(
            "results: iteration {} is {:?}, expected {:?} ({} results expected, {} got)",
            i + 1,
            got[i],
            want[i],
            want.len(),
            got.len()
        ),
        None => format!(
            "results: expected {} results, got {} (the first {} as expected)",
            want.len(),
            got.len(),
            want.len().min(got.len())
        ),
    }
}

fn sent_check(spec: &SentSpec) -> Result<PacketCheck, String> {
    match spec {
        SentSpec::Kind(kind) => PacketCheck::new(kind_name(kind)?, &PacketSpec::default()),
        SentSpec::Packet(p) => {
            let kind = p
                .kind
                .as_deref()
                .ok_or("a packet in `sent` needs its `kind`")?;
            PacketCheck::new(kind_name(kind)?, p)
        }
    }
}

/// Compares packets in order: all of them (`exact`) or the first ones.
fn packet_failures(
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

fn names(sent: &[(Packet, u64)]) -> String {
    sent.iter()
        .map(|(p, _)| packet_name(p))
        .collect::<Vec<_>>()
        .join(" ")
}

fn lines(log: &[(Level, String)]) -> String {
    const SHOWN: usize = 12;
    let mut shown: Vec<String> = log
        .iter()
        .take(SHOWN)
        .map(|(level, l)| format!("{} {l:?}", level_name(*level)))
        .collect();
    if log.len() > SHOWN {
        shown.push(format!("... {} more", log.len() - SHOWN));
    }
    shown.join(", ")
}

fn report_failures(f: &mut Vec<String>, want: &super::format::ReportSpec, got: &IterationReport) {
    let pairs = [
        ("published", want.published, got.published),
        ("acknowledged", want.acknowledged, got.acknowledged),
        ("echoes", want.echoes, got.echoes),
        ("connections", want.connections, got.connections),
    ];
    for (key, want, got) in pairs {
        if let Some(want) = want
            && want != got
        {
            f.push(format!("report: expected {key} = {want}, got {got}"));
        }
    }
}

/// How the run ended, when no iteration returned.
fn ended(out: &Record) -> String {
    match (&out.aborted, out.stops.last()) {
        (Some(m), _) => format!("the run ended early: {m}"),
        (None, Some(stop)) => format!("the guest stopped: {}", stop),
        (None, None) => "nothing ran".into(),
    }
}

/// Compares packets as a subsequence: each check matches a later packet
/// than the one before it.
fn in_order_failures(f: &mut Vec<String>, checks: &[PacketCheck], sent: &[(Packet, u64)]) {
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
fn packet_id_reuse(calls: &[Call]) -> Option<String> {
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

/// The `sleep-ms` durations of `kind`: a sleep is disconnected when the
/// logic holds no connection it opened and did not close.
fn sleeps_of(calls: &[Call], kind: SleepKind) -> Vec<u32> {
    let mut open = false;
    let mut out = Vec::new();
    for call in calls {
        match call {
            Call::Connect { refused: None, .. } => open = true,
            Call::Close | Call::Instantiate => open = false,
            Call::Sleep(ms) => {
                let wanted = match kind {
                    SleepKind::All => true,
                    SleepKind::Connected => open,
                    SleepKind::Disconnected => !open,
                };
                if wanted {
                    out.push(*ms);
                }
            }
            _ => {}
        }
    }
    out
}

/// The log lines with their levels.
fn log_lines(calls: &[Call]) -> Vec<(Level, String)> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Log(level, line) => Some((*level, line.clone())),
            _ => None,
        })
        .collect()
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Debug => "DEBUG",
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
    }
}

/// A log line's pattern and, if given, its level.
struct LogCheck {
    pattern: Regex,
    level: Option<Level>,
}

impl LogCheck {
    fn new(spec: &LogSpec) -> Result<Self, String> {
        Ok(match spec {
            LogSpec::Pattern(p) => Self {
                pattern: regex(p)?,
                level: None,
            },
            LogSpec::Line(line) => Self {
                pattern: regex(&line.matches)?,
                level: line.level.map(|l| match l {
                    LevelSpec::Debug => Level::Debug,
                    LevelSpec::Info => Level::Info,
                    LevelSpec::Warn => Level::Warn,
                    LevelSpec::Error => Level::Error,
                }),
            },
        })
    }

    fn holds(&self, (level, line): &(Level, String)) -> bool {
        self.level.is_none_or(|want| want == *level) && self.pattern.is_match(line)
    }
}

impl std::fmt::Display for LogCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.level {
            Some(level) => write!(f, "{} /{}/", level_name(level), self.pattern),
            None => write!(f, "/{}/", self.pattern),
        }
    }
}

/// Every name `stop-limit` accepts: host-core's limits, kebab-case.
pub const STOP_LIMITS: [&str; 8] = [
    "iteration-timeout",
    "cpu",
    "cpu-budget",
    "memory",
    "table",
    "output-flood",
    "connect-storm",
    "trap",
];

/// A stop's name in `stop-limit`: its limit, or "trap".
fn stop_name(stop: &Stop) -> String {
    match stop {
        Stop::Limit(hit) => hit.kind().replace('_', "-"),
        Stop::Trap { .. } => "trap".into(),
    }
}

/// Every name `result` accepts.
pub const RESULT_KINDS: [&str; 9] = [
    "ok",
    "connect-retries-exhausted",
    "transport-permanent",
    "transport",
    "connack-refused",
    "subscribe-retries-exhausted",
    "timed-out",
    "protocol-violation",
    "invalid-settings",
];

fn result_kind_known(name: &str) -> Result<(), String> {
    if RESULT_KINDS.contains(&name) {
        Ok(())
    } else {
        Err(format!(
            "unknown result {name:?} (one of {})",
            RESULT_KINDS.join(", ")
        ))
    }
}

/// "ok" or the WIT `iteration-error` case.
fn result_kind(r: &Result<IterationReport, IterationFailure>) -> String {
    let name = match r {
        Ok(_) => "ok",
        Err(IterationFailure::ConnectRetriesExhausted(_)) => "connect-retries-exhausted",
        Err(IterationFailure::TransportPermanent(_)) => "transport-permanent",
        Err(IterationFailure::Transport(_)) => "transport",
        Err(IterationFailure::ConnackRefused(_)) => "connack-refused",
        Err(IterationFailure::SubscribeRetriesExhausted(_)) => "subscribe-retries-exhausted",
        Err(IterationFailure::TimedOut(_)) => "timed-out",
        Err(IterationFailure::ProtocolViolation(_)) => "protocol-violation",
        Err(IterationFailure::InvalidSettings(_)) => "invalid-settings",
    };
    name.to_string()
}

/// The error's payload as text: the error-code or refusal name, or the
/// string the guest gave.
fn error_text(e: &IterationFailure) -> String {
    match e {
        IterationFailure::ConnectRetriesExhausted(c)
        | IterationFailure::TransportPermanent(c)
        | IterationFailure::Transport(c) => c.name().to_string(),
        IterationFailure::ConnackRefused(r) => refusal_name(*r).to_string(),
        IterationFailure::SubscribeRetriesExhausted(s)
        | IterationFailure::TimedOut(s)
        | IterationFailure::ProtocolViolation(s)
        | IterationFailure::InvalidSettings(s) => s.clone(),
    }
}

fn refusal_name(r: ConnackRefusal) -> &'static str {
    match r {
        ConnackRefusal::UnacceptableProtocolVersion => "unacceptable-protocol-version",
        ConnackRefusal::IdentifierRejected => "identifier-rejected",
        ConnackRefusal::ServerUnavailable => "server-unavailable",
        ConnackRefusal::BadUserNameOrPassword => "bad-user-name-or-password",
        ConnackRefusal::NotAuthorized => "not-authorized",
    }
}

fn describe_result(r: &Result<IterationReport, IterationFailure>) -> String {
    match r {
        Ok(report) => format!(
            "ok ({} published, {} acknowledged, {} echoes, {} connections)",
            report.published, report.acknowledged, report.echoes, report.connections
        ),
        Err(e) => format!("{}({})", result_kind(r), error_text(e)),
    }
}

/// A stored value as a scenario file writes it: text, or a counter.
fn shown(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) if !text.chars().any(char::is_control) => format!("{text:?}"),
        _ => match <[u8; 8]>::try_from(value) {
            Ok(n) => i64::from_le_bytes(n).to_string(),
            Err(_) => format!("{} bytes {}", value.len(), hex::encode(value)),
        },
    }
}

#[cfg(test)]
mod tests {
    use mqttbytes::v4::Connect;

    use super::*;
    use crate::Level;

    /// A run that connected once, sent CONNECT, logged, slept and closed.
    fn outcome() -> Record {
        Record {
            results: vec![Ok(IterationReport {
                published: 1,
                acknowledged: 1,
                echoes: 0,
                connections: 1,
                round_trips_us: vec![5],
            })],
            aborted: None,
            stops: Vec::new(),
            events: Vec::new(),
            calls: vec![
                Call::Instantiate,
                Call::Entropy(32),
                Call::Connect {
                    host: "h".into(),
                    port: 1,
                    refused: None,
                },
                Call::Sent {
                    packet: Packet::Connect(Connect::new("dev")),
                    at_ms: 0,
                },
                Call::Log(Level::Info, "hello there".into()),
                Call::Log(Level::Warn, "and again".into()),
                Call::Sleep(100),
                Call::Close,
            ],
            now_ms: 100,
            steps_left: 0,
            store: Default::default(),
            dropped_lines: 0,
            calls_cut: 0,
        }
    }

    fn failures(toml_text: &str) -> Vec<String> {
        let spec: ExpectSpec = toml::from_str(toml_text).expect(toml_text);
        Checks::new(spec).expect(toml_text).failures(&outcome())
    }

    #[test]
    fn every_expectation_holds_when_true_and_fails_when_false() {
        let pairs = [
            (r#"result = "ok""#, r#"result = "timed-out""#),
            (r#"results = ["ok"]"#, r#"results = ["ok", "ok"]"#),
            ("report = { published = 1 }", "report = { echoes = 3 }"),
            ("stops = 0", "stops = 1"),
            ("instances = 1", "instances = 2"),
            (r#"sent = ["CONNECT"]"#, r#"sent = ["CONNECT", "PUBLISH"]"#),
            (
                r#"sent-start = [{ kind = "CONNECT", client-id = "dev" }]"#,
                r#"sent-start = [{ kind = "CONNECT", client-id = "other" }]"#,
            ),
            (
                r#"sent = [{ kind = "CONNECT", at-ms = 0 }]"#,
                r#"sent = [{ kind = "CONNECT", at-ms = 5 }]"#,
            ),
            (
                r#"sent = [{ kind = "CONNECT", username = "" }]"#,
                r#"sent = [{ kind = "CONNECT", username = "u" }]"#,
            ),
            (
                "sent-count = { CONNECT = 1 }",
                "sent-count = { PUBLISH = 1 }",
            ),
            ("connects = 1", "connects = 2"),
            ("sleeps = [100]", "sleeps = [99]"),
            ("sleeps-start = [100]", "sleeps-start = [1]"),
            ("sleep-count = 1", "sleep-count = 0"),
            ("sleeps-at-most = [100]", "sleeps-at-most = [99]"),
            ("log = ['^hello']", "log = ['^there']"),
            ("no-log = ['bye']", "no-log = ['hello']"),
            (
                "log-count = [{ matches = 'hello', count = 1 }]",
                "log-count = [{ matches = 'hello', count = 2 }]",
            ),
            ("virtual-ms-at-least = 100", "virtual-ms-at-least = 101"),
            ("virtual-ms-at-most = 100", "virtual-ms-at-most = 99"),
            ("entropy-calls = 1", "entropy-calls = 2"),
            ("entropy-bytes = [32]", "entropy-bytes = [16]"),
            ("closes = 1", "closes = 0"),
            ("calls-at-most = 8", "calls-at-most = 7"),
            ("steps-left = 0", "steps-left = 1"),
            ("", r#"aborted-contains = "x""#),
            ("", r#"error-contains = "x""#),
            ("", r#"stop-contains = "x""#),
            (
                r#"sent-in-order = ["CONNECT"]"#,
                r#"sent-in-order = ["CONNECT", "CONNECT"]"#,
            ),
            (
                r#"sent = [{ kind = "CONNECT", at-ms = [0, 5] }]"#,
                r#"sent = [{ kind = "CONNECT", at-ms = [1, 5] }]"#,
            ),
            ("sleeps-at-least = [100]", "sleeps-at-least = [101]"),
            ("sleeps-at-most = [100]", "sleeps-at-most = [100, 100]"),
            (
                "sleep-kind = \"connected\"\nsleeps = [100]",
                "sleep-kind = \"disconnected\"\nsleeps = [100]",
            ),
            (
                "log = [{ matches = 'hello', level = \"info\" }]",
                "log = [{ matches = 'hello', level = \"warn\" }]",
            ),
            (
                "log-in-order = ['hello', { matches = 'again', level = \"warn\" }]",
                "log-in-order = ['again', 'hello']",
            ),
            ("dropped-lines = 0", "dropped-lines = 1"),
            ("", "stop-limit = \"cpu\""),
            (
                "packet-ids = \"distinct\"",
                "packet-ids = \"distinct\"\nstops = 9",
            ),
        ];
        for (holds, fails) in pairs {
            assert_eq!(failures(holds), Vec::<String>::new(), "{holds}");
            assert_eq!(failures(fails).len(), 1, "{fails}: {:?}", failures(fails));
        }
    }

    /// The three text expectations also hold when the run has what they
    /// look for (an error, an early end, a stop), not only fail when not.
    #[test]
    fn text_expectations_hold_on_a_run_that_has_the_text() {
        let mut out = outcome();
        out.results = vec![Err(IterationFailure::TimedOut("PUBACK".into()))];
        out.aborted = Some("restarts are exhausted: injected fault".into());
        out.stops = vec![host_core::outcome::Stop::Trap {
            kind: host_core::outcome::TrapKind::Other,
            message: "injected fault".into(),
        }];
        let check = |text: &str| {
            let spec: ExpectSpec = toml::from_str(text).expect(text);
            Checks::new(spec).expect(text).failures(&out)
        };
        // An early end must be expected in every case.
        let base = "result = \"timed-out\"\nstops = 1\n";
        let ended = "aborted-contains = \"injected\"\n";
        for (holds, fails) in [
            (ended, "aborted-contains = \"other\""),
            (
                &format!("{ended}error-contains = \"PUBACK\""),
                &format!("{ended}error-contains = \"SUBACK\""),
            ),
            (
                &format!("{ended}stop-contains = \"injected fault\""),
                &format!("{ended}stop-contains = \"memory\""),
            ),
        ] {
            let holds = format!("{base}{holds}");
            let fails = format!("{base}{fails}");
            assert_eq!(check(&holds), Vec::<String>::new(), "{holds}");
            assert_eq!(check(&fails).len(), 1, "{fails}: {:?}", check(&fails));
        }
    }

    /// A record that was cut fails the expectations that read it, with
    /// why; those that need no record still judge the run.
    #[test]
    fn a_cut_record_fails_only_the_expectations_that_read_it() {
        let mut out = outcome();
        out.calls_cut = 5;
        let check = |text: &str| {
            let spec: ExpectSpec = toml::from_str(text).expect(text);
            Checks::new(spec).expect(text).failures(&out)
        };
        assert_eq!(
            check("result = \"ok\"\nvirtual-ms-at-least = 100"),
            Vec::<String>::new()
        );
        let f = check("connects = 1");
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(
            f[0].contains("record of calls was full") && f[0].contains("5 calls"),
            "{f:?}"
        );
    }

    /// The packet-id rule: new non-zero ids on each connection, a DUP
    /// resend excepted.
    #[test]
    fn packet_ids_must_be_new_on_their_connection() {
        use mqttbytes::QoS;
        use mqttbytes::v4::Publish;
        let publish = |id: u16, dup: bool| {
            let mut p = Publish::new("t", QoS::AtLeastOnce, "x");
            p.pkid = id;
            p.dup = dup;
            Call::Sent {
                packet: Packet::Publish(p),
                at_ms: 0,
            }
        };
        let connect = || Call::Connect {
            host: "h".into(),
            port: 1,
            refused: None,
        };
        let run = |calls: Vec<Call>| packet_id_reuse(&calls);
        assert_eq!(
            run(vec![connect(), publish(1, false), publish(1, true)]),
            None
        );
        assert_eq!(
            run(vec![
                connect(),
                publish(1, false),
                connect(),
                publish(1, false)
            ]),
            None,
            "a new connection starts anew"
        );
        assert!(run(vec![connect(), publish(1, false), publish(1, false)]).is_some());
        assert!(run(vec![connect(), publish(0, false)]).is_some());
    }

    /// `stop-limit` names the first stop's limit, or "trap".
    #[test]
    fn a_stop_is_expected_by_its_limit() {
        let mut out = outcome();
        out.aborted = Some("restarts exhausted".into());
        out.stops = vec![Stop::Limit(host_core::outcome::LimitHit::CpuBudget {
            used_ms: 2001,
            budget_ms: 2000,
        })];
        let check = |text: &str| {
            let spec: ExpectSpec = toml::from_str(text).expect(text);
            Checks::new(spec).expect(text).failures(&out)
        };
        let base = "aborted-contains = \"restarts\"\nstops = 1\n";
        assert_eq!(
            check(&format!("{base}stop-limit = \"cpu-budget\"")),
            Vec::<String>::new()
        );
        assert_eq!(check(&format!("{base}stop-limit = \"cpu\"")).len(), 1);
        assert!(
            Checks::new(toml::from_str("stop-limit = \"cpu-time\"").unwrap()).is_err(),
            "an unknown limit is refused"
        );
    }

    /// A run that ended early when the scenario did not say so is one
    /// failure, whatever else was expected.
    #[test]
    fn an_early_end_is_one_failure() {
        let mut out = outcome();
        out.aborted = Some("mock broker, step 2 (line 5): expected PUBLISH".into());
        let spec: ExpectSpec =
            toml::from_str("result = \"timed-out\"\nconnects = 3\nsleeps = [1]").unwrap();
        let f = Checks::new(spec).unwrap().failures(&out);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].contains("step 2 (line 5)"), "{f:?}");
    }

    #[test]
    fn a_field_the_kind_does_not_carry_is_refused() {
        for (kind, field) in [
            ("PUBACK", "topic"),
            ("CONNECT", "dup"),
            ("PINGREQ", "packet-id"),
        ] {
            let spec: PacketSpec = toml::from_str(&format!("{field} = 1")).unwrap_or_else(|_| {
                toml::from_str(&format!("{field} = \"x\""))
                    .unwrap_or_else(|_| toml::from_str(&format!("{field} = true")).expect(field))
            });
            let err = PacketCheck::new(kind, &spec).err().expect(kind);
            assert!(err.contains(&format!("no `{field}`")), "{err}");
        }
    }
}
