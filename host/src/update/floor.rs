//! What a device keeps of the logic it accepted, so a restart does not undo
//! an update: the lowest version it accepts (its floor: the highest version
//! it has accepted, whoever offered it: the command line, the watched file,
//! the broker) and the newest logic it accepted, with the signed repository
//! that verifies it, in its own state. Updates below the floor are
//! downgrades.
//!
//! Where: each device has a host bucket in the state database (`\0host:`
//! and its client id: a client id cannot hold U+0000, so no logic can
//! reach it) with its `floor` and its `accepted` record; the accepted
//! repositories (component and metadata, as `host sign` lays them out) are
//! directories under `STATE_DIR/logic/`, named by a hash of their
//! timestamp and component, shared by every device that accepted the same
//! signing. A repository is written and synced before the record that names
//! it is committed, so a kill at any moment leaves the old record or the
//! new one, each naming a whole repository. At start, and after
//! acceptances, repositories no record names are removed.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use host_core::state::{Backend, Op};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::state::StateDb;
use crate::update::trust::Trust;
use crate::update::verify::{Refusal, Source, Verified, verify};
use crate::update::wire::Offer;

/// The prefix of a device's host bucket.
pub const HOST_BUCKET: &str = "\u{0}host:";

/// A device's accepted logic, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Its version.
    pub version: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// The kept repository (a directory under `STATE_DIR/logic/`), or
    /// `None` for the command line's file, which is not copied.
    pub repo: Option<String>,
}

/// Where the repository of an accepted logic is.
pub enum Repository<'a> {
    /// Files by name (`metadata/N.root.json`...), as received over the broker.
    Files(&'a HashMap<String, Bytes>),
    /// A directory as `host sign` writes it (a watched file's `.tuf`).
    Dir(&'a Path),
}

/// Every device's kept logic in one state directory.
pub struct KeptStore {
    state: Arc<StateDb>,
    dir: PathBuf,
    /// Repositories verified in this process, by name (a fleet verifies one
    /// once).
    verified: Mutex<HashMap<String, Verified>>,
    /// When garbage was last collected.
    collected: Mutex<Option<Instant>>,
    /// Held (shared) while a repository is written until its record is
    /// committed; garbage is collected only when none is.
    keeping: tokio::sync::RwLock<()>,
    /// Where an earlier release kept floors (`CACHE_DIR/floors/ID.floor`),
    /// read when the state has none.
    legacy_floors: Option<PathBuf>,
}

/// Garbage is collected at most this often, and only repositories at least
/// this old are removed (one being kept has no record naming it yet).
const COLLECT_EVERY: Duration = Duration::from_secs(60);

impl std::fmt::Debug for KeptStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeptStore({})", self.dir.display())
    }
}

fn bucket(device: &str) -> Arc<str> {
    Arc::from(format!("{HOST_BUCKET}{device}"))
}

impl KeptStore {
    /// The kept logic of the devices whose state is in `state`; removes
    /// repositories no device names.
    pub fn open(state: Arc<StateDb>, legacy_floors: Option<PathBuf>) -> Self {
        let dir = state
            .path()
            .parent()
            .map_or_else(|| PathBuf::from("logic"), |d| d.join("logic"));
        let store = Self {
            state,
            dir,
            verified: Mutex::default(),
            collected: Mutex::default(),
            keeping: tokio::sync::RwLock::new(()),
            legacy_floors,
        };
        // Nothing is being kept yet: whatever no record names goes.
        store.collect(Duration::ZERO);
        store
    }

