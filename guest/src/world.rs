//! The component's side of the world: the demo's export, and mqtt-core's
//! [`Platform`] backed by the host's imports. The conversions between the
//! generated types and mqtt-core's are defined here, and only here.

use std::cell::RefCell;

use mqtt_core::{Clock, Level, Platform, Transport, TransportError};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::bindings::mqtt_device::runtime::log;
use crate::bindings::mqtt_device::runtime::mtls_socket::{self, ErrorCode};
use crate::bindings::mqtt_device::runtime::types::{IterationError, IterationReport, Settings};
use crate::bindings::mqtt_device::runtime::{clock, entropy};
use crate::demo;

mqtt_core::error_code_conversions!(ErrorCode);

impl From<Level> for log::Level {
    fn from(level: Level) -> Self {
        match level {
            Level::Debug => Self::Debug,
            Level::Info => Self::Info,
            Level::Warn => Self::Warn,
            Level::Error => Self::Error,
        }
    }
}

/// The demo's export implementation.
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

/// mqtt-core's [`Platform`] on the host's imports.
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
    fn send(&mut self, data: &[u8], timeout_ms: u32) -> Result<(), TransportError> {
        mtls_socket::Connection::send(self, data, timeout_ms).map_err(TransportError::from)
    }
    fn receive(&mut self, max_len: u32, timeout_ms: u32) -> Result<Vec<u8>, TransportError> {
        mtls_socket::Connection::receive(self, max_len, timeout_ms).map_err(TransportError::from)
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
    ) -> Result<Self::Conn, TransportError> {
        mtls_socket::connect(host, port, timeout_ms).map_err(TransportError::from)
    }
    fn clock(&self) -> HostClock {
        HostClock
    }
    fn log(&self, level: Level, message: &str) {
        log::write(level.into(), message);
    }
    fn random_u32(&mut self) -> u32 {
        self.rng.next_u32()
    }
}
