//! The publisher's keys: `host keygen` makes an Ed25519 key pair, the
//! private key as PKCS#8 PEM (owner-only) and the public key as a TUF key
//! document (`KEY.pub`), which devices trust (see
//! [`crate::update::trust`]); a private key is read to sign with.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::Ed25519KeyPair;
use tough::key_source::KeySource;
use tough::schema::key::Key;
use tough::sign::{Sign, parse_keypair};

/// Why a key could not be made or read. Messages name the file and the
/// cause (the command line adds the fix).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file could not be read or written.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// "read" or "write".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file exists and would be overwritten.
    #[error("{} exists already", .0.display())]
    Exists(PathBuf),
    /// The private key file holds no usable key.
    #[error("the key file {} holds no Ed25519, ECDSA P-256 or RSA private key in PEM", .0.display())]
    NotAPrivateKey(PathBuf),
    /// The crypto library failed.
    #[error("cannot generate a key: {0}")]
    Generate(String),
}

/// Makes an Ed25519 key pair: `out` (private, PEM, mode 0600) and
/// `out.pub` (public, a TUF key document). Returns the public key's path.
pub fn generate(out: &Path) -> Result<PathBuf, KeyError> {
    let public_path = public_path(out);
    for p in [out, public_path.as_path()] {
        if p.exists() {
            return Err(KeyError::Exists(p.to_owned()));
        }
    }
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()));
    write_private(out, &pem)?;
    let public = serde_json::to_string_pretty(&pair_key(&pair)).expect("a key serializes");
    std::fs::write(&public_path, public + "\n").map_err(|source| KeyError::Io {
        action: "write",
        path: public_path.clone(),
        source,
    })?;
    Ok(public_path)
}

/// Where the public key of the private key `key` is written: `KEY.pub`.
pub fn public_path(key: &Path) -> PathBuf {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

fn pair_key(pair: &Ed25519KeyPair) -> Key {
    pair.tuf_key()
}

fn write_private(path: &Path, pem: &str) -> Result<(), KeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| KeyError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(pem.as_bytes()).map_err(io)
}

/// A private key from a PEM file, as tough's key source.
#[derive(Debug, Clone)]
pub struct SigningKey {
    path: PathBuf,
    der: Vec<u8>,
}

impl SigningKey {
    /// Reads the private key in `path`.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read(path).map_err(|source| KeyError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        })?;
        let der = match pem::parse(&text) {
            Ok(block) if block.tag() == "PRIVATE KEY" => block.contents().to_vec(),
            _ => return Err(KeyError::NotAPrivateKey(path.to_owned())),
        };
        parse_keypair(&der).map_err(|_| KeyError::NotAPrivateKey(path.to_owned()))?;
        Ok(Self {
            path: path.to_owned(),
            der,
        })
    }

    /// Its public key, as a TUF key.
    pub fn public(&self) -> Key {
        parse_keypair(&self.der)
            .expect("checked when loaded")
            .tuf_key()
    }
}

#[async_trait]
impl KeySource for SigningKey {
    async fn as_sign(&self) -> Result<Box<dyn Sign>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Box::new(parse_keypair(&self.der)?))
    }

    async fn write(
        &self,
        _value: &str,
        _key_id_hex: &str,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("{} is read-only here", self.path.display()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::trust::{TrustError, load_public};

    #[test]
    fn a_generated_key_pair_loads_back_and_matches() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("publisher.key");
        let public = generate(&key).unwrap();
        assert_eq!(public, dir.path().join("publisher.key.pub"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&key).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let signing = SigningKey::load(&key).unwrap();
        assert_eq!(signing.public(), load_public(&public).unwrap());
        assert!(matches!(generate(&key), Err(KeyError::Exists(_))));
        assert!(matches!(
            load_public(&key),
            Err(TrustError::NotAPublicKey(_))
        ));
        assert!(matches!(
            SigningKey::load(&public),
            Err(KeyError::NotAPrivateKey(_))
        ));
    }
}
