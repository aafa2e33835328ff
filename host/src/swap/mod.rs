//! Logic that changes while the host runs: the precompiled-component cache
//! ([`cache`]), building and checking new logic ([`candidate`]), and hot
//! swap of a watched component file ([`watch`]).

pub mod cache;
pub mod candidate;
pub mod watch;
