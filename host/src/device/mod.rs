//! One device of a host, wired: its logic loaded and checked ([`load`]),
//! its observers (the caller's, its metrics, its update status), its
//! sandbox, the builder of new logic, its version floor, its channel of
//! new logic and its update task. The same [`Wiring::device`] serves a
//! single device and every device of a fleet; [`watch_file`] adds hot swap
//! of a component file to one.

pub mod load;

use std::path::PathBuf;
use std::sync::Arc;

use host_core::observer::Observer;
use host_core::settings::DeviceSettings;
use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::metrics::Metrics;
use crate::sandbox::build::{Builder, Built};
use crate::sandbox::{DeviceState, Logic, Reach, Sandbox, SwapSender, Swaps};
use crate::swap::watch::{self, SignedSource, SwapSource, SwapWatch};
use crate::update::floor::Floor;
use crate::update::repository::repository_of;
use crate::update::session::UpdateSession;
use crate::update::trust::Trust;

/// What every device of a host is wired from.
#[derive(Clone)]
pub struct Wiring {
    /// The engine devices run on.
    pub engine: Engine,
    /// The linker with the world's imports.
    pub linker: Arc<Linker<DeviceState>>,
    /// Credentials, reach, limits and the stop signal.
    pub reach: Reach,
    /// The precompiled-component cache, if any.
    pub cache_dir: Option<PathBuf>,
    /// The host's update session, when logic must be signed.
    pub updates: Option<UpdateSession>,
    /// The host's metrics, when served.
    pub metrics: Option<Arc<Metrics>>,
    /// Logic built already, shared by every device (a fleet builds an
    /// update once).
    pub built: Arc<tokio::sync::Mutex<Built>>,
}

/// One device, wired and ready to run.
pub struct Device {
    /// Its settings.
    pub settings: DeviceSettings,
    /// Its sandbox (its observer includes its metrics and update status).
    pub sandbox: Sandbox,
    /// Builds new logic for it (a trial start runs in its sandbox).
    pub builder: Builder,
    /// The lowest version it accepts, shared by every source of new logic.
    pub floor: Arc<Floor>,
    /// Where new logic is offered to it.
    pub offer: SwapSender,
    /// Where its supervisor takes new logic from.
    pub swaps: Swaps,
}

impl Wiring {
    /// A builder of new logic whose trial starts run in `sandbox`.
    pub fn builder(&self, sandbox: Sandbox) -> Builder {
        Builder {
            built: self.built.clone(),
            ..Builder::new(
                self.engine.clone(),
                self.linker.clone(),
                self.cache_dir.clone(),
                sandbox,
            )
        }
    }

    /// Wires the device with `settings` (device `index` of a fleet, from 1,
    /// or `None` for a single device), reporting to `observer`, which runs
    /// `logic` now; new logic reaches it through `channel`. With an update
    /// session, its update task starts following its update topic.
    pub fn device(
        &self,
        settings: DeviceSettings,
        index: Option<usize>,
        observer: Arc<dyn Observer>,
        logic: &Logic,
        (offer, swaps): (SwapSender, Swaps),
    ) -> Device {
        let id = settings.client_id.clone();
        let observer: Arc<dyn Observer> = match &self.metrics {
            Some(m) => Arc::new((observer, m.device(&id))),
            None => observer,
        };
        let start = logic.version.unwrap_or(0);
        let Some(updates) = &self.updates else {
            let sandbox = Sandbox::new(id, &self.reach, observer);
            return Device {
                builder: self.builder(sandbox.clone()),
                floor: Arc::new(Floor::new(start, None)),
                settings,
                sandbox,
                offer,
                swaps,
            };
        };
        let follow = updates.device(&id, index);
        let sandbox = Sandbox::new(id, &self.reach, Arc::new((observer, follow.status.clone())));
        let builder = self.builder(sandbox.clone());
        let floor = updates.floor(&settings.client_id, start);
        follow.start(builder.clone(), offer.clone(), logic, floor.clone());
        Device {
            settings,
            sandbox,
            builder,
            floor,
            offer,
            swaps,
        }
    }
}

/// How a watched component is checked when logic must be signed: against
/// the repository next to it (`COMPONENT.tuf`), with `trust` but without
/// expiry (a local file is the operator's own and may be re-signed at
/// leisure), and the device's version floor.
pub fn signed_file(component: &std::path::Path, trust: &Trust, floor: Arc<Floor>) -> SignedSource {
    SignedSource {
        repo: repository_of(component),
        trust: trust.without_expiry(),
        floor,
    }
}

/// Watches the file `component` for new logic for `device`, which runs
/// `logic` now; checked against `trust` when logic must be signed.
/// Dropping the watch stops it.
pub fn watch_file(
    device: &Device,
    component: &std::path::Path,
    trust: Option<&Trust>,
    logic: &Logic,
) -> anyhow::Result<SwapWatch> {
    let source = SwapSource {
        path: component.to_owned(),
        builder: device.builder.clone(),
        running_sha256: logic.sha256.clone(),
        signed: trust.map(|t| signed_file(component, t, device.floor.clone())),
    };
    let watch = watch::watch(source, device.offer.clone())?;
    tracing::info!(target: "host", "watching {} for new logic", component.display());
    Ok(watch)
}
