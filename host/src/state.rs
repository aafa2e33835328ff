//! The data of one device's store: WASI (stdio only), the resource table, and
//! the contexts of the world's interfaces.

use std::time::Instant;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::limits::{CpuMeter, Limits};
use crate::mtls_socket::SocketCtx;

/// Everything a device's host functions reach.
pub struct DeviceState {
    /// Name used in log lines.
    pub name: String,
    /// WASI: inherited stdout/stderr; no files, environment, arguments or network.
    pub wasi: WasiCtx,
    /// Guest-visible resources (connections, WASI streams).
    pub table: ResourceTable,
    /// The `mtls-socket` context.
    pub sockets: SocketCtx,
    /// Origin of the guest's clock.
    pub started: Instant,
    /// The sandbox's limits.
    pub limits: Limits,
    /// wasmtime's view of the memory and table limits.
    pub store_limits: StoreLimits,
    /// Host calls and busy epoch ticks, for the CPU limit.
    pub cpu: CpuMeter,
}

impl DeviceState {
    /// A fresh state for a device called `name`.
    pub fn new(name: String, mut sockets: SocketCtx, limits: Limits) -> Self {
        sockets.max_open = limits.max_connections;
        let wasi = WasiCtx::builder()
            .inherit_stdout()
            .inherit_stderr()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            name,
            wasi,
            table: ResourceTable::new(),
            sockets,
            started: Instant::now(),
            limits,
            store_limits: limits.store_limits(),
            cpu: CpuMeter::default(),
        }
    }
}

impl WasiView for DeviceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.cpu.host_calls = self.cpu.host_calls.wrapping_add(1);
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The `types` interface has no functions; its types are used by the others.
impl crate::bindings::types::Host for DeviceState {}
