//! Runs a [`Supervisor`] against a [`Runtime`]: the one iteration loop,
//! shared by the real host (a wasmtime sandbox on real time) and the mock
//! host (a scripted broker on virtual time).

use std::fmt::Display;

use crate::outcome::{IterationFailure, IterationReport, SocketFailure, Stop};
use crate::supervisor::{Action, Ending, Supervisor};

/// What one call of `run-iteration` came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It returned a report.
    Completed(IterationReport),
    /// It returned a failure; with the socket failure behind it when the
    /// host has one for the same error.
    Failed(IterationFailure, Option<SocketFailure>),
    /// The guest trapped or hit a limit; the instance is gone.
    Stopped(Stop),
    /// The host is stopping and the iteration was cut short; the instance
    /// is gone.
    Interrupted,
}

/// Where a device's logic runs: instances, calls, time and randomness.
pub trait Runtime<L> {
    /// A live instance of some logic.
    type Instance;
    /// A failure of the runtime itself, which ends the run (a component
    /// that cannot be instantiated, a test script that went wrong).
    type Error;

    /// A new instance of `logic`.
    fn instantiate(
        &mut self,
        logic: &L,
    ) -> impl Future<Output = Result<Self::Instance, Self::Error>> + Send;
    /// Calls `run-iteration` on `instance`.
    fn run_iteration(
        &mut self,
        instance: &mut Self::Instance,
        iteration: u32,
    ) -> impl Future<Output = Result<Outcome, Self::Error>> + Send;
    /// Waits `delay_ms` milliseconds.
    fn sleep(&mut self, delay_ms: u32) -> impl Future<Output = ()> + Send;
    /// A uniform random number, for restart jitter.
    fn random_u32(&mut self) -> u32;
    /// Logic offered for a swap since the last call, if any.
    fn take_swap(&mut self) -> Option<L>;
    /// Whether the host is stopping: the run ends at the next safe point.
    fn stop_requested(&self) -> bool {
        false
    }
}

/// [`run_ready`] gave up: something waited for real.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "it waited for something outside virtual time (a real timer, socket or WASI poll): a runtime on virtual time cannot run it"
)]
pub struct WaitedForReal;

/// Runs `future` to completion on this thread, for runtimes that never
/// wait for anything outside themselves (virtual time, scripted peers): it
/// polls until the future is ready, and gives up (dropping the future) when
/// it is still pending after a million polls.
pub fn run_ready<F: Future>(future: F) -> Result<F::Output, WaitedForReal> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut future = std::pin::pin!(future);
    for _ in 0..1_000_000 {
        if let std::task::Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return Ok(v);
        }
    }
    Err(WaitedForReal)
}

/// Why [`drive`] ended without finishing.
#[derive(Debug)]
pub enum DriveError<E> {
    /// The supervisor gave up.
    Ended(Ending),
    /// The runtime failed.
    Runtime(E),
}

