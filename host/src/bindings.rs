//! Host-side bindings of the `device` world, generated from `wit/`.

wasmtime::component::bindgen!({
    world: "device",
    path: "../wit",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "mqtt-device:runtime/mtls-socket.connection": crate::mtls_socket::Connection,
    },
});

pub use mqtt_device::runtime::{clock, entropy, log, mtls_socket, types};