    /// The accepted record of `device`, if any.
    pub fn record(&self, device: &str) -> Option<Record> {
        let bytes = self.state.get(&bucket(device), "accepted").ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// The floor `device` recorded (0 if none), or what an earlier release
    /// remembered in the cache directory.
    pub fn floor(&self, device: &str) -> u64 {
        let parse = |b: Vec<u8>| String::from_utf8(b).ok()?.trim().parse().ok();
        self.state
            .get(&bucket(device), "floor")
            .ok()
            .flatten()
            .and_then(parse)
            .or_else(|| {
                let file = self.legacy_floors.as_ref()?.join(format!("{device}.floor"));
                parse(std::fs::read(file).ok()?)
            })
            .unwrap_or(0)
    }

    /// The hashes of updates rolled back on `device`.
    pub fn rolled_back(&self, device: &str) -> Vec<String> {
        self.state
            .get(&bucket(device), "rolled-back")
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// The kept logic of `record`, verified again with `trust` (without
    /// expiry: it is the device's own copy).
    pub async fn load(&self, record: &Record, trust: &Trust) -> Result<Verified, Refusal> {
        let Some(name) = &record.repo else {
            return Err(Refusal::Incomplete("the command line's file".into()));
        };
        if let Some(v) = self.lock().get(name) {
            return Ok(v.clone());
        }
        let v = verify(
            &Source::Dir(self.dir.join(name)),
            &trust.without_expiry(),
            None,
        )
        .await?;
        if v.sha256 != record.sha256 {
            return Err(Refusal::Tuf(format!(
                "the kept repository {name} holds sha256 {}, not {}",
                &v.sha256[..12],
                &record.sha256[..12.min(record.sha256.len())]
            )));
        }
        self.lock().insert(name.clone(), v.clone());
        Ok(v)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Verified>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records for `device` that it accepted `record`'s logic (`wasm`, from
    /// `repo` when it is to be kept) and its floor `floor`: the repository
    /// is on disk before the record names it.
    async fn keep(
        &self,
        device: &str,
        mut record: Record,
        kept: Option<(Repository<'_>, &[u8])>,
        (floor, previous): (u64, Option<&Record>),
    ) -> Result<Option<String>, String> {
        let _keeping = self.keeping.read().await;
        if let Some((repo, wasm)) = kept {
            let files = repository_files(&repo)?;
            let (dir, wasm, sha256) = (self.dir.clone(), wasm.to_vec(), record.sha256.clone());
            let name =
                tokio::task::spawn_blocking(move || write_repository(&dir, &files, &wasm, &sha256))
                    .await
                    .map_err(|e| e.to_string())??;
            record.repo = Some(name);
        }
        let json = serde_json::to_vec(&record).expect("a record serializes");
        // The logic it ran before stays kept too: a rollback goes back to it.
        let previous = match previous {
            Some(p) => Op::Set(
                "previous".into(),
                serde_json::to_vec(p).expect("a record serializes"),
            ),
            None => Op::Delete("previous".into()),
        };
        self.state
            .write(
                bucket(device),
                vec![
                    Op::Set("accepted".into(), json),
                    previous,
                    Op::Set("floor".into(), floor.to_string().into_bytes()),
                ],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(record.repo)
    }

    /// Records that `sha256` was rolled back on `device` (the last 16 are
    /// kept).
    async fn remember_rollback(&self, device: &str, sha256: &str) {
        let mut hashes = self.rolled_back(device);
        hashes.retain(|h| h != sha256);
        hashes.push(sha256.to_string());
        let from = hashes.len().saturating_sub(16);
        let json = serde_json::to_vec(&hashes[from..]).expect("hashes serialize");
        let _ = self
            .state
            .write(bucket(device), vec![Op::Set("rolled-back".into(), json)])
            .await;
    }

    /// Removes kept repositories no device's record names (and staging
    /// left by a kill).
    pub fn collect_garbage(&self) {
        {
            let mut last = self.collected.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < COLLECT_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        self.collect(COLLECT_EVERY);
    }

    /// Removes the repositories at least `min_age` old that no record
    /// names, unless one is being kept now.
    fn collect(&self, min_age: Duration) {
        let Ok(_nothing_kept_now) = self.keeping.try_write() else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        // Nothing is removed unless every record could be read.
        let (Some(accepted), Some(previous)) = (
            self.state.values_under(HOST_BUCKET, "accepted"),
            self.state.values_under(HOST_BUCKET, "previous"),
        ) else {
            return;
        };
        let named: HashSet<String> = accepted
            .into_iter()
            .chain(previous)
            .filter_map(|b| serde_json::from_slice::<Record>(&b).ok()?.repo)
            .collect();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age >= min_age);
            if old && !named.contains(&name) {
                let _ = std::fs::remove_dir_all(entry.path());
                self.lock().remove(&name);
            }
        }
    }
}

/// The metadata files of `repo`, by file name.
fn repository_files(repo: &Repository<'_>) -> Result<Vec<(String, Vec<u8>)>, String> {
    Ok(match repo {
        Repository::Files(files) => files
            .iter()
            .filter_map(|(n, b)| Some((n.strip_prefix("metadata/")?.to_string(), b.to_vec())))
            .collect(),
        Repository::Dir(dir) => std::fs::read_dir(dir.join("metadata"))
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                Some((name, std::fs::read(e.path()).ok()?))
            })
            .collect(),
    })
}

/// Writes the repository of a logic (component `wasm` with `sha256`,
/// `metadata`) under `dir`, synced, unless it is there already; returns its
/// name.
fn write_repository(
    dir: &Path,
    metadata: &[(String, Vec<u8>)],
    wasm: &[u8],
    sha256: &str,
) -> Result<String, String> {
    let mut hash = Sha256::new();
    hash.update(sha256.as_bytes());
    let mut sorted = metadata.to_vec();
    sorted.sort();
    for (name, bytes) in &sorted {
        hash.update(name.as_bytes());
        hash.update(Sha256::digest(bytes));
    }
    let name = hex::encode(&hash.finalize()[..16]);
    let dest = dir.join(&name);
    if dest.is_dir() {
        return Ok(name);
    }
    let io =
        |what: &str, p: &Path, e: std::io::Error| format!("cannot {what} {}: {e}", p.display());
    std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    let staging = tempfile::Builder::new()
        .prefix(".incoming-")
        .tempdir_in(dir)
        .map_err(|e| io("create a directory in", dir, e))?;
    let write = |path: PathBuf, bytes: &[u8]| -> Result<(), String> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
        }
        let mut file = std::fs::File::create(&path).map_err(|e| io("write", &path, e))?;
        file.write_all(bytes).map_err(|e| io("write", &path, e))?;
        file.sync_all().map_err(|e| io("sync", &path, e))
    };
    for (file, bytes) in metadata {
        write(staging.path().join("metadata").join(file), bytes)?;
    }
    write(
        staging
            .path()
            .join("targets")
            .join(format!("{sha256}.{}", crate::update::repository::TARGET)),
        wasm,
    )?;
    for d in ["metadata", "targets"] {
        sync_dir(&staging.path().join(d));
    }
    let staged = staging.keep();
    std::fs::rename(&staged, &dest).map_err(|e| io("rename", &staged, e))?;
    sync_dir(dir);
    Ok(name)
}

