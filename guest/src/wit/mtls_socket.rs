//! `mtls-socket`: its `error-code` is mqtt-core's [`TransportError`], case
//! for case; a connection is mqtt-core's [`Transport`].

use mqtt_core::{Transport, TransportError};

use crate::bindings::mqtt_device::runtime::mtls_socket::{self, Connection, ErrorCode};

mqtt_core::error_code_conversions!(ErrorCode);

impl Transport for Connection {
    fn send(&mut self, data: &[u8], timeout_ms: u32) -> Result<(), TransportError> {
        Connection::send(self, data, timeout_ms).map_err(TransportError::from)
    }
    fn receive(&mut self, max_len: u32, timeout_ms: u32) -> Result<Vec<u8>, TransportError> {
        Connection::receive(self, max_len, timeout_ms).map_err(TransportError::from)
    }
    fn close(&mut self) {
        Connection::close(self);
    }
}

/// Opens a connection to `host`:`port` within `timeout_ms`.
pub fn connect(host: &str, port: u16, timeout_ms: u32) -> Result<Connection, TransportError> {
    mtls_socket::connect(host, port, timeout_ms).map_err(TransportError::from)
}
