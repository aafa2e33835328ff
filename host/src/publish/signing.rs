//! The publisher's side: a TUF repository holding one target, the logic
//! (`logic.wasm`), with its version and world in the target's custom
//! metadata, signed with tough's editor. The first signing makes the root
//! (the one key for all four roles, threshold 1); later ones keep it and
//! sign new targets, snapshot and timestamp metadata.
//!
//! Layout: `REPO/metadata/N.root.json`, `N.targets.json`,
//! `N.snapshot.json`, `timestamp.json`; `REPO/targets/SHA256.logic.wasm`.

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use tough::editor::RepositoryEditor;
use tough::editor::signed::{PathExists, SignedRole};
use tough::key_source::KeySource;
use tough::schema::{KeyHolder, RoleKeys, RoleType, Root, Target};

use crate::publish::keys::SigningKey;
use crate::update::repository::{TARGET, VERSION_KEY, WORLD_KEY};

/// How long a new root is valid.
const ROOT_VALID: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A file could not be read or written.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The repository's root names other keys than the one given.
    #[error("the repository {} was made with another key", .0.display())]
    OtherKey(PathBuf),
    /// tough refused.
    #[error("cannot sign the repository")]
    Tough(#[source] Box<tough::error::Error>),
    /// tough could not describe the component or the key.
    #[error("cannot describe the component or the key in TUF metadata")]
    Schema(#[source] tough::schema::Error),
}

/// What a signing produced.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The logic's version.
    pub version: u64,
    /// SHA-256 of the component, hex.
    pub sha256: String,
    /// The repository's metadata version (seconds since the epoch).
    pub metadata_version: u64,
}

fn tough_error(e: tough::error::Error) -> SignError {
    SignError::Tough(Box::new(e))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs().max(1))
}

fn in_future(d: Duration) -> jiff::Timestamp {
    jiff::Timestamp::now() + jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX)
}

/// The highest-numbered `N.root.json` in `metadata`, if any.
pub fn latest_root(metadata: &Path) -> Option<(u64, PathBuf)> {
    std::fs::read_dir(metadata)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_suffix(".root.json")?.parse::<u64>().ok()?;
            Some((n, e.path()))
        })
        .max_by_key(|(n, _)| *n)
}

/// Signs `wasm` as version `version` of the logic for `world` into the
/// repository `repo` (made if missing), valid for `valid`.
pub async fn sign(
    wasm: &Path,
    key: &SigningKey,
    version: u64,
    world: &str,
    repo: &Path,
    valid: Duration,
) -> Result<Signed, SignError> {
    let metadata = repo.join("metadata");
    let targets = repo.join("targets");
    for dir in [&metadata, &targets] {
        std::fs::create_dir_all(dir).map_err(|source| SignError::Io {
            action: "create",
            path: dir.clone(),
            source,
        })?;
    }
    let keys: Vec<Box<dyn KeySource>> = vec![Box::new(key.clone())];
    let root_path = match latest_root(&metadata) {
        Some((_, path)) => {
            check_root_key(&path, key, repo)?;
            path
        }
        None => write_root(&metadata, key, &keys).await?,
    };
    let mut editor = RepositoryEditor::new(&root_path)
        .await
        .map_err(tough_error)?;
    let mut target = Target::from_path(wasm).await.map_err(SignError::Schema)?;
    target.custom.insert(VERSION_KEY.into(), version.into());
    target.custom.insert(WORLD_KEY.into(), world.into());
    let sha256 = hex::encode(&target.hashes.sha256);
    let stamp = NonZeroU64::new(now_secs()).expect("after 1970");
    let expires = in_future(valid);
    editor
        .add_target(TARGET, target)
        .map_err(tough_error)?
        .targets_version(stamp)
        .map_err(tough_error)?
        .targets_expires(expires)
        .map_err(tough_error)?
        .snapshot_version(stamp)
        .snapshot_expires(expires)
        .timestamp_version(stamp)
        .timestamp_expires(expires);
    let signed = editor.sign(&keys).await.map_err(tough_error)?;
    // Only the current logic stays in the repository.
    clear(&targets)?;
    signed.write(&metadata).await.map_err(tough_error)?;
    let staging = tempfile::tempdir_in(repo).map_err(|source| SignError::Io {
        action: "stage the component in",
        path: repo.to_owned(),
        source,
    })?;
    std::fs::copy(wasm, staging.path().join(TARGET)).map_err(|source| SignError::Io {
        action: "read",
        path: wasm.to_owned(),
        source,
    })?;
    signed
        .copy_targets(staging.path(), &targets, PathExists::Replace)
        .await
        .map_err(tough_error)?;
    prune_metadata(&metadata, stamp.get())?;
    Ok(Signed {
        version,
        sha256,
        metadata_version: stamp.get(),
    })
}

/// Makes `1.root.json`: `key` for every role, threshold 1.
async fn write_root(
    metadata: &Path,
    key: &SigningKey,
    keys: &[Box<dyn KeySource>],
) -> Result<PathBuf, SignError> {
    let public = key.public();
    let id = public.key_id().map_err(SignError::Schema)?;
    let one = NonZeroU64::new(1).expect("one");
    let role = || RoleKeys {
        keyids: vec![id.clone()],
        threshold: one,
        _extra: Default::default(),
    };
    let root = Root {
        spec_version: "1.0.0".into(),
        consistent_snapshot: true,
        version: one,
        expires: in_future(ROOT_VALID),
        keys: [(id.clone(), public)].into_iter().collect(),
        roles: [
            RoleType::Root,
            RoleType::Targets,
            RoleType::Snapshot,
            RoleType::Timestamp,
        ]
        .into_iter()
        .map(|r| (r, role()))
        .collect(),
        _extra: Default::default(),
    };
    let signed = SignedRole::new(
        root.clone(),
        &KeyHolder::Root(root),
        keys,
        &SystemRandom::new(),
    )
    .await
    .map_err(tough_error)?;
    let path = metadata.join("1.root.json");
    std::fs::write(&path, signed.buffer()).map_err(|source| SignError::Io {
        action: "write",
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

fn check_root_key(root: &Path, key: &SigningKey, repo: &Path) -> Result<(), SignError> {
    let bytes = std::fs::read(root).map_err(|source| SignError::Io {
        action: "read",
        path: root.to_owned(),
        source,
    })?;
    let root: tough::schema::Signed<Root> =
        serde_json::from_slice(&bytes).map_err(|_| SignError::OtherKey(repo.to_owned()))?;
    let public = key.public();
    if root.signed.keys.values().any(|k| *k == public) {
        Ok(())
    } else {
        Err(SignError::OtherKey(repo.to_owned()))
    }
}

fn clear(dir: &Path) -> Result<(), SignError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SignError::Io {
        action: "read",
        path: dir.to_owned(),
        source,
    })?;
    for entry in entries.flatten() {
        let _ = std::fs::remove_file(entry.path());
    }
    Ok(())
}

/// Removes targets and snapshot metadata of earlier signings.
fn prune_metadata(metadata: &Path, keep: u64) -> Result<(), SignError> {
    let keep = keep.to_string();
    for entry in std::fs::read_dir(metadata).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let old = ["targets", "snapshot"].iter().any(|role| {
            name.strip_suffix(&format!(".{role}.json"))
                .is_some_and(|v| v != keep)
        });
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}
