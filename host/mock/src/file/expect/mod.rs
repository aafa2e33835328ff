//! The checks of a scenario file against what a run did: packets (kinds
//! and fields, in order), results, sleeps, log lines, stops, virtual time.
//! Each failed check is one message saying what was expected and what
//! happened.

use mqtt_core::packets::packet_name;
use mqttbytes::v4::Packet;
use regex::Regex;

use super::format::{ExpectSpec, LogSpec, PacketIdsSpec, SentSpec, SleepKind};
use super::scenario::kind_name;
use crate::{Call, Record};

mod lines;
mod packets;
mod results;

use lines::{LogCheck, lines, log_lines, sleeps_of};
pub use packets::PacketCheck;
use packets::{in_order_failures, packet_failures, packet_id_reuse, sent_check};
pub use results::{RESULT_KINDS, STOP_LIMITS};
use results::{
    describe_result, ended, error_text, report_failures, result_kind, result_kind_known,
    results_failure, shown, stop_name,
};

pub(super) fn regex(pattern: &str) -> Result<Regex, String> {
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

/// A wrong expectation: the key it is under, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadKey {
    /// The key in `[scenario.expect]`, as the file spells it.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for BadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)
    }
}

impl Checks {
    /// Compiles `spec`; a bad kind, QoS, name or pattern is an error
    /// naming its key.
    pub fn new(spec: ExpectSpec) -> Result<Self, BadKey> {
        let at = |key: &'static str| move |message: String| BadKey { key, message };
        let packets = |key: &'static str, list: &Option<Vec<SentSpec>>| {
            list.as_ref()
                .map(|l| l.iter().map(|p| sent_check(key, p)).collect())
                .transpose()
                .map_err(at(key))
        };
        if let Some(r) = &spec.result {
            result_kind_known(r).map_err(at("result"))?;
        }
        for r in spec.results.iter().flatten() {
            result_kind_known(r).map_err(at("results"))?;
        }
        if let Some(counts) = &spec.sent_count {
            for kind in counts.keys() {
                kind_name(kind).map_err(at("sent-count"))?;
            }
        }
        let patterns = |key: &'static str, list: &Option<Vec<String>>| {
            list.iter()
                .flatten()
                .map(|p| regex(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(at(key))
        };
        let lines = |key: &'static str, list: &Option<Vec<LogSpec>>| {
            list.iter()
                .flatten()
                .map(LogCheck::new)
                .collect::<Result<Vec<_>, _>>()
                .map_err(at(key))
        };
        if let Some(name) = &spec.stop_limit
            && !STOP_LIMITS.contains(&name.as_str())
        {
            return Err(at("stop-limit")(format!(
                "{name:?} is no limit: one of {}",
                STOP_LIMITS.join(", ")
            )));
        }
        Ok(Self {
            sent: packets("sent", &spec.sent)?,
            sent_start: packets("sent-start", &spec.sent_start)?,
            sent_in_order: packets("sent-in-order", &spec.sent_in_order)?,
            log: lines("log", &spec.log)?,
            log_in_order: lines("log-in-order", &spec.log_in_order)?,
            no_log: patterns("no-log", &spec.no_log)?,
            log_count: spec
                .log_count
                .iter()
                .flatten()
                .map(|c| Ok((regex(&c.matches)?, c.count)))
                .collect::<Result<_, String>>()
                .map_err(at("log-count"))?,
            spec,
        })
    }

    /// Every failed check's message; empty when the scenario passed. A
    /// run that ended early when the scenario did not say it would is one
    /// failure, that end: the other checks would only repeat its cause.
    pub fn failures(&self, out: &Record) -> Vec<String> {
        let s = &self.spec;
        match (&s.aborted_contains, &out.aborted) {
            (Some(text), Some(msg)) if !msg.contains(text.as_str()) => {
                return vec![format!(
                    "aborted-contains: expected {text:?} in the run's end, got {msg:?}"
                )];
            }
            (None, Some(msg)) => return vec![format!("the run ended early: {msg}")],
            _ => {}
        }
        let mut f = Vec::new();
        self.outcome_failures(&mut f, out);
        if out.calls_cut > 0 && self.uses_calls() {
            // The checks that read the record would fail for the cut alone.
            f.push(format!(
                "the record of calls was full at {} MiB ({} calls not kept): the expectations on calls saw only its start; expect less of a run this long (result, report, stops, store, virtual time need no record)",
                crate::MAX_RECORDED_BYTES >> 20,
                out.calls_cut
            ));
        } else {
            self.record_failures(&mut f, out);
        }
        f
    }

    /// The checks of the run's outcome: its state, results, report, stops,
    /// virtual time and script (no record of calls needed).
    fn outcome_failures(&self, f: &mut Vec<String>, out: &Record) {
        let s = &self.spec;
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
                Some(Ok(r)) => report_failures(f, want, r),
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
        let left = s.steps_left.unwrap_or(0);
        if out.steps_left != left {
            f.push(format!(
                "steps-left: expected {left} script steps left undone, got {}",
                out.steps_left
            ));
        }
    }

    /// The checks that read the record of calls: packets, connects,
    /// sleeps, log lines, entropy, closes.
    fn record_failures(&self, f: &mut Vec<String>, out: &Record) {
        let s = &self.spec;
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
            packet_failures(f, "sent", checks, &sent, true);
        }
        if let Some(checks) = &self.sent_start {
            packet_failures(f, "sent-start", checks, &sent, false);
        }
        if let Some(checks) = &self.sent_in_order {
            in_order_failures(f, checks, &sent);
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

#[cfg(test)]
mod tests {
    use mqttbytes::v4::Connect;

    use super::*;
    use crate::Level;
    use crate::file::format::PacketSpec;
    use crate::{IterationFailure, IterationReport, Stop};

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
                Call::Sleep {
                    ms: 100,
                    connected: true,
                },
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
        // The key reaches the rule.
        let mut out = outcome();
        let check = |out: &Record| {
            Checks::new(toml::from_str("packet-ids = \"distinct\"").unwrap())
                .unwrap()
                .failures(out)
        };
        out.calls.extend([publish(1, false), publish(2, false)]);
        assert_eq!(check(&out), Vec::<String>::new());
        out.calls.push(publish(2, false));
        assert_eq!(check(&out).len(), 1, "{:?}", check(&out));
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
