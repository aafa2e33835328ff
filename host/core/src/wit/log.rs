//! `log`: its `level` is mqtt-core's [`Level`].

use mqtt_core::Level;

pub use super::log_bindings::Level as WitLevel;
pub use super::log_bindings::{Host, add_to_linker};

impl From<WitLevel> for Level {
    fn from(level: WitLevel) -> Self {
        match level {
            WitLevel::Debug => Level::Debug,
            WitLevel::Info => Level::Info,
            WitLevel::Warn => Level::Warn,
            WitLevel::Error => Level::Error,
        }
    }
}
