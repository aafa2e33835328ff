//! `host inspect LOGIC.wasm`: what a logic file is, before running it:
//! size, SHA-256, whether it is a component of this host's world (and if
//! not, why), its imports and exports, and its signature.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use host::sandbox::cache;
use host::sandbox::engine;
use host::update::trust::Trust;
use host::update::verify;
use host_core::WORLD;
use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;

use crate::cli::explain::{self, Failure};
use host::update::repository::repository_of;

/// `host inspect`: describes a logic file.
///
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The logic (a component file).
    pub logic: PathBuf,
    /// Check its signature (LOGIC.tuf) against this public key (repeatable).
    #[arg(long, value_name = "KEY.pub")]
    pub trust: Vec<PathBuf>,
    /// The signed repository [default: LOGIC.tuf].
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Directory of the precompiled-component cache [default: ~/.cache/mqtt-device-host].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// What `host inspect` found.
#[derive(Debug, Serialize)]
pub struct Inspection {
    /// The file.
    pub file: PathBuf,
    /// Its size, bytes.
    pub size: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// `component`, `core module` or `not WebAssembly`.
    pub kind: &'static str,
    /// This host's world.
    pub world: &'static str,
    /// Whether this host can run it.
    pub runs_here: bool,
    /// Why not, if not.
    pub refusal: Option<String>,
    /// Its imports: name and kind.
    pub imports: Vec<Item>,
    /// Its exports: name and kind.
    pub exports: Vec<Item>,
    /// Whether it keeps durable state (imports `wasi:keyvalue`): what it
    /// writes outlives the host, swaps and updates (`--state-dir`).
    pub keeps_state: bool,
    /// Whether it reads settings of its own (imports `wasi:config`,
    /// `--logic-config`).
    pub reads_settings: bool,
    /// Its signature.
    pub signature: Signature,
}

/// One import or export.
#[derive(Debug, Serialize)]
pub struct Item {
    /// Its name (an interface's is `package:name/interface@version`).
    pub name: String,
    /// What it is: `instance`, `func`, `type`, ...
    pub kind: &'static str,
}

/// What is known of the signature.
#[derive(Debug, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Signature {
    /// No repository next to it.
    Unsigned,
    /// A repository, not checked (no --trust): what it claims.
    NotChecked {
        /// The repository.
        repo: PathBuf,
        /// The version it claims, if it could be read.
        version: Option<u64>,
    },
    /// Verified against --trust.
    Verified {
        /// The repository.
        repo: PathBuf,
        /// The signed version.
        version: u64,
    },
    /// Refused against --trust.
    Refused {
        /// The repository.
        repo: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Runs `host inspect`.
pub async fn inspect(args: InspectArgs) -> Result<(), Failure> {
    let wasm = std::fs::read(&args.logic)
        .with_context(|| format!("cannot read {}", args.logic.display()))?;
    let engine = engine::engine(None).map_err(anyhow::Error::from)?;
    let mut found = describe(&engine, &args.logic, &wasm, args.cache_dir.as_deref());
    let repo = args
        .repo
        .clone()
        .unwrap_or_else(|| repository_of(&args.logic));
    found.signature = signature(&args, &repo).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&found).context("cannot write JSON")?
        );
    } else {
        print!("{}", text(&found));
    }
    let signed_ok = args.trust.is_empty() || matches!(found.signature, Signature::Verified { .. });
    match (&found.refusal, &found.signature) {
        _ if found.runs_here && signed_ok => Ok(()),
        (Some(why), _) => Err(Failure::Refused(format!(
            "this host cannot run {}: {why}",
            args.logic.display()
        ))),
        (None, Signature::Refused { reason, .. }) => Err(Failure::Refused(format!(
            "the signature of {} does not verify: {reason}",
            args.logic.display()
        ))),
        (None, _) => Err(Failure::Refused(format!(
            "{} has no signature to check against --trust (sign it with host sign)",
            args.logic.display()
        ))),
    }
}

