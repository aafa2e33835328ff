//! A device's store with the sandbox's limits applied: memory and tables
//! through the limiter; CPU through epoch checks that yield to other
//! devices and stop a guest past its continuous limit or its per-iteration
//! budget.

use std::time::Instant;

use wasmtime::{Engine, Store, UpdateDeadline};

use crate::sandbox::state::DeviceState;

/// A store for `state` with its limits applied: memory and tables through
/// the limiter; CPU through epoch checks that yield to other devices and
/// stop a guest past its continuous limit or its per-iteration budget.
pub fn new_store(engine: &Engine, state: DeviceState) -> Store<DeviceState> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    // The hooks time every stretch of wasm; the deadline is left alone, so
    // the callback below comes at the first check after every tick, however
    // the guest spends its time (even calling cheap host functions without
    // pause), checks the limits and yields to the other tasks.
    store.call_hook(|mut ctx, hook| {
        ctx.data_mut().cpu.on_hook(hook, Instant::now());
        Ok(())
    });
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        let state = ctx.data_mut();
        state.cpu.check(&state.limits, Instant::now())?;
        state.guard()?;
        Ok(UpdateDeadline::Yield(1))
    });
    store
}
