//! The policy of one device's life, apart from any sandbox: when to run the
//! next iteration, when to restart a stopped guest (Full-Jitter backoff),
//! when swapped-in logic takes over and when it is rolled back, and when to
//! give up. A pure state machine: the caller runs what it says (see
//! [`crate::drive`]) and tells it what came of it; every outcome is also
//! reported to the device's [`Observer`], so counts cannot drift from
//! decisions.

use std::fmt::Display;
use std::sync::Arc;

use mqtt_core::Backoff;

use crate::observer::{Event, Observer};
use crate::outcome::{IterationFailure, IterationReport, SocketFailure, Stop};
use crate::settings::defaults;

/// How to run the iterations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Stop after this many successful iterations; `None` = forever, and a
    /// failed iteration is reported and followed by the next one.
    pub iterations: Option<u32>,
    /// Wait between iterations, milliseconds.
    pub iteration_delay_ms: u32,
    /// Restarts of a stopped guest.
    pub restart: RestartPolicy,
    /// Iterations swapped-in logic must return from before it stays; 0 =
    /// no rollback.
    pub probation_iterations: u32,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            iterations: None,
            iteration_delay_ms: defaults::ITERATION_DELAY_MS,
            restart: RestartPolicy::default(),
            probation_iterations: defaults::PROBATION_ITERATIONS,
        }
    }
}

/// How a stopped guest is restarted: Full-Jitter backoff between restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// First backoff window, milliseconds.
    pub base_ms: u32,
    /// Largest backoff window, milliseconds.
    pub max_ms: u32,
    /// Restarts in a row before giving up; 0 = never restart.
    pub max_attempts: u32,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            base_ms: defaults::BACKOFF_BASE_MS,
            max_ms: defaults::BACKOFF_MAX_MS,
            max_attempts: defaults::RESTART_MAX_ATTEMPTS,
        }
    }
}

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Call `run-iteration` with `iteration`; on a new instance of
    /// [`Supervisor::current`] first when `fresh` (the first run, after a
    /// stop, after a swap).
    Run {
        /// The iteration's number, from 1.
        iteration: u32,
        /// Make a new instance first.
        fresh: bool,
    },
    /// Wait `delay_ms` milliseconds, then call [`Supervisor::resume`].
    Wait {
        /// The wait, milliseconds.
        delay_ms: u32,
    },
    /// Every planned iteration succeeded.
    Finished {
        /// Successful iterations.
        succeeded: u32,
    },
    /// The run is over without finishing.
    GiveUp(Ending),
}

/// Why a run ended without finishing its plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// An iteration failed and the plan had a fixed number of iterations.
    IterationFailed {
        /// Which, from 1.
        iteration: u32,
        /// What the guest reported.
        failure: IterationFailure,
        /// The socket failure behind it, if the host has one.
        socket: Option<SocketFailure>,
    },
    /// The guest was stopped too many times in a row.
    GuestFailed {
        /// Stops in a row.
        stops: u32,
        /// The last one.
        last: Stop,
    },
}

/// The supervisor of one device, running logic of type `L` (displayed in
/// events, e.g. `sha256 2fe04434832e`).
///
/// States, by what the last outcome was: *running* (an instance is alive
/// and takes the next iteration), *stopped* (the next `Run` is `fresh`,
/// after a restart delay, or at once when a swap is waiting), *on
/// probation* (swapped-in logic that has not yet returned from
/// `probation_iterations` iterations; a stop rolls back to `previous`).
pub struct Supervisor<L> {
    plan: Plan,
    current: L,
    /// The logic `current` replaced, while `current` is on probation.
    previous: Option<L>,
    /// Iterations `current` must still return from to pass its probation.
    probation_left: u32,
    /// Logic offered by a swap, taken at the next safe point.
    pending: Option<L>,
    /// The last iteration started.
    iteration: u32,
    succeeded: u32,
    stops_in_a_row: u32,
    restarts: Backoff,
    /// Whether the next run needs a new instance.
    fresh: bool,
    observer: Arc<dyn Observer>,
}

