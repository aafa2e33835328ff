//! A device's first logic: the component file read once, verified against
//! the trusted keys when logic must be signed (then the bytes verified are
//! the ones run, never a second read), compiled or taken from the
//! precompiled cache, and checked against the world.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::sandbox::cache::{self, Source};
use crate::sandbox::engine::{self, EngineError};
use crate::sandbox::{DeviceState, Logic};
use crate::update::repository::repository_of;
use crate::update::trust::Trust;
use crate::update::verify::verify_file;

/// Loads the component at `path` through the cache in `cache_dir` and
/// checks it against the world of `linker` (and, with `trust`, its
/// signature, without expiry: it is the device's own file).
pub async fn load(
    path: &Path,
    engine: &Engine,
    linker: &Linker<DeviceState>,
    trust: Option<&Trust>,
    cache_dir: Option<&Path>,
) -> anyhow::Result<Arc<Logic>> {
    let (loaded, version) = match trust {
        Some(trust) => {
            let v = verify_file(path, &repository_of(path), &trust.without_expiry(), None)
                .await
                .with_context(|| format!("refused {}", path.display()))?;
            tracing::info!(target: "host", "{}: version {} signed with a trusted key", path.display(), v.version);
            let loaded = cache::load_bytes(engine, &v.wasm, cache_dir)
                .with_context(|| format!("cannot load {}", path.display()))?;
            (loaded, Some(v.version))
        }
        None => {
            let loaded = cache::load(engine, path, cache_dir)
                .with_context(|| format!("cannot load {}", path.display()))?;
            (loaded, None)
        }
    };
    tracing::info!(
        target: "host",
        "loaded {}: sha256 {}, {} in {} ms",
        path.display(),
        &loaded.sha256[..12],
        match loaded.source {
            Source::CacheHit => "precompiled cache hit",
            Source::Compiled => "compiled",
        },
        loaded.millis
    );
    let pre = engine::prepare(linker, &loaded.component).map_err(|e: EngineError| {
        anyhow::Error::from(e).context(format!("cannot run {}", path.display()))
    })?;
    Ok(Arc::new(Logic {
        pre,
        sha256: loaded.sha256,
        version,
    }))
}
