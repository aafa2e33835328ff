//! A device's durable state, as the logic sees it through `wasi:keyvalue`:
//! the operations ([`Op`]) and what they did ([`Applied`]), the per-device
//! [`quota`] every store checks the same way, the [`Backend`] seam (the
//! real host's database, the mock host's [`memory`]), and a device's
//! context ([`ctx`]). One bucket per device, named by the device.

pub mod ctx;
pub mod memory;
pub mod quota;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use quota::{Quota, QuotaError, Usage};

/// One write of a logic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets a key to a value.
    Set(String, Vec<u8>),
    /// Removes a key (nothing if it is missing).
    Delete(String),
    /// Adds to the counter at a key.
    Increment(String, i64),
    /// Sets a key if its value is still `expected` (compare-and-swap).
    Swap {
        /// The key.
        key: String,
        /// The value the logic saw.
        expected: Option<Vec<u8>>,
        /// The new value.
        value: Vec<u8>,
    },
}

impl Op {
    /// The key written.
    pub fn key(&self) -> &str {
        match self {
            Op::Set(key, _) | Op::Delete(key) | Op::Increment(key, _) => key,
            Op::Swap { key, .. } => key,
        }
    }
}

/// What an [`Op`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The write is done.
    Written,
    /// The counter's new value.
    Counter(i64),
    /// The compare-and-swap found another value (this one); nothing written.
    Stale(Option<Vec<u8>>),
}

/// Why a state operation failed. Each is the `other` case of the WIT's
/// `error` for the logic, never a trap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// A quota of the device.
    #[error(transparent)]
    Quota(#[from] QuotaError),
    /// The logic wrote faster than its write rate.
    #[error(
        "more than {0} writes a second (the host's --state-writes-per-sec); nothing was written, retry later"
    )]
    Rate(u32),
    /// One batch of more keys than the write rate allows a second.
    #[error(
        "a batch of {keys} keys is more than the {per_sec} writes a second the host allows (--state-writes-per-sec); write fewer at a time"
    )]
    BatchOverRate {
        /// Keys in the batch.
        keys: u32,
        /// The rate.
        per_sec: u32,
    },
    /// A batch call with more keys than the host takes at once.
    #[error("a batch of {0} keys is over the host's limit of {max} a call; split it", max = ctx::MAX_BATCH)]
    BatchTooLarge(usize),
    /// A batch the guest's memory does not hold as the WIT says.
    #[error("the batch could not be read from the logic's memory: {0}")]
    Malformed(String),
    /// `increment` on a value that is not a counter.
    #[error("the value of {0:?} is not a counter (8 bytes, a little-endian signed integer)")]
    NotCounter(String),
    /// `increment` past the counter's range.
    #[error("the counter {0:?} would overflow")]
    Overflow(String),
    /// The database could not be read or written (a full disk, an I/O
    /// error); nothing of the write was kept.
    #[error("the device's state could not be {0}")]
    Storage(String),
}

/// A write in flight: done once what it wrote is on disk.
pub type Pending = Pin<Box<dyn Future<Output = Result<Vec<Applied>, StateError>> + Send>>;

/// Where devices' state is kept: one bucket per device.
pub trait Backend: Send + Sync {
    /// Each device's quota.
    fn quota(&self) -> Quota;
    /// The value of `key` in `device`'s bucket.
    fn get(&self, device: &str, key: &str) -> Result<Option<Vec<u8>>, StateError>;
    /// Up to `limit` keys of `device`'s bucket after `after`, in order.
    fn keys(
        &self,
        device: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StateError>;
    /// Applies `ops` to `device`'s bucket, all or none: every op is
    /// checked against the quota, then the whole is made durable.
    fn write(&self, device: Arc<str>, ops: Vec<Op>) -> Pending;
}

/// The counter value of a stored value.
pub fn counter(key: &str, value: &[u8]) -> Result<i64, StateError> {
    <[u8; 8]>::try_from(value)
        .map(i64::from_le_bytes)
        .map_err(|_| StateError::NotCounter(key.to_string()))
}

/// The changes `ops` make to a bucket whose present values `read` gives
/// and whose usage is `usage`, checked against `quota`: every store plans
/// writes through here, so the real host and the mock host agree.
pub fn plan(
    ops: &[Op],
    usage: Usage,
    quota: &Quota,
    mut read: impl FnMut(&str) -> Result<Option<Vec<u8>>, StateError>,
) -> Result<Plan, StateError> {
    let mut plan = Plan {
        applied: Vec::with_capacity(ops.len()),
        changes: std::collections::BTreeMap::new(),
        usage,
    };
    for op in ops {
        let key = op.key();
        quota.check_key(key)?;
        let present = match plan.changes.get(key) {
            Some(change) => change.clone(),
            None => read(key)?,
        };
        let (new, applied) = match op {
            Op::Set(_, value) => (Some(value.clone()), Applied::Written),
            Op::Delete(_) => (None, Applied::Written),
            Op::Increment(_, delta) => {
                let now = present.as_deref().map(|v| counter(key, v)).transpose()?;
                let next = now
                    .unwrap_or(0)
                    .checked_add(*delta)
                    .ok_or_else(|| StateError::Overflow(key.to_string()))?;
                (Some(next.to_le_bytes().to_vec()), Applied::Counter(next))
            }
            Op::Swap {
                expected, value, ..
            } => {
                if present != *expected {
                    plan.applied.push(Applied::Stale(present));
                    continue;
                }
                (Some(value.clone()), Applied::Written)
            }
        };
        if let Some(value) = &new {
            quota.check_value(key, value)?;
        }
        let before = plan.usage;
        plan.usage = plan.usage.replace(key, present.as_deref(), new.as_deref());
        // Only what grows the bucket is refused: a device over its quota
        // (lowered since it wrote) can still delete.
        if plan.usage.bytes > before.bytes || plan.usage.keys > before.keys {
            quota.check_usage(plan.usage)?;
        }
        plan.changes.insert(key.to_string(), new);
        plan.applied.push(applied);
    }
    Ok(plan)
}

/// What a write changes, once planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What each op did.
    pub applied: Vec<Applied>,
    /// Each key's new value (none: removed).
    pub changes: std::collections::BTreeMap<String, Option<Vec<u8>>>,
    /// The bucket's usage after the write.
    pub usage: Usage,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota() -> Quota {
        Quota {
            max_bytes: 100,
            max_keys: 3,
            max_key_bytes: 8,
            max_value_bytes: 32,
        }
    }

