//! Results, reports and stops as a scenario file names them, and how a
//! failure describes what happened instead.

use host_core::outcome::ConnackRefusal;

use crate::{IterationFailure, IterationReport, Record, Stop};

/// Expected and actual results, shortened to their counts and the first
/// difference when long.
pub(super) fn results_failure(want: &[String], got: &[String]) -> String {
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

pub(super) fn report_failures(
    f: &mut Vec<String>,
    want: &super::super::format::ReportSpec,
    got: &IterationReport,
) {
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
pub(super) fn ended(out: &Record) -> String {
    match (&out.aborted, out.stops.last()) {
        (Some(m), _) => format!("the run ended early: {m}"),
        (None, Some(stop)) => format!("the guest stopped: {}", stop),
        (None, None) => "nothing ran".into(),
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
pub(super) fn stop_name(stop: &Stop) -> String {
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

pub(super) fn result_kind_known(name: &str) -> Result<(), String> {
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
pub(super) fn result_kind(r: &Result<IterationReport, IterationFailure>) -> String {
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
pub(super) fn error_text(e: &IterationFailure) -> String {
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

pub(super) fn refusal_name(r: ConnackRefusal) -> &'static str {
    match r {
        ConnackRefusal::UnacceptableProtocolVersion => "unacceptable-protocol-version",
        ConnackRefusal::IdentifierRejected => "identifier-rejected",
        ConnackRefusal::ServerUnavailable => "server-unavailable",
        ConnackRefusal::BadUserNameOrPassword => "bad-user-name-or-password",
        ConnackRefusal::NotAuthorized => "not-authorized",
    }
}

pub(super) fn describe_result(r: &Result<IterationReport, IterationFailure>) -> String {
    match r {
        Ok(report) => format!(
            "ok ({} published, {} acknowledged, {} echoes, {} connections)",
            report.published, report.acknowledged, report.echoes, report.connections
        ),
        Err(e) => format!("{}({})", result_kind(r), error_text(e)),
    }
}

/// A stored value as a scenario file writes it: text, or a counter.
pub(super) fn shown(value: &[u8]) -> String {
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
    use host_core::outcome::{LimitHit, TimeoutSetBy};

    use super::*;

    /// `stop-limit` knows every limit's name.
    #[test]
    fn every_limit_has_a_stop_limit_name() {
        let hits = [
            LimitHit::Memory { limit_bytes: 1 },
            LimitHit::Table { limit: 1 },
            LimitHit::Cpu {
                used_ms: 1,
                limit_ms: 1,
            },
            LimitHit::CpuBudget {
                used_ms: 1,
                budget_ms: 1,
            },
            LimitHit::OutputFlood {
                dropped: 1,
                limit: 1,
            },
            LimitHit::ConnectStorm {
                refused: 1,
                limit: 1,
            },
            LimitHit::IterationTimeout {
                limit_ms: 1,
                set_by: TimeoutSetBy::Maximum,
            },
        ];
        for hit in hits {
            let name = stop_name(&Stop::Limit(hit));
            assert!(STOP_LIMITS.contains(&name.as_str()), "{name}");
        }
        assert_eq!(STOP_LIMITS.len(), hits.len() + 1, "and \"trap\"");
    }
}
