//! A device's side of the state: its bucket in the host's [`Backend`],
//! its write rate, and the handles the logic holds (buckets and
//! compare-and-swaps). The `wasi:keyvalue` imports (`crate::wit::keyvalue`)
//! are implemented on it, for the real host and the mock host alike.

use std::sync::Arc;

use wasmtime::component::ResourceTable;

use super::{Applied, Backend, Op, StateError};

/// Most keys one `list-keys` page holds.
pub const PAGE_KEYS: usize = 256;

/// Most handles (buckets and compare-and-swaps) a logic holds at once.
const MAX_HANDLES: usize = 256;

/// Most keys one batch call (`get-many`, `set-many`, `delete-many`) takes.
pub const MAX_BATCH: usize = 256;

/// The identifiers `open` accepts: each names the device's one bucket.
pub const BUCKET_NAMES: [&str; 2] = ["default", ""];

/// An open bucket: the device's own.
#[derive(Debug)]
pub struct Bucket;

/// A compare-and-swap in progress: the key and the value seen.
#[derive(Debug)]
pub struct Cas {
    /// The key.
    pub key: String,
    /// Its value when the handle was made (or last failed).
    pub current: Option<Vec<u8>>,
}

/// Decides whether `n` more writes fit the device's write rate, taking
/// them all or none.
pub type Permit = Box<dyn FnMut(u32) -> bool + Send>;

/// One device's state as its logic reaches it.
pub struct StateCtx {
    device: Arc<str>,
    backend: Arc<dyn Backend>,
    permit: Permit,
    writes_per_sec: u32,
    /// The logic's handles.
    pub table: ResourceTable,
}

impl StateCtx {
    /// `device`'s state in `backend`; `permit` holds the write rate
    /// (`writes_per_sec`, named in its error).
    pub fn new(
        device: Arc<str>,
        backend: Arc<dyn Backend>,
        permit: Permit,
        writes_per_sec: u32,
    ) -> Self {
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_HANDLES);
        Self {
            device,
            backend,
            permit,
            writes_per_sec,
            table,
        }
    }

    /// Checks a key the logic gives before it is used or kept.
    pub fn check_key(&self, key: &str) -> Result<(), StateError> {
        Ok(self.backend.quota().check_key(key)?)
    }

    /// The device's quota.
    pub fn quota(&self) -> super::Quota {
        self.backend.quota()
    }

    /// The value of `key`.
    pub fn read(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.check_key(key)?;
        self.backend.get(&self.device, key)
    }

    /// A page of keys after `cursor`, and the next page's cursor.
    pub fn list(&self, cursor: Option<&str>) -> Result<(Vec<String>, Option<String>), StateError> {
        let keys = self.backend.keys(&self.device, cursor, PAGE_KEYS)?;
        let next = (keys.len() == PAGE_KEYS)
            .then(|| keys.last().cloned())
            .flatten();
        Ok((keys, next))
    }

    /// Applies `ops`, all or none, once the write rate allows them;
    /// returns once they are durable.
    pub async fn write(&mut self, ops: Vec<Op>) -> Result<Vec<Applied>, StateError> {
        let n = u32::try_from(ops.len()).unwrap_or(u32::MAX).max(1);
        if self.writes_per_sec > 0 && n > self.writes_per_sec {
            return Err(StateError::BatchOverRate {
                keys: n,
                per_sec: self.writes_per_sec,
            });
        }
        if !(self.permit)(n) {
            return Err(StateError::Rate(self.writes_per_sec));
        }
        self.backend.write(self.device.clone(), ops).await
    }
}
