//! `mtls-socket`: its `error-code` is mqtt-core's [`TransportError`], case
//! for case.
//!
//! [`TransportError`]: mqtt_core::TransportError

pub use super::mtls_socket_bindings::{Connection, ErrorCode, Host, HostConnection, add_to_linker};

mqtt_core::error_code_conversions!(ErrorCode);

#[cfg(test)]
mod tests {
    use mqtt_core::TransportError;

    use super::ErrorCode;

    #[test]
    fn every_case_converts_both_ways_by_name() {
        for e in TransportError::ALL {
            let code = ErrorCode::from(e);
            assert_eq!(TransportError::from(code), e);
            assert_eq!(code.name(), e.name(), "the WIT case name");
        }
    }
}
