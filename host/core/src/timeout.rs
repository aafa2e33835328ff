//! An iteration's timeout, as the real host and the mock host both take
//! it: the operator's, else what the logic declared for the iteration (kept
//! between 1 ms and the host's maximum: a logic can shorten its own bound,
//! never lift the host's), else the maximum.

use crate::outcome::TimeoutSetBy;

/// The longest iteration a host allows a logic that sets its own bound
/// (or none), milliseconds: an hour.
pub const ITERATION_TIMEOUT_MAX_MS: u64 = 60 * 60 * 1000;

/// The timeout of an iteration, milliseconds (0 = none, only ever the
/// operator's), and who set it: `operator` (a flag, or a scenario's key)
/// wins; else the logic's `declared` bound; else the maximum.
pub fn iteration_timeout(operator: Option<u64>, declared: Option<u64>) -> (u64, TimeoutSetBy) {
    match (operator, declared) {
        (Some(ms), _) => (ms, TimeoutSetBy::Operator),
        (None, Some(ms)) => (ms.clamp(1, ITERATION_TIMEOUT_MAX_MS), TimeoutSetBy::Logic),
        (None, None) => (ITERATION_TIMEOUT_MAX_MS, TimeoutSetBy::Maximum),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_wins_then_the_logic_within_bounds_then_the_maximum() {
        assert_eq!(
            iteration_timeout(Some(0), Some(5)),
            (0, TimeoutSetBy::Operator)
        );
        assert_eq!(iteration_timeout(None, Some(0)), (1, TimeoutSetBy::Logic));
        assert_eq!(
            iteration_timeout(None, Some(u64::MAX)),
            (ITERATION_TIMEOUT_MAX_MS, TimeoutSetBy::Logic)
        );
        assert_eq!(
            iteration_timeout(None, None),
            (ITERATION_TIMEOUT_MAX_MS, TimeoutSetBy::Maximum)
        );
    }
}
