//! Guest computation, continuous and per iteration: epoch ticks sampled
//! while wasm runs, re-armed by a call hook whenever the guest leaves a host
//! call, so import calls neither hide computation nor count as it.

use std::time::{Duration, Instant};

use crate::outcome::LimitHit;

use crate::limits::Limits;

/// Guest computation: wall time spent running wasm, measured between call
/// hooks (time in a host call, and time suspended at a yield, are outside
/// it), and the run of it since the last import call.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuMeter {
    /// Import calls so far (wrapping), counted by the linker's getters: call
    /// hooks also run around epoch yields, so they cannot tell an import.
    pub host_calls: u64,
    /// `host_calls` when the continuous run was last reset.
    seen_host_calls: u64,
    /// When wasm started running again, if it runs now.
    in_wasm_since: Option<Instant>,
    /// Wasm time in the iteration in flight.
    iteration: Duration,
    /// Wasm time since the last import call.
    continuous: Duration,
}

impl CpuMeter {
    /// Starts counting a new iteration.
    pub fn new_iteration(&mut self) {
        self.iteration = Duration::ZERO;
        self.continuous = Duration::ZERO;
        self.seen_host_calls = self.host_calls;
    }

    /// Wasm starts or resumes running.
    pub fn enter(&mut self, now: Instant) {
        self.in_wasm_since = Some(now);
    }

    /// Times the stretch a store's call hook marks: wasm runs from a call
    /// into it or a return from the host, until a call out or its return.
    pub fn on_hook(&mut self, hook: wasmtime::CallHook, now: Instant) {
        use wasmtime::CallHook;
        match hook {
            CallHook::ReturningFromHost | CallHook::CallingWasm => self.enter(now),
            CallHook::CallingHost | CallHook::ReturningFromWasm => self.leave(now),
        }
    }

    /// Wasm stops running (a host call, a yield, or a return).
    pub fn leave(&mut self, now: Instant) {
        if let Some(since) = self.in_wasm_since.take() {
            let ran = now.saturating_duration_since(since);
            self.iteration += ran;
            self.continuous += ran;
        }
    }

    /// Checks the limits at `now` (while wasm runs); a limit passed stops
    /// the guest.
    pub fn check(&mut self, limits: &Limits, now: Instant) -> Result<(), LimitHit> {
        if self.host_calls != self.seen_host_calls {
            self.seen_host_calls = self.host_calls;
            self.continuous = Duration::ZERO;
        }
        self.leave(now);
        self.enter(now);
        let continuous = self.continuous.as_millis() as u64;
        if continuous > u64::from(limits.cpu_limit_ms) {
            return Err(LimitHit::Cpu {
                used_ms: continuous,
                limit_ms: limits.cpu_limit_ms,
            });
        }
        let used = self.iteration.as_millis() as u64;
        if limits.cpu_budget_ms > 0 && used > u64::from(limits.cpu_budget_ms) {
            return Err(LimitHit::CpuBudget {
                used_ms: used,
                budget_ms: limits.cpu_budget_ms,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A continuous limit of 50 ms and a budget of 100 ms.
    fn limits() -> Limits {
        Limits {
            cpu_limit_ms: 50,
            cpu_budget_ms: 100,
            ..Limits::default()
        }
    }

    #[test]
    fn continuous_computation_and_the_budget_are_separate_limits() {
        let limits = limits();
        let t0 = Instant::now();
        let mut cpu = CpuMeter::default();
        cpu.new_iteration();
        cpu.enter(t0);
        assert_eq!(cpu.check(&limits, t0 + ms(40)), Ok(()));
        // An import call, then 40 ms more: the run restarts, the total goes on.
        cpu.leave(t0 + ms(40));
        cpu.host_calls += 1;
        cpu.enter(t0 + ms(1040));
        assert_eq!(cpu.check(&limits, t0 + ms(1080)), Ok(()));
        cpu.leave(t0 + ms(1080));
        cpu.host_calls += 1;
        cpu.enter(t0 + ms(2000));
        assert_eq!(
            cpu.check(&limits, t0 + ms(2030)),
            Err(LimitHit::CpuBudget {
                used_ms: 110,
                budget_ms: 100
            })
        );
        let mut spin = CpuMeter::default();
        spin.new_iteration();
        spin.enter(t0);
        assert_eq!(
            spin.check(&limits, t0 + ms(60)),
            Err(LimitHit::Cpu {
                used_ms: 60,
                limit_ms: 50
            })
        );
    }

    #[test]
    fn time_outside_wasm_does_not_count() {
        let limits = limits();
        let t0 = Instant::now();
        let mut cpu = CpuMeter::default();
        cpu.new_iteration();
        for i in 0..100u64 {
            // 1 ms of wasm, then 99 ms waiting in a host call (or suspended).
            cpu.enter(t0 + ms(100 * i));
            cpu.leave(t0 + ms(100 * i + 1));
            cpu.host_calls += 1;
        }
        cpu.enter(t0 + ms(10_000));
        assert_eq!(cpu.check(&limits, t0 + ms(10_000)), Ok(()));
        assert_eq!(cpu.iteration, ms(100));
    }
}
