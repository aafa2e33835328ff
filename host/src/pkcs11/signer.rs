//! The token's key as a rustls signing key: rustls hands over the
//! handshake's to-be-signed bytes. ECDSA keys get their digest (tokens such
//! as SoftHSM 2.6 do not hash for ECDSA) and answer r‖s, which TLS wants as
//! DER. RSA keys sign with PSS (TLS 1.3 needs it) or PKCS#1 v1.5 (TLS 1.2
//! peers that offer nothing else), with the token hashing when it offers
//! the combined mechanism, else over a digest (and DigestInfo) made here.
//! Only schemes the token offers a mechanism for are chosen.

use std::sync::Arc;

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use rustls::pki_types::CertificateDer;
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use sha2::Digest;

use crate::pkcs11::token::{Pkcs11Error, Token, TokenKeyKind};

/// The DER prefix of a PKCS#1 v1.5 DigestInfo for SHA-256 (RFC 8017, 9.2).
const SHA256_DIGEST_INFO: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
/// The DER prefix of a PKCS#1 v1.5 DigestInfo for SHA-384.
const SHA384_DIGEST_INFO: &[u8] = &[
    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0x04, 0x30,
];

/// How one scheme is signed on the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// CKM_ECDSA over a digest made here.
    Ecdsa(Hash),
    /// A mechanism that hashes on the token (CKM_SHA256_RSA_PKCS_PSS, ...).
    Hashing(Hash, Padding),
    /// CKM_RSA_PKCS_PSS or CKM_RSA_PKCS over a digest made here.
    Raw(Hash, Padding),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha384,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Padding {
    Pss,
    Pkcs1,
}

impl Hash {
    fn digest(self, message: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => sha2::Sha256::digest(message).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(message).to_vec(),
        }
    }

    fn pss(self) -> PkcsPssParams {
        let (hash_alg, mgf, s_len) = match self {
            Hash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32u64),
            Hash::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384, 48u64),
        };
        PkcsPssParams {
            hash_alg,
            mgf,
            s_len: s_len.into(),
        }
    }
}

/// The mechanism that signs `scheme` with hashing on the token, the one
/// that signs a digest, and the digest's hash and padding.
fn rsa_mechanisms(
    scheme: SignatureScheme,
) -> Option<(MechanismType, MechanismType, Hash, Padding)> {
    use SignatureScheme as S;
    Some(match scheme {
        S::RSA_PSS_SHA256 => (
            MechanismType::SHA256_RSA_PKCS_PSS,
            MechanismType::RSA_PKCS_PSS,
            Hash::Sha256,
            Padding::Pss,
        ),
        S::RSA_PSS_SHA384 => (
            MechanismType::SHA384_RSA_PKCS_PSS,
            MechanismType::RSA_PKCS_PSS,
            Hash::Sha384,
            Padding::Pss,
        ),
        S::RSA_PKCS1_SHA256 => (
            MechanismType::SHA256_RSA_PKCS,
            MechanismType::RSA_PKCS,
            Hash::Sha256,
            Padding::Pkcs1,
        ),
        S::RSA_PKCS1_SHA384 => (
            MechanismType::SHA384_RSA_PKCS,
            MechanismType::RSA_PKCS,
            Hash::Sha384,
            Padding::Pkcs1,
        ),
        _ => return None,
    })
}

