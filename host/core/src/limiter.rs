//! Memory and table growth limits, shared by the host and the mock host so
//! a logic that grows too much stops the same way under both: with a typed
//! [`LimitHit`], not a failed allocation it may or may not survive.

use wasmtime::ResourceLimiter;

use crate::outcome::LimitHit;

/// Default linear memory a guest may grow to, MiB.
pub const MAX_MEMORY_MIB: usize = 64;

/// Default table elements a guest may grow to.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Stops a guest that grows memory or a table past its limit.
#[derive(Debug, Clone, Copy)]
pub struct GrowthLimiter {
    /// Largest linear memory, bytes.
    pub max_memory_bytes: usize,
    /// Largest table, elements.
    pub max_table_elements: usize,
}

impl Default for GrowthLimiter {
    fn default() -> Self {
        Self {
            max_memory_bytes: MAX_MEMORY_MIB << 20,
            max_table_elements: MAX_TABLE_ELEMENTS,
        }
    }
}

/// Growth to `desired` is allowed up to `limit`; past it, the guest stops
/// with `hit`.
fn grow(desired: usize, limit: usize, hit: LimitHit) -> wasmtime::Result<bool> {
    if desired > limit {
        return Err(hit.into());
    }
    Ok(true)
}

impl ResourceLimiter for GrowthLimiter {
    fn memory_growing(
        &mut self,
        _: usize,
        desired: usize,
        _: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let limit_bytes = self.max_memory_bytes;
        grow(desired, limit_bytes, LimitHit::Memory { limit_bytes })
    }

    fn table_growing(
        &mut self,
        _: usize,
        desired: usize,
        _: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let limit = self.max_table_elements;
        grow(desired, limit, LimitHit::Table { limit })
    }

    fn instances(&self) -> usize {
        64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_past_a_limit_stops_with_that_limit() {
        let mut l = GrowthLimiter {
            max_memory_bytes: 1 << 20,
            max_table_elements: 10,
        };
        assert!(l.memory_growing(0, 1 << 20, None).unwrap());
        let e = l.memory_growing(0, (1 << 20) + 1, None).unwrap_err();
        assert_eq!(
            e.downcast_ref::<LimitHit>(),
            Some(&LimitHit::Memory {
                limit_bytes: 1 << 20
            })
        );
        assert!(l.table_growing(0, 10, None).unwrap());
        let e = l.table_growing(0, 11, None).unwrap_err();
        assert_eq!(
            e.downcast_ref::<LimitHit>(),
            Some(&LimitHit::Table { limit: 10 })
        );
    }
}
