//! Start-up benchmark: time from spawning `host run demo.wasm` to CONNACK
//! and to the first PUBACK in its log, against a local mosquitto over mutual TLS, with a cold
//! and a warm precompiled-component cache. Baseline in the same run:
//! `mosquitto_pub -q 1` (a native C client) from spawn to exit, which also
//! covers TLS handshake, CONNECT, PUBLISH and PUBACK.
//!
//! Run: `cargo bench -p device-tests --bench startup` (after scripts/build).

use std::process::Command;
use std::time::{Duration, Instant};

use device_tests::{TestPki, demo_wasm, median, mosquitto_tls_args, time_to_lines};

const RUNS: usize = 11;

/// Spawn to CONNACK ("An MQTT connection is established") and to the first
/// PUBACK.
fn host_to_first_puback(port: u16, pki: &TestPki, cache: &std::path::Path) -> (Duration, Duration) {
    let marks = ["An MQTT connection is established", "PUBACK received"];
    let (times, _) = time_to_lines(&demo_wasm(), port, pki, cache, &marks);
    (times[0], times[1])
}

fn mosquitto_pub(port: u16, pki: &TestPki) -> Duration {
    let start = Instant::now();
    let status = Command::new("mosquitto_pub")
        .args([
            "-h",
            "localhost",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            "bench/topic",
            "-m",
            "Hello World!",
        ])
        .args(mosquitto_tls_args(&pki.ca, &pki.device))
        .status()
        .unwrap();
    assert!(status.success());
    start.elapsed()
}

fn main() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let size = std::fs::metadata(demo_wasm()).unwrap().len();

    let cold: Vec<_> = (0..5)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            host_to_first_puback(broker.port, &pki, dir.path())
        })
        .collect();
    let warm_cache = tempfile::tempdir().unwrap();
    host_to_first_puback(broker.port, &pki, warm_cache.path());
    let warm: Vec<_> = (0..RUNS)
        .map(|_| host_to_first_puback(broker.port, &pki, warm_cache.path()))
        .collect();
    let baseline: Vec<_> = (0..RUNS)
        .map(|_| mosquitto_pub(broker.port, &pki))
        .collect();

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let cold_connack = median(cold.iter().map(|c| c.0).collect());
    let warm_connack = median(warm.iter().map(|w| w.0).collect());
    let cold = median(cold.iter().map(|c| c.1).collect());
    let warm = median(warm.iter().map(|w| w.1).collect());
    let baseline = median(baseline);
    println!(
        "demo.wasm size                          {size} bytes ({:.1} KiB; goal < 128 KiB)",
        size as f64 / 1024.0
    );
    println!(
        "host run -> CONNACK, cold cache         {:>8.1} ms (median of 5)",
        ms(cold_connack)
    );
    println!(
        "host run -> CONNACK, warm cache         {:>8.1} ms (median of {RUNS}; goal < 20 ms)",
        ms(warm_connack)
    );
    println!(
        "host run -> first PUBACK, cold cache    {:>8.1} ms (median of 5)",
        ms(cold)
    );
    println!(
        "host run -> first PUBACK, warm cache    {:>8.1} ms (median of {RUNS})",
        ms(warm)
    );
    println!(
        "baseline mosquitto_pub -q 1, spawn->exit {:>7.1} ms (median of {RUNS})",
        baseline.as_secs_f64() * 1e3
    );
    println!(
        "ratio warm / baseline                   {:>8.2}x",
        warm.as_secs_f64() / baseline.as_secs_f64()
    );
}
