//! Hot swap of a watched component file ([`watch`]): new logic built and
//! checked by [`crate::sandbox::build`], verified by [`crate::update`] when
//! logic must be signed.

pub mod watch;
