//! The device's side: a logic repository, read from a directory or from
//! files received over the broker, verified with tough against the keys
//! the device trusts. tough checks every signature, threshold, hash,
//! length, version and expiry (rollback, freeze, mix-and-match); on top,
//! the repository's root must be signed for by trusted keys only, the logic
//! must be built for this host's world, and its version must not be lower
//! than the running one unless downgrades are allowed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tough::schema::{RoleType, Root};
use tough::{RepositoryLoader, TargetName, Transport, TransportError, TransportErrorKind};
use url::Url;

use crate::update::repository::{TARGET, VERSION_KEY, WORLD_KEY};
use crate::update::trust::Trust;

/// Why an update was refused, one line each naming the cause (the
/// command line adds the fix to a refusal it reports).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No repository metadata came with the logic.
    #[error("unsigned: no signed repository with it (sign it with host sign or host rollout)")]
    Unsigned,
    /// The repository's root is signed for by a key this device does not trust.
    #[error(
        "signed with a key this device does not trust (sign with the key whose .pub the device is given with --trust)"
    )]
    UntrustedKey,
    /// tough refused the metadata or the component: bad signature, hash or
    /// length mismatch (tampered), older than seen before.
    #[error(
        "the signed repository does not verify: {0} (it was changed after signing or mixes files of two signings: sign it again and publish it whole)"
    )]
    Tuf(String),
    /// The metadata's validity is over (freeze protection).
    #[error(
        "the {0} metadata has expired (sign it again, with --valid-days long enough, and publish it again)"
    )]
    Expired(String),
    /// The repository has no logic in it.
    #[error("the signed repository holds no {TARGET}")]
    NoLogic,
    /// Built for another world.
    #[error(
        "built for the world {got}, which this host's {want} does not run (build the logic against this host's wit/)"
    )]
    WrongWorld {
        /// The world it names.
        got: String,
        /// This host's world.
        want: String,
    },
    /// Older than the logic running.
    #[error("version {offered} is older than the running version {running}")]
    Downgrade {
        /// The version offered.
        offered: u64,
        /// The version running.
        running: u64,
    },
    /// A file of the repository has not arrived (yet); not an answer.
    #[error("incomplete: a file of the update has not arrived ({0})")]
    Incomplete(String),
    /// The local file does not match the signed component.
    #[error("{} is not the signed component (sha256 {file} vs signed {signed})", path.display())]
    NotTheSignedFile {
        /// The file.
        path: PathBuf,
        /// Its SHA-256, hex (first 12 digits).
        file: String,
        /// The signed one, hex (first 12 digits).
        signed: String,
    },
}

/// A verified logic.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The component's bytes, matching the signed hashes and length.
    pub wasm: Vec<u8>,
    /// Its version.
    pub version: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
}

/// Where a repository's files are.
#[derive(Debug, Clone)]
pub enum Source {
    /// A directory as `host sign` writes it.
    Dir(PathBuf),
    /// Files by name (`metadata/1.root.json`, `targets/HASH.logic.wasm`),
    /// as received over the broker.
    Files(Arc<HashMap<String, Bytes>>),
    /// Metadata received, and targets fetched when tough asks for them.
    Remote {
        /// The metadata files by name (`metadata/...`).
        metadata: Arc<HashMap<String, Bytes>>,
        /// Where targets come from.
        targets: Arc<dyn Targets>,
    },
}

/// Targets fetched on demand (from the broker).
#[async_trait]
pub trait Targets: Send + Sync + std::fmt::Debug {
    /// The target file `name` (`HASH.logic.wasm`), if it can be had.
    async fn fetch(&self, name: &str) -> Option<Bytes>;
}

/// The version the newest targets metadata in the repository `repo` claims
/// for the logic, without verifying anything (for `host inspect` without
/// keys); `None` if it cannot be read.
pub fn claimed_version(repo: &Path) -> Option<u64> {
    let newest = std::fs::read_dir(repo.join("metadata"))
        .ok()?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let n: u64 = name.strip_suffix(".targets.json")?.parse().ok()?;
            Some((n, name))
        })
        .max()?;
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.join("metadata").join(newest.1)).ok()?).ok()?;
    json["signed"]["targets"][TARGET]["custom"][VERSION_KEY].as_u64()
}

