//! Mutually-authenticated TLS client connections with rustls on tokio:
//! loading the root CA and the client credentials from PEM files, and
//! classifying every failure so the guest and the user can act on it.
//! Knows nothing of the generated WIT types.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// An established TLS session to the broker.
pub type TlsConnection = TlsStream<TcpStream>;

/// Why the TLS settings could not be loaded. Messages name the flag and the fix.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A file could not be read.
    #[error("cannot read {flag} file {}: {cause} (check the path given to {flag})", path.display())]
    Read {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: io::Error,
    },
    /// A certificate file holds no PEM certificate.
    #[error("{flag} file {} holds no PEM certificate (pass a file with a -----BEGIN CERTIFICATE----- block)", path.display())]
    NoCertificate {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The key file is encrypted; the host needs the plain key.
    #[error("--key file {} is encrypted (decrypt it first: openssl pkey -in KEY -out PLAIN.key)", .0.display())]
    EncryptedKey(PathBuf),
    /// The key file holds no private key in a supported format.
    #[error("--key file {} holds no usable PEM private key (pass a PKCS#8, PKCS#1 RSA or SEC1 EC key)", .0.display())]
    NoKey(PathBuf),
    /// Only one of the certificate and the key was given.
    #[error(
        "{given} was given without {missing} (pass both the client certificate and its key, or neither)"
    )]
    Unpaired {
        /// The flag given.
        given: &'static str,
        /// The flag missing.
        missing: &'static str,
    },
    /// The key does not belong to the certificate.
    #[error(
        "--key does not match the public key of --cert (pass the key the certificate was issued for)"
    )]
    KeyMismatch,
    /// rustls refused the credentials.
    #[error(
        "client certificate or key unusable: {0} (pass an RSA, ECDSA or Ed25519 key and its certificate)"
    )]
    Unusable(rustls::Error),
}

/// Where the TLS material comes from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Root CA(s) the broker's certificate must chain to.
    pub ca: PathBuf,
    /// Client certificate chain, PEM; `None` for no client authentication.
    pub cert: Option<PathBuf>,
    /// Client private key, PEM. Read by the host only.
    pub key: Option<PathBuf>,
}

/// Handshake options beyond the files.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// ALPN protocols offered, in order of preference; empty = no ALPN.
    /// AWS IoT Core on port 443 wants `x-amzn-mqtt-ca`.
    pub alpn: Vec<String>,
    /// Send the host name as SNI (on unless a broker cannot take it).
    pub sni: bool,
}

impl Default for Handshake {
    fn default() -> Self {
        Self {
            alpn: Vec::new(),
            sni: true,
        }
    }
}

/// A loaded TLS client configuration: root CA, client certificate and key.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    /// Whether a client certificate is presented (else a broker's handshake
    /// failure most likely means it wants one).
    has_client_cert: bool,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsClient { .. }")
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, CredentialError> {
    std::fs::read(path).map_err(|cause| CredentialError::Read {
        flag,
        path: path.to_owned(),
        cause,
    })
}

