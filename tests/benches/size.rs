//! Where demo.wasm's bytes go: the component's parts (its core modules,
//! custom sections, the rest: types, imports, canonical glue), the largest
//! core module's sections, and its biggest functions by name (from a build
//! of the same component with symbol names kept, in target/size), against
//! the same component built with the prebuilt standard library (plain
//! `cargo build --profile guest`, in target/size-prebuilt-std) as baseline.
//!
//! Run: `cargo bench -p device-tests --bench size` (after scripts/build).

use std::collections::BTreeMap;
use std::ops::Range;
use std::process::Command;

use device_tests::{demo_wasm, root};
use wasmparser::{KnownCustom, Name, Parser, Payload, TypeRef};

/// Byte ranges of the top-level parts: core modules and custom sections.
fn parts(wasm: &[u8]) -> (Vec<Range<usize>>, Vec<(String, usize)>) {
    let (mut modules, mut custom) = (Vec::new(), Vec::new());
    let mut depth = 0;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.expect("valid wasm") {
            Payload::ModuleSection {
                unchecked_range, ..
            } => {
                if depth == 0 {
                    modules.push(unchecked_range);
                }
                depth += 1;
            }
            Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth -= 1,
            Payload::CustomSection(c) if depth == 0 => {
                custom.push((c.name().to_string(), c.range().len()));
            }
            _ => {}
        }
    }
    (modules, custom)
}

