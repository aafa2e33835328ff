//! The sandbox runtime: the engine and linker ([`engine`]), the
//! precompiled-component cache ([`cache`]), building and checking new
//! logic ([`build`]), the limits ([`limits`]), a device's store data
//! ([`state`]), and running a device under the supervisor ([`runtime`]).
//! Imports neither the fleet nor the CLI.

pub mod build;
pub mod cache;
pub mod engine;
pub mod limits;
pub mod runtime;
pub mod state;

pub use runtime::{Logic, RunError, SwapSender, Swaps, run_device, swaps};
pub use state::{DeviceState, Reach, Sandbox};
