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
use crate::update::floor::{Accepted, Floor};
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
    /// The logic it starts on.
    pub logic: Arc<Logic>,
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
    /// or `None` for a single device), reporting to `observer`; `given` is
    /// the command line's logic, `component` its file. With an update
    /// session the device starts on the newest logic it accepted (see
    /// [`starting_logic`]) and its update task starts following its update
    /// topic; new logic reaches it through `channel`.
    pub async fn device(
        &self,
        settings: DeviceSettings,
        index: Option<usize>,
        observer: Arc<dyn Observer>,
        (given, component): (&Arc<Logic>, &std::path::Path),
        (offer, swaps): (SwapSender, Swaps),
    ) -> Result<Device, StartRefused> {
        let id = settings.client_id.clone();
        let observer: Arc<dyn Observer> = match &self.metrics {
            Some(m) => Arc::new((observer, m.device(&id))),
            None => observer,
        };
        let start = given.version.unwrap_or(0);
        let Some(updates) = &self.updates else {
            let sandbox = Sandbox::new(id, &self.reach, observer);
            return Ok(Device {
                builder: self.builder(sandbox.clone()),
                floor: Arc::new(Floor::new(start, &settings.client_id, None)),
                logic: given.clone(),
                settings,
                sandbox,
                offer,
                swaps,
            });
        };
        let follow = updates.device(&id, index);
        let sandbox = Sandbox::new(id, &self.reach, Arc::new((observer, follow.status.clone())));
        let builder = self.builder(sandbox.clone());
        let floor = updates.floor(&settings.client_id, start);
        let logic = starting_logic(&floor, given, component, &updates.trust, &builder).await?;
        follow.start(builder.clone(), offer.clone(), &logic, floor.clone());
        Ok(Device {
            settings,
            sandbox,
            builder,
            floor,
            logic,
            offer,
            swaps,
        })
    }
}

/// Why a device does not start.
#[derive(Debug, thiserror::Error)]
pub enum StartRefused {
    /// The command line's file is below the device's floor and the logic it
    /// accepted was not kept.
    #[error(
        "[{device}] refused {}: version {given} is below version {floor}, which this device accepted before, and that logic is not kept here or does not verify; start with --allow-downgrade to run {} anyway (a factory reset: the device forgets what it accepted)",
        file.display(),
        file.display()
    )]
    BelowFloor {
        /// The device.
        device: String,
        /// The file.
        file: std::path::PathBuf,
        /// Its version.
        given: u64,
        /// The device's floor.
        floor: u64,
    },
}

/// The logic a device starts on: the newest it accepted (from the command
/// line, a watched file or the broker), verified again, when it is newer
/// than `given` (the command line's, from `component`); `given` when it is
/// at least the device's floor, or when downgrades are allowed (a factory
/// reset: the floor and the kept logic go back to `given`). A file below
/// the floor with nothing kept is refused.
pub async fn starting_logic(
    floor: &Floor,
    given: &Arc<Logic>,
    component: &std::path::Path,
    trust: &Trust,
    builder: &Builder,
) -> Result<Arc<Logic>, StartRefused> {
    let device = floor.device().to_string();
    let version = given.version.unwrap_or(0);
    if trust.allow_downgrade {
        if floor.get() > version {
            tracing::warn!(target: "host", "[{device}] --allow-downgrade: starting on {} (version {version}) below version {}, which this device accepted; it forgets that", component.display(), floor.get());
        }
        floor.reset(version, &given.sha256).await;
        return Ok(given.clone());
    }
    let record = floor.record();
    if let (Some(record), Some(store)) = (&record, floor.store())
        && record.sha256 != given.sha256
        && record.version >= version
        && record.repo.is_some()
    {
        let kept = match store.load(record, trust).await {
            Ok(v) => builder
                .build_shared(v.wasm, Some(v.version))
                .await
                .map(|(logic, _)| logic)
                .map_err(|e| format!("{e:#}")),
            Err(e) => Err(e.to_string()),
        };
        match kept {
            Ok(logic) => {
                tracing::warn!(target: "host", "[{device}] starts on {logic}, which it accepted and keeps, not on {}, version {version} (start with --allow-downgrade to run that file instead: a factory reset)", component.display());
                return Ok(logic);
            }
            Err(e) => {
                tracing::error!(target: "host", "[{device}] the logic it accepted (version {}) cannot be used: {e}", record.version);
            }
        }
    }
    let same = record.as_ref().is_some_and(|r| r.sha256 == given.sha256);
    if version < floor.get() && !same {
        return Err(StartRefused::BelowFloor {
            device,
            file: component.to_owned(),
            given: version,
            floor: floor.get(),
        });
    }
    // A newer file than anything recorded raises the recorded floor, so a
    // later start on an older file is refused.
    if !same && version > record.as_ref().map_or(0, |r| r.version) {
        floor
            .accept(Accepted {
                version,
                sha256: &given.sha256,
                kept: None,
            })
            .await;
    }
    Ok(given.clone())
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
