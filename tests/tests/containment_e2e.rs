//! End to end: logic that misbehaves between import calls, against real
//! mosquitto. Each attack runs on device 0002 of a three-device fleet
//! (`one-ATTACK-NNNN` in tests/guests/adversary): it is stopped by the limit
//! named in its message, the other two devices complete every iteration,
//! and what it cost the host (output) and the broker (connections) stays
//! within the limits.

use std::time::{Duration, Instant};

use device_tests::{TestPki, host_run_component, output_within, root, text};

const LIMIT: Duration = Duration::from_secs(120);

/// What one attack run showed.
struct Contained {
    stdout: String,
    stderr: String,
    seconds: f64,
    /// TLS connections the broker saw in all (the two demo devices make two).
    connections: usize,
    /// What the broker logged.
    broker_log: String,
}

/// Runs `attack` on device 0002 of three, each for two iterations.
fn attack(attack: &str, extra: &[&str]) -> Contained {
    let pki = TestPki::new();
    let broker = pki.broker();
    let started = Instant::now();
    let out = output_within(
        host_run_component(
            &root().join("target/adversary.wasm"),
            broker.port,
            &pki.ca,
            Some(&pki.device),
        )
        .args(["--devices", "3", "--client-id", &format!("one-{attack}")])
        .args(["--iterations", "2", "--publish-count", "2"])
        .args(["--restart-max-attempts", "0"])
        .args(extra),
        LIMIT,
    );
    let seconds = started.elapsed().as_secs_f64();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("1 of 3 devices failed"), "{stderr}");
    for other in ["0001", "0003"] {
        let done = stdout
            .lines()
            .filter(|l| l.contains(&format!("[one-{attack}-{other}] iteration")))
            .filter(|l| l.contains("completed successfully"))
            .count();
        assert_eq!(done, 2, "device {other} kept being served: {stdout}");
    }
    let broker_log = broker.log_text();
    let connections = broker_log.matches("New connection from").count();
    eprintln!(
        "{attack}: run {seconds:.1} s, host output {} bytes, broker connections {connections}",
        stdout.len() + stderr.len()
    );
    Contained {
        stdout,
        stderr,
        seconds,
        connections,
        broker_log,
    }
}

/// The line saying why device 0002 gave up.
fn gave_up(c: &Contained, attack: &str) -> String {
    c.stdout
        .lines()
        .find(|l| l.contains(&format!("[one-{attack}-0002] gave up")))
        .unwrap_or_else(|| panic!("no gave-up line: {}", c.stdout))
        .to_string()
}

#[test]
fn computing_between_import_calls_is_stopped_by_the_cpu_budget() {
    let c = attack("spin-with-imports", &["--cpu-budget-ms", "500"]);
    let line = gave_up(&c, "spin-with-imports");
    assert!(
        line.contains("CPU budget") && line.contains("--cpu-budget-ms 500"),
        "{line}"
    );
}

#[test]
fn a_hung_iteration_is_stopped_by_the_watchdog_and_its_connection_closed() {
    let c = attack("hang", &["--iteration-timeout-ms", "1500"]);
    let line = gave_up(&c, "hang");
    assert!(
        line.contains("iteration timeout") && line.contains("--iteration-timeout-ms 1500"),
        "{line}"
    );
    assert!(c.stdout.contains("session open; hanging"), "{}", c.stdout);
    let session_end = c.broker_log.lines().find(|l| {
        l.contains("Client hang ")
            && (l.contains("disconnected") || l.contains("closed its connection"))
    });
    assert!(
        session_end.is_some(),
        "the broker saw the hung session end: {}",
        c.broker_log
    );
}

#[test]
fn a_log_flood_is_cut_to_the_output_limit() {
    let c = attack("flood-log", &["--iteration-timeout-ms", "2000"]);
    assert!(
        c.stdout
            .contains("guest output line(s) dropped (limit --log-lines-per-sec 100"),
        "{}",
        &c.stdout[c.stdout.len().saturating_sub(2000)..]
    );
    // The burst of 400 lines and 100 a second after it, about 150 bytes
    // each with the host's prefix; far below 1 MB a second.
    let bytes = (c.stdout.len() + c.stderr.len()) as f64;
    assert!(
        bytes < 150.0 * (400.0 + 100.0 * c.seconds) + 100_000.0,
        "{bytes} bytes in {:.1} s",
        c.seconds
    );
    assert!(gave_up(&c, "flood-log").contains("iteration timeout"));
    // Notices come at most once a second.
    let notices = c.stdout.matches("line(s) dropped").count();
    assert!(
        notices <= c.seconds.ceil() as usize + 2,
        "{notices} notices in {:.1} s",
        c.seconds
    );
}

#[test]
fn a_stdout_flood_is_cut_to_the_same_limit() {
    let c = attack("flood-stdout", &["--iteration-timeout-ms", "2000"]);
    assert!(
        c.stdout.contains("stdout: 0 flood"),
        "stdout lines reach the log, marked"
    );
    assert!(
        c.stdout.contains("guest output line(s) dropped"),
        "the limit applies to stdout"
    );
    let bytes = (c.stdout.len() + c.stderr.len()) as f64;
    assert!(
        bytes < 150.0 * (400.0 + 100.0 * c.seconds) + 100_000.0,
        "{bytes} bytes in {:.1} s",
        c.seconds
    );
}

#[test]
fn a_connect_storm_is_held_to_the_connect_rate() {
    let c = attack(
        "storm",
        &["--iteration-timeout-ms", "3000", "--connect-burst", "5"],
    );
    // The burst, then one a second; plus the two demo devices' connections.
    let storm = c.connections.saturating_sub(4);
    assert!(
        storm <= 5 + c.seconds.ceil() as usize + 1,
        "{storm} storm connections in {:.1} s",
        c.seconds
    );
    assert!(storm >= 5, "the burst was allowed: {storm}");
    assert!(c.stdout.contains("answered rate-limited"), "{}", c.stdout);
}
