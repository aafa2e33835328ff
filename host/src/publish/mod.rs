//! The publisher's tools for signed logic: keys ([`keys`]), signing a
//! logic into a TUF repository ([`signing`]), and publishing it over the
//! broker to a fleet, canaries first ([`rollout`]). What devices do with it
//! is in [`crate::update`].

pub mod keys;
pub mod rollout;
pub mod signing;
