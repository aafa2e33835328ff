//! `iteration`: the bound a logic declares for its iteration, milliseconds.

use crate::bindings::mqtt_device::runtime::iteration;

/// Declares the longest the iteration in flight can take, milliseconds
/// from its start.
pub fn declare_bound(ms: u64) {
    iteration::declare_bound(ms);
}
