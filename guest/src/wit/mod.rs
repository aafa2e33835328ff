//! The guest's WIT edge: one module per interface, converting between the
//! generated types ([`crate::bindings`]) and the guest's own (mqtt-core's
//! and [`crate::device`]'s), and mqtt-core's [`Platform`] backed by the
//! host's imports. Nothing else in the guest names a generated type but the
//! components' export glue.

pub mod clock;
pub mod config;
pub mod entropy;
pub mod iteration;
pub mod keyvalue;
pub mod log;
pub mod mtls_socket;
pub mod types;

use std::cell::RefCell;

use mqtt_core::{Level, Platform, TransportError};
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;

use crate::bindings::mqtt_device::runtime::mtls_socket::Connection;
use crate::bindings::mqtt_device::runtime::types::{IterationError, IterationReport, Settings};
use crate::demo;

/// The demo's export: [`run_demo`].
pub struct Demo;

impl crate::bindings::Guest for Demo {
    fn run_iteration(
        settings: Settings,
        iteration: u32,
    ) -> Result<IterationReport, IterationError> {
        run_demo(settings, iteration)
    }
}

/// One iteration of the demo workflow with the host's `settings`, on the
/// host's imports: the body of the demo's export, and of any logic that
/// runs the demo's workflow with settings of its own.
pub fn run_demo(settings: Settings, iteration: u32) -> Result<IterationReport, IterationError> {
    let settings = settings.into();
    with_platform(|platform| demo::run_iteration(platform, &settings, iteration))
        .map(Into::into)
        .map_err(Into::into)
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
    static RNG: RefCell<ChaCha20Rng> = RefCell::new(entropy::seeded_rng());
}

/// mqtt-core's [`Platform`] on the host's imports.
pub struct HostPlatform<'a> {
    rng: &'a mut ChaCha20Rng,
}

impl Platform for HostPlatform<'_> {
    type Conn = Connection;
    type Clock = clock::HostClock;

    fn connect(
        &mut self,
        host: &str,
        port: u16,
        timeout_ms: u32,
    ) -> Result<Self::Conn, TransportError> {
        mtls_socket::connect(host, port, timeout_ms)
    }
    fn clock(&self) -> clock::HostClock {
        clock::HostClock
    }
    fn log(&self, level: Level, message: &str) {
        log::write(level, message);
    }
    fn random_u32(&mut self) -> u32 {
        self.rng.next_u32()
    }
    fn declare_iteration_bound(&mut self, ms: u64) {
        iteration::declare_bound(ms);
    }
    fn session_store(&mut self) -> Option<Box<dyn mqtt_core::SessionStore>> {
        Some(Box::new(keyvalue::KeyValueSession::open()))
    }
}
