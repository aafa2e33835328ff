//! A device's quota: how many bytes and keys its bucket may hold, and how
//! long a key and a value may be. Each default is next to its field.

/// The limits of one device's bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Keys and values together, bytes [1 MiB].
    pub max_bytes: u64,
    /// Keys [10,000].
    pub max_keys: u64,
    /// One key, bytes of UTF-8 [512].
    pub max_key_bytes: u32,
    /// One value, bytes [64 KiB].
    pub max_value_bytes: u32,
}

impl Quota {
    /// Default of `max_bytes`.
    pub const MAX_BYTES: u64 = 1 << 20;
    /// Default of `max_keys`.
    pub const MAX_KEYS: u64 = 10_000;
    /// Default of `max_key_bytes`.
    pub const MAX_KEY_BYTES: u32 = 512;
    /// Default of `max_value_bytes`.
    pub const MAX_VALUE_BYTES: u32 = 64 << 10;
}

impl Default for Quota {
    fn default() -> Self {
        Self {
            max_bytes: Self::MAX_BYTES,
            max_keys: Self::MAX_KEYS,
            max_key_bytes: Self::MAX_KEY_BYTES,
            max_value_bytes: Self::MAX_VALUE_BYTES,
        }
    }
}

/// What a bucket holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of keys and values.
    pub bytes: u64,
    /// Keys.
    pub keys: u64,
}

impl Usage {
    /// The usage after `key` goes from `old` to `new` (none: absent).
    pub fn replace(self, key: &str, old: Option<&[u8]>, new: Option<&[u8]>) -> Usage {
        let size = |v: &[u8]| key.len() as u64 + v.len() as u64;
        let mut u = self;
        if let Some(old) = old {
            u.bytes = u.bytes.saturating_sub(size(old));
            u.keys = u.keys.saturating_sub(1);
        }
        if let Some(new) = new {
            u.bytes += size(new);
            u.keys += 1;
        }
        u
    }
}

/// A write over the quota; nothing of it was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    /// A key is too long.
    #[error("a key of {len} bytes is over the host's limit of {max} (--state-max-key-bytes)")]
    Key {
        /// The key's length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// A value is too long.
    #[error(
        "the value of {key:?} ({len} bytes) is over the host's limit of {max} (--state-max-value-bytes)"
    )]
    Value {
        /// The key.
        key: String,
        /// The value's length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// The bucket would hold too many bytes.
    #[error(
        "the device's state would hold {bytes} bytes, over its quota of {max} (--state-max-bytes); delete keys first"
    )]
    Bytes {
        /// Bytes after the write.
        bytes: u64,
        /// The quota.
        max: u64,
    },
    /// The bucket would hold too many keys.
    #[error(
        "the device's state would hold {keys} keys, over its quota of {max} (--state-max-keys); delete keys first"
    )]
    Keys {
        /// Keys after the write.
        keys: u64,
        /// The quota.
        max: u64,
    },
}

impl Quota {
    /// Checks a key's length.
    pub fn check_key(&self, key: &str) -> Result<(), QuotaError> {
        if key.len() > self.max_key_bytes as usize {
            return Err(QuotaError::Key {
                len: key.len(),
                max: self.max_key_bytes,
            });
        }
        Ok(())
    }

    /// Checks a value's length.
    pub fn check_value(&self, key: &str, value: &[u8]) -> Result<(), QuotaError> {
        if value.len() > self.max_value_bytes as usize {
            return Err(QuotaError::Value {
                key: key.to_string(),
                len: value.len(),
                max: self.max_value_bytes,
            });
        }
        Ok(())
    }

    /// Checks a bucket's usage.
    pub fn check_usage(&self, usage: Usage) -> Result<(), QuotaError> {
        if usage.keys > self.max_keys {
            return Err(QuotaError::Keys {
                keys: usage.keys,
                max: self.max_keys,
            });
        }
        if usage.bytes > self.max_bytes {
            return Err(QuotaError::Bytes {
                bytes: usage.bytes,
                max: self.max_bytes,
            });
        }
        Ok(())
    }
}
