//! The `entropy` interface: random bytes from the OS RNG.

use host_core::wit::entropy_bindings::Host;

/// Most bytes returned by one call.
pub const MAX_ENTROPY: u32 = 4096;

/// A device's entropy source: the OS RNG.
#[derive(Debug, Default)]
pub struct EntropyCtx;

impl Host for EntropyCtx {
    async fn get_random_bytes(&mut self, len: u32) -> wasmtime::Result<Vec<u8>> {
        let mut bytes = vec![0u8; len.min(MAX_ENTROPY) as usize];
        getrandom::fill(&mut bytes)
            .map_err(|e| wasmtime::Error::msg(format!("OS RNG failed: {e}")))?;
        Ok(bytes)
    }
}
