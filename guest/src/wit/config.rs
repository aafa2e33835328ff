//! `wasi:config/store`: the logic's own settings, given by its operator.

use crate::bindings::wasi::config::store;

/// The value of the logic's setting `key`, if its operator gave one.
pub fn get(key: &str) -> Option<String> {
    store::get(key).ok().flatten()
}
