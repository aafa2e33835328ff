//! `entropy`: the seed of the instance's random numbers.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::bindings::mqtt_device::runtime::entropy;

/// A ChaCha20 generator seeded with 32 bytes of the host's entropy.
pub fn seeded_rng() -> ChaCha20Rng {
    let mut seed = [0u8; 32];
    let bytes = entropy::get_random_bytes(32);
    for (dst, src) in seed.iter_mut().zip(bytes) {
        *dst = src;
    }
    ChaCha20Rng::from_seed(seed)
}
