//! A local rollout: with `--watch --devices N`, a replaced component goes
//! to the canary devices first and to the rest once each canary has
//! completed the required iterations on it, with the canary policy of
//! [`host_core::canary`]; a canary that rolls it back stops it there.

use std::sync::{Arc, Mutex};

use host_core::canary::{Canaries, CanaryPolicy, Report, Step};
use host_core::observer::{Event, Observer};
use tokio::sync::{mpsc, watch};

use crate::sandbox::Logic;
use crate::sandbox::SwapSender;

/// Reports a device's progress on the logic being rolled out.
pub struct Progress {
    device: String,
    /// The label of the logic being rolled out to this device, and the
    /// iterations it completed since it took over (`None` before).
    current: Mutex<Option<(String, Option<u64>)>>,
    reports: mpsc::UnboundedSender<(String, String, Report)>,
}

impl Observer for Progress {
    fn observe(&self, event: &Event) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let Some((label, iterations)) = current.as_mut() else {
            return;
        };
        let label = label.clone();
        let report = match event {
            Event::SwappedIn { to, .. } if *to == label => {
                *iterations = Some(0);
                Report::Running(0)
            }
            // Iterations of the old logic, before the swap, do not count.
            Event::IterationCompleted { .. } => match iterations {
                Some(n) => {
                    *n += 1;
                    Report::Running(*n)
                }
                None => return,
            },
            Event::FellBack { from, stop, .. } if *from == label => {
                *current = None;
                Report::RolledBack(stop.to_string())
            }
            _ => return,
        };
        let _ = self.reports.send((self.device.clone(), label, report));
    }
}

/// The devices of a local rollout, and the policy.
pub struct LocalRollout {
    devices: Vec<(String, SwapSender, Arc<Progress>)>,
    /// Reports: device, the logic's label they are about, the report.
    reports: mpsc::UnboundedReceiver<(String, String, Report)>,
    tx: mpsc::UnboundedSender<(String, String, Report)>,
    canaries: Canaries,
}

impl LocalRollout {
    /// A rollout with these canaries.
    pub fn new(canaries: Canaries) -> Self {
        let (tx, reports) = mpsc::unbounded_channel();
        Self {
            devices: Vec::new(),
            reports,
            tx,
            canaries,
        }
    }

    /// Adds a device (in order: the first ones are the canaries); returns
    /// the observer to give it.
    pub fn add(&mut self, device: &str, swaps: SwapSender) -> Arc<Progress> {
        let progress = Arc::new(Progress {
            device: device.to_string(),
            current: Mutex::new(None),
            reports: self.tx.clone(),
        });
        self.devices
            .push((device.to_string(), swaps, progress.clone()));
        progress
    }

    fn offer(&self, to: &[String], logic: &Arc<Logic>) {
        for (device, swaps, progress) in &self.devices {
            if to.contains(device) {
                *progress.current.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((logic.to_string(), None));
                let _ = swaps.send(Some(logic.clone()));
            }
        }
    }

    /// Rolls out each logic `new` offers, until the host ends.
    pub async fn run(mut self, mut new: watch::Receiver<Option<Arc<Logic>>>) {
        let ids: Vec<String> = self.devices.iter().map(|(d, _, _)| d.clone()).collect();
        let mut rollout: Option<(CanaryPolicy, Arc<Logic>)> = None;
        loop {
            tokio::select! {
                changed = new.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let Some(logic) = new.borrow_and_update().clone() else { continue };
                    let r = CanaryPolicy::new(ids.clone(), self.canaries.count, self.canaries.promote_after);
                    tracing::info!(target: "host::fleet", "rolling out {logic}: {} canar{} first", r.canaries().len(), if r.canaries().len() == 1 { "y" } else { "ies" });
                    self.offer(r.canaries(), &logic);
                    rollout = Some((r, logic));
                }
                Some((device, about, report)) = self.reports.recv() => {
                    let Some((r, logic)) = rollout.as_mut() else { continue };
                    // A report still queued about the logic rolled out before.
                    if about != logic.to_string() {
                        continue;
                    }
                    match r.on_report(&device, report) {
                        Step::Wait => {}
                        Step::Promote(rest) => {
                            tracing::info!(target: "host::fleet", "canaries passed: {logic} goes to the {} other devices", rest.len());
                            let logic = logic.clone();
                            self.offer(&rest, &logic);
                        }
                        Step::Done(s) => {
                            tracing::info!(target: "host::fleet", "rollout of {logic} done: it runs on {}/{} devices, {} rolled it back", s.running, ids.len(), s.failed);
                            rollout = None;
                        }
                        Step::Stop { device, summary, .. } => {
                            tracing::error!(target: "host::fleet", "rollout of {logic} stopped: canary {device} rolled it back; {} devices keep their logic", summary.left_alone);
                            rollout = None;
                        }
                    }
                }
            }
        }
    }
}
