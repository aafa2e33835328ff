//! `log`: its `level` is mqtt-core's [`Level`].

use mqtt_core::Level;

use crate::bindings::mqtt_device::runtime::log;

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

/// Writes one line to the host's log.
pub fn write(level: Level, message: &str) {
    log::write(level.into(), message);
}
