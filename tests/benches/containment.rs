//! What each attack on the sandbox costs before it is stopped, what each
//! stop signal takes, and whether a flooding device slows its neighbours,
//! all against local mosquitto brokers this benchmark starts:
//! - per attack (tests/guests/adversary, one device, default limits but an
//!   iteration timeout of 10 s instead of the demo's 640 s): time until the
//!   host gives up on it (spinning: the CPU budget; hanging: the iteration
//!   timeout; flooding and storming: the flood and storm limits), the host's
//!   output in bytes and bytes a second, and the TLS connections the broker
//!   accepted;
//! - per signal: SIGTERM and SIGINT mid-iteration to exit, SIGKILL to the
//!   embedded broker's port closing;
//! - a fleet of 20 demo devices, echo round trip p50/p99 with device 0002
//!   idle and with it flooding its log until the flood limit stops it (no
//!   restart), median of 3 runs each.
//!
//! Run: `cargo bench -p device-tests --bench containment` (after scripts/build).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use device_tests::{Running, TestPki, demo_wasm, host_run_adversary, median, output_within};

fn attack(name: &str, extra: &[&str]) -> (f64, usize, usize) {
    let pki = TestPki::new();
    let broker = pki.broker();
    let started = Instant::now();
    let out = output_within(
        host_run_adversary(broker.port, &pki)
            .args([
                "--client-id",
                name,
                "--iterations",
                "1",
                "--restart-max-attempts",
                "0",
            ])
            .args(extra),
        Duration::from_secs(300),
    );
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let connections = broker.log_text().matches("New connection from").count();
    (secs, out.stdout.len() + out.stderr.len(), connections)
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status();
    assert!(status.is_ok_and(|s| s.success()));
}

fn embedded_host(tmp: &std::path::Path) -> (Running, u16) {
    let mut cmd = device_tests::host();
    cmd.arg("run")
        .arg(demo_wasm())
        .args(["--publish-delay-ms", "300"])
        .env("TMPDIR", tmp)
        .env("RUST_LOG", "info");
    let mut host = Running::spawn(&mut cmd);
    let line = host.wait_for(
        "started an embedded mosquitto on 127.0.0.1:",
        Duration::from_secs(30),
    );
    let at = line.find("127.0.0.1:").unwrap() + "127.0.0.1:".len();
    let port = line[at..].split(' ').next().unwrap().parse().unwrap();
    host.wait_for("Publish to the MQTT topic", Duration::from_secs(30));
    (host, port)
}

/// Signal `name` mid-iteration: seconds until the host exited (TERM, INT)
/// or the embedded broker's port closed (KILL).
fn stop(name: &str) -> f64 {
    let tmp = tempfile::tempdir().unwrap();
    let (mut host, port) = embedded_host(tmp.path());
    let at = Instant::now();
    signal(host.child.id(), name);
    if name == "KILL" {
        let _ = host.child.wait();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            assert!(
                at.elapsed() < Duration::from_secs(10),
                "the broker outlived the host"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    } else {
        let status = host.child.wait().unwrap();
        assert!(status.success());
    }
    let secs = at.elapsed().as_secs_f64();
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "files left"
    );
    secs
}

/// Echo round trip p50 and p99 (ms) of a 20-device fleet whose device 0002
/// runs `neighbour`.
fn fleet(neighbour: &str) -> (f64, f64) {
    let pki = TestPki::new();
    let broker = pki.broker();
    let mut cmd = host_run_adversary(broker.port, &pki);
    cmd.args([
        "--devices",
        "20",
        "--client-id",
        &format!("one-{neighbour}"),
    ])
    .args([
        "--iterations",
        "3",
        "--publish-count",
        "5",
        "--publish-delay-ms",
        "0",
    ])
    .args(["--iteration-delay-ms", "0", "--restart-max-attempts", "0"])
    .args(["--cpu-budget-ms", "0", "--iteration-timeout-ms", "4000"])
    .stderr(Stdio::null());
    let out = output_within(&mut cmd, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .rfind(|l| l.contains("fleet: "))
        .expect("a summary");
    let field = |key: &str| -> f64 {
        let at = summary
            .find(key)
            .unwrap_or_else(|| panic!("{key} in {summary}"))
            + key.len();
        summary[at..].split(' ').next().unwrap().parse().unwrap()
    };
    (field("p50 "), field("p99 "))
}

fn main() {
    println!("attack              | stopped after | host output          | broker connections");
    for name in [
        "spin-with-imports",
        "hang",
        "flood-log",
        "flood-stdout",
        "storm",
    ] {
        let (secs, bytes, connections) = attack(name, &["--iteration-timeout-ms", "10000"]);
        println!(
            "{name:<19} | {secs:>11.2} s | {bytes:>9} B {:>6.1} KB/s | {connections:>5}",
            bytes as f64 / secs / 1000.0
        );
    }
    println!();
    println!("signal  | mid-iteration to exit (TERM, INT) or broker gone (KILL)");
    for name in ["TERM", "INT", "KILL"] {
        let secs = median((0..3).map(|_| stop(name)).collect());
        println!("SIG{name:<4} | {:>8.1} ms", secs * 1000.0);
    }
    println!();
    let runs = |n: &str| -> (f64, f64) {
        let r: Vec<(f64, f64)> = (0..3).map(|_| fleet(n)).collect();
        (
            median(r.iter().map(|x| x.0).collect()),
            median(r.iter().map(|x| x.1).collect()),
        )
    };
    let (quiet50, quiet99) = runs("none");
    let (flood50, flood99) = runs("flood-log");
    println!("20-device fleet, echo round trip | p50 ms | p99 ms");
    println!("device 0002 idle                 | {quiet50:>6.2} | {quiet99:>6.2}");
    println!("device 0002 flooding its log     | {flood50:>6.2} | {flood99:>6.2}");
    println!("flooding / idle p99: {:.2}x", flood99 / quiet99);
}
