//! End to end: `host run demo.wasm` against a real mosquitto over mutual TLS,
//! with an independent subscriber checking what the demo published.

use std::time::Duration;

use device_tests::{Subscriber, TestPki, host_run, output_within, text};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn two_iterations_reach_an_independent_subscriber() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let topic = "e2e-device/example/topic";
    let mut sub = Subscriber::start(broker.port, &pki, topic);
    let out = output_within(
        host_run(broker.port, &pki.ca, Some(&pki.device)).args([
            "--iterations",
            "2",
            "--client-id",
            "e2e-device",
        ]),
        LIMIT,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "host failed: {stderr}\n{stdout}");

    let got = sub.messages(10, Duration::from_secs(10));
    assert_eq!(got.len(), 10, "subscriber got {got:?}");
    assert!(
        got.iter().all(|(t, p)| t == topic && p == "Hello World!"),
        "{got:?}"
    );

    // The log of an iteration, in the original's order.
    let order = [
        "Creating a TLS connection to localhost:",
        "Creating an MQTT connection to localhost.",
        "An MQTT connection is established with localhost.",
        "Attempt to subscribe to the MQTT topic e2e-device/example/topic.",
        "SUBSCRIBE sent for topic e2e-device/example/topic to broker.",
        "Subscribed to the topic e2e-device/example/topic with maximum QoS 1.",
        "Publish to the MQTT topic e2e-device/example/topic.",
        "Attempt to receive publish message from broker.",
        "PUBACK received for packet Id",
        "Incoming Publish Message : Hello World!",
        "Keeping Connection Idle...",
        "Unsubscribe from the MQTT topic e2e-device/example/topic.",
        "Unsubscribed from the topic e2e-device/example/topic.",
        "Disconnecting the MQTT connection with localhost.",
        "Demo completed successfully.",
        "Short delay before starting the next iteration....",
        "iteration 2 completed successfully: 5 published, 5 acknowledged, 5 echoes received",
    ];
    let mut at = 0;
    for line in order {
        let found = stdout[at..]
            .find(line)
            .unwrap_or_else(|| panic!("{line:?} missing after byte {at} in:\n{stdout}"));
        at += found;
    }
    assert_eq!(stdout.matches("PUBACK received for packet Id").count(), 10);
}

#[test]
fn embedded_default_broker_runs_the_demo() {
    device_tests::require_mosquitto();
    let out = output_within(
        device_tests::host()
            .arg("run")
            .arg(device_tests::demo_wasm())
            .args([
                "--iterations",
                "1",
                "--publish-count",
                "2",
                "--publish-delay-ms",
                "10",
            ]),
        LIMIT,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert!(stdout.contains("started an embedded mosquitto"), "{stdout}");
    assert!(
        stdout
            .contains("iteration 1 completed successfully: 2 published, 2 acknowledged, 2 echoes"),
        "{stdout}"
    );
}

#[test]
fn refused_connections_are_retried_until_the_broker_comes_up() {
    let pki = TestPki::new();
    let port = host::broker::mosquitto::free_port().unwrap();
    let child = host_run(port, &pki.ca, Some(&pki.device))
        .args(["--iterations", "1", "--publish-count", "1"])
        .args([
            "--backoff-base-ms",
            "400",
            "--backoff-max-ms",
            "1600",
            "--backoff-max-attempts",
            "10",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let _broker = pki.broker_on(port);
    let out = device_tests::wait_output(child, LIMIT);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert!(
        stdout.contains("Retrying connection with backoff and jitter"),
        "{stdout}"
    );
    assert!(
        stdout.matches("Creating a TLS connection").count() >= 2,
        "{stdout}"
    );
}

/// The world only gains imports within its 0.2 line: the demo as built
/// against `wit/` of version 0.2.0 (before `iteration` existed; kept as a
/// fixture) still runs on this host, bounded by the host's maximum since it
/// declares nothing.
#[test]
fn a_logic_built_against_an_earlier_wit_still_runs() {
    let old = device_tests::root().join("tests/fixtures/demo-wit-0.2.0.wasm");
    let pki = TestPki::new();
    let broker = pki.broker();
    let out = output_within(
        device_tests::host_run_component(&old, broker.port, &pki.ca, Some(&pki.device)).args([
            "--iterations",
            "1",
            "--client-id",
            "old-wit",
            "--publish-delay-ms",
            "20",
            "--no-cache",
        ]),
        LIMIT,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert!(
        stdout
            .contains("[old-wit] iteration 1 completed successfully: 5 published, 5 acknowledged"),
        "{stdout}"
    );
    let imports = device_tests::host()
        .arg("inspect")
        .arg(&old)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&imports.stdout);
    assert!(
        listing.contains("mqtt-device:runtime/mtls-socket@0.2.0"),
        "{listing}"
    );
    assert!(
        !listing.contains("mqtt-device:runtime/iteration"),
        "{listing}"
    );
}
