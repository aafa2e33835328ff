//! End to end: fleet mode. 50 sandboxed devices in one host against real
//! mosquitto, 2 iterations each; an independent subscriber on every
//! device's topic checks that each device's messages all arrived.

use std::collections::BTreeMap;
use std::time::Duration;

use device_tests::{Subscriber, TestPki, host_run, output_within, text};

#[test]
fn fifty_devices_two_iterations_every_message_arrives() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let mut sub = Subscriber::start(broker.port, &pki, "+/example/topic");
    let devices = 50;
    let out = output_within(
        host_run(broker.port, &pki.ca, Some(&pki.device))
            .args([
                "--devices",
                &devices.to_string(),
                "--client-id",
                "fleet",
                "--iterations",
                "2",
            ])
            .args([
                "--publish-count",
                "2",
                "--payload",
                "{iteration}-{publish}",
                "--ramp-per-sec",
                "100",
            ]),
        Duration::from_secs(120),
    );
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "{stderr}\n{}",
        stdout.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    assert!(
        stdout.contains("all 50 devices completed their iterations."),
        "{stderr}"
    );
    let summary = stdout
        .lines()
        .rfind(|l| l.contains("fleet: "))
        .expect("a summary line");
    assert!(
        summary.contains("100 iterations done, 200 publishes acknowledged"),
        "{summary}"
    );
    assert!(summary.contains("0 failures"), "{summary}");
    assert!(
        stdout.contains("[fleet-0001] Creating a TLS connection"),
        "log lines carry the device"
    );

    let got = sub.messages(devices * 4, Duration::from_secs(10));
    let mut per_device: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (topic, payload) in got {
        per_device.entry(topic).or_default().push(payload);
    }
    assert_eq!(per_device.len(), devices, "{:?}", per_device.keys());
    for (i, (topic, mut payloads)) in per_device.into_iter().enumerate() {
        assert_eq!(topic, format!("fleet-{:04}/example/topic", i + 1));
        payloads.sort();
        assert_eq!(payloads, ["1-1", "1-2", "2-1", "2-2"], "{topic}");
    }
}

#[test]
fn a_failing_device_is_restarted_alone_and_the_others_go_on() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let out = output_within(
        device_tests::host_run_adversary(broker.port, &pki)
            .args([
                "--devices",
                "4",
                "--client-id",
                "one-traps",
                "--iterations",
                "2",
                "--publish-count",
                "1",
            ])
            .args(["--restart-max-attempts", "2", "--backoff-base-ms", "50"]),
        Duration::from_secs(120),
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("1 of 4 devices failed"), "{stderr}");
    let restarts = stdout
        .matches("[one-traps-0002] restarting the device logic")
        .count();
    assert_eq!(restarts, 2, "{stdout}");
    assert!(stdout.contains("[one-traps-0002] gave up"), "{stdout}");
    for other in ["0001", "0003", "0004"] {
        let done = device_tests::iterations_completed(&stdout, &format!("one-traps-{other}"));
        assert_eq!(done, 2, "device {other} completed both iterations");
    }
}

/// The number in the last summary line's "N TLS sessions resumed".
fn resumed(stdout: &str) -> u64 {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.contains("TLS sessions resumed"))
        .expect("a summary line");
    let before = &line[..line.find(" TLS sessions resumed").unwrap()];
    before.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn each_device_resumes_its_own_tls_session_unless_told_not_to() {
    let pki = device_tests::TestPki::new();
    let broker = pki.broker();
    // Ten devices: more tickets than a store shared by the fleet would keep
    // for one server name.
    for (extra, want) in [(None, 10), (Some("--no-tls-resumption"), 0)] {
        let mut cmd = device_tests::host_run(broker.port, &pki.ca, Some(&pki.device));
        cmd.args([
            "--devices",
            "10",
            "--iterations",
            "2",
            "--publish-count",
            "1",
        ])
        .args(["--client-id", "resume"]);
        if let Some(flag) = extra {
            cmd.arg(flag);
        }
        let out = device_tests::output_within(&mut cmd, std::time::Duration::from_secs(60));
        let (stdout, stderr) = device_tests::text(&out);
        assert!(out.status.success(), "{stderr}\n{stdout}");
        // Each device's second connection resumes its first one's session.
        assert_eq!(resumed(&stdout), want, "{extra:?}: {stdout}");
    }
}
