//! Runs sandboxed MQTT device logic: a WebAssembly component of the
//! `mqtt-device:runtime/device` world gets an mTLS socket to the allowed
//! broker, OS entropy, a clock and a log; the TLS key stays in the host.

#![deny(unsafe_code)]

pub mod bindings;
pub mod clock;
pub mod component_cache;
pub mod engine;
pub mod entropy;
pub mod explain;
pub mod fleet;
pub mod limits;
pub mod local_broker;
pub mod log;
pub mod mosquitto;
pub mod mtls_socket;
pub mod pki;
pub mod runner;
pub mod state;
pub mod tls;
pub mod watch;