/// The schemes a key of `kind` can sign with, best first, on a token that
/// `supports` the mechanisms asked about.
fn schemes_for(
    kind: TokenKeyKind,
    supports: impl Fn(MechanismType) -> bool,
) -> Vec<(SignatureScheme, Method)> {
    use SignatureScheme as S;
    match kind {
        TokenKeyKind::EcdsaP256 | TokenKeyKind::EcdsaP384 if !supports(MechanismType::ECDSA) => {
            Vec::new()
        }
        TokenKeyKind::EcdsaP256 => {
            vec![(S::ECDSA_NISTP256_SHA256, Method::Ecdsa(Hash::Sha256))]
        }
        TokenKeyKind::EcdsaP384 => {
            vec![(S::ECDSA_NISTP384_SHA384, Method::Ecdsa(Hash::Sha384))]
        }
        TokenKeyKind::Rsa(_) => [
            S::RSA_PSS_SHA256,
            S::RSA_PSS_SHA384,
            S::RSA_PKCS1_SHA256,
            S::RSA_PKCS1_SHA384,
        ]
        .into_iter()
        .filter_map(|scheme| {
            let (hashing, raw, hash, padding) = rsa_mechanisms(scheme)?;
            if supports(hashing) {
                Some((scheme, Method::Hashing(hash, padding)))
            } else if supports(raw) {
                Some((scheme, Method::Raw(hash, padding)))
            } else {
                None
            }
        })
        .collect(),
    }
}

/// The token's key, for rustls.
#[derive(Debug, Clone)]
pub struct TokenKey {
    token: Token,
    /// The schemes the token can sign, best first, and how.
    schemes: Vec<(SignatureScheme, Method)>,
}

impl TokenKey {
    /// The key of `token`, after checking that the token can sign with it
    /// and that it is the one `cert` was issued for (a signature by the
    /// token must verify with the certificate's public key).
    pub fn new(token: Token, cert: &CertificateDer<'_>) -> Result<Arc<Self>, Pkcs11Error> {
        let schemes = schemes_for(token.kind(), |m| token.supports(m));
        let Some(&(scheme, method)) = schemes.first() else {
            return Err(Pkcs11Error::NoMechanism {
                uri: token.uri().to_string(),
            });
        };
        let key = Self { token, schemes };
        let message = b"mqtt-device: does the token hold the key of the client certificate?";
        let signature = key.sign_with(method, message)?;
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

    fn sign_with(&self, method: Method, message: &[u8]) -> Result<Vec<u8>, Pkcs11Error> {
        match method {
            Method::Ecdsa(hash) => {
                ecdsa_der(&self.token.sign(&Mechanism::Ecdsa, &hash.digest(message))?)
            }
            Method::Hashing(hash, Padding::Pss) => {
                let mechanism = match hash {
                    Hash::Sha256 => Mechanism::Sha256RsaPkcsPss(hash.pss()),
                    Hash::Sha384 => Mechanism::Sha384RsaPkcsPss(hash.pss()),
                };
                self.token.sign(&mechanism, message)
            }
            Method::Hashing(hash, Padding::Pkcs1) => {
                let mechanism = match hash {
                    Hash::Sha256 => Mechanism::Sha256RsaPkcs,
                    Hash::Sha384 => Mechanism::Sha384RsaPkcs,
                };
                self.token.sign(&mechanism, message)
            }
            Method::Raw(hash, Padding::Pss) => self
                .token
                .sign(&Mechanism::RsaPkcsPss(hash.pss()), &hash.digest(message)),
            Method::Raw(hash, Padding::Pkcs1) => {
                let prefix = match hash {
                    Hash::Sha256 => SHA256_DIGEST_INFO,
                    Hash::Sha384 => SHA384_DIGEST_INFO,
                };
                let mut info = prefix.to_vec();
                info.extend(hash.digest(message));
                self.token.sign(&Mechanism::RsaPkcs, &info)
            }
        }
    }
}

impl SigningKey for TokenKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let (scheme, method) = *self.schemes.iter().find(|(s, _)| offered.contains(s))?;
        Some(Box::new(TokenSigner {
            key: self.clone(),
            scheme,
            method,
        }))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.token.kind() {
            TokenKeyKind::EcdsaP256 | TokenKeyKind::EcdsaP384 => SignatureAlgorithm::ECDSA,
            TokenKeyKind::Rsa(_) => SignatureAlgorithm::RSA,
        }
    }
}

/// One handshake's signature.
#[derive(Debug)]
struct TokenSigner {
    key: TokenKey,
    scheme: SignatureScheme,
    method: Method,
}

