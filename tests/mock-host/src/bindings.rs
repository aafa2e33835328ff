//! Mock-host bindings of the `device` world, generated from `wit/`:
//! synchronous, and every import may trap (for injected faults).

wasmtime::component::bindgen!({
    world: "device",
    path: "../../wit",
    imports: { default: trappable },
    additional_derives: [PartialEq],
    with: {
        "mqtt-device:runtime/mtls-socket.connection": crate::imports::MockConnection,
    },
});

pub use mqtt_device::runtime::{clock, entropy, log, mtls_socket, types};
