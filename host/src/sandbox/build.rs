//! Building new logic to swap in, wherever it came from (a watched file, an
//! update over the broker): compile it (or load it from the precompiled
//! cache), check it against the world, and start it once in a scratch
//! sandbox, so logic that does not compile, does not match, or traps (or
//! never finishes) when started is refused before it can replace anything.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::sandbox::cache::{self, Source};
use crate::sandbox::engine::prepare;
use crate::sandbox::store::new_store;
use crate::sandbox::{DeviceState, Logic, Sandbox};

/// Longest a new logic's trial start may take.
const TRIAL_START: Duration = Duration::from_secs(5);

/// What building new logic takes.
#[derive(Clone)]
pub struct Builder {
    /// The engine to compile with.
    pub engine: Engine,
    /// The linker with the world's imports.
    pub linker: Arc<Linker<DeviceState>>,
    /// Precompiled-component cache, if any.
    pub cache_dir: Option<PathBuf>,
    /// The sandbox the trial start runs in.
    pub sandbox: Sandbox,
    /// Logic built already, by SHA-256 and version, shared by every device
    /// of a host (a fleet builds an update once).
    pub built: Arc<tokio::sync::Mutex<Built>>,
}

/// Logic built already, by SHA-256 and version.
pub type Built = HashMap<(String, Option<u64>), Arc<Logic>>;

/// New logic, ready to be offered, and how it was obtained.
pub struct New {
    /// The logic.
    pub logic: Logic,
    /// "compiled" or "loaded from the precompiled cache".
    pub how: &'static str,
    /// Time compiling or loading, milliseconds.
    pub millis: u128,
}

impl Builder {
    /// A builder with nothing built yet.
    pub fn new(
        engine: Engine,
        linker: Arc<Linker<DeviceState>>,
        cache_dir: Option<PathBuf>,
        sandbox: Sandbox,
    ) -> Self {
        Self {
            engine,
            linker,
            cache_dir,
            sandbox,
            built: Arc::default(),
        }
    }

    /// Like [`Builder::build`], once per component and version for all the
    /// devices sharing this builder; `None` as `how` when built before.
    pub async fn build_shared(
        &self,
        wasm: Vec<u8>,
        version: Option<u64>,
    ) -> anyhow::Result<(Arc<Logic>, Option<(&'static str, u128)>)> {
        let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&wasm));
        let mut built = self.built.lock().await;
        if let Some(logic) = built.get(&(sha256.clone(), version)) {
            return Ok((logic.clone(), None));
        }
        let new = self.build(wasm, version).await?;
        let logic = Arc::new(new.logic);
        built.insert((sha256, version), logic.clone());
        Ok((logic, Some((new.how, new.millis))))
    }

    /// Builds and checks `wasm` (signed as `version`, if it was).
    pub async fn build(&self, wasm: Vec<u8>, version: Option<u64>) -> anyhow::Result<New> {
        let engine = self.engine.clone();
        let cache_dir = self.cache_dir.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            cache::load_bytes(&engine, &wasm, cache_dir.as_deref())
        })
        .await??;
        let pre = prepare(&self.linker, &loaded.component)?;
        let mut store = new_store(&self.engine, self.sandbox.state());
        match tokio::time::timeout(TRIAL_START, pre.instantiate_async(&mut store)).await {
            Ok(started) => {
                started.map_err(|e| anyhow::Error::from(e).context("it traps when started"))?;
            }
            Err(_) => anyhow::bail!(
                "it does not finish starting within {} ms",
                TRIAL_START.as_millis()
            ),
        }
        Ok(New {
            logic: Logic {
                pre,
                sha256: loaded.sha256,
                version,
            },
            how: match loaded.source {
                Source::CacheHit => "loaded from the precompiled cache",
                Source::Compiled => "compiled",
            },
            millis: loaded.millis,
        })
    }
}
