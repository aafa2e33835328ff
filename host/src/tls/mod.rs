//! Mutually-authenticated TLS client connections with rustls on tokio. The
//! key stays here; failures are classified into the guest's
//! `TransportError` with the detail kept for the host. Knows nothing of the
//! generated WIT types.

mod admission;
mod credentials;
mod failure;
pub mod sessions;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use host_core::TransportError;
use host_core::outcome::SocketFailure;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub use admission::{ANSWER_WAIT, MAX_CONNECTING, Turn};
pub use credentials::{CredentialError, Roots, TlsFile};

use crate::pkcs11::{Token, TokenKey};
use admission::Admission;
pub use failure::{classify_io, classify_tls};

/// A broker or another endpoint to connect to: a host name (compared
/// case-insensitively when checked against an allow list) and a TCP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// An established TLS session to the broker.
pub type TlsConnection = TlsStream<TcpStream>;

/// Whether `conn`'s handshake resumed an earlier session.
pub fn resumed(conn: &TlsConnection) -> bool {
    conn.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
}

/// Where the TLS material comes from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Root CA(s) the broker's certificate must chain to.
    pub ca: Roots,
    /// Client certificate chain, PEM; `None` for no client authentication.
    pub cert: Option<PathBuf>,
    /// Client private key. Read by the host only, or kept in a token.
    pub key: Option<ClientKey>,
}

/// Where the client's private key is.
#[derive(Debug, Clone)]
pub enum ClientKey {
    /// A PEM file, read into the host's memory.
    File(PathBuf),
    /// A PKCS#11 token, which signs the handshake itself.
    Token(Token),
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
    /// Where the roots come from, for the message when none fits.
    roots: Roots,
    /// Turns to connect, shared by every clone (`--max-connecting`).
    admission: Option<Admission>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsClient { .. }")
    }
}

impl TlsClient {
    /// Loads the files: TLS 1.2 and 1.3 only, server verified against `ca`.
    pub fn load(files: &TlsFiles) -> Result<Self, CredentialError> {
        Self::load_with(files, &Handshake::default())
    }

    /// Like [`TlsClient::load`], with ALPN and SNI as `handshake` says.
    pub fn load_with(files: &TlsFiles, handshake: &Handshake) -> Result<Self, CredentialError> {
        let roots = credentials::root_store(&files.ca)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(CredentialError::Provider)?
            .with_root_certificates(roots);
        let mut config = match (&files.cert, &files.key) {
            (Some(cert), Some(ClientKey::Token(token))) => {
                let chain = credentials::certificates(TlsFile::Cert, cert)?;
                let key = TokenKey::new(token.clone(), &chain[0])?;
                let certified = CertifiedKey::new(chain, key);
                builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)))
            }
            (Some(cert), Some(ClientKey::File(key))) => {
                let chain = credentials::certificates(TlsFile::Cert, cert)?;
                let key = credentials::private_key(key)?;
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
                    given: TlsFile::Cert,
                    missing: TlsFile::Key,
                });
            }
            (None, Some(_)) => {
                return Err(CredentialError::Unpaired {
                    given: TlsFile::Key,
                    missing: TlsFile::Cert,
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
            roots: files.ca.clone(),
            admission: None,
        })
    }

    /// The same client with at most `limit` connects (name lookup, TCP
    /// connect, TLS handshake and the broker's first answer; see [`Turn`])
    /// in flight at once across it and all its clones, the
    /// others waiting their turn in order; 0 = no limit. When a fleet
    /// reconnects at once, this keeps the broker's accept queue from
    /// overflowing (its SYNs dropped and retried a second or more later)
    /// and its handshakes from taking so long that devices time out and
    /// start over, wasting the broker's work. A turn lasts until the broker
    /// answers (see [`Turn`]).
    pub fn with_admission(self, limit: usize) -> Self {
        Self {
            admission: Admission::new(limit),
            ..self
        }
    }

    /// The same client with TLS sessions of its own ([`sessions`]), or
    /// none when `resume` is false (every handshake in full). One per
    /// device: a store shared by a fleet keeps a few tickets per server
    /// name, so after a mass disconnect nearly every device would
    /// handshake in full.
    pub fn with_own_sessions(&self, resume: bool) -> Self {
        let mut config = (*self.connector.config().clone()).clone();
        config.resumption = if resume {
            rustls::client::Resumption::store(Arc::new(sessions::DeviceSessions::default()))
        } else {
            rustls::client::Resumption::disabled()
        };
        Self {
            connector: TlsConnector::from(Arc::new(config)),
            ..self.clone()
        }
    }

    /// The rustls configuration (for comparing other clients on equal terms).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.connector.config().clone()
    }

    /// Waits for a turn under `--max-connecting` (at most `timeout`), then
    /// resolves `host`, connects over TCP and runs the TLS handshake with
    /// `host` as SNI, all within `timeout` again (`None` = no limit): a
    /// handshake, once started, is never cut short by the time its turn
    /// took, so the broker's work on it is not wasted. The turn comes back
    /// with the connection: end it when the broker answers (dropping the
    /// connection's [`Turn`] does).
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        timeout: Option<Duration>,
    ) -> Result<(TlsConnection, Turn), SocketFailure> {
        let mut turn = match &self.admission {
            Some(admission) => admission.turn(host, port, timeout).await?,
            None => Turn::default(),
        };
        if timeout.is_none() {
            // No bound on the handshake: bound the turn from now instead.
            turn.expire_after(ANSWER_WAIT);
        }
        let work = self.connect_inner(host, port);
        let stream = match timeout {
            Some(limit) => tokio::time::timeout(limit, work)
                .await
                .unwrap_or_else(|_| {
                    Err(SocketFailure::new(
                        TransportError::TimedOut,
                        format!(
                            "no TLS session with {host}:{port} within {} ms",
                            limit.as_millis()
                        ),
                    ))
                })?,
            None => work.await?,
        };
        turn.expire_after(ANSWER_WAIT);
        Ok((stream, turn))
    }

    async fn connect_inner(&self, host: &str, port: u16) -> Result<TlsConnection, SocketFailure> {
        let server_name = ServerName::try_from(host.to_owned()).map_err(|_| {
            SocketFailure::new(
                TransportError::NameUnresolvable,
                format!("{host:?} is not a valid host name"),
            )
        })?;
        let addrs: Vec<_> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| {
                SocketFailure::new(
                    TransportError::NameUnresolvable,
                    format!("cannot resolve {host}: {e}"),
                )
            })?
            .collect();
        let mut last = SocketFailure::new(
            TransportError::NameUnresolvable,
            format!("{host} has no address"),
        );
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    return self.connector.connect(server_name, tcp).await.map_err(|e| {
                        let mut failure = classify_io(&e);
                        if !self.has_client_cert
                            && failure.error == TransportError::TlsHandshakeFailed
                        {
                            failure.error = TransportError::ClientCertificateRequired;
                        }
                        if failure.error == TransportError::ServerCertificateUnknownIssuer {
                            failure.detail = format!(
                                "{}: the broker's certificate does not chain to {}",
                                failure.detail, self.roots
                            );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_and_sni_reach_the_rustls_config() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca".into()]).unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.cert.pem()).unwrap();
        let files = TlsFiles {
            ca: Roots::File(path),
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
}
