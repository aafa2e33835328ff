//! Throwaway PKIs made with rcgen: a root CA, and server and client
//! certificates it signs. Used by the embedded default broker and the tests.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The kind of key a certificate is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyKind {
    /// ECDSA on P-256 with SHA-256: small and fast, the default.
    #[default]
    EcdsaP256,
    /// RSA-2048 with SHA-256 (PKCS#1 v1.5 certificate signatures), for
    /// peers that take only RSA.
    Rsa2048,
}

impl KeyKind {
    /// A fresh key of this kind.
    pub fn generate(self) -> Result<KeyPair, rcgen::Error> {
        match self {
            KeyKind::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyKind::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
        }
    }
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
}

/// A root certificate authority that can sign leaf certificates.
pub struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A TLS server (the broker).
    Server,
    /// A TLS client (the device).
    Client,
}

/// Validity and naming of a leaf certificate.
#[derive(Debug, Clone)]
pub struct LeafOptions {
    /// Subject common name.
    pub common_name: String,
    /// DNS names and IP addresses it is valid for.
    pub names: Vec<String>,
    /// Server or client.
    pub role: Role,
    /// Not valid after this time (default: 10 years from now).
    pub not_after: Option<time::OffsetDateTime>,
}

impl LeafOptions {
    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn localhost_server() -> Self {
        Self {
            common_name: "localhost".into(),
            names: vec!["localhost".into(), "127.0.0.1".into()],
            role: Role::Server,
            not_after: None,
        }
    }

    /// A client certificate with common name `client_id`.
    pub fn client(client_id: &str) -> Self {
        Self {
            common_name: client_id.into(),
            names: Vec::new(),
            role: Role::Client,
            not_after: None,
        }
    }
}

impl Authority {
    /// A new self-signed root CA with an ECDSA P-256 key.
    pub fn new(common_name: &str) -> Result<Self, rcgen::Error> {
        Self::with_key(common_name, KeyPair::generate()?)
    }

    /// A new self-signed root CA with a fresh key of `kind`.
    pub fn of_kind(common_name: &str, kind: KeyKind) -> Result<Self, rcgen::Error> {
        Self::with_key(common_name, kind.generate()?)
    }

    /// The CA's private key, PEM (PKCS#8), to issue more certificates later.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A new self-signed root CA with `key` (e.g. an RSA key from PEM).
    pub fn with_key(common_name: &str, key: KeyPair) -> Result<Self, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        Ok(Self { cert, key })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Issues a leaf certificate with a fresh ECDSA P-256 key.
    pub fn issue(&self, options: &LeafOptions) -> Result<Issued, rcgen::Error> {
        self.issue_with_key(options, KeyPair::generate()?)
    }

    /// Issues a leaf certificate for `key`.
    pub fn issue_with_key(
        &self,
        options: &LeafOptions,
        key: KeyPair,
    ) -> Result<Issued, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, options.common_name.clone());
        for name in &options.names {
            params.subject_alt_names.push(match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.clone().try_into()?),
            });
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![match options.role {
            Role::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Role::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = options
            .not_after
            .unwrap_or(now + time::Duration::days(3650));
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a server certificate for `localhost` and `127.0.0.1`.
    pub fn issue_localhost_server(&self) -> Result<Issued, rcgen::Error> {
        self.issue(&LeafOptions::localhost_server())
    }

    /// Issues a client certificate with common name `client_id`.
    pub fn issue_client(&self, client_id: &str) -> Result<Issued, rcgen::Error> {
        self.issue(&LeafOptions::client(client_id))
    }
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, contents: &str) -> std::io::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, contents)?;
    Ok(path)
}

/// Writes a private key to `dir/name`, readable by its owner only (0600),
/// and returns the path.
pub fn write_secret(dir: &Path, name: &str, contents: &str) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(contents.as_bytes())?;
    Ok(path)
}
