//! The `entropy` interface: random bytes from the OS RNG, or from the
//! device's PKCS#11 token (`--entropy pkcs11`), as the original demo draws
//! its entropy through corePKCS11.

use host_core::wit::entropy::Host;

use crate::pkcs11::Token;

/// Most bytes returned by one call.
pub const MAX_ENTROPY: u32 = 4096;

/// Where a device's entropy comes from.
#[derive(Debug, Clone, Default)]
pub enum EntropySource {
    /// The operating system's RNG.
    #[default]
    Os,
    /// The token's `C_GenerateRandom`.
    Token(Token),
}

/// A device's entropy.
#[derive(Debug, Default)]
pub struct EntropyCtx {
    /// Its source.
    pub source: EntropySource,
}

impl Host for EntropyCtx {
    async fn get_random_bytes(&mut self, len: u32) -> wasmtime::Result<Vec<u8>> {
        let mut bytes = vec![0u8; len.min(MAX_ENTROPY) as usize];
        match &self.source {
            EntropySource::Os => getrandom::fill(&mut bytes)
                .map_err(|e| wasmtime::Error::msg(format!("OS RNG failed: {e}")))?,
            // A host failure, not the guest's: it ends the iteration as a
            // trap naming the token.
            EntropySource::Token(token) => token.random(&mut bytes)?,
        }
        Ok(bytes)
    }
}
