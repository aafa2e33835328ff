//! The coreMQTT mutual-authentication demo workflow ([`demo`]) over the
//! guest's own types ([`device`]), and the glue of the
//! `mqtt-device:runtime/device` world for device logic written in Rust:
//! wit-bindgen's [`bindings`] and the edge ([`wit`]: one module per
//! interface, and mqtt-core's seams on the imports). The MQTT client,
//! backoff and packets are in `mqtt-core`. This crate exports nothing: each
//! component crate (`guest/component` for the demo, the examples, the test
//! guests) invokes the export macro once, so two components never clash
//! over it.

#![deny(unsafe_code)]

pub mod bindings;
pub mod demo;
pub mod device;
pub mod wit;
