//! Logic that changes while the host runs: the precompiled-component cache
//! ([`cache`]) and hot swap of a watched component file ([`watch`]).

pub mod cache;
pub mod watch;
