//! Signed updates over the broker, measured against a local mosquitto:
//! - the update's size on the wire (component and metadata, with chunk
//!   headers) against the component's size, at the default payload limit
//!   and at 16 KiB;
//! - time from `host rollout` (one canary, promoted after one iteration)
//!   to every device of a fleet running the new logic, at 20 and 1,000
//!   devices (`ROLLOUT_SIZES=20,1000`);
//! - the host's memory per device for taking updates: the fleet's RSS with
//!   `--trust` (update channel, one subscription and one update task per
//!   device) against without, both after every device's first iteration.
//!
//! 1,000 devices need an open-file limit above 2,000 (scripts/bench sets
//! one). Run: `cargo bench -p device-tests --bench rollout`.

use std::path::Path;
use std::time::{Duration, Instant};

use device_tests::{Running, TestPki, counter_wasm, demo_wasm, host_run_component};
use host::update::{chunks, wire};

/// Resident memory of process `pid`, KiB (0 once it has exited).
fn rss_kib_of(pid: u32) -> u64 {
    host::fleet::stats::rss_of(&pid.to_string()).unwrap_or(0) / 1024
}

fn host(args: &[&str], dir: &Path) -> std::process::Output {
    let out = device_tests::host()
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A fleet of `n` devices on the signed demo; with `trust`, taking updates.
fn fleet(
    pki: &TestPki,
    port: u16,
    dir: &Path,
    n: usize,
    prefix: &str,
    trust: bool,
) -> (Running, u64) {
    let mut cmd = host_run_component(&dir.join("device.wasm"), port, &pki.ca, Some(&pki.device));
    cmd.args(["--devices", &n.to_string(), "--client-id", prefix])
        .args([
            "--publish-count",
            "1",
            "--publish-delay-ms",
            "0",
            "--iteration-delay-ms",
            "500",
        ])
        .args(["--ramp-per-sec", "500"]);
    if trust {
        cmd.arg("--trust").arg(dir.join("publisher.key.pub"));
    }
    let mut running = Running::spawn(&mut cmd);
    running.wait_for(
        &format!("[{prefix}-{n:04}] iteration 1 completed"),
        Duration::from_secs(300),
    );
    let rss = rss_kib_of(running.child.id());
    (running, rss)
}

fn main() {
    let sizes: Vec<usize> = std::env::var("ROLLOUT_SIZES")
        .unwrap_or_else(|_| "20,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let pki = TestPki::new();
    let broker = pki.broker();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    host(&["keygen", "--out", "publisher.key"], d);
    std::fs::copy(demo_wasm(), d.join("device.wasm")).unwrap();
    std::fs::copy(counter_wasm(), d.join("counter.wasm")).unwrap();
    host(
        &[
            "sign",
            "device.wasm",
            "--key",
            "publisher.key",
            "--version",
            "1",
        ],
        d,
    );
    host(
        &[
            "sign",
            "counter.wasm",
            "--key",
            "publisher.key",
            "--version",
            "2",
        ],
        d,
    );

    println!("payload limit | component  | on the wire per device | chunks | wire / component");
    for limit in [chunks::PAYLOAD_LIMIT, 16 * 1024] {
        let repo = wire::read(&d.join("counter.wasm.tuf"), wire::TARGETS_TOPIC, limit).unwrap();
        println!(
            "{limit:>10} B | {:>8} B | {:>20} B | {:>6} | {:.3}x",
            repo.component_bytes,
            repo.wire_bytes(),
            repo.targets.len() + repo.metadata.len(),
            repo.wire_bytes() as f64 / repo.component_bytes as f64
        );
    }
    println!();
    println!(
        "devices | rollout to all running | RSS with updates | RSS without | updates per device"
    );
    for (run, n) in sizes.into_iter().enumerate() {
        let (mut plain, rss_plain) = fleet(&pki, broker.port, d, n, &format!("plain{run}"), false);
        let _ = plain.child.kill();
        let _ = plain.child.wait();
        let prefix = format!("fleet{run}");
        let (mut updating, rss_trust) = fleet(&pki, broker.port, d, n, &prefix, true);
        let started = Instant::now();
        let out = device_tests::host()
            .args([
                "rollout",
                "counter.wasm",
                "--key",
                "publisher.key",
                "--version",
                &(2 + run as u64).to_string(),
            ])
            .args([
                "--fleet",
                &prefix,
                "--devices",
                &n.to_string(),
                "--canary",
                "1",
                "--promote-after",
                "1",
            ])
            .args([
                "--broker",
                &format!("mqtts://localhost:{}", broker.port),
                "--ca",
            ])
            .arg(&pki.ca)
            .arg("--cert")
            .arg(&pki.subscriber.cert)
            .arg("--client-key")
            .arg(&pki.subscriber.key)
            .args([
                "--repo",
                &format!("rollout-{run}.tuf"),
                "--timeout-secs",
                "600",
            ])
            .current_dir(d)
            .output()
            .unwrap();
        let secs = started.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = updating.child.kill();
        let _ = updating.child.wait();
        println!(
            "{n:>7} | {secs:>20.2} s | {:>12} MiB | {:>7} MiB | {:>12.1} KiB",
            rss_trust >> 10,
            rss_plain >> 10,
            (rss_trust as f64 - rss_plain as f64) / n as f64
        );
    }
}
