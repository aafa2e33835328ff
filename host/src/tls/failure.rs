//! Classifies socket and TLS failures into the guest's [`TransportError`],
//! keeping the detail (the rustls or OS message) for the host's messages.

use std::io;

use host_core::TransportError;
use host_core::outcome::SocketFailure;
use rustls::{AlertDescription, CertificateError};

/// Classifies an I/O error from the socket or the TLS layer.
pub fn classify_io(e: &io::Error) -> SocketFailure {
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return SocketFailure::new(classify_tls(tls), format!("TLS: {tls}"));
    }
    let error = match e.kind() {
        io::ErrorKind::ConnectionRefused => TransportError::ConnectionRefused,
        io::ErrorKind::TimedOut => TransportError::TimedOut,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => TransportError::ConnectionReset,
        io::ErrorKind::UnexpectedEof => TransportError::ConnectionClosed,
        _ => TransportError::IoFailed,
    };
    SocketFailure::new(error, e.to_string())
}

/// Classifies a rustls error by its variant.
pub fn classify_tls(e: &rustls::Error) -> TransportError {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => TransportError::ServerCertificateUnknownIssuer,
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => {
                TransportError::ServerCertificateExpired
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TransportError::ServerCertificateNameMismatch
            }
            _ => TransportError::ServerCertificateInvalid,
        },
        E::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired => TransportError::ClientCertificateRequired,
            AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError => TransportError::ClientCertificateRejected,
            AlertDescription::ProtocolVersion => TransportError::ProtocolVersionUnsupported,
            _ => TransportError::TlsHandshakeFailed,
        },
        E::PeerIncompatible(
            rustls::PeerIncompatible::ServerDoesNotSupportTls12Or13
            | rustls::PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
            | rustls::PeerIncompatible::SupportedVersionsExtensionRequired,
        ) => TransportError::ProtocolVersionUnsupported,
        _ => TransportError::TlsHandshakeFailed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_failures_are_classified_as_such() {
        use rustls::{Error, PeerIncompatible};
        let e = Error::PeerIncompatible(PeerIncompatible::ServerDoesNotSupportTls12Or13);
        assert_eq!(classify_tls(&e), TransportError::ProtocolVersionUnsupported);
        let e = Error::AlertReceived(AlertDescription::ProtocolVersion);
        assert_eq!(classify_tls(&e), TransportError::ProtocolVersionUnsupported);
        let e = Error::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon);
        assert_eq!(classify_tls(&e), TransportError::TlsHandshakeFailed);
    }

    #[test]
    fn io_errors_keep_their_detail() {
        let f = classify_io(&io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(f.error, TransportError::ConnectionRefused);
        assert!(!f.detail.is_empty());
    }
}
