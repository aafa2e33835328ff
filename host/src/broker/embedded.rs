//! The embedded default broker: when `host run` gets no `--broker`, it makes
//! a throwaway PKI and starts mosquitto on loopback with client certificates
//! required, so the demo runs end to end with nothing configured. Its
//! directory is the owner's only (0700, keys 0600) and is removed as soon
//! as the host and mosquitto have loaded what they need; mosquitto dies
//! with the host, however the host ends.

use tempfile::TempDir;

use super::mosquitto::{BrokerError, ListenerTls, Mosquitto};
use super::pki::{self, Authority};
use crate::tls::{ClientKey, Roots, TlsFiles};

/// A running local broker and the client's credentials for it.
pub struct LocalBroker {
    /// The broker process.
    pub mosquitto: Mosquitto,
    /// Root CA, client certificate and key for the device, until
    /// [`LocalBroker::remove_files`].
    pub files: TlsFiles,
    dir: Option<TempDir>,
}

/// Why the local broker could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LocalBrokerError {
    /// Making certificates failed.
    #[error("cannot make the local broker's certificates")]
    Pki(#[from] rcgen::Error),
    /// Writing files failed.
    #[error("cannot write the local broker's files")]
    Io(#[from] std::io::Error),
    /// mosquitto failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl LocalBroker {
    /// Makes a PKI (one CA, a `localhost` server certificate, a client
    /// certificate for `client_id`) and starts mosquitto with it.
    pub fn start(client_id: &str) -> Result<Self, LocalBrokerError> {
        let dir = tempfile::Builder::new()
            .prefix("mqtt-device-broker-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()?;
        let ca = Authority::new("mqtt-device local root CA")?;
        let server = ca.issue_localhost_server()?;
        let client = ca.issue_client(client_id)?;
        let d = dir.path();
        let ca_path = pki::write(d, "ca.pem", &ca.cert_pem())?;
        let tls = ListenerTls {
            cafile: ca_path.clone(),
            certfile: pki::write(d, "server.pem", &server.cert_pem)?,
            keyfile: pki::write_secret(d, "server.key", &server.key_pem)?,
            require_certificate: true,
            tls_version: None,
        };
        let files = TlsFiles {
            ca: Roots::File(ca_path),
            cert: Some(pki::write(d, "client.pem", &client.cert_pem)?),
            key: Some(ClientKey::File(pki::write_secret(
                d,
                "client.key",
                &client.key_pem,
            )?)),
        };
        let mosquitto = Mosquitto::start(d, &tls)?;
        Ok(Self {
            mosquitto,
            files,
            dir: Some(dir),
        })
    }

    /// Removes the directory with the PKI and the broker's configuration:
    /// call it once the host has loaded the client credentials (mosquitto
    /// loaded its own when it started). Harmless when already done.
    pub fn remove_files(&mut self) -> std::io::Result<()> {
        match self.dir.take() {
            Some(dir) => dir.close(),
            None => Ok(()),
        }
    }
}