    #[test]
    fn a_plan_sees_its_own_earlier_ops_and_counts_usage() {
        let ops = [
            Op::Set("n".into(), 5i64.to_le_bytes().to_vec()),
            Op::Increment("n".into(), 2),
            Op::Set("a".into(), b"xy".to_vec()),
            Op::Delete("a".into()),
        ];
        let plan = plan(&ops, Usage::default(), &quota(), |_| Ok(None)).unwrap();
        assert_eq!(plan.applied[1], Applied::Counter(7));
        assert_eq!(plan.usage, Usage { bytes: 9, keys: 1 });
        assert_eq!(plan.changes["a"], None);
    }

    #[test]
    fn quotas_refuse_the_whole_write() {
        let q = quota();
        let big = Op::Set("k".into(), vec![0; 33]);
        assert!(matches!(
            plan(&[big], Usage::default(), &q, |_| Ok(None)),
            Err(StateError::Quota(QuotaError::Value { .. }))
        ));
        let long = Op::Set("123456789".into(), vec![]);
        assert!(matches!(
            plan(&[long], Usage::default(), &q, |_| Ok(None)),
            Err(StateError::Quota(QuotaError::Key { .. }))
        ));
        let four: Vec<Op> = (0..4).map(|i| Op::Set(format!("k{i}"), vec![])).collect();
        assert!(matches!(
            plan(&four, Usage::default(), &q, |_| Ok(None)),
            Err(StateError::Quota(QuotaError::Keys { .. }))
        ));
        let bytes: Vec<Op> = (0..3)
            .map(|i| Op::Set(format!("k{i}"), vec![0; 32]))
            .collect();
        assert!(matches!(
            plan(&bytes, Usage::default(), &q, |_| Ok(None)),
            Err(StateError::Quota(QuotaError::Bytes { .. }))
        ));
        // Replacing a value frees its old bytes.
        let replace = Op::Set("k0".into(), vec![0; 32]);
        let full = Usage { bytes: 99, keys: 3 };
        assert!(plan(&[replace], full, &q, |_| Ok(Some(vec![0; 32]))).is_ok());
        // Over the quota (it was lowered): deletes still go through.
        let over = Usage {
            bytes: 500,
            keys: 9,
        };
        let delete = Op::Delete("k0".into());
        assert!(plan(&[delete], over, &q, |_| Ok(Some(vec![0; 32]))).is_ok());
    }

    #[test]
    fn swaps_and_counters_check_what_is_there() {
        let q = quota();
        let swap = Op::Swap {
            key: "k".into(),
            expected: None,
            value: b"v".to_vec(),
        };
        let p = plan(std::slice::from_ref(&swap), Usage::default(), &q, |_| {
            Ok(Some(b"w".to_vec()))
        })
        .unwrap();
        assert_eq!(p.applied, [Applied::Stale(Some(b"w".to_vec()))]);
        assert!(p.changes.is_empty());
        let p = plan(&[swap], Usage::default(), &q, |_| Ok(None)).unwrap();
        assert_eq!(p.applied, [Applied::Written]);
        let inc = Op::Increment("k".into(), 1);
        assert_eq!(
            plan(std::slice::from_ref(&inc), Usage::default(), &q, |_| Ok(
                Some(b"text".to_vec())
            )),
            Err(StateError::NotCounter("k".into()))
        );
        let max = i64::MAX.to_le_bytes().to_vec();
        assert_eq!(
            plan(&[inc], Usage::default(), &q, |_| Ok(Some(max.clone()))),
            Err(StateError::Overflow("k".into()))
        );
    }
}
