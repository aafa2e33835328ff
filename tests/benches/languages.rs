//! The Rust demo and the Python telemetry logic side by side, the Rust demo
//! being the baseline: component size, compile time (empty precompiled
//! cache), cached start (spawning `host run` to the first PUBACK, warm
//! cache, against a local mosquitto over mutual TLS), and memory per fleet
//! device (peak host RSS of a fleet of 21 minus a fleet of 1, over 20).
//!
//! Run: `cargo bench -p device-tests --bench languages` (after scripts/build).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use device_tests::{PeakRss, TestPki, demo_wasm, median, telemetry_py_wasm, time_to_lines};

const WARM_RUNS: usize = 7;
const FLEET: u64 = 21;

/// Spawn to the first PUBACK, and the load line's compile or cache time.
fn start(logic: &Path, port: u16, pki: &TestPki, cache: &Path) -> (Duration, u64) {
    let (times, lines) = time_to_lines(logic, port, pki, cache, &["PUBACK received"]);
    let load_ms = lines
        .iter()
        .find(|l| l.contains(" INFO loaded "))
        .and_then(|l| l.rsplit(" in ").next())
        .and_then(|t| t.trim_end_matches(" ms").parse().ok())
        .expect("no load line in the log");
    (times[0], load_ms)
}

/// Peak RSS of `host run --devices N` (embedded broker), every device
/// connected at once for a while.
fn fleet_peak(logic: &Path, devices: u64, cache: &Path) -> u64 {
    let mut child = device_tests::host()
        .arg("run")
        .arg(logic)
        .args(["--devices", &devices.to_string(), "--iterations", "2"])
        .args(["--iteration-delay-ms", "1500", "--publish-count", "2"])
        .args(["--client-id", "lang"])
        .arg("--cache-dir")
        .arg(cache)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let peak = PeakRss::watch(child.id(), Duration::from_millis(50));
    assert!(child.wait().unwrap().success(), "fleet of {devices}");
    peak.finish()
}

struct Figures {
    size: u64,
    compile_ms: u64,
    warm_ms: f64,
    per_device_kib: f64,
}

fn measure(logic: &Path, port: u16, pki: &TestPki) -> Figures {
    let size = std::fs::metadata(logic).unwrap().len();
    let compile_ms = median(
        (0..3)
            .map(|_| {
                let empty = tempfile::tempdir().unwrap();
                start(logic, port, pki, empty.path()).1
            })
            .collect(),
    );
    let cache = tempfile::tempdir().unwrap();
    start(logic, port, pki, cache.path());
    let warm = median(
        (0..WARM_RUNS)
            .map(|_| start(logic, port, pki, cache.path()).0)
            .collect(),
    );
    // Fleet mode compiles for its pooling engine: warm its cache entry too.
    fleet_peak(logic, 1, cache.path());
    let one = fleet_peak(logic, 1, cache.path());
    let many = fleet_peak(logic, FLEET, cache.path());
    Figures {
        size,
        compile_ms,
        warm_ms: warm.as_secs_f64() * 1e3,
        per_device_kib: (many as f64 - one as f64) / (FLEET - 1) as f64 / 1024.0,
    }
}

fn main() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let rust = measure(&demo_wasm(), broker.port, &pki);
    let python = measure(&telemetry_py_wasm(), broker.port, &pki);
    println!(
        "figure                              | Rust demo    | Python telemetry | Python / Rust"
    );
    println!(
        "component size                      | {:>9.1} KiB | {:>12.1} KiB | {:>8.1}x",
        rust.size as f64 / 1024.0,
        python.size as f64 / 1024.0,
        python.size as f64 / rust.size as f64
    );
    println!(
        "compile, empty cache (median of 3)  | {:>10} ms | {:>13} ms | {:>8.1}x",
        rust.compile_ms,
        python.compile_ms,
        python.compile_ms as f64 / rust.compile_ms.max(1) as f64
    );
    println!(
        "host run -> first PUBACK, warm cache | {:>9.1} ms | {:>13.1} ms | {:>8.1}x",
        rust.warm_ms,
        python.warm_ms,
        python.warm_ms / rust.warm_ms
    );
    println!(
        "host RSS per fleet device ({FLEET} vs 1) | {:>9.0} KiB | {:>12.0} KiB | {:>8.1}x",
        rust.per_device_kib,
        python.per_device_kib,
        python.per_device_kib / rust.per_device_kib
    );
}
