//! Signed logic updates with The Update Framework (TUF), through tough:
//! keys ([`keys`]), the publisher's repository ([`publish`]), the device's
//! verification ([`verify`]); over the broker: the wire format ([`wire`],
//! [`chunks`]), the host's own session ([`channel`]), each device's update
//! task and status ([`device`]), and publishing and rolling out
//! ([`rollout`]).

pub mod channel;
pub mod chunks;
pub mod device;
pub mod floor;
pub mod keys;
pub mod publish;
pub mod rollout;
pub mod verify;
pub mod wire;
