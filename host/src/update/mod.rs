//! The device's side of signed logic updates (The Update Framework, through
//! tough): what it trusts ([`trust`]), the repository format it shares with
//! the publisher ([`repository`]), verifying a repository ([`verify`]), its
//! version floor ([`floor`]); over the broker: the wire format ([`wire`],
//! [`chunks`]), the host's own MQTT session ([`channel`], [`session`]) and
//! each device's update task and status ([`updater`]). The publisher's tools
//! are in [`crate::publish`].

pub mod channel;
pub mod chunks;
pub mod floor;
pub mod repository;
pub mod session;
pub mod trust;
pub mod updater;
pub mod verify;
pub mod wire;
