//! The clock of wasmtime's epoch interruption, shared by the host and the
//! mock host: a thread advances an engine's epoch at a fixed tick, so wasm
//! code (which checks the epoch in loops and calls) can be stopped or
//! sampled however it spends its time.

use std::time::Duration;

use wasmtime::Engine;

/// How often the engine's epoch advances.
pub const TICK: Duration = Duration::from_millis(10);

/// Starts the thread that advances `engine`'s epoch every [`TICK`]; it ends
/// when the engine is dropped.
pub fn start_ticker(engine: &Engine) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })
        .map(drop)
}
