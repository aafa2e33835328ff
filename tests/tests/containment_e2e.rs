//! End to end: logic that misbehaves between import calls, against real
//! mosquitto. Each attack runs on device 0002 of a three-device fleet
//! (`one-ATTACK-NNNN` in tests/guests/adversary): it is stopped by the limit
//! named in its message, the other two devices complete every iteration,
//! and what it cost the host (output) and the broker (connections) stays
//! within the limits.

use std::time::{Duration, Instant};

use device_tests::{TestPki, host_run_adversary, output_within, text};

const LIMIT: Duration = Duration::from_secs(120);

/// What one attack run showed.
struct Contained {
    stdout: String,
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
        host_run_adversary(broker.port, &pki)
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
        let done = device_tests::iterations_completed(&stdout, &format!("one-{attack}-{other}"));
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
        connections,
        broker_log,
    }
}

/// Bytes of the host's output lines about device 0002, and the seconds
/// between its first and its last line (its attack's window).
fn attacker_output(c: &Contained, attack: &str) -> (usize, f64) {
    let tag = format!("[one-{attack}-0002]");
    let lines: Vec<&str> = c.stdout.lines().filter(|l| l.contains(&tag)).collect();
    let time = |l: &str| -> f64 {
        // 2026-11-25T15:45:12.123456Z: seconds within the day.
        let t = &l[11..26];
        let (h, rest) = t.split_once(':').unwrap();
        let (m, s) = rest.split_once(':').unwrap();
        h.parse::<f64>().unwrap() * 3600.0
            + m.parse::<f64>().unwrap() * 60.0
            + s.parse::<f64>().unwrap()
    };
    let window = time(lines.last().unwrap()) - time(lines.first().unwrap());
    (lines.iter().map(|l| l.len() + 1).sum(), window.max(0.001))
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
fn a_hung_iteration_is_stopped_at_the_bound_its_logic_declared() {
    let c = attack("hang-declared", &[]);
    let line = gave_up(&c, "hang-declared");
    assert!(
        line.contains("did not return within 1500 ms")
            && line.contains("the bound the logic declared"),
        "{line}"
    );
    // The operator's timeout wins over what the logic declares.
    let c = attack("hang-declared", &["--iteration-timeout-ms", "1000"]);
    let line = gave_up(&c, "hang-declared");
    assert!(
        line.contains("did not return within 1000 ms")
            && line.contains("--iteration-timeout-ms 1000"),
        "{line}"
    );
}

/// A flood's lines: the burst of 400, then 100 a second, each at most
/// 1 KiB plus the host's prefix; notices at most once a second.
fn assert_flood_contained(c: &Contained, attack: &str) {
    let (bytes, window) = attacker_output(c, attack);
    let most = 1100.0 * (400.0 + 100.0 * window) + 10_000.0;
    assert!(
        (bytes as f64) < most,
        "{bytes} bytes in {window:.1} s, at most {most:.0}"
    );
    assert!(bytes < 1_000_000, "under 1 MB: {bytes}");
    let notices = c.stdout.matches("line(s) dropped").count();
    assert!(
        notices >= 1 && notices <= window.ceil() as usize + 2,
        "{notices} notices in {window:.1} s"
    );
    let line = gave_up(c, attack);
    assert!(
        line.contains("output flood") && line.contains("--log-lines-per-sec"),
        "{line}"
    );
}

#[test]
fn a_log_flood_is_cut_to_the_output_limit_then_stopped() {
    let c = attack("flood-log", &[]);
    assert_flood_contained(&c, "flood-log");
}

#[test]
fn a_stdout_flood_is_cut_to_the_same_limit_then_stopped() {
    let c = attack("flood-stdout", &[]);
    assert!(
        c.stdout.contains("stdout: 0 flood"),
        "stdout lines reach the log, marked"
    );
    assert_flood_contained(&c, "flood-stdout");
}

#[test]
fn a_connect_storm_gets_its_burst_then_is_stopped() {
    let c = attack("storm", &["--connect-burst", "5"]);
    // The burst and perhaps one more, plus the two demo devices' connections.
    let storm = c.connections.saturating_sub(4);
    assert!((5..=7).contains(&storm), "{storm} storm connections");
    assert!(c.stdout.contains("answered rate-limited"), "{}", c.stdout);
    let line = gave_up(&c, "storm");
    assert!(
        line.contains("connect storm") && line.contains("--connect-burst"),
        "{line}"
    );
}
