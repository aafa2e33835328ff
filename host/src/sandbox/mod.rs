//! The sandbox runtime: the engine and linker ([`engine`]), the
//! precompiled-component cache ([`cache`]), building and checking new
//! logic ([`build`]), a device's store data ([`state`]) and its store
//! with the limits applied ([`store`]), and running a device under the
//! supervisor ([`runtime`]). The limits themselves are in
//! [`crate::limits`].
//! Imports neither the fleet nor the CLI.

pub mod build;
pub mod cache;
pub mod engine;
pub mod runtime;
pub mod state;
pub mod store;

pub use runtime::{Logic, RunError, StartError, SwapSender, Swaps, run_device, swaps};
pub use state::{DeviceState, Reach, Sandbox};
