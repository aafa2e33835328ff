//! `clock`: plain numbers (milliseconds and microseconds), nothing to
//! convert.

pub use super::clock_bindings::{Host, add_to_linker};
