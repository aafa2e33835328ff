//! End to end: test-only adversarial logic (tests/guests/adversary) against
//! the sandbox, with a real mosquitto. Each attack is contained, the message
//! names the limit, and the host ends in an orderly way with the exit code
//! that says what happened.

use std::time::Duration;

use device_tests::{TestPki, host_run_adversary, output_within, text};

const LIMIT: Duration = Duration::from_secs(60);

/// Runs one attack for one iteration, one restart; returns (exit code, stdout, last stderr line).
fn attack(name: &str, extra: &[&str]) -> (i32, String, String) {
    let pki = TestPki::new();
    let broker = pki.broker();
    let out = output_within(
        host_run_adversary(broker.port, &pki)
            .args([
                "--client-id",
                name,
                "--iterations",
                "1",
                "--restart-max-attempts",
                "1",
                "--backoff-base-ms",
                "20",
            ])
            .args(extra),
        LIMIT,
    );
    let (stdout, stderr) = text(&out);
    let last = stderr.trim_end().lines().last().unwrap_or("").to_string();
    (out.status.code().expect("exited, not killed"), stdout, last)
}

#[test]
fn connecting_elsewhere_is_not_permitted() {
    let (code, stdout, line) = attack("connect-elsewhere", &[]);
    assert_eq!(code, 2, "{line}");
    assert!(
        line.contains("not permitted") && line.contains("--allow"),
        "{line}"
    );
    assert!(!stdout.contains("the sandbox leaked"), "{stdout}");
    assert_eq!(
        stdout.matches("not permitted").count(),
        3,
        "three endpoints refused: {stdout}"
    );
}

#[test]
fn allow_list_opens_exactly_the_endpoints_given() {
    // With the broker's port + 1 allowed, that attempt reaches the network
    // (nothing listens there: refused) instead of being denied.
    let pki = TestPki::new();
    let broker = pki.broker();
    let out = output_within(
        host_run_adversary(broker.port, &pki)
            .args(["--client-id", "connect-elsewhere", "--iterations", "1"])
            .arg("--allow")
            .arg(format!("localhost:{}", broker.port.wrapping_add(1))),
        LIMIT,
    );
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("example.com:443: not permitted"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the host answered connection-refused"),
        "{stdout}"
    );
}

#[test]
fn files_environment_and_raw_sockets_are_out_of_reach() {
    let (code, stdout, line) = attack("escape-wasi", &[]);
    assert!(
        stdout.contains("files, environment and raw sockets: all denied"),
        "{stdout}"
    );
    assert!(!stdout.contains("the sandbox leaked"), "{stdout}");
    assert_eq!(code, 2, "{line}");
}

#[test]
fn spinning_is_stopped_by_the_cpu_limit() {
    let (code, stdout, line) = attack("spin", &["--cpu-limit-ms", "200"]);
    assert_eq!(code, 3, "{line}");
    assert!(
        line.contains("CPU limit") && line.contains("--cpu-limit-ms 200"),
        "{line}"
    );
    assert!(
        stdout.contains("restarting the device logic on a fresh instance"),
        "{stdout}"
    );
}

#[test]
fn growing_memory_is_stopped_by_the_memory_limit() {
    let (code, _, line) = attack("grow-memory", &["--max-memory-mib", "16"]);
    assert_eq!(code, 3, "{line}");
    assert!(line.contains("memory limit --max-memory-mib 16"), "{line}");
}

#[test]
fn recursing_without_end_is_stopped() {
    let (code, _, line) = attack("recurse", &[]);
    assert_eq!(code, 3, "{line}");
    assert!(
        line.contains("recursing without end") || line.contains("stack limit"),
        "{line}"
    );
}

#[test]
fn huge_receive_and_send_get_an_error_not_an_allocation() {
    let (code, stdout, line) = attack("huge-recv", &["--max-io-bytes", "65536"]);
    assert_eq!(code, 2, "{line}");
    assert!(
        stdout.contains("receive of 4 GiB: message-too-large"),
        "{stdout}"
    );
    assert!(
        stdout.contains("send of 2 MiB: message-too-large"),
        "{stdout}"
    );
    assert!(line.contains("--max-io-bytes"), "{line}");
}

#[test]
fn connections_beyond_the_limit_are_refused() {
    let (code, stdout, line) = attack("too-many-connections", &["--max-connections", "3"]);
    assert_eq!(code, 2, "{line}");
    assert!(
        stdout.contains("refused after 3 connections: too-many-connections"),
        "{stdout}"
    );
    assert!(line.contains("--max-connections"), "{line}");
}

#[test]
fn a_trap_mid_publish_is_contained_and_restarted() {
    let (code, stdout, line) = attack("trap-mid-publish", &[]);
    assert_eq!(code, 3, "{line}");
    assert!(
        line.contains("panicked") && line.contains("restarts are exhausted"),
        "{line}"
    );
    assert_eq!(
        stdout
            .matches("the device logic was stopped in iteration")
            .count(),
        2,
        "{stdout}"
    );
}

#[test]
fn without_iterations_a_failing_guest_is_restarted_with_backoff_until_the_limit() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let out = output_within(
        host_run_adversary(broker.port, &pki).args([
            "--client-id",
            "trap-mid-publish",
            "--restart-max-attempts",
            "3",
            "--backoff-base-ms",
            "40",
            "--backoff-max-ms",
            "160",
        ]),
        LIMIT,
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let restarts: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("restarting the device logic"))
        .collect();
    assert_eq!(restarts.len(), 3, "{stdout}");
    for (i, line) in restarts.iter().enumerate() {
        assert!(
            line.contains(&format!("(restart {} of 3)", i + 1)),
            "{line}"
        );
    }
    assert!(stderr.contains("stopped 4 time(s) in a row"), "{stderr}");
}
