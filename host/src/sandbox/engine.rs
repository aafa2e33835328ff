//! The wasmtime side of a device: the engine (with the pooling allocator in
//! fleet mode and epoch interruption for the CPU limit), the linker with the
//! world's imports, and checking a component against the world.

use host_core::WORLD;
use host_core::wit::{self, DevicePre};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use crate::imports::clock::ClockCtx;
use crate::imports::entropy::EntropyCtx;
use crate::imports::iteration::IterationCtx;
use crate::imports::log::LogCtx;
use crate::imports::mtls_socket::SocketCtx;
use crate::imports::types::TypesCtx;
use crate::limits::Limits;
use crate::sandbox::state::DeviceState;

/// Why a component cannot run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// wasmtime could not be set up.
    #[error("cannot set up the WebAssembly engine")]
    Setup(#[source] wasmtime::Error),
    /// The component's imports are not the world's.
    #[error("the component does not match the world {WORLD}")]
    Imports(#[source] wasmtime::Error),
    /// The component lacks the world's export.
    #[error("the component does not match the world {WORLD} (it must export run-iteration)")]
    Exports(#[source] wasmtime::Error),
}

/// An engine for device components; with `pool`, instances come from
/// wasmtime's pooling allocator sized for that many devices with these
/// limits (fleet mode).
pub fn engine(pool: Option<(u32, &Limits)>) -> Result<Engine, EngineError> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    if let Some((devices, limits)) = pool {
        // One instance per device, plus room for restarts overlapping and
        // trial instances of swapped-in logic.
        let slots = devices + devices / 8 + 16;
        let mut p = wasmtime::PoolingAllocationConfig::default();
        p.total_component_instances(slots)
            .max_core_instances_per_component(16)
            .total_core_instances(slots * 8)
            .max_memories_per_component(4)
            .total_memories(slots * 2)
            .max_tables_per_component(8)
            .total_tables(slots * 4)
            .table_elements(limits.max_table_elements)
            .max_memory_size(limits.max_memory_bytes)
            .total_stacks(slots);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(p));
        // Reserve only what a guest may use: thousands of 4 GiB reservations
        // would not fit the address space.
        config.memory_reservation(limits.max_memory_bytes as u64);
        config.memory_guard_size(64 << 10);
        config.memory_reservation_for_growth(0);
        config.async_stack_size(1 << 20);
    }
    // CPU limits: wasm code checks the epoch, which a thread advances.
    config.epoch_interruption(true);
    let engine = Engine::new(&config).map_err(EngineError::Setup)?;
    host_core::epoch::start_ticker(&engine).map_err(|e| EngineError::Setup(e.into()))?;
    Ok(engine)
}

/// Counts an import call for the continuous CPU limit.
fn call(state: &mut DeviceState) -> &mut DeviceState {
    state.cpu.host_calls = state.cpu.host_calls.wrapping_add(1);
    state
}

/// A linker with WASI (stdio) and the world's imports, each on its own
/// context. Every getter counts the call for the continuous CPU limit.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<DeviceState>> {
    let mut linker: Linker<DeviceState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wit::mtls_socket::add_to_linker::<_, HasSelf<SocketCtx>>(&mut linker, |s| {
        &mut call(s).sockets
    })?;
    wit::entropy::add_to_linker::<_, HasSelf<EntropyCtx>>(&mut linker, |s| &mut call(s).entropy)?;
    wit::clock::add_to_linker::<_, HasSelf<ClockCtx>>(&mut linker, |s| &mut call(s).clock)?;
    wit::log::add_to_linker::<_, HasSelf<LogCtx>>(&mut linker, |s| &mut call(s).log)?;
    wit::iteration::add_to_linker::<_, HasSelf<IterationCtx>>(&mut linker, |s| {
        &mut call(s).iteration
    })?;
    wit::types::add_to_linker::<_, HasSelf<TypesCtx>>(&mut linker, |s| &mut s.types)?;
    wit::keyvalue::add_to_linker(&mut linker, |s| &mut call(s).state)?;
    wasmtime_wasi_config::add_to_linker(&mut linker, |s| {
        wasmtime_wasi_config::WasiConfig::new(&call(s).config)
    })?;
    Ok(linker)
}

/// Checks `component` against the world and prepares it for instantiation.
pub fn prepare(
    linker: &Linker<DeviceState>,
    component: &Component,
) -> Result<DevicePre<DeviceState>, EngineError> {
    let pre = linker
        .instantiate_pre(component)
        .map_err(EngineError::Imports)?;
    DevicePre::new(pre).map_err(EngineError::Exports)
}
