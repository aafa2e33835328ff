//! The wasmtime side of a device: the engine (with the pooling allocator in
//! fleet mode and epoch interruption for the CPU limit), the linker with the
//! world's imports, and checking a component against the world.

use anyhow::Context;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use crate::bindings::{Device, DevicePre};
use crate::state::DeviceState;

/// The world's name, for messages.
pub const WORLD: &str = "mqtt-device:runtime/device@0.1.0";

/// A wasmtime engine for device components.
pub fn engine() -> anyhow::Result<Engine> {
    engine_for(None)
}

/// An engine; with `pool`, instances come from wasmtime's pooling allocator
/// sized for that many devices with these limits (fleet mode).
pub fn engine_for(pool: Option<(u32, &crate::limits::Limits)>) -> anyhow::Result<Engine> {
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
    let engine = Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("cannot set up the WebAssembly engine")?;
    crate::limits::start_epoch_ticker(&engine);
    Ok(engine)
}

/// A linker with WASI (stdio, clocks) and the world's imports.
pub fn linker(engine: &Engine) -> anyhow::Result<Linker<DeviceState>> {
    let mut linker: Linker<DeviceState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    // The getter runs on every import call: count them for the CPU limit.
    Device::add_to_linker::<_, HasSelf<DeviceState>>(&mut linker, |s: &mut DeviceState| {
        s.cpu.host_calls = s.cpu.host_calls.wrapping_add(1);
        s
    })?;
    Ok(linker)
}

/// Checks `component` against the world and prepares it for instantiation.
pub fn prepare(
    linker: &Linker<DeviceState>,
    component: &Component,
) -> anyhow::Result<DevicePre<DeviceState>> {
    let pre = linker.instantiate_pre(component).map_err(|e| {
        anyhow::anyhow!("the component does not match the world {WORLD}: {e:#} (build it against this project's wit/)")
    })?;
    DevicePre::new(pre).map_err(|e| {
        anyhow::anyhow!(
            "the component does not match the world {WORLD}: {e:#} (it must export run-iteration)"
        )
    })
}