/// tough's transport over received files and fetched targets; notes a
/// file it could not find.
#[derive(Debug, Clone)]
struct FilesTransport {
    files: Arc<HashMap<String, Bytes>>,
    targets: Option<Arc<dyn Targets>>,
    missing: Arc<std::sync::Mutex<Option<String>>>,
}

#[async_trait]
impl Transport for FilesTransport {
    async fn fetch(&self, url: Url) -> Result<tough::TransportStream, TransportError> {
        let name = url.path().trim_start_matches('/');
        let found = match (
            self.files.get(name),
            name.strip_prefix("targets/"),
            &self.targets,
        ) {
            (Some(bytes), _, _) => Some(bytes.clone()),
            (None, Some(target), Some(targets)) => targets.fetch(target).await,
            _ => None,
        };
        match found {
            Some(bytes) => {
                let chunk: Result<Bytes, TransportError> = Ok(bytes);
                Ok(Box::pin(futures::stream::iter([chunk])))
            }
            None => {
                // tough looks for the next root version, which is not
                // there unless the root rotated: that is no missing file.
                if !name.ends_with(".root.json") {
                    *self.missing.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(name.to_string());
                }
                Err(TransportError::new(TransportErrorKind::FileNotFound, url))
            }
        }
    }
}

impl Source {
    async fn read(&self, name: &str) -> Option<Bytes> {
        match self {
            Source::Dir(dir) => tokio::fs::read(dir.join(name)).await.ok().map(Bytes::from),
            Source::Files(files)
            | Source::Remote {
                metadata: files, ..
            } => files.get(name).cloned(),
        }
    }

    fn urls(&self) -> Result<(Url, Url), Refusal> {
        let bad = |_| Refusal::Unsigned;
        match self {
            Source::Dir(dir) => {
                let dir = std::path::absolute(dir).map_err(|_| Refusal::Unsigned)?;
                Ok((
                    Url::from_directory_path(dir.join("metadata")).map_err(bad)?,
                    Url::from_directory_path(dir.join("targets")).map_err(bad)?,
                ))
            }
            Source::Files(_) | Source::Remote { .. } => Ok((
                Url::parse("mqtt://repository/metadata/").map_err(|_| Refusal::Unsigned)?,
                Url::parse("mqtt://repository/targets/").map_err(|_| Refusal::Unsigned)?,
            )),
        }
    }
}

/// The trust anchor: `metadata/1.root.json`, if its root role's keys are
/// all trusted ones (tough then checks it is signed by them).
async fn trusted_root(source: &Source, trust: &Trust) -> Result<Bytes, Refusal> {
    let bytes = source
        .read("metadata/1.root.json")
        .await
        .ok_or(Refusal::Unsigned)?;
    let root: tough::schema::Signed<Root> =
        serde_json::from_slice(&bytes).map_err(|e| Refusal::Tuf(format!("1.root.json: {e}")))?;
    let role = root
        .signed
        .roles
        .get(&RoleType::Root)
        .ok_or(Refusal::UntrustedKey)?;
    let all_trusted = !role.keyids.is_empty()
        && role.keyids.iter().all(|id| {
            root.signed
                .keys
                .get(id)
                .is_some_and(|key| trust.keys.contains(key))
        });
    if !all_trusted {
        return Err(Refusal::UntrustedKey);
    }
    Ok(bytes)
}

