//! Why a guest was stopped, in the user's words: the limit's flag, or the
//! trap's likely cause.

use host_core::outcome::{LimitHit, Stop, TimeoutSetBy, TrapKind};

/// Why a guest was stopped, naming the limit's flag or the trap's likely cause.
pub fn stop(stop: &Stop) -> String {
    match stop {
        Stop::Limit(LimitHit::Memory { limit_bytes }) => format!(
            "memory limit --max-memory-mib {} reached (the guest grew its linear memory past it)",
            limit_bytes >> 20
        ),
        Stop::Limit(LimitHit::Table { limit }) => {
            format!("table limit --max-table-elements {limit} reached")
        }
        Stop::Limit(limit @ LimitHit::Cpu { limit_ms, .. }) => {
            format!("{limit} (limit --cpu-limit-ms {limit_ms})")
        }
        Stop::Limit(limit @ LimitHit::CpuBudget { budget_ms, .. }) => format!(
            "{limit}, import calls or not (budget --cpu-budget-ms {budget_ms}; the guest spins)"
        ),
        Stop::Limit(hit @ LimitHit::OutputFlood { limit, .. }) => format!(
            "{hit} (it kept writing past --log-lines-per-sec; the limit is {limit} dropped lines, ten seconds' worth)"
        ),
        Stop::Limit(limit @ LimitHit::ConnectStorm { limit: max, .. }) => format!(
            "{limit} (it kept connecting past --connect-burst and --connect-interval-ms; the limit is {max} refusals, ten bursts)"
        ),
        Stop::Limit(
            limit @ LimitHit::IterationTimeout {
                limit_ms,
                set_by: TimeoutSetBy::Operator,
            },
        ) => format!(
            "{limit} (limit --iteration-timeout-ms {limit_ms}; the guest hangs or waits too long)"
        ),
        Stop::Limit(
            limit @ LimitHit::IterationTimeout {
                set_by: TimeoutSetBy::Logic,
                ..
            },
        ) => format!(
            "{limit} (the bound the logic declared for its iteration; it hangs, or declared too little: --iteration-timeout-ms MS overrides it)"
        ),
        Stop::Limit(
            limit @ LimitHit::IterationTimeout {
                set_by: TimeoutSetBy::Maximum,
                ..
            },
        ) => format!(
            "{limit} (the host's maximum for a logic that declares no bound; the guest hangs, or set --iteration-timeout-ms MS)"
        ),
        Stop::Trap { kind, message } => {
            let hint = match kind {
                TrapKind::Unreachable => {
                    " (the guest panicked or aborted; its own message, if any, is in its stderr lines above)"
                }
                TrapKind::StackOverflow => " (the guest recursed past the wasm stack limit)",
                TrapKind::MemoryOutOfBounds => {
                    " (the guest overran its stack or memory, e.g. by recursing without end)"
                }
                TrapKind::Other => "",
            };
            format!("{message}{hint}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_name_the_limit_flag() {
        let line = stop(&Stop::Limit(LimitHit::Cpu {
            used_ms: 210,
            limit_ms: 200,
        }));
        assert!(
            line.contains("CPU limit") && line.contains("--cpu-limit-ms 200"),
            "{line}"
        );
        let line = stop(&Stop::Limit(LimitHit::Memory {
            limit_bytes: 16 << 20,
        }));
        assert!(line.contains("memory limit --max-memory-mib 16"), "{line}");
    }
}
