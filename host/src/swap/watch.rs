//! Hot swap: watches the component file and, when it is replaced (written in
//! place, copied over, or renamed onto), compiles the new component, checks it
//! against the world, instantiates it once in a scratch sandbox, and offers it
//! to the runner, which switches at the next iteration. Anything refused is
//! logged and the running logic goes on.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::sandbox::SwapSender;
use crate::sandbox::build::{Builder, New};
use crate::update::floor::{Accepted, Floor, Repository};
use crate::update::trust::Trust;
use crate::update::verify::verify_file;

/// Quiet time after the last file event before the file is read, so a copy
/// in progress is not read half-written. Not waited when the latest event
/// says the file is whole: renamed onto the watched name (an atomic
/// replace) or closed after writing (inotify, on Linux; elsewhere every
/// change waits). Always waited with `--trust`: a signing rewrites the
/// component and its repository in several steps. A writer that pauses
/// longer, or closes and reopens the file, can still be read early: the
/// half-written component is refused, and the writer's next close reads it
/// again.
const SETTLE: Duration = Duration::from_millis(30);

/// What a file event says about the watched component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// The file is whole: renamed onto the watched name, or closed after
    /// writing. Read at once.
    Done,
    /// The file, or a signed component's repository, is being written:
    /// read after [`SETTLE`] without events.
    InProgress,
}

/// Classifies one event; `None` for events that change nothing (reads,
/// opens, other files).
fn change(event: &notify::Event, name: &std::ffi::OsStr, repo: Option<&Path>) -> Option<Change> {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
    // Events were lost (the kernel's queue overflowed): look again.
    if event.need_rescan() {
        return Some(Change::InProgress);
    }
    let ours = |p: &PathBuf| p.file_name() == Some(name);
    match event.kind {
        // A rename away from the watched name: nothing new.
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => None,
        // The destination is the last path (a `Both` event lists both).
        EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
        | EventKind::Access(AccessKind::Close(AccessMode::Write))
            if event.paths.last().is_some_and(ours) =>
        {
            Some(Change::Done)
        }
        // Opens, reads, closes after reading.
        EventKind::Access(_) => None,
        _ if event.paths.iter().any(ours) => Some(Change::InProgress),
        _ if repo.is_some_and(|r| event.paths.iter().any(|p| p.starts_with(r))) => {
            Some(Change::InProgress)
        }
        _ => None,
    }
}

