//! The coreMQTT mutual-authentication demo as a WebAssembly component of the
//! `mqtt-device:runtime/device` world. The MQTT client, the backoff policy and
//! the workflow are plain Rust and also build (and unit-test) natively.

#![deny(unsafe_code)]

pub mod backoff;
pub mod bench;
pub mod bindings;
pub mod client;
pub mod demo;
pub mod packets;
pub mod world;