fn certificates(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, CredentialError> {
    let pem = read(flag, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(CredentialError::NoCertificate {
            flag,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, CredentialError> {
    let pem = read("--key", path)?;
    if pem.windows(9).any(|w| w == b"ENCRYPTED") {
        return Err(CredentialError::EncryptedKey(path.to_owned()));
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| CredentialError::NoKey(path.to_owned()))
}

impl TlsClient {
    /// Loads the files: TLS 1.2 and 1.3 only, server verified against `ca`.
    pub fn load(files: &TlsFiles) -> Result<Self, CredentialError> {
        Self::load_with(files, &Handshake::default())
    }

    /// Like [`TlsClient::load`], with ALPN and SNI as `handshake` says.
    pub fn load_with(files: &TlsFiles, handshake: &Handshake) -> Result<Self, CredentialError> {
        let mut roots = RootCertStore::empty();
        for cert in certificates("--ca", &files.ca)? {
            roots.add(cert).map_err(CredentialError::Unusable)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(CredentialError::Unusable)?
            .with_root_certificates(roots);
        let mut config = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => {
                let chain = certificates("--cert", cert)?;
                let key = private_key(key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| match e {
                        rustls::Error::InconsistentKeys(_) => CredentialError::KeyMismatch,
                        other => CredentialError::Unusable(other),
                    })?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => {
                return Err(CredentialError::Unpaired {
                    given: "--cert",
                    missing: "--key",
                });
            }
            (None, Some(_)) => {
                return Err(CredentialError::Unpaired {
                    given: "--key",
                    missing: "--cert",
                });
            }
        };
        config.alpn_protocols = handshake
            .alpn
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect();
        config.enable_sni = handshake.sni;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            has_client_cert: files.cert.is_some(),
        })
    }

    /// The rustls configuration (for comparing other clients on equal terms).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.connector.config().clone()
    }

    /// Resolves `host`, connects over TCP and runs the TLS handshake with
    /// `host` as SNI, all within `timeout` (`None` = no limit).
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        timeout: Option<Duration>,
    ) -> Result<TlsConnection, Failure> {
        let work = self.connect_inner(host, port);
        match timeout {
            Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
                Err(Failure::new(
                    FailureKind::TimedOut,
                    format!(
                        "no TLS session with {host}:{port} within {} ms",
                        limit.as_millis()
                    ),
                ))
            }),
            None => work.await,
        }
    }

    async fn connect_inner(&self, host: &str, port: u16) -> Result<TlsConnection, Failure> {
        let server_name = ServerName::try_from(host.to_owned()).map_err(|_| {
            Failure::new(
                FailureKind::NameUnresolvable,
                format!("{host:?} is not a valid host name"),
            )
        })?;
        let addrs: Vec<_> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| {
                Failure::new(
                    FailureKind::NameUnresolvable,
                    format!("cannot resolve {host}: {e}"),
                )
            })?
            .collect();
        let mut last = Failure::new(
            FailureKind::NameUnresolvable,
            format!("{host} has no address"),
        );
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    return self.connector.connect(server_name, tcp).await.map_err(|e| {
                        let mut failure = classify_io(&e);
                        if !self.has_client_cert && failure.kind == FailureKind::Handshake {
                            failure.kind = FailureKind::ClientCertRequired;
                        }
                        failure
                    });
                }
                Err(e) => last = classify_io(&e),
            }
        }
        Err(last)
    }
}

/// Kinds of socket failure, one per WIT `error-code` case the host produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// DNS failed.
    NameUnresolvable,
    /// TCP connection refused.
    Refused,
    /// Connect or handshake took too long.
    TimedOut,
    /// Reset by the peer.
    Reset,
    /// Closed by the peer.
    Closed,
    /// Server certificate not issued by the configured CA.
    ServerCertUnknownIssuer,
    /// Server certificate expired or not yet valid.
    ServerCertExpired,
    /// Server certificate for another name.
    ServerCertNameMismatch,
    /// Server certificate otherwise bad.
    ServerCertInvalid,
    /// The broker rejected our client certificate.
    ClientCertRejected,
    /// The broker wants a client certificate and got none.
    ClientCertRequired,
    /// No common TLS version (1.2/1.3 only).
    ProtocolVersion,
    /// Other handshake failure.
    Handshake,
    /// Other I/O failure.
    Io,
}

impl FailureKind {
    /// What the user should do about it.
    pub fn advice(self) -> &'static str {
        match self {
            Self::NameUnresolvable => "check the host name in --broker",
            Self::Refused => "check that the broker runs and listens on the --broker port",
            Self::TimedOut => "check the network path to the broker, or raise --connect-timeout-ms",
            Self::Reset | Self::Closed | Self::Io => "check the broker's log",
            Self::ServerCertUnknownIssuer => {
                "pass the root CA that signed the broker's certificate with --ca"
            }
            Self::ServerCertExpired => {
                "renew the broker's certificate, or check this machine's clock"
            }
            Self::ServerCertNameMismatch => {
                "connect with the host name the broker's certificate names"
            }
            Self::ServerCertInvalid => "check the broker's certificate chain",
            Self::ClientCertRejected => {
                "pass a client certificate (--cert) issued by a CA the broker trusts, with its key (--key)"
            }
            Self::ClientCertRequired => {
                "the broker requires a client certificate: pass --cert and --key"
            }
            Self::ProtocolVersion => "the broker must offer TLS 1.2 or 1.3",
            Self::Handshake => "check that the port speaks TLS and the broker's TLS settings",
        }
    }
}

