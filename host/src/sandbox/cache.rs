//! Loads components through an on-disk cache of precompiled code, keyed by
//! the component's SHA-256 and the engine's compatibility hash. A cache file
//! is loaded only after its own SHA-256 checks out, so a corrupted or foreign
//! file is ignored and rebuilt rather than mapped blindly.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Instant;

use std::os::unix::fs::DirBuilderExt;

use anyhow::Context;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Compiled now (and stored when a cache is configured).
    Compiled,
    /// Loaded from a verified cache file.
    CacheHit,
}

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read component {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a component wasmtime can compile.
    #[error("not a valid WebAssembly component")]
    Invalid(#[source] wasmtime::Error),
}

/// A loaded component and how it was obtained.
pub struct Loaded {
    /// The component.
    pub component: Component,
    /// SHA-256 of the `.wasm` bytes, hex.
    pub sha256: String,
    /// Cache hit or compilation.
    pub source: Source,
    /// Time spent compiling or loading, milliseconds.
    pub millis: u128,
}

/// The default cache directory: `$XDG_CACHE_HOME/mqtt-device-host` or
/// `$HOME/.cache/mqtt-device-host`.
pub fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("mqtt-device-host"))
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn engine_tag(engine: &Engine) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Reads and compiles the component at `path`, through the cache in `dir`
/// when one is given.
pub fn load(engine: &Engine, path: &Path, dir: Option<&Path>) -> Result<Loaded, LoadError> {
    let wasm = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    load_bytes(engine, &wasm, dir)
}

/// Compiles `wasm` (component bytes), through the cache in `dir` when given.
pub fn load_bytes(engine: &Engine, wasm: &[u8], dir: Option<&Path>) -> Result<Loaded, LoadError> {
    let started = Instant::now();
    let sha256 = hex_sha256(wasm);
    let cached = dir.map(|d| d.join(format!("{sha256}-{}.cwasm", engine_tag(engine))));
    if let Some(component) = cached
        .as_deref()
        .and_then(|file| load_verified(engine, file))
    {
        return Ok(Loaded {
            component,
            sha256,
            source: Source::CacheHit,
            millis: started.elapsed().as_millis(),
        });
    }
    let serialized = engine
        .precompile_component(wasm)
        .map_err(LoadError::Invalid)?;
    if let Some(Err(e)) = cached.as_deref().map(|file| store(file, &serialized)) {
        tracing::warn!(target: "host::cache", "cannot write cache file: {e:#}");
    }
    let component = deserialize(engine, &serialized).map_err(LoadError::Invalid)?;
    Ok(Loaded {
        component,
        sha256,
        source: Source::Compiled,
        millis: started.elapsed().as_millis(),
    })
}

#[allow(
    unsafe_code,
    reason = "bytes were produced by this engine's precompile_component just now, or by it earlier and verified by SHA-256"
)]
fn deserialize(engine: &Engine, serialized: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: see the allow's reason; wasmtime also checks the version and
    // engine settings recorded in the header.
    unsafe { Component::deserialize(engine, serialized) }
}

fn load_verified(engine: &Engine, file: &Path) -> Option<Component> {
    let bytes = std::fs::read(file).ok()?;
    let want = std::fs::read_to_string(file.with_extension("sha256")).ok()?;
    if hex_sha256(&bytes) != want.trim() {
        tracing::warn!(target: "host::cache", "cache file {} is corrupted; recompiling", file.display());
        return None;
    }
    match deserialize(engine, &bytes) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(target: "host::cache", "cache file {} unusable ({e:#}); recompiling", file.display());
            None
        }
    }
}

fn store(file: &Path, serialized: &[u8]) -> anyhow::Result<()> {
    let dir = file.parent().context("cache file has no directory")?;
    // Native code is loaded from here: the owner's only.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::write(tmp.path(), serialized)?;
    std::fs::write(file.with_extension("sha256"), hex_sha256(serialized))?;
    tmp.persist(file)?;
    Ok(())
}