impl Signer for TokenSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.key.sign_with(self.method, message).map_err(|e| {
            // The error and its cause (the token's own), on one line.
            let line = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(": ");
            tracing::error!(target: "host", "{line}");
            rustls::Error::General(line)
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

    #[test]
    fn digest_infos_end_with_the_digest_length() {
        assert_eq!(SHA256_DIGEST_INFO.len() + 32, 0x31 + 2);
        assert_eq!(SHA384_DIGEST_INFO.len() + 48, 0x41 + 2);
        assert_eq!(*SHA256_DIGEST_INFO.last().unwrap(), 32);
        assert_eq!(*SHA384_DIGEST_INFO.last().unwrap(), 48);
    }

    /// The prefixes, followed by a digest, are the DER of PKCS#1's
    /// DigestInfo (RFC 8017, 9.2) as a DER encoder writes it: algorithm
    /// identifier (the hash's OID, NULL parameters), then the digest.
    #[test]
    fn digest_infos_are_the_der_an_encoder_writes() {
        for (prefix, oid_last, hash) in [
            (SHA256_DIGEST_INFO, 1u64, Hash::Sha256),
            (SHA384_DIGEST_INFO, 2, Hash::Sha384),
        ] {
            let digest = hash.digest(b"message");
            let der = yasna::construct_der(|w| {
                w.write_sequence(|w| {
                    w.next().write_sequence(|w| {
                        w.next()
                            .write_oid(&yasna::models::ObjectIdentifier::from_slice(&[
                                2, 16, 840, 1, 101, 3, 4, 2, oid_last,
                            ]));
                        w.next().write_null();
                    });
                    w.next().write_bytes(&digest);
                })
            });
            let mut ours = prefix.to_vec();
            ours.extend(&digest);
            assert_eq!(ours, der, "{hash:?}");
        }
    }

    /// Hashing on the token is preferred; a token with only the raw RSA
    /// mechanisms gets digests made here; one with neither gets nothing.
    #[test]
    fn the_token_s_mechanisms_decide_how_each_scheme_is_signed() {
        use SignatureScheme as S;
        let all = schemes_for(TokenKeyKind::Rsa(2048), |_| true);
        assert_eq!(all.len(), 4);
        assert_eq!(
            all[0],
            (
                S::RSA_PSS_SHA256,
                Method::Hashing(Hash::Sha256, Padding::Pss)
            )
        );
        let raw_only = schemes_for(TokenKeyKind::Rsa(2048), |m| {
            m == MechanismType::RSA_PKCS || m == MechanismType::RSA_PKCS_PSS
        });
        assert_eq!(
            raw_only,
            vec![
                (S::RSA_PSS_SHA256, Method::Raw(Hash::Sha256, Padding::Pss)),
                (S::RSA_PSS_SHA384, Method::Raw(Hash::Sha384, Padding::Pss)),
                (
                    S::RSA_PKCS1_SHA256,
                    Method::Raw(Hash::Sha256, Padding::Pkcs1)
                ),
                (
                    S::RSA_PKCS1_SHA384,
                    Method::Raw(Hash::Sha384, Padding::Pkcs1)
                ),
            ]
        );
        let pkcs1_only = schemes_for(TokenKeyKind::Rsa(2048), |m| {
            m == MechanismType::SHA256_RSA_PKCS
        });
        assert_eq!(
            pkcs1_only,
            vec![(
                S::RSA_PKCS1_SHA256,
                Method::Hashing(Hash::Sha256, Padding::Pkcs1)
            )]
        );
        assert!(schemes_for(TokenKeyKind::Rsa(2048), |_| false).is_empty());
        assert_eq!(
            schemes_for(TokenKeyKind::EcdsaP256, |m| m == MechanismType::ECDSA),
            vec![(S::ECDSA_NISTP256_SHA256, Method::Ecdsa(Hash::Sha256))]
        );
        assert!(schemes_for(TokenKeyKind::EcdsaP384, |_| false).is_empty());
    }
}
