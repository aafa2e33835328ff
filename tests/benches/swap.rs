//! Hot-swap benchmark, medians over repeated runs:
//! - swap latency: from the replacement of the watched file (an atomic
//!   rename onto it, or a copy over it in place) to the new logic's first
//!   publish in the host's log, with compilation (`--no-cache`) and with a
//!   cache hit (swapping back to a known component); baseline in the same
//!   run: restarting the host instead (spawn to first publish, warm cache).
//!   Iterations run back to back with the sandbox's connect throttle and
//!   output limit lifted, so that the latency is the swap's, not theirs;
//! - compile time of demo.wasm vs loading it from the precompiled cache;
//! - start time with a warm cache: spawn to CONNACK.
//!
//! Run: `cargo bench -p device-tests --bench swap` (after scripts/build).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use device_tests::{
    Running, TestPki, counter_wasm, demo_wasm, host_run, host_run_component, median,
    replace_atomically,
};

const ROUNDS: usize = 9;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// How the watched file is replaced.
#[derive(Clone, Copy)]
enum Replace {
    /// Written beside it and renamed onto it.
    Rename,
    /// Truncated and written in place, then closed.
    Copy,
}

/// Swap latencies for `rounds` swaps alternating counter and demo.
fn swap_latencies(pki: &TestPki, port: u16, cache: Option<&Path>, how: Replace) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("device.wasm");
    std::fs::copy(demo_wasm(), &device).unwrap();
    let mut cmd = host_run_component(&device, port, &pki.ca, Some(&pki.device));
    cmd.args([
        "--watch",
        "--iterations",
        "100000",
        "--publish-count",
        "1",
        "--publish-delay-ms",
        "0",
    ]);
    cmd.args(["--iteration-delay-ms", "0", "--connect-interval-ms", "0"]);
    cmd.args(["--log-lines-per-sec", "1000000", "--log-burst", "1000000"]);
    match cache {
        Some(c) => cmd.arg("--cache-dir").arg(c),
        None => cmd.arg("--no-cache"),
    };
    let mut host = Running::spawn(&mut cmd);
    host.wait_for("watching", Duration::from_secs(30));
    let wasms = [
        std::fs::read(counter_wasm()).unwrap(),
        std::fs::read(demo_wasm()).unwrap(),
    ];
    let mut out = Vec::new();
    for round in 0..ROUNDS {
        host.seen.clear();
        let start = Instant::now();
        match how {
            Replace::Rename => replace_atomically(&device, &wasms[round % 2]),
            Replace::Copy => std::fs::write(&device, &wasms[round % 2]).unwrap(),
        }
        host.wait_for("takes over from", Duration::from_secs(30));
        host.seen.clear();
        host.wait_for("Publish to the MQTT topic", Duration::from_secs(30));
        out.push(start.elapsed());
    }
    let _ = host.child.kill();
    out
}

fn restart_to_first_publish(pki: &TestPki, port: u16, cache: &Path) -> Duration {
    let start = Instant::now();
    let mut host = Running::spawn(
        host_run(port, &pki.ca, Some(&pki.device))
            .args(["--iterations", "1", "--publish-count", "1", "--cache-dir"])
            .arg(cache),
    );
    host.wait_for("Publish to the MQTT topic", Duration::from_secs(30));
    let elapsed = start.elapsed();
    let (ok, _, err) = host.finish(Duration::from_secs(30));
    assert!(ok, "{err}");
    elapsed
}

fn start_to_connack(pki: &TestPki, port: u16, cache: &Path) -> Duration {
    let start = Instant::now();
    let mut host = Running::spawn(
        host_run(port, &pki.ca, Some(&pki.device))
            .args(["--iterations", "1", "--publish-count", "1", "--cache-dir"])
            .arg(cache)
            .stderr(Stdio::null()),
    );
    host.wait_for("An MQTT connection is established", Duration::from_secs(30));
    let elapsed = start.elapsed();
    let _ = host.finish(Duration::from_secs(30));
    elapsed
}

fn main() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let cache = tempfile::tempdir().unwrap();

    let engine = host::sandbox::engine::engine(None).unwrap();
    let wasm = std::fs::read(demo_wasm()).unwrap();
    let compile: Vec<_> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            host::sandbox::cache::load_bytes(&engine, &wasm, None).unwrap();
            t.elapsed()
        })
        .collect();
    host::sandbox::cache::load_bytes(&engine, &wasm, Some(cache.path())).unwrap();
    let cached: Vec<_> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            let l = host::sandbox::cache::load_bytes(&engine, &wasm, Some(cache.path())).unwrap();
            assert_eq!(l.source, host::sandbox::cache::Source::CacheHit);
            t.elapsed()
        })
        .collect();

    let swap_compiled = swap_latencies(&pki, broker.port, None, Replace::Rename);
    let swap_cached = swap_latencies(&pki, broker.port, Some(cache.path()), Replace::Rename);
    let copy_cached = swap_latencies(&pki, broker.port, Some(cache.path()), Replace::Copy);
    restart_to_first_publish(&pki, broker.port, cache.path());
    let restart: Vec<_> = (0..ROUNDS)
        .map(|_| restart_to_first_publish(&pki, broker.port, cache.path()))
        .collect();
    let warm_start: Vec<_> = (0..ROUNDS)
        .map(|_| start_to_connack(&pki, broker.port, cache.path()))
        .collect();

    let (compile, cached) = (median(compile), median(cached));
    let (swap_compiled, swap_cached, copy_cached, restart) = (
        median(swap_compiled),
        median(swap_cached),
        median(copy_cached),
        median(restart),
    );
    println!("medians of {ROUNDS} runs");
    println!(
        "compile demo.wasm (Cranelift)                 {:>8.1} ms",
        ms(compile)
    );
    println!(
        "load demo.wasm from the precompiled cache     {:>8.1} ms  ({:.0}x faster than compiling)",
        ms(cached),
        compile.as_secs_f64() / cached.as_secs_f64()
    );
    println!(
        "hot swap, rename -> first publish, compiling  {:>8.1} ms",
        ms(swap_compiled)
    );
    println!(
        "hot swap, rename -> first publish, cache hit  {:>8.1} ms",
        ms(swap_cached)
    );
    println!(
        "hot swap, copy over -> first publish, cache hit {:>6.1} ms",
        ms(copy_cached)
    );
    println!(
        "baseline: restart host -> first publish       {:>8.1} ms  (swap with cache hit / restart: rename {:.2}x, copy {:.2}x)",
        ms(restart),
        swap_cached.as_secs_f64() / restart.as_secs_f64(),
        copy_cached.as_secs_f64() / restart.as_secs_f64()
    );
    println!(
        "start with a warm cache, spawn -> CONNACK     {:>8.1} ms",
        ms(median(warm_start))
    );
}