/// Keeps the watch alive; dropping it stops watching.
pub struct SwapWatch {
    _watcher: notify::RecommendedWatcher,
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
pub fn watch(source: SwapSource, swaps: SwapSender) -> anyhow::Result<SwapWatch> {
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
            && let Some(change) = change(&event, &name, in_repo.as_deref())
        {
            let _ = events_tx.send(change);
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
    mut events: mpsc::UnboundedReceiver<Change>,
    swaps: SwapSender,
) {
    let mut running = source.running_sha256.clone();
    let name = source
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let settle_always = source.signed.is_some();
    while let Some(first) = events.recv().await {
        if !settled(first, &mut events, SETTLE, settle_always).await {
            return;
        }
        let wasm = match std::fs::read(&source.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(target: "host::swap", "cannot read {name} ({e}); the running logic goes on");
                continue;
            }
        };
        match candidate(&source, wasm, &running).await {
            Ok(None) => {}
            Ok(Some((New { logic, how, millis }, wasm))) => {
                tracing::info!(
                    target: "host::swap",
                    "swapped {name}: {logic}, {how} in {millis} ms, takes over at the next iteration"
                );
                running = logic.sha256.clone();
                if let (Some(signed), Some(version)) = (source.signed.as_ref(), logic.version) {
                    signed
                        .floor
                        .accept(Accepted {
                            version,
                            sha256: &logic.sha256,
                            kept: Some((Repository::Dir(&signed.repo), &wasm)),
                        })
                        .await;
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

/// Waits until the file can be read, after event `first`: the latest event
/// decides, so every event queued so far is taken first. At once when it
/// says the file is whole (unless `settle_always`), otherwise after
/// `settle` without events. What is read then covers every event taken.
/// `false` when the watcher is gone.
async fn settled(
    first: Change,
    events: &mut mpsc::UnboundedReceiver<Change>,
    settle: Duration,
    settle_always: bool,
) -> bool {
    let mut latest = first;
    loop {
        while let Ok(next) = events.try_recv() {
            latest = next;
        }
        if latest == Change::Done && !settle_always {
            return true;
        }
        match tokio::time::timeout(settle, events.recv()).await {
            Ok(Some(next)) => latest = next,
            Ok(None) => return false,
            Err(_quiet) => return true,
        }
    }
}

/// Builds and checks new logic; `None` when the file did not change. With
/// it, the component built.
async fn candidate(
    source: &SwapSource,
    wasm: Vec<u8>,
    running: &str,
) -> anyhow::Result<Option<(New, Vec<u8>)>> {
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
    let new = source.builder.build(wasm.clone(), version).await?;
    Ok(Some((new, wasm)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, ModifyKind, RenameMode};

    fn event(kind: EventKind, paths: &[&str]) -> notify::Event {
        paths.iter().fold(notify::Event::new(kind), |e, p| {
            e.add_path(PathBuf::from(p))
        })
    }

    fn of(kind: EventKind, paths: &[&str]) -> Option<Change> {
        change(
            &event(kind, paths),
            std::ffi::OsStr::new("demo.wasm"),
            Some(Path::new("/d/demo.wasm.tuf")),
        )
    }

    /// An atomic rename and a closed file are whole and need no settle
    /// time; a write still going on does.
    #[test]
    fn whole_files_are_read_at_once_and_writes_in_progress_settle() {
        let to = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        let both = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        let data = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        assert_eq!(of(to, &["/d/demo.wasm"]), Some(Change::Done));
        assert_eq!(
            of(both, &["/d/.demo.wasm.tmp", "/d/demo.wasm"]),
            Some(Change::Done)
        );
        assert_eq!(of(closed, &["/d/demo.wasm"]), Some(Change::Done));
        assert_eq!(of(data, &["/d/demo.wasm"]), Some(Change::InProgress));
        assert_eq!(
            of(EventKind::Create(CreateKind::File), &["/d/demo.wasm"]),
            Some(Change::InProgress)
        );
        // Renamed away from the watched name: whatever is there next is
        // read after the settle time.
        assert_eq!(
            of(both, &["/d/demo.wasm", "/d/old.wasm"]),
            Some(Change::InProgress)
        );
        assert_eq!(
            of(data, &["/d/demo.wasm.tuf/targets.json"]),
            Some(Change::InProgress)
        );
    }

    #[test]
    fn reads_and_other_files_change_nothing() {
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        let read_closed = EventKind::Access(AccessKind::Close(AccessMode::Read));
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        let from = EventKind::Modify(ModifyKind::Name(RenameMode::From));
        let data = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        assert_eq!(of(open, &["/d/demo.wasm"]), None);
        assert_eq!(of(read_closed, &["/d/demo.wasm"]), None);
        assert_eq!(of(from, &["/d/demo.wasm"]), None);
        assert_eq!(of(closed, &["/d/other.wasm"]), None);
        assert_eq!(of(data, &["/d/other.wasm"]), None);
    }

    /// Longer than any test runs: a wait for it is a wait that did not end.
    const FOREVER: Duration = Duration::from_secs(3600);

    async fn within_test<F: std::future::Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("settled did not return")
    }

    #[tokio::test]
    async fn the_latest_event_decides_when_to_read() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        // A close, then a new write already under way: not yet.
        tx.send(Change::InProgress).unwrap();
        {
            let waiting = settled(Change::Done, &mut rx, FOREVER, false);
            tokio::pin!(waiting);
            assert!(
                tokio::time::timeout(Duration::from_millis(100), &mut waiting)
                    .await
                    .is_err(),
                "read while a write was in progress"
            );
            // That write closes: read at once.
            tx.send(Change::Done).unwrap();
            assert!(within_test(waiting).await);
        }
        // Queued events were all taken.
        assert!(rx.try_recv().is_err());
        // A rename (notify sends To and then Both): at once, both taken.
        tx.send(Change::Done).unwrap();
        assert!(within_test(settled(Change::Done, &mut rx, FOREVER, false)).await);
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn writes_in_progress_and_signed_files_wait_for_quiet() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let quiet = Duration::from_millis(20);
        assert!(within_test(settled(Change::InProgress, &mut rx, quiet, false)).await);
        // With --trust even a whole file waits for quiet.
        let signed = settled(Change::Done, &mut rx, FOREVER, true);
        tokio::pin!(signed);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut signed)
                .await
                .is_err()
        );
        drop(tx);
        // The watcher gone: no read.
        assert!(!within_test(signed).await);
    }
}