/// Makes a directory's entries durable (best effort: not every file system
/// syncs directories).
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A device's version floor and its kept logic.
#[derive(Debug)]
pub struct Floor {
    version: AtomicU64,
    device: String,
    store: Option<Arc<KeptStore>>,
    /// The record of the logic accepted last, and of the one before (to go
    /// back to if the last is rolled back).
    records: Mutex<(Option<Record>, Option<Record>)>,
}

/// A logic a device accepted.
pub struct Accepted<'a> {
    /// Its version.
    pub version: u64,
    /// Its SHA-256, hex.
    pub sha256: &'a str,
    /// Its component and repository, when it is to be kept (from the
    /// broker or a watched file); `None` for the command line's file.
    pub kept: Option<(Repository<'a>, &'a [u8])>,
}

impl Floor {
    /// The floor of `device`, which starts on version `start`: `start` or
    /// what `store` remembers, whichever is higher.
    pub fn new(start: u64, device: &str, store: Option<Arc<KeptStore>>) -> Self {
        let remembered = store.as_ref().map_or(0, |s| s.floor(device));
        let record = store.as_ref().and_then(|s| s.record(device));
        Self {
            version: AtomicU64::new(start.max(remembered)),
            device: device.to_string(),
            store,
            records: Mutex::new((record, None)),
        }
    }

