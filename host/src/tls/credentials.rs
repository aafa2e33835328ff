//! Loading the TLS material: the root CAs (a PEM file, the Mozilla set or
//! the operating system's store), the client certificate chain and its
//! private key. Every failure names the file and the cause (the command
//! line adds the flag and the fix).

use std::io;
use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Which TLS file a failure is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    /// The root CAs the broker's certificate must chain to.
    Ca,
    /// The client certificate chain.
    Cert,
    /// The client's private key.
    Key,
}

impl std::fmt::Display for TlsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsFile::Ca => "CA",
            TlsFile::Cert => "client certificate",
            TlsFile::Key => "client key",
        })
    }
}

/// Why the TLS settings could not be loaded. Each names the cause; the
/// command line words it with its flag and the fix.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A file could not be read.
    #[error("cannot read the {file} file {}", path.display())]
    Read {
        /// Which file.
        file: TlsFile,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A certificate file holds no PEM certificate.
    #[error("the {file} file {} holds no PEM certificate", path.display())]
    NoCertificate {
        /// Which file.
        file: TlsFile,
        /// The file.
        path: PathBuf,
    },
    /// A PEM block of a certificate file is damaged.
    #[error("the {file} file {} has a malformed PEM block", path.display())]
    MalformedPem {
        /// Which file.
        file: TlsFile,
        /// The file.
        path: PathBuf,
        /// What the PEM parser found.
        source: pem::Error,
    },
    /// A certificate in the CA file cannot be a trust anchor.
    #[error("the CA file {} holds a certificate that cannot be a root CA", path.display())]
    BadRoot {
        /// The file.
        path: PathBuf,
        /// Why rustls refused it.
        source: rustls::Error,
    },
    /// The operating system's trust store holds no usable certificate.
    #[error("the operating system's trust store holds no root certificate{detail}")]
    NoOsRoots {
        /// The first problem met, as `: ...`, or nothing.
        detail: String,
    },
    /// The key file is encrypted; the host needs the plain key.
    #[error("the client key file {} is encrypted", .0.display())]
    EncryptedKey(PathBuf),
    /// The key file holds no private key in a supported format.
    #[error("the client key file {} holds no usable PEM private key", .0.display())]
    NoKey(PathBuf),
    /// Only one of the certificate and the key was given.
    #[error("a {given} file was given without a {missing} file")]
    Unpaired {
        /// The file given.
        given: TlsFile,
        /// The file missing.
        missing: TlsFile,
    },
    /// The key does not belong to the certificate.
    #[error("the client key does not match the public key of the client certificate")]
    KeyMismatch,
    /// The crypto provider offers neither TLS 1.2 nor 1.3 (a build problem).
    #[error("the TLS library refused TLS 1.2 and 1.3")]
    Provider(#[source] rustls::Error),
    /// The key in a PKCS#11 token cannot be used.
    #[error(transparent)]
    Token(#[from] crate::pkcs11::Pkcs11Error),
    /// rustls refused the client certificate or key.
    #[error("the client certificate or key is unusable")]
    Unusable(#[source] rustls::Error),
}

/// Where the root CAs the broker's certificate must chain to come from:
/// `--ca FILE`, `--ca webpki` or `--ca os` (a file named so is `./webpki`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The certificates of a PEM file.
    File(PathBuf),
    /// The Mozilla root set built into the host (webpki-roots); it holds
    /// Amazon Root CA 1 to 4, so AWS IoT Core needs no downloaded PEM.
    Webpki,
    /// The operating system's trust store (rustls-native-certs; on Debian
    /// /etc/ssl/certs, or `SSL_CERT_FILE` / `SSL_CERT_DIR`).
    Os,
}

impl std::str::FromStr for Roots {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "webpki" => Roots::Webpki,
            "os" => Roots::Os,
            path => Roots::File(PathBuf::from(path)),
        })
    }
}

impl std::fmt::Display for Roots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Roots::File(path) => write!(f, "{}", path.display()),
            Roots::Webpki => f.write_str("the Mozilla root set"),
            Roots::Os => f.write_str("the operating system's trust store"),
        }
    }
}

fn read(file: TlsFile, path: &Path) -> Result<Vec<u8>, CredentialError> {
    std::fs::read(path).map_err(|source| CredentialError::Read {
        file,
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in the PEM file `path` (the `file` of the TLS
/// settings). A damaged block is an error, not skipped.
pub fn certificates(
    file: TlsFile,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, CredentialError> {
    let pem = read(file, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CredentialError::MalformedPem {
            file,
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(CredentialError::NoCertificate {
            file,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The root store `roots` names.
pub fn root_store(roots: &Roots) -> Result<RootCertStore, CredentialError> {
    match roots {
        Roots::File(path) => self::roots(path),
        Roots::Webpki => Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }),
        Roots::Os => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!(target: "host", "the trust store: {e}");
            }
            let mut store = RootCertStore::empty();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(CredentialError::NoOsRoots {
                    detail: found
                        .errors
                        .first()
                        .map_or(String::new(), |e| format!(": {e}")),
                });
            }
            Ok(store)
        }
    }
}

/// The root store of the CA file `path`.
pub fn roots(path: &Path) -> Result<RootCertStore, CredentialError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(TlsFile::Ca, path)? {
        roots.add(cert).map_err(|source| CredentialError::BadRoot {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

/// The private key in the PEM file `path`.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, CredentialError> {
    let pem = read(TlsFile::Key, path)?;
    if pem.windows(9).any(|w| w == b"ENCRYPTED") {
        return Err(CredentialError::EncryptedKey(path.to_owned()));
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| CredentialError::NoKey(path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, contents: &str) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Regression: a damaged PEM block was skipped silently.
    #[test]
    fn a_malformed_pem_block_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca".into()])
            .unwrap()
            .cert
            .pem();
        // A valid certificate followed by one whose base64 is cut short.
        let broken = format!(
            "{ca}-----BEGIN CERTIFICATE-----\nMIIB!!notbase64\n-----END CERTIFICATE-----\n"
        );
        let path = write(dir.path(), &broken);
        let e = roots(&path).unwrap_err();
        assert!(
            matches!(
                e,
                CredentialError::MalformedPem {
                    file: TlsFile::Ca,
                    ..
                }
            ),
            "{e}"
        );
        let line = e.to_string();
        assert!(
            line.contains("CA file") && line.contains("ca.pem"),
            "{line}"
        );
    }

    /// Regression: a bad --ca was reported as "client certificate
    /// or key unusable".
    #[test]
    fn a_ca_certificate_rustls_cannot_use_is_named_as_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        // Well-formed PEM around bytes that are not a certificate.
        let junk = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
        let path = write(dir.path(), junk);
        let e = roots(&path).unwrap_err();
        assert!(matches!(e, CredentialError::BadRoot { .. }), "{e:?}");
        let line = e.to_string();
        assert!(
            line.starts_with("the CA file") && !line.contains("client certificate"),
            "{line}"
        );
    }

    #[test]
    fn webpki_and_os_name_root_sets_and_anything_else_a_file() {
        assert_eq!("webpki".parse::<Roots>().unwrap(), Roots::Webpki);
        assert_eq!("os".parse::<Roots>().unwrap(), Roots::Os);
        assert_eq!(
            "./webpki".parse::<Roots>().unwrap(),
            Roots::File("./webpki".into())
        );
        let mozilla = root_store(&Roots::Webpki).unwrap();
        assert!(mozilla.len() > 100, "{} roots", mozilla.len());
    }

    #[test]
    fn missing_files_are_named() {
        let e = roots(Path::new("/nonexistent/ca.pem"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("CA file") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
    }
}