/// Verifies the repository in `source`; `running` is the version of the
/// logic running now, if it came from a repository.
pub async fn verify(
    source: &Source,
    trust: &Trust,
    running: Option<u64>,
) -> Result<Verified, Refusal> {
    let root = trusted_root(source, trust).await?;
    let (metadata, targets) = source.urls()?;
    let mut loader = RepositoryLoader::new(&root, metadata, targets);
    let missing = Arc::new(std::sync::Mutex::new(None));
    match source {
        Source::Dir(_) => {}
        Source::Files(files) => {
            loader = loader.transport(FilesTransport {
                files: files.clone(),
                targets: None,
                missing: missing.clone(),
            });
        }
        Source::Remote { metadata, targets } => {
            loader = loader.transport(FilesTransport {
                files: metadata.clone(),
                targets: Some(targets.clone()),
                missing: missing.clone(),
            });
        }
    }
    // A refusal because a file was missing is no answer: it may come.
    let refusal =
        |e: &tough::error::Error| match missing.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(name) => Refusal::Incomplete(name),
            None => match e {
                tough::error::Error::ExpiredMetadata { role, .. } => {
                    Refusal::Expired(role.to_string())
                }
                _ => Refusal::Tuf(chain(e)),
            },
        };
    if let Some(dir) = &trust.datastore {
        loader = loader.datastore(dir.clone());
    }
    if !trust.check_expiry {
        loader = loader.expiration_enforcement(tough::ExpirationEnforcement::Unsafe);
    }
    let repo = loader.load().await.map_err(|e| refusal(&e))?;
    let name = TargetName::new(TARGET).map_err(|e| Refusal::Tuf(e.to_string()))?;
    let target = repo
        .targets()
        .signed
        .targets
        .get(&name)
        .ok_or(Refusal::NoLogic)?
        .clone();
    let world = target
        .custom
        .get(WORLD_KEY)
        .and_then(|w| w.as_str())
        .unwrap_or("")
        .to_string();
    if !host_core::world::runs(&trust.world, &world) {
        return Err(Refusal::WrongWorld {
            got: world,
            want: trust.world.clone(),
        });
    }
    let version = target
        .custom
        .get(VERSION_KEY)
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    if let Some(running) = running
        && version < running
        && !trust.allow_downgrade
    {
        return Err(Refusal::Downgrade {
            offered: version,
            running,
        });
    }
    let mut stream = repo
        .read_target(&name)
        .await
        .map_err(|e| refusal(&e))?
        .ok_or(Refusal::NoLogic)?;
    let mut wasm = Vec::with_capacity(target.length as usize);
    while let Some(chunk) = stream.next().await {
        // tough checks length and hash as the stream ends: use nothing
        // from a stream that failed.
        wasm.extend_from_slice(&chunk.map_err(|e| refusal(&e))?);
    }
    Ok(Verified {
        sha256: hex::encode(Sha256::digest(&wasm)),
        wasm,
        version,
    })
}

/// Verifies that `file` is the logic signed in its repository `repo`.
pub async fn verify_file(
    file: &Path,
    repo: &Path,
    trust: &Trust,
    running: Option<u64>,
) -> Result<Verified, Refusal> {
    let verified = verify(&Source::Dir(repo.to_owned()), trust, running).await?;
    let bytes = std::fs::read(file).unwrap_or_default();
    let sha = hex::encode(Sha256::digest(&bytes));
    if sha != verified.sha256 {
        return Err(Refusal::NotTheSignedFile {
            path: file.to_owned(),
            file: sha[..12].to_string(),
            signed: verified.sha256[..12].to_string(),
        });
    }
    Ok(verified)
}

/// An error on one line: what failed and its root cause (tough's errors
/// repeat their causes' text at every level), files named as in the
/// repository.
fn chain(e: &dyn std::error::Error) -> String {
    let mut root = e;
    while let Some(c) = root.source() {
        root = c;
    }
    let top = e.to_string();
    let head = top.split(": ").next().unwrap_or_default();
    let root = root.to_string();
    let line = if root.contains(head) {
        root
    } else {
        format!("{head}: {root}")
    };
    line.replace("mqtt://repository/", "").replace('\n', " ")
}

/// The version and SHA-256 the newest targets metadata in `files` claims
/// for the logic, unverified: what a refusal is about when the update
/// cannot be verified.
pub fn claimed(files: &HashMap<String, Bytes>) -> Option<(u64, String)> {
    let (_, bytes) = files
        .iter()
        .filter_map(|(name, bytes)| {
            let n: u64 = name
                .strip_prefix("metadata/")?
                .strip_suffix(".targets.json")?
                .parse()
                .ok()?;
            Some((n, bytes))
        })
        .max_by_key(|(n, _)| *n)?;
    let json: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let target = &json["signed"]["targets"][TARGET];
    Some((
        target["custom"][VERSION_KEY].as_u64()?,
        target["hashes"]["sha256"].as_str()?.to_string(),
    ))
}
