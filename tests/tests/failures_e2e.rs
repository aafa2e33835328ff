//! End to end: what a user can get wrong ends in one line naming the cause
//! and the fix, and a non-zero exit. Certificate problems are not retried;
//! refused connections are, with backoff.

use std::time::Duration;

use device_tests::{TestPki, host_run, output_within, text};

const LIMIT: Duration = Duration::from_secs(60);

fn attempts(stdout: &str) -> usize {
    stdout.matches("Creating a TLS connection").count()
}

fn last_line(stderr: &str) -> &str {
    stderr.trim_end().lines().last().unwrap_or("")
}

#[test]
fn client_certificate_from_another_ca_is_rejected_without_retry() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let out = output_within(
        host_run(broker.port, &pki.ca, Some(&pki.stranger)).args(["--iterations", "1"]),
        LIMIT,
    );
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    let line = last_line(&stderr);
    assert!(line.starts_with("error: "), "{stderr}");
    assert!(line.contains("client certificate"), "{line}");
    assert_eq!(
        attempts(&stdout),
        1,
        "certificate failures are permanent: {stdout}"
    );
}

#[test]
fn missing_client_certificate_is_named() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let out = output_within(
        host_run(broker.port, &pki.ca, None).args(["--iterations", "1"]),
        LIMIT,
    );
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    let line = last_line(&stderr);
    assert!(line.contains("client certificate"), "{line}");
    assert!(line.contains("--cert"), "the fix names the flag: {line}");
    assert_eq!(attempts(&stdout), 1, "{stdout}");
}

#[test]
fn wrong_root_ca_is_named() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let out = output_within(
        host_run(broker.port, &pki.other_ca, Some(&pki.device)).args(["--iterations", "1"]),
        LIMIT,
    );
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    let line = last_line(&stderr);
    assert!(
        line.contains("UnknownIssuer") || line.contains("unknown issuer"),
        "{line}"
    );
    assert!(line.contains("--ca"), "{line}");
    assert_eq!(attempts(&stdout), 1, "{stdout}");
}

#[test]
fn unreachable_broker_is_retried_with_backoff_then_reported() {
    let pki = TestPki::new();
    let port = host::broker::mosquitto::free_port().unwrap();
    let out = output_within(
        host_run(port, &pki.ca, Some(&pki.device)).args([
            "--iterations",
            "1",
            "--backoff-base-ms",
            "20",
            "--backoff-max-ms",
            "80",
            "--backoff-max-attempts",
            "3",
        ]),
        LIMIT,
    );
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    assert_eq!(
        attempts(&stdout),
        4,
        "first attempt and 3 retries: {stdout}"
    );
    assert_eq!(
        stdout
            .matches("Retrying connection with backoff and jitter")
            .count(),
        3
    );
    assert!(stdout.contains("Connection to the broker failed, all attempts exhausted."));
    let line = last_line(&stderr);
    assert!(
        line.contains("retries exhausted") && line.contains("refused"),
        "{line}"
    );
}

#[test]
fn unreadable_key_and_unpaired_cert_are_named() {
    let pki = TestPki::new();
    let missing = pki.dir.path().join("nope.key");
    let out = output_within(
        host_run(1, &pki.ca, None)
            .arg("--cert")
            .arg(&pki.device.cert)
            .arg("--key")
            .arg(&missing)
            .args(["--iterations", "1"]),
        LIMIT,
    );
    let line = last_line(&text(&out).1).to_string();
    assert!(!out.status.success());
    assert!(
        line.contains("--key") && line.contains("nope.key"),
        "{line}"
    );

    let out = output_within(
        host_run(1, &pki.ca, None)
            .arg("--cert")
            .arg(&pki.device.cert)
            .args(["--iterations", "1"]),
        LIMIT,
    );
    let line = last_line(&text(&out).1).to_string();
    assert!(!out.status.success());
    assert!(line.contains("--cert was given without --key"), "{line}");
}

#[test]
fn a_file_that_is_not_a_component_of_the_world_is_refused() {
    let pki = TestPki::new();
    let bogus = pki.dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"\0asm\x01\0\0\0").unwrap(); // an empty core module
    let mut cmd = device_tests::host();
    cmd.arg("run")
        .arg(&bogus)
        .args(["--broker", "mqtts://localhost:1", "--ca"])
        .arg(&pki.ca)
        .arg("--no-cache");
    let out = output_within(&mut cmd, LIMIT);
    let line = last_line(&text(&out).1).to_string();
    assert!(!out.status.success());
    assert!(line.contains("not a valid WebAssembly component"), "{line}");
}

#[test]
fn a_component_of_another_world_is_refused() {
    let pki = TestPki::new();
    let other = pki.dir.path().join("other-world.wasm");
    std::fs::write(&other, wat::parse_str("(component)").unwrap()).unwrap();
    let mut cmd = device_tests::host();
    cmd.arg("run")
        .arg(&other)
        .args(["--broker", "mqtts://localhost:1", "--ca"])
        .arg(&pki.ca)
        .arg("--no-cache");
    let out = output_within(&mut cmd, LIMIT);
    let line = last_line(&text(&out).1).to_string();
    assert_eq!(out.status.code(), Some(1), "{line}");
    assert!(
        line.contains("does not match the world mqtt-device:runtime/device"),
        "{line}"
    );
    assert!(
        line.contains("run-iteration"),
        "the line names what is missing: {line}"
    );
}

/// `--ca webpki` and `--ca os` against a broker whose chain is in neither
/// set: refused at the first handshake, the message naming the set and the
/// fix. The OS store is pinned with `SSL_CERT_FILE` to an unrelated CA, so
/// the test does not depend on this machine's store.
#[test]
fn standard_root_sets_refuse_a_private_broker_and_say_so() {
    let pki = TestPki::new();
    let broker = pki.broker();
    for (ca, names) in [
        ("webpki", "does not chain to the Mozilla root set"),
        ("os", "does not chain to the operating system's trust store"),
    ] {
        let mut cmd = host_run(broker.port, &pki.ca, Some(&pki.device));
        cmd.args(["--ca", ca, "--iterations", "1"])
            .env("SSL_CERT_FILE", &pki.other_ca);
        let out = output_within(&mut cmd, LIMIT);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{ca}: {stderr}");
        let line = last_line(&stderr);
        assert!(line.contains("UnknownIssuer"), "{ca}: {line}");
        assert!(line.contains(names), "{ca}: {line}");
        assert!(line.contains("with --ca"), "{ca}: the fix: {line}");
        assert_eq!(attempts(&stdout), 1, "{ca}: {stdout}");
    }
}
