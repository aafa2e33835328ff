//! End to end: the Python telemetry logic (componentize-py) under `host run`
//! against real mosquitto over mutual TLS, and swapped with the Rust demo in
//! both directions in one running host.

use std::time::Duration;

use device_tests::{
    Running, Subscriber, TestPki, demo_wasm, host_run_component, output_within, replace_atomically,
    telemetry_py_wasm, text, watched,
};

const LIMIT: Duration = Duration::from_secs(90);

/// What the manual says of the Python logic's memory: 8 MiB of linear
/// memory is too little to start it, 16 MiB is enough.
#[test]
fn the_python_logic_needs_more_than_8_mib_and_starts_in_16() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let run = |mib: &str| {
        let mut cmd = host_run_component(
            &telemetry_py_wasm(),
            broker.port,
            &pki.ca,
            Some(&pki.device),
        );
        cmd.args(["--iterations", "1", "--max-memory-mib", mib]);
        let out = output_within(&mut cmd, LIMIT);
        let (stdout, stderr) = text(&out);
        (out.status.code(), stdout, stderr)
    };
    let (code, stdout, stderr) = run("8");
    assert_eq!(code, Some(1), "{stderr}\n{stdout}");
    assert!(stderr.contains("memory limit of 8 MiB reached"), "{stderr}");
    let (code, stdout, stderr) = run("16");
    assert_eq!(code, Some(0), "{stderr}\n{stdout}");
    assert!(
        stdout.contains("1 iteration(s) completed successfully"),
        "{stdout}"
    );
}

#[test]
fn the_python_logic_publishes_json_readings_that_a_subscriber_receives() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let topic = "py-dev/example/topic";
    let mut sub = Subscriber::start(broker.port, &pki, topic);
    let host = Running::spawn(
        host_run_component(
            &telemetry_py_wasm(),
            broker.port,
            &pki.ca,
            Some(&pki.device),
        )
        .args(["--client-id", "py-dev", "--iterations", "3"]),
    );
    let (ok, stdout, stderr) = host.finish(LIMIT);
    assert!(ok, "{stderr}\n{stdout}");
    assert_eq!(
        stdout
            .matches("completed successfully: 1 published, 1 acknowledged")
            .count(),
        3,
        "{stdout}"
    );
    let got = sub.messages(3, Duration::from_secs(10));
    assert_eq!(got.len(), 3, "{got:?}");
    for (i, (t, payload)) in got.iter().enumerate() {
        assert_eq!(t, topic);
        let reading: serde_json::Value = serde_json::from_str(payload).expect(payload);
        assert_eq!(reading["device"], "py-dev", "{payload}");
        assert_eq!(reading["iteration"], i as u64 + 1, "{payload}");
        let celsius = reading["temperature_c"].as_f64().expect(payload);
        assert!((19.0..=23.0).contains(&celsius), "{payload}");
        assert!(reading["uptime_ms"].is_u64(), "{payload}");
    }
}

#[test]
fn python_and_rust_logic_swap_both_ways_in_one_running_host() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let device = pki.dir.path().join("device.wasm");
    std::fs::copy(demo_wasm(), &device).unwrap();
    let topic = "poly-dev/example/topic";
    let mut sub = Subscriber::start(broker.port, &pki, topic);
    let mut host = watched(broker.port, &pki, &device, "poly-dev", 40);
    host.wait_for("watching", LIMIT);
    host.wait_for("Demo completed successfully", LIMIT);
    // Rust to Python.
    replace_atomically(&device, &std::fs::read(telemetry_py_wasm()).unwrap());
    let swapped = host.wait_for("swapped device.wasm: sha256", LIMIT);
    assert!(swapped.contains("takes over"), "{swapped}");
    host.wait_for("Telemetry iteration completed", LIMIT);
    host.seen.clear();
    host.wait_for("Telemetry iteration completed", LIMIT);
    // Python back to Rust.
    replace_atomically(&device, &std::fs::read(demo_wasm()).unwrap());
    host.wait_for("swapped device.wasm: sha256", LIMIT);
    host.seen.clear();
    host.wait_for("Demo completed successfully", LIMIT);
    assert!(
        host.child.try_wait().unwrap().is_none(),
        "one process throughout: the host kept running through both swaps"
    );
    host.child.kill().unwrap();
    let _ = host.child.wait();

    // The subscriber saw the demo's messages, then readings, then the
    // demo's again: each logic whole, in turn.
    let got: Vec<String> = sub
        .messages(1000, Duration::from_secs(3))
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let kinds: Vec<char> = got
        .iter()
        .map(|p| if p == "Hello World!" { 'R' } else { 'P' })
        .collect();
    let runs: String =
        kinds
            .iter()
            .collect::<String>()
            .chars()
            .fold(String::new(), |mut acc, c| {
                if !acc.ends_with(c) {
                    acc.push(c);
                }
                acc
            });
    assert!(runs.starts_with("RPR"), "{runs} from {got:?}");
    for p in got.iter().filter(|p| *p != "Hello World!") {
        let reading: serde_json::Value = serde_json::from_str(p).expect(p);
        assert_eq!(reading["device"], "poly-dev", "{p}");
    }
}
