//! The token's key as a rustls signing key: rustls hands over the
//! handshake's to-be-signed bytes; ECDSA keys get its digest (tokens such
//! as SoftHSM 2.6 do not hash for ECDSA) and answer r‖s, which TLS wants as
//! DER; RSA keys hash and pad on the token (PSS, or PKCS#1 v1.5 for TLS 1.2
//! peers that offer nothing else).

use std::sync::Arc;

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use rustls::pki_types::CertificateDer;
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use sha2::Digest;

use crate::pkcs11::token::{KeyKind, Pkcs11Error, Token};

/// The token's key, for rustls.
#[derive(Debug, Clone)]
pub struct TokenKey {
    token: Token,
}

impl TokenKey {
    /// The key of `token`, after checking that it is the one `cert` was
    /// issued for (a signature by the token must verify with the
    /// certificate's public key).
    pub fn new(token: Token, cert: &CertificateDer<'_>) -> Result<Arc<Self>, Pkcs11Error> {
        let key = Self { token };
        let scheme = key.schemes()[0];
        let message = b"mqtt-device: does the token hold the key of --cert?";
        let signature = TokenSigner {
            token: key.token.clone(),
            scheme,
        }
        .sign_with_token(message)?;
        let mismatch = || Pkcs11Error::KeyMismatch {
            uri: key.token.uri().to_string(),
        };
        let cert = webpki::EndEntityCert::try_from(cert).map_err(|_| mismatch())?;
        let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        let verifies = algorithms
            .mapping
            .iter()
            .filter(|(s, _)| *s == scheme)
            .flat_map(|(_, algs)| algs.iter())
            .any(|alg| cert.verify_signature(*alg, message, &signature).is_ok());
        if !verifies {
            return Err(mismatch());
        }
        Ok(Arc::new(key))
    }

    /// The schemes this key signs with, best first.
    fn schemes(&self) -> &'static [SignatureScheme] {
        match self.token.kind() {
            KeyKind::EcdsaP256 => &[SignatureScheme::ECDSA_NISTP256_SHA256],
            KeyKind::EcdsaP384 => &[SignatureScheme::ECDSA_NISTP384_SHA384],
            KeyKind::Rsa(_) => &[
                SignatureScheme::RSA_PSS_SHA256,
                SignatureScheme::RSA_PSS_SHA384,
                SignatureScheme::RSA_PKCS1_SHA256,
                SignatureScheme::RSA_PKCS1_SHA384,
            ],
        }
    }
}

impl SigningKey for TokenKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = self.schemes().iter().find(|s| offered.contains(s))?;
        Some(Box::new(TokenSigner {
            token: self.token.clone(),
            scheme: *scheme,
        }))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.token.kind() {
            KeyKind::EcdsaP256 | KeyKind::EcdsaP384 => SignatureAlgorithm::ECDSA,
            KeyKind::Rsa(_) => SignatureAlgorithm::RSA,
        }
    }
}

/// One handshake's signature.
#[derive(Debug)]
struct TokenSigner {
    token: Token,
    scheme: SignatureScheme,
}

impl TokenSigner {
    fn sign_with_token(&self, message: &[u8]) -> Result<Vec<u8>, Pkcs11Error> {
        let pss = |hash_alg, mgf, s_len: u64| PkcsPssParams {
            hash_alg,
            mgf,
            s_len: s_len.into(),
        };
        match self.scheme {
            SignatureScheme::ECDSA_NISTP256_SHA256 => {
                let digest = sha2::Sha256::digest(message);
                ecdsa_der(&self.token.sign(&Mechanism::Ecdsa, &digest)?)
            }
            SignatureScheme::ECDSA_NISTP384_SHA384 => {
                let digest = sha2::Sha384::digest(message);
                ecdsa_der(&self.token.sign(&Mechanism::Ecdsa, &digest)?)
            }
            SignatureScheme::RSA_PSS_SHA256 => self.token.sign(
                &Mechanism::Sha256RsaPkcsPss(pss(
                    MechanismType::SHA256,
                    PkcsMgfType::MGF1_SHA256,
                    32,
                )),
                message,
            ),
            SignatureScheme::RSA_PSS_SHA384 => self.token.sign(
                &Mechanism::Sha384RsaPkcsPss(pss(
                    MechanismType::SHA384,
                    PkcsMgfType::MGF1_SHA384,
                    48,
                )),
                message,
            ),
            SignatureScheme::RSA_PKCS1_SHA256 => {
                self.token.sign(&Mechanism::Sha256RsaPkcs, message)
            }
            _ => self.token.sign(&Mechanism::Sha384RsaPkcs, message),
        }
    }
}

impl Signer for TokenSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.sign_with_token(message).map_err(|e| {
            tracing::error!(target: "host", "{e}");
            rustls::Error::General(e.to_string())
        })
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// PKCS#11's ECDSA signature, r and s of equal length, as the DER
/// `Ecdsa-Sig-Value` TLS carries.
fn ecdsa_der(raw: &[u8]) -> Result<Vec<u8>, Pkcs11Error> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return Err(Pkcs11Error::Token {
            action: "make an ECDSA signature of even length",
            source: cryptoki::error::Error::InvalidValue,
        });
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    Ok(yasna::construct_der(|w| {
        w.write_sequence(|seq| {
            seq.next().write_bigint_bytes(r, true);
            seq.next().write_bigint_bytes(s, true);
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_signatures_become_der_with_positive_integers() {
        let mut raw = vec![0x80u8; 32];
        raw.extend([0x00, 0x01].iter().chain([0x7f; 30].iter()));
        let der = ecdsa_der(&raw).unwrap();
        // SEQUENCE { INTEGER 00 80.. (33 bytes), INTEGER 01 7f.. (31 bytes) }
        assert_eq!(der[0], 0x30);
        assert_eq!(&der[2..5], &[0x02, 33, 0x00]);
        assert_eq!(der[2 + 2 + 33], 0x02);
        assert_eq!(der[2 + 2 + 33 + 1], 31);
        assert_eq!(der.len(), 2 + 2 + 33 + 2 + 31);
        assert!(ecdsa_der(&[1, 2, 3]).is_err());
    }
}
