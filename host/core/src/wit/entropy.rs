//! `entropy`: bytes, nothing to convert.

pub use super::entropy_bindings::{Host, add_to_linker};
