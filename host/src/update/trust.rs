//! What a device trusts: the publishers' public keys (`KEY.pub` files from
//! `host keygen`, given with `--trust`), the world logic must be built
//! for, and the rules on versions and expiry.

use std::path::{Path, PathBuf};

use tough::schema::key::Key;

/// Why a trusted key cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The file cannot be read.
    #[error("cannot read the trusted key {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds no TUF public key.
    #[error("the trusted key file {} holds no public key", .0.display())]
    NotAPublicKey(PathBuf),
}

/// What a device trusts.
#[derive(Debug, Clone)]
pub struct Trust {
    /// Public keys a repository's root may be signed with.
    pub keys: Vec<Key>,
    /// Accept versions older than the running one.
    pub allow_downgrade: bool,
    /// The world logic must be built for.
    pub world: String,
    /// Where tough remembers the metadata it accepted; `None` = for this
    /// verification only (downgrades across runs are the device's version
    /// floor's to refuse).
    pub datastore: Option<PathBuf>,
    /// Refuse expired metadata (freeze protection). Off for a device's own
    /// files on disk, so it can restart on them after their validity;
    /// always on for updates over the broker.
    pub check_expiry: bool,
}

impl Trust {
    /// The trust of `keys` (`KEY.pub` files from `host keygen`) for logic
    /// built for `world`, with expiry checked.
    pub fn load(keys: &[PathBuf], allow_downgrade: bool, world: &str) -> Result<Self, TrustError> {
        let keys = keys
            .iter()
            .map(|k| load_public(k))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            keys,
            allow_downgrade,
            world: world.to_string(),
            datastore: None,
            check_expiry: true,
        })
    }

    /// This trust without expiry: for a device's own files on disk, which
    /// it may restart on after their validity.
    pub fn without_expiry(&self) -> Self {
        Self {
            check_expiry: false,
            ..self.clone()
        }
    }
}

/// Reads a public key that `host keygen` wrote.
pub fn load_public(path: &Path) -> Result<Key, TrustError> {
    let text = std::fs::read(path).map_err(|source| TrustError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|_| TrustError::NotAPublicKey(path.to_owned()))
}
