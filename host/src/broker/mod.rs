//! Brokers the host starts itself: real mosquitto processes on loopback
//! ([`mosquitto`]), the embedded default broker of `host run` without
//! `--broker` ([`embedded`]), and the throwaway PKIs they use ([`pki`]).

pub mod embedded;
pub mod mosquitto;
pub mod pki;
