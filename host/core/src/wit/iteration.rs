//! `iteration`: a logic's declared bound, milliseconds; nothing to convert.

pub use super::iteration_bindings::{Host, add_to_linker};
