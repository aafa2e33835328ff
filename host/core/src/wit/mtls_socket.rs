//! `mtls-socket`: its `error-code` is mqtt-core's [`TransportError`], case
//! for case.
//!
//! [`TransportError`]: mqtt_core::TransportError

pub use super::mtls_socket_bindings::{Connection, ErrorCode, Host, HostConnection, add_to_linker};

mqtt_core::error_code_conversions!(ErrorCode);
