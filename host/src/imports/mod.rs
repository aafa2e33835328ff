//! The world's imports, one module per WIT interface: each holds its
//! context (the per-device state the interface needs) and its `Host`
//! implementation, and nothing else. With host-core's `wit` edge, the only
//! code that touches generated types. Beside them, what they share: the
//! guest's limited output ([`output`], also WASI stdio) and a token bucket
//! ([`rate`]). Imports neither the fleet nor the CLI.

pub mod clock;
pub mod entropy;
pub mod iteration;
pub mod log;
pub mod mtls_socket;
pub mod output;
pub mod rate;
pub mod types;