/// A classified socket failure with the underlying detail for the log.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The category.
    pub kind: FailureKind,
    /// What exactly happened, for the host's log.
    pub detail: String,
}

impl Failure {
    fn new(kind: FailureKind, detail: String) -> Self {
        Self { kind, detail }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.detail, self.kind.advice())
    }
}

/// Classifies an I/O error from the socket or the TLS layer.
pub fn classify_io(e: &io::Error) -> Failure {
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return Failure::new(classify_tls(tls), format!("TLS: {tls}"));
    }
    let kind = match e.kind() {
        io::ErrorKind::ConnectionRefused => FailureKind::Refused,
        io::ErrorKind::TimedOut => FailureKind::TimedOut,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => FailureKind::Reset,
        io::ErrorKind::UnexpectedEof => FailureKind::Closed,
        _ => FailureKind::Io,
    };
    Failure::new(kind, e.to_string())
}

/// Classifies a rustls error.
pub fn classify_tls(e: &rustls::Error) -> FailureKind {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => FailureKind::ServerCertUnknownIssuer,
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => FailureKind::ServerCertExpired,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                FailureKind::ServerCertNameMismatch
            }
            _ => FailureKind::ServerCertInvalid,
        },
        E::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired => FailureKind::ClientCertRequired,
            AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError => FailureKind::ClientCertRejected,
            AlertDescription::ProtocolVersion => FailureKind::ProtocolVersion,
            _ => FailureKind::Handshake,
        },
        E::PeerIncompatible(
            rustls::PeerIncompatible::ServerDoesNotSupportTls12Or13
            | rustls::PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
            | rustls::PeerIncompatible::SupportedVersionsExtensionRequired,
        ) => FailureKind::ProtocolVersion,
        _ => FailureKind::Handshake,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_and_sni_reach_the_rustls_config() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::pki::Authority::new("CA").unwrap();
        let files = TlsFiles {
            ca: crate::pki::write(dir.path(), "ca.pem", &ca.cert_pem()).unwrap(),
            cert: None,
            key: None,
        };
        let plain = TlsClient::load(&files).unwrap().client_config();
        assert!(plain.alpn_protocols.is_empty() && plain.enable_sni);
        let aws = Handshake {
            alpn: vec!["x-amzn-mqtt-ca".into()],
            sni: false,
        };
        let config = TlsClient::load_with(&files, &aws).unwrap().client_config();
        assert_eq!(config.alpn_protocols, vec![b"x-amzn-mqtt-ca".to_vec()]);
        assert!(!config.enable_sni);
    }

    #[test]
    fn version_failures_are_classified_as_such() {
        use rustls::{Error, PeerIncompatible};
        let e = Error::PeerIncompatible(PeerIncompatible::ServerDoesNotSupportTls12Or13);
        assert_eq!(classify_tls(&e), FailureKind::ProtocolVersion);
        let e = Error::AlertReceived(AlertDescription::ProtocolVersion);
        assert_eq!(classify_tls(&e), FailureKind::ProtocolVersion);
        let e = Error::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon);
        assert_eq!(classify_tls(&e), FailureKind::Handshake);
    }

    #[test]
    fn unpaired_and_missing_files_are_named() {
        let missing = TlsFiles {
            ca: "/nonexistent/ca.pem".into(),
            cert: None,
            key: None,
        };
        let e = TlsClient::load(&missing).unwrap_err().to_string();
        assert!(
            e.contains("--ca") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
    }
}
