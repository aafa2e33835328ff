//! The host's domain, shared by the real host and the mock host: device
//! settings and the one source of their defaults ([`settings`]), what an
//! iteration ends in ([`outcome`]), the restart/swap/fallback policy
//! ([`supervisor`]) and the loop that applies it ([`drive`]), the
//! [`observer`] interface every counter and log line goes through, the
//! policy of a fleet rollout ([`canary`]), an iteration's [`timeout`], the [`epoch`] ticker
//! that lets wasm code be interrupted, memory and table growth
//! ([`limiter`]), a device's durable [`state`] (its quota, the seam to a
//! store, the context the key-value imports run on), the WIT edge ([`wit`]: the only conversions to and from
//! generated types), and the [`world`] it runs.

#![deny(unsafe_code)]

pub mod canary;
pub mod drive;
pub mod epoch;
pub mod limiter;
pub mod limits;
pub mod observer;
pub mod outcome;
pub mod settings;
pub mod state;
pub mod supervisor;
pub mod timeout;
pub mod wit;
pub mod world;

pub use mqtt_core::{Level, TransportError};
pub use world::WORLD;
