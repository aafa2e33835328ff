//! Hot swap: watches the component file and, when it is replaced (written in
//! place, copied over, or renamed onto), compiles the new component, checks it
//! against the world, instantiates it once in a scratch sandbox, and offers it
//! to the runner, which switches at the next iteration. Anything refused is
//! logged and the running logic goes on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::sandbox::build::{Builder, New};
use crate::sandbox::{Logic, Swaps};
use crate::update::floor::Floor;
use crate::update::verify::{Trust, verify_file};

/// Quiet time after the last file event before the file is read, so a copy
/// in progress is not read half-written.
const SETTLE: Duration = Duration::from_millis(30);

/// Keeps the watch alive; dropping it stops watching.
pub struct SwapWatch {
    _watcher: notify::RecommendedWatcher,
}

/// Offers new logic to one device.
pub type SwapSender = watch::Sender<Option<Arc<Logic>>>;

/// A channel of new logic for one device: the watcher and the update
/// channel offer into it, [`crate::sandbox::run_device`] takes from it.
pub fn swaps() -> (SwapSender, Swaps) {
    watch::channel(None)
}

/// Where and how to build swapped-in logic.
pub struct SwapSource {
    /// The component file.
    pub path: PathBuf,
    /// Builds what is found there.
    pub builder: Builder,
    /// SHA-256 of the logic running now.
    pub running_sha256: String,
    /// With trusted keys: the component's repository and the trust, and
    /// the version running now.
    pub signed: Option<SignedSource>,
}

/// Where a watched component's signature is, and what it must satisfy.
pub struct SignedSource {
    /// The repository (`COMPONENT.tuf`).
    pub repo: PathBuf,
    /// The keys and rules.
    pub trust: Trust,
    /// The lowest version accepted, shared with the device's other sources
    /// of updates.
    pub floor: Arc<Floor>,
}

/// Starts watching `source.path`, offering new logic into `swaps`.
pub fn watch(
    source: SwapSource,
    swaps: watch::Sender<Option<Arc<Logic>>>,
) -> anyhow::Result<SwapWatch> {
    let path = std::path::absolute(&source.path)?;
    let dir = path
        .parent()
        .context("component path has no directory")?
        .to_owned();
    let name = path
        .file_name()
        .context("component path has no file name")?
        .to_owned();
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let repo = source
        .signed
        .as_ref()
        .map(|s| std::path::absolute(&s.repo))
        .transpose()?;
    let in_repo = repo.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && event.paths.iter().any(|p| {
                p.file_name() == Some(&name) || in_repo.as_ref().is_some_and(|r| p.starts_with(r))
            })
            && !matches!(event.kind, notify::EventKind::Access(_))
        {
            let _ = events_tx.send(());
        }
    })
    .context("cannot watch the component file")?;
    // The directory, not the file: an atomic rename replaces the inode.
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch {}", dir.display()))?;
    // A new signing rewrites the repository's metadata.
    if let Some(repo) = &repo {
        watcher
            .watch(repo, RecursiveMode::Recursive)
            .with_context(|| format!("cannot watch {}", repo.display()))?;
    }
    tokio::spawn(swap_loop(SwapSource { path, ..source }, events_rx, swaps));
    Ok(SwapWatch { _watcher: watcher })
}

async fn swap_loop(
    source: SwapSource,
    mut events: mpsc::UnboundedReceiver<()>,
    swaps: watch::Sender<Option<Arc<Logic>>>,
) {
    let mut running = source.running_sha256.clone();
    let name = source
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    while events.recv().await.is_some() {
        while let Ok(Some(())) = tokio::time::timeout(SETTLE, events.recv()).await {}
        let wasm = match std::fs::read(&source.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(target: "host::swap", "cannot read {name} ({e}); the running logic goes on");
                continue;
            }
        };
        match candidate(&source, wasm, &running).await {
            Ok(None) => {}
            Ok(Some(New { logic, how, millis })) => {
                tracing::info!(
                    target: "host::swap",
                    "swapped {name}: {logic}, {how} in {millis} ms, takes over at the next iteration"
                );
                running = logic.sha256.clone();
                if let (Some(signed), Some(v)) = (source.signed.as_ref(), logic.version) {
                    signed.floor.raise(v);
                }
                if swaps.send(Some(Arc::new(logic))).is_err() {
                    return;
                }
            }
            Err(e) => tracing::error!(
                target: "host::swap",
                "refused the new {name}: {}; the running logic goes on",
                format!("{e:#}").replace('\n', " | ")
            ),
        }
    }
}

/// Builds and checks new logic; `None` when the file did not change.
async fn candidate(
    source: &SwapSource,
    wasm: Vec<u8>,
    running: &str,
) -> anyhow::Result<Option<New>> {
    // Signed: build what was verified, not the file read before (it may
    // have changed since).
    let (wasm, version) = match &source.signed {
        Some(signed) => {
            let v = verify_file(
                &source.path,
                &signed.repo,
                &signed.trust,
                Some(signed.floor.get()),
            )
            .await?;
            (v.wasm, Some(v.version))
        }
        None => (wasm, None),
    };
    if hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&wasm)) == running {
        return Ok(None);
    }
    source.builder.build(wasm, version).await.map(Some)
}