/// The sections of a core module, bytes by name, and each function's size
/// by name (when the module has a name section).
fn module(wasm: &[u8]) -> (BTreeMap<&'static str, usize>, Vec<(usize, String)>) {
    let mut sections = BTreeMap::new();
    let mut imported = 0u32;
    let mut sizes = Vec::new();
    let mut names = BTreeMap::new();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.expect("valid module") {
            Payload::ImportSection(r) => {
                *sections.entry("import").or_default() += r.range().len();
                for import in r {
                    if matches!(import.expect("import").ty, TypeRef::Func(_)) {
                        imported += 1;
                    }
                }
            }
            Payload::CodeSectionStart { range, .. } => {
                *sections.entry("code").or_default() += range.len();
            }
            Payload::CodeSectionEntry(body) => sizes.push(body.range().len()),
            Payload::DataSection(r) => *sections.entry("data").or_default() += r.range().len(),
            Payload::TypeSection(r) => *sections.entry("type").or_default() += r.range().len(),
            Payload::FunctionSection(r) => {
                *sections.entry("function").or_default() += r.range().len()
            }
            Payload::ExportSection(r) => *sections.entry("export").or_default() += r.range().len(),
            Payload::ElementSection(r) => {
                *sections.entry("element").or_default() += r.range().len()
            }
            Payload::GlobalSection(r) => *sections.entry("global").or_default() += r.range().len(),
            Payload::CustomSection(c) => {
                *sections.entry("custom").or_default() += c.range().len();
                if let KnownCustom::Name(reader) = c.as_known() {
                    for name in reader.into_iter().flatten() {
                        if let Name::Function(map) = name {
                            for n in map.into_iter().flatten() {
                                names.insert(n.index, n.name.to_string());
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let functions = sizes
        .into_iter()
        .enumerate()
        .map(|(i, size)| {
            let index = imported + i as u32;
            (
                size,
                names
                    .get(&index)
                    .cloned()
                    .unwrap_or_else(|| format!("function {index}")),
            )
        })
        .collect();
    (sections, functions)
}

/// The demo built again with symbol names (same profile otherwise).
fn named_build() -> Option<Vec<u8>> {
    let status = Command::new(root().join("scripts/build-demo"))
        .arg("--keep-names")
        .status()
        .ok()?;
    status.success().then_some(())?;
    std::fs::read(root().join("target/size/wasm32-wasip2/guest/demo_component.wasm")).ok()
}

/// The demo built the plain way, with the prebuilt standard library.
fn prebuilt_std_build() -> Option<usize> {
    let status = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["build", "-q", "--locked", "-p", "demo-component"])
        .args(["--target", "wasm32-wasip2", "--profile", "guest"])
        .args(["--target-dir", "target/size-prebuilt-std"])
        .status()
        .ok()?;
    status.success().then_some(())?;
    let path = root().join("target/size-prebuilt-std/wasm32-wasip2/guest/demo_component.wasm");
    Some(std::fs::metadata(path).ok()?.len() as usize)
}

/// A symbol name made readable: demangled, without its hash.
fn short(name: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(name))
        .chars()
        .take(100)
        .collect()
}

fn main() {
    let wasm = std::fs::read(demo_wasm()).unwrap();
    let (modules, custom) = parts(&wasm);
    let in_modules: usize = modules.iter().map(|r| r.len()).sum();
    let in_custom: usize = custom.iter().map(|c| c.1).sum();
    println!(
        "demo.wasm: {} bytes ({:.1} KiB; goal <= 64 KiB)",
        wasm.len(),
        wasm.len() as f64 / 1024.0
    );
    let plain = prebuilt_std_build().expect("the baseline build with the prebuilt std failed");
    println!(
        "  with the prebuilt std instead: {plain} bytes ({:.1} KiB); scripts/build-demo's build is {:.2}x of it",
        plain as f64 / 1024.0,
        wasm.len() as f64 / plain as f64
    );
    println!(
        "  core modules ({}):          {in_modules:>7}",
        modules.len()
    );
    for (name, size) in &custom {
        println!("  custom section {name:<14} {size:>7}");
    }
    println!(
        "  types, imports, canonical glue: {:>7}",
        wasm.len() - in_modules - in_custom
    );
    let largest = modules.iter().max_by_key(|r| r.len()).unwrap().clone();
    let (sections, _) = module(&wasm[largest.clone()]);
    println!("largest core module: {} bytes", largest.len());
    for (name, size) in &sections {
        println!("  {name:<8} {size:>7}");
    }
    let named = named_build().expect("`scripts/build-demo --keep-names` failed: no function sizes");
    let (named_modules, _) = parts(&named);
    let largest = named_modules
        .iter()
        .max_by_key(|r| r.len())
        .unwrap()
        .clone();
    let (_, mut functions) = module(&named[largest]);
    functions.sort_unstable_by_key(|f| std::cmp::Reverse(f.0));
    let total: usize = functions.iter().map(|f| f.0).sum();
    println!(
        "top functions of {} ({total} bytes of code):",
        functions.len()
    );
    for (size, name) in functions.iter().take(20) {
        println!(
            "  {size:>6} {:>5.1}%  {}",
            *size as f64 * 100.0 / total as f64,
            short(name)
        );
    }
    let group = |needle: &[&str]| -> usize {
        functions
            .iter()
            .filter(|(_, n)| needle.iter().any(|k| n.contains(k)))
            .map(|f| f.0)
            .sum()
    };
    println!("by origin (code bytes; a function can match two groups):");
    for (what, keys) in [
        (
            "allocator (talc; wasi-libc's dlmalloc if linked)",
            &[
                "talc",
                "Talc",
                "malloc",
                "dlfree",
                "realloc",
                "dispose_chunk",
                "prepend_alloc",
                "memalign",
            ][..],
        ),
        (
            "formatting (core::fmt)",
            &["3fmt", "fmt..", "Formatter"][..],
        ),
        (
            "panics and backtraces (std)",
            &["panic", "backtrace", "Backtrace", "_fail"][..],
        ),
        (
            "MQTT packets (mqttbytes, mqtt_core::packets)",
            &["mqttbytes", "packets"][..],
        ),
        (
            "ChaCha20 (rand_chacha via random_u32)",
            &["random_u32", "chacha", "ChaCha"][..],
        ),
    ] {
        println!("  {what:<46} {:>6}", group(keys));
    }
}