impl<L: Clone + Display> Supervisor<L> {
    /// A supervisor that starts with `logic`.
    pub fn new(plan: Plan, logic: L, observer: Arc<dyn Observer>) -> Self {
        Self {
            restarts: restart_backoff(&plan.restart),
            plan,
            current: logic,
            previous: None,
            probation_left: 0,
            pending: None,
            iteration: 0,
            succeeded: 0,
            stops_in_a_row: 0,
            fresh: true,
            observer,
        }
    }

    /// The logic to instantiate for the next `Run`.
    pub fn current(&self) -> &L {
        &self.current
    }

    /// Successful iterations so far.
    pub fn succeeded(&self) -> u32 {
        self.succeeded
    }

    /// The first action.
    pub fn start(&mut self) -> Action {
        self.resume()
    }

    /// Offers new logic; it takes over at the next safe point (before the
    /// next iteration), replacing any offer not taken yet.
    pub fn on_swap(&mut self, logic: L) {
        self.pending = Some(logic);
    }

    /// The safe point between iterations: takes offered logic, then runs
    /// the next iteration.
    pub fn resume(&mut self) -> Action {
        self.iteration += 1;
        if let Some(next) = self.pending.take() {
            self.observer.observe(&Event::SwappedIn {
                iteration: self.iteration,
                from: self.current.to_string(),
                to: next.to_string(),
            });
            let replaced = std::mem::replace(&mut self.current, next);
            self.probation_left = self.plan.probation_iterations;
            // Logic still on probation is no rollback target: keep the one
            // it replaced.
            let proven = self.previous.take().unwrap_or(replaced);
            self.previous = (self.probation_left > 0).then_some(proven);
            self.fresh = true;
            self.new_logic();
        }
        let fresh = std::mem::take(&mut self.fresh);
        Action::Run {
            iteration: self.iteration,
            fresh,
        }
    }

    /// The iteration returned: a report, or a failure with the socket
    /// failure behind it (if any).
    pub fn on_result(
        &mut self,
        result: Result<IterationReport, (IterationFailure, Option<SocketFailure>)>,
    ) -> Action {
        // The logic returned normally: one step of its probation passed.
        self.probation_left = self.probation_left.saturating_sub(1);
        if self.probation_left == 0 {
            self.previous = None;
        }
        let iteration = self.iteration;
        match result {
            Ok(report) => {
                self.succeeded += 1;
                self.stops_in_a_row = 0;
                self.restarts = restart_backoff(&self.plan.restart);
                self.observer
                    .observe(&Event::IterationCompleted { iteration, report });
                if self.plan.iterations.is_some_and(|n| self.succeeded >= n) {
                    return Action::Finished {
                        succeeded: self.succeeded,
                    };
                }
            }
            Err((failure, socket)) => {
                let ends_run = self.plan.iterations.is_some();
                self.observer.observe(&Event::IterationFailed {
                    iteration,
                    failure: failure.clone(),
                    socket: socket.clone(),
                    ends_run,
                });
                if ends_run {
                    return Action::GiveUp(Ending::IterationFailed {
                        iteration,
                        failure,
                        socket,
                    });
                }
            }
        }
        self.next_iteration()
    }

    /// The guest was stopped (trap or limit); its instance is gone.
    /// `random` is a uniform random number for the restart's jitter.
    pub fn on_trap(&mut self, stop: Stop, random: u32) -> Action {
        self.fresh = true;
        if let Some(previous) = self.previous.take() {
            self.observer.observe(&Event::FellBack {
                from: self.current.to_string(),
                to: previous.to_string(),
                stop,
            });
            self.current = previous;
            self.probation_left = 0;
            self.new_logic();
            return self.next_iteration();
        }
        self.stops_in_a_row += 1;
        self.observer.observe(&Event::GuestStopped {
            iteration: self.iteration,
            stop: stop.clone(),
        });
        if self.pending.is_some() {
            // New logic is waiting: it takes over now, not after a restart.
            return Action::Wait { delay_ms: 0 };
        }
        match self.restarts.next_delay_ms(random) {
            Some(delay_ms) => {
                self.observer.observe(&Event::Restarting {
                    delay_ms,
                    attempt: self.restarts.attempts_done(),
                    max_attempts: self.plan.restart.max_attempts,
                });
                Action::Wait { delay_ms }
            }
            None => Action::GiveUp(Ending::GuestFailed {
                stops: self.stops_in_a_row,
                last: stop,
            }),
        }
    }

