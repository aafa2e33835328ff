//! The canary policy of a fleet rollout, apart from how updates travel: the
//! update goes to the canaries first; when every canary has run it for the
//! required iterations, to everyone else; as soon as a canary refuses it or
//! rolls it back, the rollout stops and the rest keep their logic. A pure
//! state machine fed with device statuses, used by `host rollout` (statuses
//! over the broker) and by a local rollout (`--watch --devices`).

use std::collections::BTreeMap;

/// What a device reported about the update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Verified and offered; not running yet.
    Accepted,
    /// Running, with this many iterations completed on it.
    Running(u64),
    /// Refused (signature, version, world, build); why.
    Refused(String),
    /// Stopped in its first iterations and rolled back; why.
    RolledBack(String),
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing yet: wait for more reports.
    Wait,
    /// Offer the update to these devices (everyone after the canaries).
    Promote(Vec<String>),
    /// Every device has reported an outcome.
    Done(Summary),
    /// A canary refused or rolled back: stop, leave the rest alone.
    Stop {
        /// The canary.
        device: String,
        /// What it reported.
        report: Report,
        /// The outcome so far.
        summary: Summary,
    },
}

/// The outcome of a rollout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Devices running the update.
    pub running: usize,
    /// Devices that refused it or rolled it back.
    pub failed: usize,
    /// Devices never offered it.
    pub left_alone: usize,
}

/// A rollout's canary parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canaries {
    /// Devices that get the update first.
    pub count: usize,
    /// Iterations each canary completes on it before the others get it.
    pub promote_after: u64,
}

/// One rollout.
#[derive(Debug, Clone)]
pub struct CanaryPolicy {
    canaries: Vec<String>,
    rest: Vec<String>,
    promote_after: u64,
    promoted: bool,
    reports: BTreeMap<String, Report>,
}

impl CanaryPolicy {
    /// A rollout to `devices`, the first `canaries` of them first, promoted
    /// once each canary has completed `promote_after` iterations on it.
    pub fn new(devices: Vec<String>, canaries: usize, promote_after: u64) -> Self {
        let canaries = canaries.clamp(1, devices.len().max(1)).min(devices.len());
        let mut canary_list = devices;
        let rest = canary_list.split_off(canaries);
        Self {
            canaries: canary_list,
            rest,
            promote_after,
            promoted: false,
            reports: BTreeMap::new(),
        }
    }

    /// The devices to offer the update to first.
    pub fn canaries(&self) -> &[String] {
        &self.canaries
    }

    /// Whether the update went beyond the canaries.
    pub fn promoted(&self) -> bool {
        self.promoted
    }

    /// Devices offered the update that have not reported an outcome yet.
    pub fn waiting_for(&self) -> Vec<String> {
        self.offered()
            .filter(|d| !self.reports.get(*d).is_some_and(|r| self.final_report(r)))
            .cloned()
            .collect()
    }

    fn offered(&self) -> impl Iterator<Item = &String> {
        let rest: &[String] = if self.promoted { &self.rest } else { &[] };
        self.canaries.iter().chain(rest)
    }

    /// Running counts as an outcome once the device has completed an
    /// iteration on the update (canaries: the required number).
    fn final_report(&self, report: &Report) -> bool {
        match report {
            Report::Accepted => false,
            Report::Running(n) => *n >= 1,
            Report::Refused(_) | Report::RolledBack(_) => true,
        }
    }

    fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for d in self.offered() {
            match self.reports.get(d) {
                Some(Report::Running(_)) => s.running += 1,
                Some(Report::Refused(_) | Report::RolledBack(_)) => s.failed += 1,
                _ => {}
            }
        }
        s.left_alone = if self.promoted { 0 } else { self.rest.len() };
        s
    }

    /// A device's report.
    pub fn on_report(&mut self, device: &str, report: Report) -> Step {
        let is_canary = self.canaries.iter().any(|c| c == device);
        let offered = is_canary || (self.promoted && self.rest.iter().any(|d| d == device));
        if !offered {
            return Step::Wait;
        }
        self.reports.insert(device.to_string(), report.clone());
        if is_canary
            && !self.promoted
            && matches!(report, Report::Refused(_) | Report::RolledBack(_))
        {
            return Step::Stop {
                device: device.to_string(),
                report,
                summary: self.summary(),
            };
        }
        if !self.promoted {
            let ready = self.canaries.iter().all(|c| {
                matches!(self.reports.get(c), Some(Report::Running(n)) if *n >= self.promote_after)
            });
            if !ready {
                return Step::Wait;
            }
            self.promoted = true;
            if !self.rest.is_empty() {
                return Step::Promote(self.rest.clone());
            }
        }
        if self.waiting_for().is_empty() {
            Step::Done(self.summary())
        } else {
            Step::Wait
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("d-{i:04}")).collect()
    }

    #[test]
    fn canaries_first_then_everyone_once_they_have_run_enough() {
        let mut r = CanaryPolicy::new(fleet(5), 2, 3);
        assert_eq!(r.canaries(), ["d-0001", "d-0002"]);
        assert_eq!(r.on_report("d-0001", Report::Running(3)), Step::Wait);
        assert_eq!(r.on_report("d-0002", Report::Running(2)), Step::Wait);
        // Reports of devices not offered the update are ignored.
        assert_eq!(r.on_report("d-0004", Report::Running(9)), Step::Wait);
        assert_eq!(
            r.on_report("d-0002", Report::Running(3)),
            Step::Promote(vec!["d-0003".into(), "d-0004".into(), "d-0005".into()])
        );
        assert_eq!(r.on_report("d-0003", Report::Accepted), Step::Wait);
        assert_eq!(r.on_report("d-0003", Report::Running(1)), Step::Wait);
        assert_eq!(
            r.on_report("d-0004", Report::RolledBack("trap".into())),
            Step::Wait
        );
        assert_eq!(r.waiting_for(), ["d-0005"]);
        assert_eq!(
            r.on_report("d-0005", Report::Running(1)),
            Step::Done(Summary {
                running: 4,
                failed: 1,
                left_alone: 0
            })
        );
    }

    #[test]
    fn a_canary_that_rolls_back_stops_the_rollout() {
        let mut r = CanaryPolicy::new(fleet(20), 2, 3);
        r.on_report("d-0001", Report::Running(1));
        let step = r.on_report("d-0002", Report::RolledBack("iteration timeout".into()));
        assert_eq!(
            step,
            Step::Stop {
                device: "d-0002".into(),
                report: Report::RolledBack("iteration timeout".into()),
                summary: Summary {
                    running: 1,
                    failed: 1,
                    left_alone: 18
                }
            }
        );
        assert!(!r.promoted());
    }

    #[test]
    fn a_canary_that_refuses_stops_the_rollout_too() {
        let mut r = CanaryPolicy::new(fleet(3), 1, 1);
        assert!(matches!(
            r.on_report(
                "d-0001",
                Report::Refused("signed with a key this device does not trust".into())
            ),
            Step::Stop { .. }
        ));
    }

    #[test]
    fn all_canaries_means_done_without_a_promotion() {
        let mut r = CanaryPolicy::new(fleet(2), 5, 1);
        assert_eq!(r.canaries().len(), 2);
        r.on_report("d-0001", Report::Running(1));
        assert_eq!(
            r.on_report("d-0002", Report::Running(1)),
            Step::Done(Summary {
                running: 2,
                failed: 0,
                left_alone: 0
            })
        );
    }
}
