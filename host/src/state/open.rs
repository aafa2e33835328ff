//! Opening the state database at start: the directory made owner-only
//! when the host creates it (an existing one is left as it is; the file
//! itself is owner-only), refused when another user owns it; the file opened with its integrity
//! checked (a damaged file stops the host, it is never emptied); each
//! device's usage counted for its quota.

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use host_core::state::{Quota, Usage};
use redb::{ReadableDatabase, ReadableTable};

use super::{KV, StateDb, commit};

/// The database's file name in the state directory.
pub const FILE: &str = "state.redb";

/// The state directory when `--state-dir` is not given: the per-user data
/// directory (`$XDG_DATA_HOME`, else `~/.local/share`), `mqtt-device-host`.
pub fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(base.join("mqtt-device-host"))
}

/// Why the state database cannot be used. Each names the path; the
/// command line words the fix.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory cannot be made or read.
    #[error("cannot create the state directory {0}")]
    Directory(PathBuf, #[source] std::io::Error),
    /// Another user owns the directory.
    #[error("the state directory {path} belongs to user id {owner}, not to this user ({me})")]
    Owner {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's user.
        me: u32,
    },
    /// Another host process has the database open.
    #[error("the state database {0} is in use by another host process")]
    InUse(PathBuf),
    /// The file cannot be read or written.
    #[error("cannot open the state database {0}")]
    Unreadable(PathBuf, #[source] std::io::Error),
    /// The file is not a state database, or is damaged.
    #[error("the state database {0} is damaged or not a state database ({1})")]
    Damaged(PathBuf, String),
}

impl OpenError {
    /// The file or directory the error is about.
    pub fn path(&self) -> &Path {
        match self {
            OpenError::Directory(p, _)
            | OpenError::InUse(p)
            | OpenError::Unreadable(p, _)
            | OpenError::Damaged(p, _) => p,
            OpenError::Owner { path, .. } => path,
        }
    }
}

impl StateDb {
    /// Opens (or creates) the database in `dir`, for devices with `quota`.
    pub fn open(dir: &Path, quota: Quota) -> Result<Self, OpenError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| OpenError::Directory(dir.to_path_buf(), e))?;
        let meta = std::fs::metadata(dir).map_err(|e| OpenError::Directory(dir.into(), e))?;
        let me = effective_uid(dir).map_err(|e| OpenError::Directory(dir.into(), e))?;
        if meta.uid() != me {
            return Err(OpenError::Owner {
                path: dir.to_path_buf(),
                owner: meta.uid(),
                me,
            });
        }
        let path = dir.join(FILE);
        let db = open_file(&path)?;
        // Owner-only, whatever the umask made of it.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| OpenError::Unreadable(path.clone(), e))?;
        let usage = count_usage(&db).map_err(|e| OpenError::Damaged(path.clone(), e))?;
        let db = Arc::new(db);
        let writer = commit::Writer::start(db.clone(), path.clone(), quota, usage);
        Ok(StateDb {
            db,
            quota,
            writer,
            path,
        })
    }
}

/// This process's effective user: the owner of `/proc/self` on Linux,
/// else of a file it creates in `dir`.
fn effective_uid(dir: &Path) -> std::io::Result<u32> {
    if let Ok(meta) = std::fs::metadata("/proc/self") {
        return Ok(meta.uid());
    }
    let probe = tempfile::tempfile_in(dir)?;
    Ok(probe.metadata()?.uid())
}

/// Opens `path`, creating it when missing, with its integrity checked.
fn open_file(path: &Path) -> Result<redb::Database, OpenError> {
    use redb::{DatabaseError, StorageError};
    let opened = std::panic::catch_unwind(|| {
        redb::Builder::new()
            .set_check_integrity_on_open(true)
            .create(path)
    });
    let db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(DatabaseError::DatabaseAlreadyOpen)) => {
            return Err(OpenError::InUse(path.to_path_buf()));
        }
        Ok(Err(DatabaseError::Storage(StorageError::Io(e))))
            if e.kind() != std::io::ErrorKind::InvalidData =>
        {
            return Err(OpenError::Unreadable(path.to_path_buf(), e));
        }
        Ok(Err(e)) => return Err(OpenError::Damaged(path.to_path_buf(), e.to_string())),
        Err(_) => {
            return Err(OpenError::Damaged(
                path.to_path_buf(),
                "it could not be read".into(),
            ));
        }
    };
    // The table exists from the first start on, so readers find it.
    let created = (|| -> Result<(), redb::Error> {
        let txn = db.begin_write()?;
        txn.open_table(KV)?;
        txn.commit()?;
        Ok(())
    })();
    created.map_err(|e| match e {
        redb::Error::Io(io) => OpenError::Unreadable(path.to_path_buf(), io),
        other => OpenError::Damaged(path.to_path_buf(), other.to_string()),
    })?;
    Ok(db)
}

/// Each device's bytes and keys.
fn count_usage(db: &redb::Database) -> Result<HashMap<String, Usage>, String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let table = txn.open_table(KV).map_err(|e| e.to_string())?;
    let mut usage: HashMap<String, Usage> = HashMap::new();
    for entry in table.iter().map_err(|e| e.to_string())? {
        let (k, v) = entry.map_err(|e| e.to_string())?;
        let (device, key) = k.value();
        let u = usage.entry(device.to_string()).or_default();
        *u = u.replace(key, None, Some(v.value()));
    }
    Ok(usage)
}
