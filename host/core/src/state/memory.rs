//! A [`Backend`] in memory, with the real one's quota: the mock host's
//! store, which a scenario can seed, read after a run, keep across a
//! restart (a power cut) and make fail (a full disk).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::{Applied, Backend, Op, Pending, Quota, StateError, Usage, plan};

/// Every device's bucket, in memory.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    quota: Quota,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    buckets: HashMap<String, BTreeMap<String, Vec<u8>>>,
    /// Writes still to fail, as a full disk would.
    failing_writes: u32,
}

impl MemoryBackend {
    /// An empty store with `quota`.
    pub fn new(quota: Quota) -> Arc<Self> {
        Arc::new(Self {
            quota,
            inner: Mutex::default(),
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets `key` in `device`'s bucket without any check (a scenario's seed).
    pub fn seed(&self, device: &str, key: &str, value: Vec<u8>) {
        self.inner()
            .buckets
            .entry(device.to_string())
            .or_default()
            .insert(key.to_string(), value);
    }

    /// `device`'s bucket as it is now.
    pub fn bucket(&self, device: &str) -> BTreeMap<String, Vec<u8>> {
        self.inner()
            .buckets
            .get(device)
            .cloned()
            .unwrap_or_default()
    }

    /// Makes the next `n` writes fail as on a full disk.
    pub fn fail_writes(&self, n: u32) {
        self.inner().failing_writes = n;
    }

    fn usage(bucket: &BTreeMap<String, Vec<u8>>) -> Usage {
        bucket
            .iter()
            .fold(Usage::default(), |u, (k, v)| u.replace(k, None, Some(v)))
    }

    fn apply(&self, device: &str, ops: &[Op]) -> Result<Vec<Applied>, StateError> {
        let mut inner = self.inner();
        if inner.failing_writes > 0 {
            inner.failing_writes -= 1;
            return Err(StateError::Storage(
                "written: no space left on device (a scenario's full disk)".into(),
            ));
        }
        let bucket = inner.buckets.entry(device.to_string()).or_default();
        let planned = plan(ops, Self::usage(bucket), &self.quota, |k| {
            Ok(bucket.get(k).cloned())
        })?;
        for (key, value) in planned.changes {
            match value {
                Some(v) => bucket.insert(key, v),
                None => bucket.remove(&key),
            };
        }
        Ok(planned.applied)
    }
}

impl Backend for MemoryBackend {
    fn quota(&self) -> Quota {
        self.quota
    }

    fn get(&self, device: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self
            .inner()
            .buckets
            .get(device)
            .and_then(|b| b.get(key).cloned()))
    }

    fn keys(
        &self,
        device: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StateError> {
        let inner = self.inner();
        let Some(bucket) = inner.buckets.get(device) else {
            return Ok(Vec::new());
        };
        Ok(bucket
            .keys()
            .filter(|k| after.is_none_or(|a| k.as_str() > a))
            .take(limit)
            .cloned()
            .collect())
    }

    fn write(&self, device: Arc<str>, ops: Vec<Op>) -> Pending {
        let result = self.apply(&device, &ops);
        Box::pin(std::future::ready(result))
    }
}
