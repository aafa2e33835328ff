//! `clock`: mqtt-core's [`Clock`] on the host's clock import.

use mqtt_core::Clock;

use crate::bindings::mqtt_device::runtime::clock;

/// The host's clock.
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
