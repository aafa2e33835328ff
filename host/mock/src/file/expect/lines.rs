//! Checks of the log and the sleeps: log lines with their levels, and
//! which sleeps a logic made with a connection open.

use regex::Regex;

use super::super::format::{LevelSpec, LogSpec, SleepKind};
use super::regex;
use crate::{Call, Level};

pub(super) fn lines(log: &[(Level, String)]) -> String {
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

/// The `sleep-ms` durations of `kind`: a sleep is disconnected when the
/// logic holds no connection it opened and did not close.
pub(super) fn sleeps_of(calls: &[Call], kind: SleepKind) -> Vec<u32> {
    calls
        .iter()
        .filter_map(|call| match call {
            Call::Sleep { ms, connected } => match kind {
                SleepKind::All => Some(*ms),
                SleepKind::Connected => connected.then_some(*ms),
                SleepKind::Disconnected => (!connected).then_some(*ms),
            },
            _ => None,
        })
        .collect()
}

/// The log lines with their levels.
pub(super) fn log_lines(calls: &[Call]) -> Vec<(Level, String)> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Log(level, line) => Some((*level, line.clone())),
            _ => None,
        })
        .collect()
}

pub(super) fn level_name(level: Level) -> &'static str {
    match level {
        Level::Debug => "DEBUG",
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
    }
}

/// A log line's pattern and, if given, its level.
pub(super) struct LogCheck {
    pattern: Regex,
    level: Option<Level>,
}

impl LogCheck {
    pub(super) fn new(spec: &LogSpec) -> Result<Self, String> {
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

    pub(super) fn holds(&self, (level, line): &(Level, String)) -> bool {
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
