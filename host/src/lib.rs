//! Runs sandboxed MQTT device logic: a WebAssembly component of the
//! `mqtt-device:runtime/device` world gets an mTLS socket to the allowed
//! broker, OS entropy, a clock and a log; the TLS key stays in the host.
//!
//! Folders by role, from the bottom: [`tls`] (the rustls client, connect
//! turns, sessions) with [`pkcs11`] (keys in a token); [`limits`] (the
//! sandbox's limits and their meters); [`imports`] (one module per WIT
//! interface); [`sandbox`] (engine, precompiled cache, a device's store and
//! its run under the supervisor); [`update`] (the device's side of signed
//! updates) and [`publish`] (the publisher's tools); [`swap`] (hot swap of a
//! watched file); [`device`] (one device, wired); [`fleet`]; [`metrics`];
//! [`broker`] (mosquitto, the embedded broker, throwaway PKIs). The domain
//! (settings, outcomes, the supervisor, the observer, the WIT edge) is the
//! `host-core` crate; the command line is the binary's `cli` module.
//! `docs/layout.md` holds the rules between these folders.

#![deny(unsafe_code)]

/// Prefix of the environment variable of every `host run` setting
/// (`MQTT_DEVICE_BROKER`, `MQTT_DEVICE_PKCS11_PIN`, ...).
pub const ENV_PREFIX: &str = "MQTT_DEVICE_";

pub mod broker;
pub mod device;
pub mod fleet;
pub mod imports;
pub mod limits;
pub mod metrics;
pub mod pkcs11;
pub mod publish;
pub mod sandbox;
pub mod state;
pub mod swap;
pub mod tls;
pub mod update;