    /// The lowest version accepted now.
    pub fn get(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    fn records(&self) -> std::sync::MutexGuard<'_, (Option<Record>, Option<Record>)> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The logic the device accepted last, as recorded.
    pub fn record(&self) -> Option<Record> {
        self.records().0.clone()
    }

    /// Records that the device accepted `logic` (and, when it is to be
    /// kept, keeps it: the device restarts on it).
    pub async fn accept(&self, logic: Accepted<'_>) {
        let floor = self
            .version
            .fetch_max(logic.version, Ordering::Relaxed)
            .max(logic.version);
        let Some(store) = &self.store else { return };
        let mut record = Record {
            version: logic.version,
            sha256: logic.sha256.to_string(),
            repo: None,
        };
        let device = &self.device;
        let before = self.record();
        match store
            .keep(device, record.clone(), logic.kept, (floor, before.as_ref()))
            .await
        {
            Ok(repo) => {
                record.repo = repo;
                *self.records() = (Some(record), before);
            }
            Err(e) => {
                tracing::warn!(target: "host::update", "[{device}] cannot keep version {} for restarts: {e}", logic.version);
            }
        }
        store.collect_garbage();
    }

    /// Records that the device went back to the logic with `sha256` it ran
    /// before an update was rolled back (it restarts on that one); the
    /// floor stays.
    pub async fn fell_back(&self, sha256: &str) {
        let Some(store) = &self.store else { return };
        let before = {
            let records = self.records();
            records.1.clone().filter(|r| r.sha256 == sha256)
        };
        let device = &self.device;
        // The command line's logic, never recorded: recorded now by hash.
        let record = before.unwrap_or_else(|| Record {
            version: 0,
            sha256: sha256.to_string(),
            repo: None,
        });
        let rolled_back = self.record().map(|r| r.sha256).unwrap_or_default();
        store.remember_rollback(device, &rolled_back).await;
        match store
            .keep(device, record.clone(), None, (self.get(), None))
            .await
        {
            Ok(_) => *self.records() = (Some(record), None),
            Err(e) => {
                tracing::warn!(target: "host::update", "[{device}] cannot record the rollback: {e}");
            }
        }
    }

    /// Starts the device afresh on the command line's logic, `version`
    /// with `sha256` (`--allow-downgrade`): its floor and kept logic are
    /// that logic's.
    pub async fn reset(&self, version: u64, sha256: &str) {
        self.version.store(version, Ordering::Relaxed);
        let Some(store) = &self.store else { return };
        let record = Record {
            version,
            sha256: sha256.to_string(),
            repo: None,
        };
        if self.records().0.as_ref() == Some(&record) && store.floor(&self.device) == version {
            return;
        }
        match store
            .keep(&self.device, record.clone(), None, (version, None))
            .await
        {
            Ok(_) => *self.records() = (Some(record), None),
            Err(e) => {
                let device = &self.device;
                tracing::warn!(target: "host::update", "[{device}] cannot record the factory reset: {e}");
            }
        }
    }

    /// The hashes of updates rolled back on the device, kept across
    /// restarts (such an update is refused when offered again).
    pub fn rolled_back(&self) -> Vec<String> {
        self.store
            .as_ref()
            .map(|s| s.rolled_back(&self.device))
            .unwrap_or_default()
    }

    /// Keeps `offer` as the device's last offer (best effort, in the
    /// background).
    pub fn remember_offer(&self, offer: &Offer) {
        let (Some(store), Ok(runtime)) =
            (self.store.clone(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let json = serde_json::to_vec(offer).expect("an offer serializes");
        let device = self.device.clone();
        runtime.spawn(async move {
            let _ = store
                .state
                .write(bucket(&device), vec![Op::Set("last-offer".into(), json)])
                .await;
        });
    }

    /// The last offer the device kept, if any.
    pub fn last_offer(&self) -> Option<Offer> {
        let store = self.store.as_ref()?;
        let bytes = store
            .state
            .get(&bucket(&self.device), "last-offer")
            .ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// The kept store, if the device keeps its logic.
    pub fn store(&self) -> Option<&Arc<KeptStore>> {
        self.store.as_ref()
    }

    /// The device's client id.
    pub fn device(&self) -> &str {
        &self.device
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_floor_and_the_kept_record_outlive_the_process_and_a_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path(), host_core::state::Quota::default()).unwrap();
        let store = Arc::new(KeptStore::open(Arc::new(db), None));
        let files: HashMap<String, Bytes> = [(
            "metadata/1.root.json".to_string(),
            Bytes::from_static(b"{}"),
        )]
        .into();
        {
            let floor = Floor::new(1, "d", Some(store.clone()));
            floor
                .accept(Accepted {
                    version: 3,
                    sha256: "aa",
                    kept: Some((Repository::Files(&files), b"wasm")),
                })
                .await;
            floor
                .accept(Accepted {
                    version: 5,
                    sha256: "bb",
                    kept: Some((Repository::Files(&files), b"other")),
                })
                .await;
            floor.fell_back("aa").await;
        }
        // What a restart reads.
        let floor = Floor::new(1, "d", Some(store.clone()));
        assert_eq!(floor.get(), 5, "the floor stays after a rollback");
        let record = floor.record().unwrap();
        assert_eq!((record.version, record.sha256.as_str()), (3, "aa"));
        let repo = dir.path().join("logic").join(record.repo.unwrap());
        assert_eq!(
            std::fs::read(repo.join("targets").join("aa.logic.wasm")).unwrap(),
            b"wasm"
        );
        assert!(repo.join("metadata").join("1.root.json").is_file());
        assert_eq!(Floor::new(7, "d", Some(store)).get(), 7);
        assert_eq!(Floor::new(2, "other", None).get(), 2);
    }
}
