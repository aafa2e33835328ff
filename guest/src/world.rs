//! The component's side of the world: the exported entry point and the
//! [`Platform`](crate::demo::Platform) backed by the host's imports.

use std::cell::RefCell;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::bindings::mqtt_device::runtime::types::{IterationError, IterationReport, Settings};
use crate::bindings::mqtt_device::runtime::{clock, entropy, log, mtls_socket};
use crate::client::{Clock, Transport};
use crate::demo::{self, Platform};

/// The component's export implementation.
pub struct Demo;

impl crate::bindings::Guest for Demo {
    fn run_iteration(
        settings: Settings,
        iteration: u32,
    ) -> Result<IterationReport, IterationError> {
        with_platform(|platform| demo::run_iteration(platform, &settings, iteration))
    }
}

/// Runs `f` with the platform backed by the host's imports (the instance's
/// RNG is seeded from `entropy` on first use).
pub fn with_platform<R>(f: impl FnOnce(&mut HostPlatform<'_>) -> R) -> R {
    RNG.with(|rng| {
        let mut platform = HostPlatform {
            rng: &mut rng.borrow_mut(),
        };
        f(&mut platform)
    })
}

thread_local! {
    /// Seeded once per instance from the host's entropy.
    static RNG: RefCell<ChaCha20Rng> = RefCell::new(seeded_rng());
}

fn seeded_rng() -> ChaCha20Rng {
    let mut seed = [0u8; 32];
    let bytes = entropy::get_random_bytes(32);
    for (dst, src) in seed.iter_mut().zip(bytes) {
        *dst = src;
    }
    ChaCha20Rng::from_seed(seed)
}

/// The demo's [`Platform`] on the host's imports.
pub struct HostPlatform<'a> {
    rng: &'a mut ChaCha20Rng,
}

/// The host's clock import.
#[derive(Clone, Copy)]
pub struct HostClock;

impl Clock for HostClock {
    fn now_ms(&self) -> u64 {
        clock::now_ms()
    }
    fn now_us(&self) -> u64 {
        clock::now_us()
    }
    fn sleep_ms(&self, ms: u32) {
        clock::sleep_ms(ms);
    }
}

impl Transport for mtls_socket::Connection {
    fn send(&mut self, data: &[u8], timeout_ms: u32) -> Result<(), mtls_socket::ErrorCode> {
        mtls_socket::Connection::send(self, data, timeout_ms)
    }
    fn receive(
        &mut self,
        max_len: u32,
        timeout_ms: u32,
    ) -> Result<Vec<u8>, mtls_socket::ErrorCode> {
        mtls_socket::Connection::receive(self, max_len, timeout_ms)
    }
    fn close(&mut self) {
        mtls_socket::Connection::close(self);
    }
}

impl Platform for HostPlatform<'_> {
    type Conn = mtls_socket::Connection;
    type Clock = HostClock;

    fn connect(
        &mut self,
        host: &str,
        port: u16,
        timeout_ms: u32,
    ) -> Result<Self::Conn, mtls_socket::ErrorCode> {
        mtls_socket::connect(host, port, timeout_ms)
    }
    fn clock(&self) -> HostClock {
        HostClock
    }
    fn log(&self, level: log::Level, message: &str) {
        log::write(level, message);
    }
    fn random_u32(&mut self) -> u32 {
        self.rng.next_u32()
    }
}