    /// The host is stopping and the iteration in flight was cut short.
    pub fn on_interrupted(&mut self) -> Action {
        self.fresh = true;
        self.observer.observe(&Event::Interrupted {
            iteration: self.iteration,
        });
        Action::Finished {
            succeeded: self.succeeded,
        }
    }

    /// Other logic runs from now on: its stops are counted afresh.
    fn new_logic(&mut self) {
        self.stops_in_a_row = 0;
        self.restarts = restart_backoff(&self.plan.restart);
    }

    fn next_iteration(&mut self) -> Action {
        let delay_ms = self.plan.iteration_delay_ms;
        self.observer.observe(&Event::NextIteration { delay_ms });
        Action::Wait { delay_ms }
    }
}

fn restart_backoff(policy: &RestartPolicy) -> Backoff {
    Backoff::new(policy.base_ms, policy.max_ms, policy.max_attempts)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use mqtt_core::TransportError;

    use super::*;
    use crate::outcome::{LimitHit, TimeoutSetBy, TrapKind};

    /// Records every event.
    #[derive(Default)]
    pub struct Recorder(pub Mutex<Vec<Event>>);

    impl Observer for Recorder {
        fn observe(&self, event: &Event) {
            self.0.lock().unwrap().push(event.clone());
        }
    }

    impl Recorder {
        pub fn count(&self, pred: impl Fn(&Event) -> bool) -> usize {
            self.0.lock().unwrap().iter().filter(|e| pred(e)).count()
        }
    }

    fn plan(iterations: Option<u32>) -> Plan {
        Plan {
            iterations,
            iteration_delay_ms: 100,
            restart: RestartPolicy {
                base_ms: 10,
                max_ms: 40,
                max_attempts: 2,
            },
            probation_iterations: 1,
        }
    }

    fn supervisor(iterations: Option<u32>) -> (Supervisor<&'static str>, Arc<Recorder>) {
        let rec = Arc::new(Recorder::default());
        (Supervisor::new(plan(iterations), "a", rec.clone()), rec)
    }

    fn trap() -> Stop {
        Stop::Trap {
            kind: TrapKind::Unreachable,
            message: "boom".into(),
        }
    }

    fn run(iteration: u32, fresh: bool) -> Action {
        Action::Run { iteration, fresh }
    }

    fn wait(delay_ms: u32) -> Action {
        Action::Wait { delay_ms }
    }

    fn failure() -> (IterationFailure, Option<SocketFailure>) {
        (IterationFailure::Transport(TransportError::TimedOut), None)
    }

    #[test]
    fn runs_the_planned_iterations_with_the_delay_between() {
        let (mut s, rec) = supervisor(Some(2));
        assert_eq!(s.start(), run(1, true));
        assert_eq!(s.on_result(Ok(IterationReport::default())), wait(100));
        assert_eq!(s.resume(), run(2, false));
        assert_eq!(
            s.on_result(Ok(IterationReport::default())),
            Action::Finished { succeeded: 2 }
        );
        assert_eq!(
            rec.count(|e| matches!(e, Event::IterationCompleted { .. })),
            2
        );
    }

    #[test]
    fn a_failure_ends_a_planned_run_and_is_reported() {
        let (mut s, rec) = supervisor(Some(3));
        s.start();
        assert!(matches!(
            s.on_result(Err(failure())),
            Action::GiveUp(Ending::IterationFailed { iteration: 1, .. })
        ));
        assert_eq!(rec.count(|e| matches!(e, Event::IterationFailed { .. })), 1);
    }

    /// Regression: in forever mode a failed iteration was not
    /// counted as a failure; every one now reaches the observer.
    #[test]
    fn forever_failures_go_on_and_each_is_reported() {
        let (mut s, rec) = supervisor(None);
        s.start();
        for i in 1..=3 {
            assert_eq!(s.on_result(Err(failure())), wait(100));
            assert_eq!(s.resume(), run(i + 1, false));
        }
        assert_eq!(rec.count(|e| matches!(e, Event::IterationFailed { .. })), 3);
    }

    #[test]
    fn stops_restart_with_full_jitter_then_give_up() {
        let (mut s, rec) = supervisor(None);
        s.start();
        // random % (window + 1): windows 10 then 20.
        assert_eq!(s.on_trap(trap(), 7), wait(7));
        assert_eq!(s.resume(), run(2, true));
        assert_eq!(s.on_trap(trap(), 25), wait(4));
        assert_eq!(s.resume(), run(3, true));
        assert_eq!(
            s.on_trap(trap(), 0),
            Action::GiveUp(Ending::GuestFailed {
                stops: 3,
                last: trap()
            })
        );
        assert_eq!(rec.count(|e| matches!(e, Event::GuestStopped { .. })), 3);
        assert_eq!(rec.count(|e| matches!(e, Event::Restarting { .. })), 2);
    }

    #[test]
    fn a_success_resets_the_restart_budget() {
        let (mut s, _) = supervisor(None);
        s.start();
        s.on_trap(trap(), 0);
        s.resume();
        s.on_trap(trap(), 0);
        s.resume();
        s.on_result(Ok(IterationReport::default()));
        s.resume();
        // Two more restarts are allowed again, starting from the base window.
        assert_eq!(s.on_trap(trap(), 10), wait(10));
        s.resume();
        assert!(matches!(s.on_trap(trap(), 0), Action::Wait { .. }));
    }

    #[test]
    fn zero_restarts_gives_up_at_the_first_stop() {
        let rec = Arc::new(Recorder::default());
        let mut p = plan(None);
        p.restart.max_attempts = 0;
        let mut s = Supervisor::new(p, "a", rec);
        s.start();
        assert!(matches!(
            s.on_trap(trap(), 0),
            Action::GiveUp(Ending::GuestFailed { stops: 1, .. })
        ));
    }

    #[test]
    fn a_swap_takes_over_at_the_next_safe_point_on_a_fresh_instance() {
        let (mut s, rec) = supervisor(None);
        s.start();
        s.on_swap("b");
        assert_eq!(*s.current(), "a", "not while an iteration is in flight");
        s.on_result(Ok(IterationReport::default()));
        assert_eq!(s.resume(), run(2, true));
        assert_eq!(*s.current(), "b");
        assert_eq!(
            rec.count(|e| matches!(e, Event::SwappedIn { iteration: 2, from, to } if from == "a" && to == "b")),
            1
        );
    }

    #[test]
    fn logic_stopped_on_probation_falls_back_without_using_a_restart() {
        let (mut s, rec) = supervisor(None);
        s.start();
        s.on_swap("b");
        s.on_result(Ok(IterationReport::default()));
        s.resume();
        let stop = Stop::Limit(LimitHit::Cpu {
            used_ms: 1010,
            limit_ms: 1000,
        });
        assert_eq!(s.on_trap(stop, 0), wait(100));
        assert_eq!(*s.current(), "a");
        assert_eq!(s.resume(), run(3, true));
        assert_eq!(
            rec.count(
                |e| matches!(e, Event::FellBack { from, to, .. } if from == "b" && to == "a")
            ),
            1
        );
        assert_eq!(rec.count(|e| matches!(e, Event::Restarting { .. })), 0);
    }

    #[test]
    fn logic_that_completed_an_iteration_is_not_rolled_back() {
        let (mut s, _) = supervisor(None);
        s.start();
        s.on_swap("b");
        s.on_result(Ok(IterationReport::default()));
        s.resume();
        s.on_result(Err(failure())); // returned normally: probation passed
        s.resume();
        assert!(matches!(s.on_trap(trap(), 0), Action::Wait { .. }));
        assert_eq!(*s.current(), "b", "a later stop restarts b, not a");
    }

    #[test]
    fn the_latest_offer_wins() {
        let (mut s, _) = supervisor(None);
        s.start();
        s.on_swap("b");
        s.on_swap("c");
        s.on_result(Ok(IterationReport::default()));
        s.resume();
        assert_eq!(*s.current(), "c");
    }

    #[test]
    fn a_swap_during_probation_keeps_the_proven_logic_to_roll_back_to() {
        let mut p = plan(None);
        p.probation_iterations = 3;
        let mut s = Supervisor::new(p, "a", Arc::new(Recorder::default()));
        s.start();
        s.on_swap("b");
        s.on_result(Ok(IterationReport::default()));
        s.resume(); // b runs, on probation
        s.on_result(Ok(IterationReport::default())); // one of b's three
        s.on_swap("c");
        s.resume(); // c replaces b, which never proved itself
        assert_eq!(*s.current(), "c");
        s.on_trap(trap(), 0); // c stopped on probation
        assert_eq!(*s.current(), "a", "rolled back to the last proven logic");
    }

    #[test]
    fn probation_lasts_the_planned_iterations() {
        let rec = Arc::new(Recorder::default());
        let mut p = plan(None);
        p.probation_iterations = 3;
        let mut s = Supervisor::new(p, "a", rec.clone());
        s.start();
        s.on_swap("b");
        s.on_result(Ok(IterationReport::default()));
        s.resume();
        s.on_result(Ok(IterationReport::default()));
        s.resume();
        s.on_result(Err(failure()));
        s.resume();
        // Two iterations returned: a stop in the third still rolls back.
        assert_eq!(s.on_trap(trap(), 0), wait(100));
        assert_eq!(*s.current(), "a");
        assert_eq!(rec.count(|e| matches!(e, Event::FellBack { .. })), 1);
    }

    #[test]
    fn a_waiting_swap_replaces_a_stopped_guest_at_once() {
        let (mut s, rec) = supervisor(None);
        s.start();
        s.on_swap("b");
        // The running logic hangs and is stopped (say by the watchdog).
        let timeout = Stop::Limit(LimitHit::IterationTimeout {
            limit_ms: 1000,
            set_by: TimeoutSetBy::Operator,
        });
        assert_eq!(s.on_trap(timeout, 0), wait(0));
        assert_eq!(s.resume(), run(2, true));
        assert_eq!(*s.current(), "b");
        assert_eq!(rec.count(|e| matches!(e, Event::Restarting { .. })), 0);
    }

    #[test]
    fn new_logic_gets_a_fresh_restart_budget() {
        let (mut s, _) = supervisor(None);
        s.start();
        s.on_trap(trap(), 0);
        s.resume();
        s.on_trap(trap(), 0);
        s.on_swap("b");
        s.resume();
        s.on_result(Ok(IterationReport::default())); // probation passed
        s.resume();
        assert!(matches!(s.on_trap(trap(), 0), Action::Wait { .. }));
        s.resume();
        assert!(matches!(s.on_trap(trap(), 0), Action::Wait { .. }));
        s.resume();
        assert!(matches!(s.on_trap(trap(), 0), Action::GiveUp(_)));
    }

    #[test]
    fn an_interrupted_iteration_finishes_the_run() {
        let (mut s, rec) = supervisor(None);
        s.start();
        assert_eq!(s.on_interrupted(), Action::Finished { succeeded: 0 });
        assert_eq!(
            rec.count(|e| matches!(e, Event::Interrupted { iteration: 1 })),
            1
        );
    }
}