/// Size, hash, kind, and the component's types and fit to the world.
fn describe(engine: &Engine, file: &Path, wasm: &[u8], cache_dir: Option<&Path>) -> Inspection {
    let mut found = Inspection {
        file: file.to_owned(),
        size: wasm.len() as u64,
        sha256: hex::encode(Sha256::digest(wasm)),
        kind: kind(wasm),
        world: WORLD,
        runs_here: false,
        refusal: None,
        imports: Vec::new(),
        exports: Vec::new(),
        keeps_state: false,
        reads_settings: false,
        signature: Signature::Unsigned,
    };
    if found.kind != "component" {
        let what = match found.kind {
            "core module" => "a core module, not a component",
            _ => "not WebAssembly",
        };
        found.refusal = Some(format!(
            "it is {what} (build the logic for wasm32-wasip2 against wit/, or wrap a module with wasm-tools component new)"
        ));
        return found;
    }
    let dir = cache_dir.map(Path::to_owned).or_else(cache::default_dir);
    let component = match cache::load_bytes(engine, wasm, dir.as_deref()) {
        Ok(loaded) => loaded.component,
        Err(e) => {
            found.refusal = Some(format!("{:#}", anyhow::Error::from(e)));
            return found;
        }
    };
    let ty = component.component_type();
    found.imports = ty
        .imports(engine)
        .map(|(name, item)| Item {
            name: name.to_string(),
            kind: item_kind(&item.ty),
        })
        .collect();
    let imports = |prefix: &str| found.imports.iter().any(|i| i.name.starts_with(prefix));
    found.keeps_state = imports("wasi:keyvalue/");
    found.reads_settings = imports("wasi:config/");
    found.exports = ty
        .exports(engine)
        .map(|(name, item)| Item {
            name: name.to_string(),
            kind: item_kind(&item.ty),
        })
        .collect();
    match engine::linker(engine)
        .map_err(|e| format!("{e:#}"))
        .and_then(|linker| {
            engine::prepare(&linker, &component).map_err(|e| explain::error_line(&e))
        }) {
        Ok(_) => found.runs_here = true,
        Err(why) => found.refusal = Some(why),
    }
    found
}

/// What the header says the bytes are (`\0asm`, then a version and layer:
/// 1 0 for a core module, 0x0d 0 1 0 for a component).
fn kind(wasm: &[u8]) -> &'static str {
    match wasm.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => "core module",
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => "component",
        _ => "not WebAssembly",
    }
}

fn item_kind(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) => "func",
        ComponentItem::CoreFunc(_) => "core func",
        ComponentItem::Module(_) => "module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "instance",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    }
}

/// The signature: verified with --trust, else what the repository claims.
async fn signature(args: &InspectArgs, repo: &Path) -> Result<Signature, Failure> {
    if !repo.is_dir() {
        return Ok(Signature::Unsigned);
    }
    if args.trust.is_empty() {
        return Ok(Signature::NotChecked {
            repo: repo.to_owned(),
            version: verify::claimed_version(repo),
        });
    }
    let trust = Trust::load(&args.trust, true, WORLD)
        .map_err(anyhow::Error::from)?
        .without_expiry();
    Ok(
        match verify::verify_file(&args.logic, repo, &trust, None).await {
            Ok(v) => Signature::Verified {
                repo: repo.to_owned(),
                version: v.version,
            },
            Err(e) => Signature::Refused {
                repo: repo.to_owned(),
                reason: explain::error_line(&e),
            },
        },
    )
}

/// The text form: one `name: value` line each, imports and exports indented.
fn text(found: &Inspection) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "file:      {}", found.file.display());
    let _ = writeln!(out, "size:      {} bytes", found.size);
    let _ = writeln!(out, "sha256:    {}", found.sha256);
    let _ = writeln!(out, "kind:      {}", found.kind);
    match &found.refusal {
        None => {
            let _ = writeln!(out, "world:     {} (this host runs it)", found.world);
        }
        Some(why) => {
            let _ = writeln!(out, "world:     this host cannot run it: {why}");
        }
    }
    for (title, items) in [("imports", &found.imports), ("exports", &found.exports)] {
        let _ = writeln!(
            out,
            "{title}:{}",
            if items.is_empty() { " none" } else { "" }
        );
        for item in items {
            let _ = writeln!(out, "  {} ({})", item.name, item.kind);
        }
    }
    let _ = writeln!(
        out,
        "state:     {}",
        if found.keeps_state {
            "durable, through wasi:keyvalue (kept under --state-dir)"
        } else {
            "none (wasi:keyvalue not imported)"
        }
    );
    let _ = writeln!(
        out,
        "settings:  {}",
        if found.reads_settings {
            "its own, through wasi:config (--logic-config KEY=VALUE)"
        } else {
            "none of its own (wasi:config not imported)"
        }
    );
    let sig = match &found.signature {
        Signature::Unsigned => "none (no LOGIC.tuf next to it; sign it with host sign)".to_string(),
        Signature::NotChecked { repo, version } => format!(
            "{}, version {} (not checked: pass --trust KEY.pub)",
            repo.display(),
            version.map_or("unknown".into(), |v| v.to_string())
        ),
        Signature::Verified { repo, version } => format!(
            "{}, version {version}, verified with a trusted key",
            repo.display()
        ),
        Signature::Refused { repo, reason } => format!("{}: refused: {reason}", repo.display()),
    };
    let _ = writeln!(out, "signature: {sig}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_tells_components_from_modules() {
        assert_eq!(kind(b"\0asm\x01\0\0\0"), "core module");
        assert_eq!(kind(b"\0asm\x0d\0\x01\0rest"), "component");
        assert_eq!(kind(b"#!/bin/sh\n"), "not WebAssembly");
        assert_eq!(kind(b""), "not WebAssembly");
    }
}
