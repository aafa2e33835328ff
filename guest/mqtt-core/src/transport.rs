//! The seam between the client and the world: a byte stream to the broker,
//! a clock, and the ways a transport fails.

/// A byte stream to the broker (a TLS connection).
pub trait Transport {
    /// Sends all of `data`, waiting at most `timeout_ms` milliseconds.
    fn send(&mut self, data: &[u8], timeout_ms: u32) -> Result<(), TransportError>;
    /// Up to `max_len` bytes, waiting at most `timeout_ms` milliseconds; an
    /// empty result means nothing arrived in time, never "closed".
    fn receive(&mut self, max_len: u32, timeout_ms: u32) -> Result<Vec<u8>, TransportError>;
    /// Closes the stream; harmless when already closed.
    fn close(&mut self);
}

/// Time on a clock that never goes backwards.
pub trait Clock {
    /// Now, milliseconds.
    fn now_ms(&self) -> u64;
    /// Now, microseconds (for measuring round trips).
    fn now_us(&self) -> u64 {
        self.now_ms() * 1000
    }
    /// Waits `ms` milliseconds (0 = yield only).
    fn sleep_ms(&self, ms: u32);
}

/// Why a transport operation failed. One case per case of the WIT
/// `mtls-socket.error-code`, in the same order and with the same meaning;
/// [`error_code_conversions!`](crate::error_code_conversions) converts
/// between the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportError {
    /// The endpoint is not on the host's allow list. Permanent.
    NotPermitted,
    /// The host name did not resolve.
    NameUnresolvable,
    /// The endpoint refused the TCP connection.
    ConnectionRefused,
    /// The operation did not finish in the time allowed.
    TimedOut,
    /// The peer reset the connection.
    ConnectionReset,
    /// The peer closed the connection, or it was closed already.
    ConnectionClosed,
    /// The server's certificate does not chain to the configured root CA. Permanent.
    ServerCertificateUnknownIssuer,
    /// The server's certificate has expired or is not valid yet. Permanent.
    ServerCertificateExpired,
    /// The server's certificate is for another host name. Permanent.
    ServerCertificateNameMismatch,
    /// The server's certificate was rejected for another reason. Permanent.
    ServerCertificateInvalid,
    /// The broker refused the client certificate. Permanent.
    ClientCertificateRejected,
    /// The broker requires a client certificate and none was presented. Permanent.
    ClientCertificateRequired,
    /// No TLS version in common (1.2 and 1.3 only). Permanent.
    ProtocolVersionUnsupported,
    /// The TLS handshake failed for another reason.
    TlsHandshakeFailed,
    /// The guest already holds the maximum number of connections.
    TooManyConnections,
    /// A length passed to the transport is over the host's limit. Permanent.
    MessageTooLarge,
    /// Another I/O failure.
    IoFailed,
    /// The guest opened connections faster than the host allows; retry
    /// after a backoff delay.
    RateLimited,
}

impl TransportError {
    /// Every case, in WIT order.
    pub const ALL: [TransportError; 18] = [
        Self::NotPermitted,
        Self::NameUnresolvable,
        Self::ConnectionRefused,
        Self::TimedOut,
        Self::ConnectionReset,
        Self::ConnectionClosed,
        Self::ServerCertificateUnknownIssuer,
        Self::ServerCertificateExpired,
        Self::ServerCertificateNameMismatch,
        Self::ServerCertificateInvalid,
        Self::ClientCertificateRejected,
        Self::ClientCertificateRequired,
        Self::ProtocolVersionUnsupported,
        Self::TlsHandshakeFailed,
        Self::TooManyConnections,
        Self::MessageTooLarge,
        Self::IoFailed,
        Self::RateLimited,
    ];

    /// The WIT case name (`connection-refused`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::NotPermitted => "not-permitted",
            Self::NameUnresolvable => "name-unresolvable",
            Self::ConnectionRefused => "connection-refused",
            Self::TimedOut => "timed-out",
            Self::ConnectionReset => "connection-reset",
            Self::ConnectionClosed => "connection-closed",
            Self::ServerCertificateUnknownIssuer => "server-certificate-unknown-issuer",
            Self::ServerCertificateExpired => "server-certificate-expired",
            Self::ServerCertificateNameMismatch => "server-certificate-name-mismatch",
            Self::ServerCertificateInvalid => "server-certificate-invalid",
            Self::ClientCertificateRejected => "client-certificate-rejected",
            Self::ClientCertificateRequired => "client-certificate-required",
            Self::ProtocolVersionUnsupported => "protocol-version-unsupported",
            Self::TlsHandshakeFailed => "tls-handshake-failed",
            Self::TooManyConnections => "too-many-connections",
            Self::MessageTooLarge => "message-too-large",
            Self::IoFailed => "io-failed",
            Self::RateLimited => "rate-limited",
        }
    }

    /// True for failures that retrying cannot fix: certificates,
    /// permissions, TLS version policy, oversize requests.
    pub fn is_permanent(self) -> bool {
        matches!(
            self,
            Self::NotPermitted
                | Self::ServerCertificateUnknownIssuer
                | Self::ServerCertificateExpired
                | Self::ServerCertificateNameMismatch
                | Self::ServerCertificateInvalid
                | Self::ClientCertificateRejected
                | Self::ClientCertificateRequired
                | Self::ProtocolVersionUnsupported
                | Self::MessageTooLarge
        )
    }
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for TransportError {}

/// Implements `From` both ways between [`TransportError`] and a generated
/// `error-code` enum of the WIT `mtls-socket` interface (wit-bindgen's on
/// the guest side, wasmtime's on the host side), so the case list is
/// written once. A case missing on either side fails to compile.
#[macro_export]
macro_rules! error_code_conversions {
    ($code:ty) => {
        $crate::__error_code_conversions!(
            $code;
            NotPermitted,
            NameUnresolvable,
            ConnectionRefused,
            TimedOut,
            ConnectionReset,
            ConnectionClosed,
            ServerCertificateUnknownIssuer,
            ServerCertificateExpired,
            ServerCertificateNameMismatch,
            ServerCertificateInvalid,
            ClientCertificateRejected,
            ClientCertificateRequired,
            ProtocolVersionUnsupported,
            TlsHandshakeFailed,
            TooManyConnections,
            MessageTooLarge,
            IoFailed,
            RateLimited
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __error_code_conversions {
    ($code:ty; $($case:ident),*) => {
        impl ::core::convert::From<$code> for $crate::TransportError {
            fn from(code: $code) -> Self {
                type Code = $code;
                match code {
                    $(Code::$case => Self::$case,)*
                }
            }
        }
        impl ::core::convert::From<$crate::TransportError> for $code {
            fn from(error: $crate::TransportError) -> Self {
                type Code = $code;
                match error {
                    $($crate::TransportError::$case => Code::$case,)*
                }
            }
        }
    };
}
