//! Fleet benchmark: host memory per sandboxed device and the mTLS ramp-up.
//! For 100, 1,000 and 10,000 devices (`FLEET_SIZES=100,1000` to change),
//! runs `host run demo.wasm --devices N` against its embedded mosquitto,
//! keeps every device connected through one long iteration, and records the
//! host's peak RSS and how fast the devices got their MQTT connections.
//! Prints a table and the RSS slope per device beyond the shared engine.
//!
//! `FLEET_LOGIC=FILE` runs another logic instead of demo.wasm.
//!
//! Run: `cargo bench -p device-tests --bench fleet` (after scripts/build;
//! 10,000 devices need an open-file limit above 10,000 for the host and the
//! broker: `ulimit -n 20000`).

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use device_tests::{PeakRss, demo_wasm};

/// The logic every device runs: demo.wasm, or `FLEET_LOGIC` (e.g. an
/// earlier build, to compare in one run).
fn logic() -> std::path::PathBuf {
    std::env::var_os("FLEET_LOGIC").map_or_else(demo_wasm, Into::into)
}

/// Devices started per second (`FLEET_RAMP` to change).
fn ramp_per_sec() -> u64 {
    std::env::var("FLEET_RAMP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

struct Run {
    devices: u64,
    peak_rss: u64,
    connect_secs: f64,
    iterations_ok: bool,
}

fn run(devices: u64) -> Run {
    // Long enough that the first device is still connected when the last
    // one connects: the peak RSS is then the whole fleet's.
    let ramp_ms = devices * 1000 / ramp_per_sec();
    let delay_ms = (ramp_ms / 5 + 1000).to_string();
    let mut child = device_tests::host()
        .arg("run")
        .arg(logic())
        .args([
            "--devices",
            &devices.to_string(),
            "--iterations",
            "1",
            "--client-id",
            "bench",
        ])
        .args(["--publish-count", "5", "--publish-delay-ms", &delay_ms])
        .args(["--ramp-per-sec", &ramp_per_sec().to_string()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let peak = PeakRss::watch(child.id(), Duration::from_millis(100));
    let start = Instant::now();
    let mut established = 0u64;
    let mut connect_secs = 0.0;
    let mut completed = false;
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        if line.contains("An MQTT connection is established") {
            established += 1;
            if established == devices {
                connect_secs = start.elapsed().as_secs_f64();
            }
        }
        completed |= line.contains(&format!("all {devices} devices completed their iterations"));
    }
    let ok = child.wait().unwrap().success();
    Run {
        devices,
        peak_rss: peak.finish(),
        connect_secs,
        iterations_ok: ok && completed,
    }
}

fn main() {
    let sizes: Vec<u64> = std::env::var("FLEET_SIZES")
        .unwrap_or_else(|_| "100,1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runs: Vec<Run> = sizes.iter().map(|&n| run(n)).collect();
    println!(
        "devices | all iterations ok | peak host RSS | RSS per device | time to all connected | connect rate"
    );
    for r in &runs {
        println!(
            "{:>7} | {:>17} | {:>9.1} MiB | {:>10.1} KiB | {:>17.2} s | {:>7.0} /s",
            r.devices,
            r.iterations_ok,
            r.peak_rss as f64 / 1048576.0,
            r.peak_rss as f64 / 1024.0 / r.devices as f64,
            r.connect_secs,
            r.devices as f64 / r.connect_secs.max(1e-9)
        );
    }
    if let (Some(first), Some(last)) = (runs.first(), runs.last())
        && last.devices > first.devices
    {
        let slope =
            (last.peak_rss as f64 - first.peak_rss as f64) / (last.devices - first.devices) as f64;
        println!(
            "RSS slope {} -> {} devices: {:.1} KiB per device beyond the shared engine (goal < 256 KiB); ramp limited to {}/s",
            first.devices,
            last.devices,
            slope / 1024.0,
            ramp_per_sec()
        );
    }
}