/// Runs iterations until the supervisor finishes or gives up; returns the
/// number of successful iterations.
pub async fn drive<L, R>(
    supervisor: &mut Supervisor<L>,
    runtime: &mut R,
) -> Result<u32, DriveError<R::Error>>
where
    L: Clone + Display,
    R: Runtime<L>,
{
    let mut instance: Option<R::Instance> = None;
    let mut action = supervisor.start();
    loop {
        action = match action {
            Action::Run { iteration, fresh } => {
                if runtime.stop_requested() {
                    return Ok(supervisor.succeeded());
                }
                let live = match instance.take() {
                    Some(live) if !fresh => live,
                    old => {
                        // The old instance goes first: a fleet swapping at
                        // once needs no second instance per device.
                        drop(old);
                        runtime
                            .instantiate(supervisor.current())
                            .await
                            .map_err(DriveError::Runtime)?
                    }
                };
                let live = instance.insert(live);
                let outcome = runtime
                    .run_iteration(live, iteration)
                    .await
                    .map_err(DriveError::Runtime)?;
                // Logic offered meanwhile may replace a stopped guest at once.
                if let Some(logic) = runtime.take_swap() {
                    supervisor.on_swap(logic);
                }
                let next = match outcome {
                    Outcome::Completed(report) => supervisor.on_result(Ok(report)),
                    Outcome::Failed(failure, socket) => {
                        supervisor.on_result(Err((failure, socket)))
                    }
                    Outcome::Stopped(stop) => {
                        // A stopped instance cannot be entered again.
                        instance = None;
                        let random = runtime.random_u32();
                        supervisor.on_trap(stop, random)
                    }
                    Outcome::Interrupted => {
                        instance = None;
                        supervisor.on_interrupted()
                    }
                };
                // Once the host is stopping, whatever the iteration came to
                // (reported above) ends the run cleanly.
                if runtime.stop_requested() {
                    return Ok(supervisor.succeeded());
                }
                next
            }
            Action::Wait { delay_ms } => {
                if runtime.stop_requested() {
                    return Ok(supervisor.succeeded());
                }
                runtime.sleep(delay_ms).await;
                if runtime.stop_requested() {
                    return Ok(supervisor.succeeded());
                }
                if let Some(logic) = runtime.take_swap() {
                    supervisor.on_swap(logic);
                }
                supervisor.resume()
            }
            Action::Finished { succeeded } => return Ok(succeeded),
            Action::GiveUp(ending) => return Err(DriveError::Ended(ending)),
        };
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Arc;

    use super::*;
    use crate::observer::Event;
    use crate::outcome::TrapKind;
    use crate::supervisor::tests::Recorder;
    use crate::supervisor::{Plan, RestartPolicy};

    /// A runtime whose logic is a name and whose calls answer from a
    /// script; time is virtual and every step is recorded.
    #[derive(Default)]
    struct Fake {
        outcomes: VecDeque<(&'static str, Outcome)>,
        swaps: VecDeque<(u64, &'static str)>,
        now_ms: u64,
        log: Vec<String>,
        instances: u32,
        /// Virtual time from which the host is stopping.
        stop_at_ms: Option<u64>,
    }

    impl Runtime<&'static str> for Fake {
        type Instance = &'static str;
        type Error = String;

        async fn instantiate(&mut self, logic: &&'static str) -> Result<&'static str, String> {
            self.instances += 1;
            self.log.push(format!("{} new {logic}", self.now_ms));
            Ok(logic)
        }

        async fn run_iteration(
            &mut self,
            instance: &mut &'static str,
            iteration: u32,
        ) -> Result<Outcome, String> {
            self.log
                .push(format!("{} run {iteration} on {instance}", self.now_ms));
            let (want, outcome) = self.outcomes.pop_front().ok_or("script ended")?;
            if want != *instance {
                return Err(format!("expected {want} to run, got {instance}"));
            }
            Ok(outcome)
        }

        async fn sleep(&mut self, delay_ms: u32) {
            self.now_ms += u64::from(delay_ms);
        }

        fn random_u32(&mut self) -> u32 {
            u32::MAX
        }

        fn take_swap(&mut self) -> Option<&'static str> {
            match self.swaps.front() {
                Some((at, _)) if *at <= self.now_ms => self.swaps.pop_front().map(|(_, l)| l),
                _ => None,
            }
        }

        fn stop_requested(&self) -> bool {
            self.stop_at_ms.is_some_and(|at| self.now_ms >= at)
        }
    }

    fn ok() -> Outcome {
        Outcome::Completed(IterationReport::default())
    }

    fn stopped() -> Outcome {
        Outcome::Stopped(Stop::Trap {
            kind: TrapKind::Unreachable,
            message: "panic".into(),
        })
    }

    fn plan(iterations: Option<u32>) -> Plan {
        Plan {
            iterations,
            iteration_delay_ms: 1000,
            restart: RestartPolicy {
                base_ms: 100,
                max_ms: 400,
                max_attempts: 3,
            },
            probation_iterations: 1,
        }
    }

    #[test]
    fn iterations_run_on_one_instance_with_the_delay_on_the_clock() {
        let mut fake = Fake {
            outcomes: [("a", ok()), ("a", ok()), ("a", ok())].into(),
            ..Fake::default()
        };
        let rec = Arc::new(Recorder::default());
        let mut sup = Supervisor::new(plan(Some(3)), "a", rec);
        let n = run_ready(drive(&mut sup, &mut fake))
            .expect("on virtual time")
            .unwrap();
        assert_eq!(n, 3);
        assert_eq!(fake.instances, 1);
        assert_eq!(
            fake.log,
            [
                "0 new a",
                "0 run 1 on a",
                "1000 run 2 on a",
                "2000 run 3 on a"
            ]
        );
    }

    #[test]
    fn a_stopped_guest_restarts_on_a_fresh_instance_after_the_jitter() {
        let mut fake = Fake {
            outcomes: [("a", stopped()), ("a", ok())].into(),
            ..Fake::default()
        };
        let mut sup = Supervisor::new(plan(Some(1)), "a", Arc::new(Recorder::default()));
        run_ready(drive(&mut sup, &mut fake))
            .expect("on virtual time")
            .unwrap();
        // u32::MAX % 101 = 67: the first restart window is [0, 100].
        assert_eq!(
            fake.log,
            ["0 new a", "0 run 1 on a", "67 new a", "67 run 2 on a"]
        );
    }

    #[test]
    fn a_swap_offered_during_a_wait_runs_next_and_a_stop_rolls_it_back() {
        let mut fake = Fake {
            outcomes: [("a", ok()), ("b", stopped()), ("a", ok())].into(),
            swaps: [(500, "b")].into(),
            ..Fake::default()
        };
        let rec = Arc::new(Recorder::default());
        let mut sup = Supervisor::new(plan(Some(2)), "a", rec.clone());
        run_ready(drive(&mut sup, &mut fake))
            .expect("on virtual time")
            .unwrap();
        assert_eq!(
            fake.log,
            [
                "0 new a",
                "0 run 1 on a",
                "1000 new b",
                "1000 run 2 on b",
                "2000 new a",
                "2000 run 3 on a"
            ]
        );
        assert_eq!(rec.count(|e| matches!(e, Event::FellBack { .. })), 1);
    }

    #[test]
    fn giving_up_and_runtime_errors_end_the_drive() {
        let fail = Outcome::Failed(IterationFailure::TimedOut("PUBACK".into()), None);
        let mut fake = Fake {
            outcomes: [("a", fail)].into(),
            ..Fake::default()
        };
        let mut sup = Supervisor::new(plan(Some(2)), "a", Arc::new(Recorder::default()));
        assert!(matches!(
            run_ready(drive(&mut sup, &mut fake)).expect("on virtual time"),
            Err(DriveError::Ended(Ending::IterationFailed {
                iteration: 1,
                ..
            }))
        ));

        let mut fake = Fake::default();
        let mut sup = Supervisor::new(plan(None), "a", Arc::new(Recorder::default()));
        assert!(matches!(
            run_ready(drive(&mut sup, &mut fake)).expect("on virtual time"),
            Err(DriveError::Runtime(e)) if e == "script ended"
        ));
    }

    #[test]
    fn every_stop_in_a_row_restarts_until_the_limit() {
        let mut fake = Fake {
            outcomes: (0..4).map(|_| ("a", stopped())).collect(),
            ..Fake::default()
        };
        let rec = Arc::new(Recorder::default());
        let mut sup = Supervisor::new(plan(None), "a", rec.clone());
        let end = run_ready(drive(&mut sup, &mut fake)).expect("on virtual time");
        assert!(matches!(
            end,
            Err(DriveError::Ended(Ending::GuestFailed { stops: 4, .. }))
        ));
        assert_eq!(fake.instances, 4);
        assert_eq!(rec.count(|e| matches!(e, Event::Restarting { .. })), 3);
    }

    #[test]
    fn a_stop_ends_the_run_at_the_next_safe_point() {
        let mut fake = Fake {
            outcomes: [("a", ok()), ("a", ok())].into(),
            stop_at_ms: Some(500),
            ..Fake::default()
        };
        let mut sup = Supervisor::new(plan(None), "a", Arc::new(Recorder::default()));
        // The stop comes during the delay after iteration 1: no iteration 2.
        assert_eq!(
            run_ready(drive(&mut sup, &mut fake))
                .expect("on virtual time")
                .unwrap(),
            1
        );
        assert_eq!(fake.log, ["0 new a", "0 run 1 on a"]);
    }

    #[test]
    fn a_stop_during_an_iteration_that_fails_still_ends_cleanly() {
        let fail = Outcome::Failed(IterationFailure::TimedOut("PUBACK".into()), None);
        let mut fake = Fake {
            outcomes: [("a", fail)].into(),
            stop_at_ms: Some(0),
            ..Fake::default()
        };
        // The stop is already requested: no iteration starts at all.
        let mut sup = Supervisor::new(plan(Some(3)), "a", Arc::new(Recorder::default()));
        assert_eq!(
            run_ready(drive(&mut sup, &mut fake))
                .expect("on virtual time")
                .unwrap(),
            0
        );
        assert!(fake.log.is_empty(), "{:?}", fake.log);
    }

    #[test]
    fn an_interrupted_iteration_ends_the_run() {
        let mut fake = Fake {
            outcomes: [("a", Outcome::Interrupted)].into(),
            ..Fake::default()
        };
        let rec = Arc::new(Recorder::default());
        let mut sup = Supervisor::new(plan(None), "a", rec.clone());
        assert_eq!(
            run_ready(drive(&mut sup, &mut fake))
                .expect("on virtual time")
                .unwrap(),
            0
        );
        assert_eq!(rec.count(|e| matches!(e, Event::Interrupted { .. })), 1);
    }
}
