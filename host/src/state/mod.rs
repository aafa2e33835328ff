//! The host's durable state: one crash-safe database per host process
//! (redb, a file `state.redb` under `--state-dir`), a bucket per device,
//! written through one [`commit`] thread that groups the writes of every
//! device into shared commits. A write the logic saw succeed is on disk.
//!
//! Why redb: a pure-Rust embedded database (no C library to cross-build
//! for a gateway), copy-on-write B-trees with checksummed commits (a
//! SIGKILL or power cut leaves the last commit or the one before, never a
//! torn one), readers that never wait for the writer, and one file for
//! every device of a fleet.

pub mod commit;
pub mod open;

use std::sync::Arc;

use host_core::state::{Backend, Op, Pending, StateError};
use redb::{ReadableDatabase, TableDefinition};

pub use open::{OpenError, default_dir};

/// Every device's keys and values: (device, key) → value.
pub(crate) const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");

/// The state of every device of this host.
pub struct StateDb {
    db: Arc<redb::Database>,
    quota: host_core::state::Quota,
    writer: commit::Writer,
    path: std::path::PathBuf,
}

impl StateDb {
    /// The database file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Commits made so far (each may hold the writes of many devices).
    pub fn commits(&self) -> u64 {
        self.writer.commits()
    }

    /// The values of `key` in every bucket whose name starts with
    /// `prefix` (the host's own buckets); `None` if they cannot be read.
    pub fn values_under(&self, prefix: &str, key: &str) -> Option<Vec<Vec<u8>>> {
        let read = || -> Result<Vec<Vec<u8>>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = match txn.open_table(KV) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut values = Vec::new();
            for entry in table.range((prefix, "")..)? {
                let (k, v) = entry?;
                let (device, k) = k.value();
                if !device.starts_with(prefix) {
                    break;
                }
                if k == key {
                    values.push(v.value().to_vec());
                }
            }
            Ok(values)
        };
        read().ok()
    }

    fn read_error(e: impl std::fmt::Display) -> StateError {
        StateError::Storage(format!("read: {e}"))
    }
}

impl Backend for StateDb {
    fn quota(&self) -> host_core::state::Quota {
        self.quota
    }

    fn get(&self, device: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let txn = self.db.begin_read().map_err(Self::read_error)?;
        let table = txn.open_table(KV).map_err(Self::read_error)?;
        let value = table.get((device, key)).map_err(Self::read_error)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn keys(
        &self,
        device: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StateError> {
        let txn = self.db.begin_read().map_err(Self::read_error)?;
        let table = txn.open_table(KV).map_err(Self::read_error)?;
        let start = (device, after.unwrap_or(""));
        let mut keys = Vec::new();
        for entry in table.range(start..).map_err(Self::read_error)? {
            let (k, _) = entry.map_err(Self::read_error)?;
            let (d, key) = k.value();
            if d != device {
                break;
            }
            if after.is_some_and(|a| key == a) {
                continue;
            }
            keys.push(key.to_string());
            if keys.len() == limit {
                break;
            }
        }
        Ok(keys)
    }

    fn write(&self, device: Arc<str>, ops: Vec<Op>) -> Pending {
        self.writer.write(device, ops)
    }
}
