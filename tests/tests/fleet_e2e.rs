//! End to end: fleet mode. 50 sandboxed devices in one host against real
//! mosquitto, 2 iterations each; an independent subscriber on every
//! device's topic checks that each device's messages all arrived.

use std::collections::BTreeMap;
use std::time::Duration;

use device_tests::{Running, Subscriber, TestPki, host_run, output_within, text};

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

/// Connects accepted by a broker that takes TCP connections and never
/// answers (so every handshake stays in flight), after a while, for a
/// fleet of six devices under `--max-connecting limit`; and the host's
/// output by then.
fn connects_in_flight(limit: &str) -> (usize, Vec<String>) {
    use std::sync::{Arc, Mutex};
    let pki = TestPki::new();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for stream in silent.incoming().flatten() {
            keep.lock().unwrap().push(stream);
        }
    });
    let mut host = Running::spawn(host_run(port, &pki.ca, Some(&pki.device)).args([
        "--devices",
        "6",
        "--client-id",
        "queued",
        "--iterations",
        "1",
        "--connect-timeout-ms",
        "4000",
        "--max-connecting",
        limit,
    ]));
    host.wait_for("Creating a TLS connection", Duration::from_secs(20));
    // Six devices at --ramp-per-sec 200 all ask within 30 ms; no handshake
    // times out before 4 s. Wait for the count to settle, then check it
    // stays.
    let count = || held.lock().unwrap().len();
    let expected = if limit == "0" {
        6
    } else {
        limit.parse().unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while count() < expected && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let accepted = count();
    if limit != "0" {
        // The devices that never got a turn say so when they time out.
        host.wait_for("no turn to connect", Duration::from_secs(10));
    }
    let _ = host.child.kill();
    let _ = host.child.wait();
    (accepted, host.seen)
}

#[test]
fn max_connecting_bounds_the_handshakes_in_flight_and_queued_devices_say_why_they_timed_out() {
    let (bounded, seen) = connects_in_flight("2");
    assert_eq!(bounded, 2, "{}", seen.join("\n"));
    let line = seen
        .iter()
        .find(|l| l.contains("no turn to connect"))
        .unwrap();
    assert!(
        line.contains("within 4000 ms")
            && line.contains("held all 2 connect turns")
            && line.contains("raise --max-connecting"),
        "{line}"
    );
    // The control: without the limit every device is in a handshake at once.
    let (unbounded, seen) = connects_in_flight("0");
    assert_eq!(unbounded, 6, "{}", seen.join("\n"));
}

#[test]
fn a_connect_gives_its_turn_back_when_the_broker_answers() {
    // One turn for four devices, and a connect timeout far above what a
    // handshake and CONNACK take here but far below the 5 s a turn lasts
    // when the broker does not answer: if a turn outlived the CONNACK, the
    // devices behind it would time out waiting for theirs.
    let pki = TestPki::new();
    let broker = pki.broker();
    let out = output_within(
        host_run(broker.port, &pki.ca, Some(&pki.device)).args([
            "--devices",
            "4",
            "--client-id",
            "turns",
            "--iterations",
            "1",
            "--publish-count",
            "1",
            // Each device holds its connection for 2 s, well past the
            // others' connect timeout.
            "--publish-delay-ms",
            "2000",
            "--max-connecting",
            "1",
            "--connect-timeout-ms",
            "1000",
        ]),
        Duration::from_secs(60),
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert!(
        stdout.contains("all 4 devices completed their iterations."),
        "{stdout}"
    );
    assert!(!stdout.contains("no turn to connect"), "{stdout}");
}
