//! Keys in a PKCS#11 token (a smart card, TPM, HSM, or SoftHSM2 in
//! tests): the TLS handshake's signature is made by the token, so the
//! private key is in neither the sandbox nor the host's memory. The token
//! can also be the guest's entropy source (`--entropy pkcs11`), as
//! corePKCS11 is for the original demo.

mod signer;
mod token;
mod uri;

pub use signer::TokenKey;
pub use token::{Pin, Pkcs11Error, Token, TokenKeyKind};
pub use uri::{Pkcs11Uri, UriError};
