//! The MQTT core of a device logic, apart from any world it runs in (as
//! coreMQTT keeps `transport_interface.h` apart): pure MQTT packets (3.1.1
//! in memory, 3.1.1 or 5 on the wire, [`wire5`]),
//! the client state machine over a [`Transport`] and a [`Clock`], the
//! Full-Jitter [`Backoff`] policy, the durable [`session`] of a
//! persistent session, and the
//! [`Platform`] seam a workflow runs on. No WIT bindings, no workflow: it
//! builds and tests natively and for `wasm32-wasip2` alike.

#![deny(unsafe_code)]

pub mod backoff;
pub mod client;
pub mod packets;
pub mod platform;
pub mod session;
pub mod transport;
#[cfg(feature = "mqtt5")]
pub mod wire5;

pub use backoff::{Backoff, RETRY_FOREVER};
pub use client::{Client, ClientError, Event, Flow, MAX_OUTGOING, Timing};
pub use platform::{Level, Platform};
pub use session::SessionStore;
pub use transport::{Clock, Transport, TransportError};
