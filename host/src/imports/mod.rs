//! The world's imports, one module per WIT interface: each holds its
//! context (the per-device state the interface needs) and its `Host`
//! implementation, and nothing else. With host-core's `wit` edge, the
//! linker and the call of `run-iteration`, they are where generated types
//! appear (`docs/layout.md` lists each place). The limits they enforce,
//! and their meters, are in [`crate::limits`].

pub mod clock;
pub mod entropy;
pub mod iteration;
pub mod log;
pub mod mtls_socket;
pub mod types;
