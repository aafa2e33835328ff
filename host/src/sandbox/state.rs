//! The data of one device's store: WASI (stdio only), the contexts of the
//! world's interfaces, and the sandbox's meters.

use std::sync::Arc;

use host_core::observer::Observer;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::imports::clock::ClockCtx;
use crate::imports::entropy::EntropyCtx;
use crate::imports::log::LogCtx;
use crate::imports::mtls_socket::{Endpoint, SocketCtx};
use crate::imports::types::TypesCtx;
use crate::sandbox::limits::{CpuMeter, Limiter, Limits};
use crate::tls::TlsClient;

/// Everything a device's host functions reach.
pub struct DeviceState {
    /// WASI: inherited stdout/stderr; no files, environment, arguments or network.
    pub wasi: WasiCtx,
    /// WASI's resources (streams).
    pub table: ResourceTable,
    /// `mtls-socket`.
    pub sockets: SocketCtx,
    /// `clock`.
    pub clock: ClockCtx,
    /// `entropy`.
    pub entropy: EntropyCtx,
    /// `log`.
    pub log: LogCtx,
    /// `types`.
    pub types: TypesCtx,
    /// The sandbox's limits.
    pub limits: Limits,
    /// Enforces the memory and table limits.
    pub limiter: Limiter,
    /// Host calls and busy epoch ticks, for the CPU limit.
    pub cpu: CpuMeter,
}

/// Who a device is and what it may reach: everything its sandboxes are
/// made from.
#[derive(Clone)]
pub struct Sandbox {
    /// The device's name in log lines (its client id).
    pub name: String,
    /// The TLS client with its credentials.
    pub tls: TlsClient,
    /// Endpoints the guest may connect to.
    pub allowed: Vec<Endpoint>,
    /// The sandbox's limits.
    pub limits: Limits,
    /// Where the device's events go.
    pub observer: Arc<dyn Observer>,
}

impl Sandbox {
    /// The data of a fresh store.
    pub fn state(&self) -> DeviceState {
        let wasi = WasiCtx::builder()
            .inherit_stdout()
            .inherit_stderr()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        DeviceState {
            wasi,
            table: ResourceTable::new(),
            sockets: SocketCtx::new(
                self.tls.clone(),
                self.allowed.clone(),
                self.limits.sockets(),
                self.observer.clone(),
            ),
            clock: ClockCtx::default(),
            entropy: EntropyCtx,
            log: LogCtx {
                device: self.name.clone(),
            },
            types: TypesCtx,
            limits: self.limits,
            limiter: Limiter::new(self.limits),
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
