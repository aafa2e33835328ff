//! Signed logic updates with The Update Framework (TUF), through tough:
//! keys ([`keys`]), the publisher's repository ([`publish`]), and the
//! device's verification ([`verify`]).

pub mod keys;
pub mod publish;
pub mod verify;
