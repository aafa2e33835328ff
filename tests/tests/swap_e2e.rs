//! End to end: hot swap of the device logic in a running host, against real
//! mosquitto, and the precompiled-component cache.

use std::time::Duration;

use device_tests::{
    Running, Subscriber, TestPki, counter_wasm, demo_wasm, host_run, host_run_component,
    output_within, replace_atomically, text, watched,
};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn swapping_in_the_counter_logic_while_running() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let device = pki.dir.path().join("device.wasm");
    std::fs::copy(demo_wasm(), &device).unwrap();
    let topic = "swap-dev/example/topic";
    let mut sub = Subscriber::start(broker.port, &pki, topic);

    let mut host = watched(broker.port, &pki, &device, "swap-dev", 8);
    host.wait_for("watching", LIMIT);
    host.wait_for("iteration 2 completed successfully", LIMIT);
    replace_atomically(&device, &std::fs::read(counter_wasm()).unwrap());
    let swapped = host.wait_for("swapped device.wasm: sha256", LIMIT);
    assert!(
        swapped.contains("takes over at the next iteration"),
        "{swapped}"
    );
    assert!(
        host.child.try_wait().unwrap().is_none(),
        "the host kept running through the swap"
    );
    let (ok, stdout, stderr) = host.finish(LIMIT);
    assert!(ok, "{stderr}\n{stdout}");
    assert!(stdout.contains("Counter logic, iteration"), "{stdout}");

    let got: Vec<String> = sub
        .messages(16, Duration::from_secs(10))
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(got.len(), 16, "{got:?}");
    let hello = got.iter().take_while(|p| *p == "Hello World!").count();
    assert!(
        hello >= 4 && hello % 2 == 0,
        "old logic ran whole iterations first: {got:?}"
    );
    let counters = &got[hello..];
    // From the swap on, only the new logic, each iteration once (two publishes
    // each), numbered on from where the old logic stopped: no gap, no repeat.
    let first = hello as u32 / 2 + 1;
    for (i, payload) in counters.iter().enumerate() {
        let want = format!(
            r#"{{"logic":"counter","device":"swap-dev","iteration":{}}}"#,
            first + i as u32 / 2
        );
        assert_eq!(payload, &want, "{got:?}");
    }
}

#[test]
fn broken_replacements_are_refused_and_the_old_logic_keeps_running() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let device = pki.dir.path().join("device.wasm");
    let demo = std::fs::read(demo_wasm()).unwrap();
    std::fs::copy(demo_wasm(), &device).unwrap();
    let mut host = watched(broker.port, &pki, &device, "broken-dev", 10);
    host.wait_for("watching", LIMIT);

    let other_world = wat::parse_str("(component)").unwrap();
    let traps_at_start = wat::parse_str(
        r#"(component
             (core module $m (func $boom unreachable) (start $boom))
             (core instance (instantiate $m)))"#,
    )
    .unwrap();
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "truncated",
            &demo[..demo.len() / 2],
            "not a valid WebAssembly component",
        ),
        ("another world", &other_world, "does not match the world"),
        (
            "traps at start",
            &traps_at_start,
            "does not match the world",
        ),
    ];
    for (what, bytes, reason) in cases {
        replace_atomically(&device, bytes);
        let line = host.wait_for("refused the new device.wasm", LIMIT);
        assert!(line.contains(reason), "{what}: {line}");
        assert!(line.contains("the running logic goes on"), "{what}: {line}");
        host.seen
            .retain(|l| !l.contains("refused the new device.wasm"));
    }
    let (ok, stdout, stderr) = host.finish(LIMIT);
    assert!(ok, "{stderr}\n{stdout}");
    assert!(!stdout.contains("takes over"), "{stdout}");
    assert_eq!(
        stdout
            .matches("Incoming Publish Message : Hello World!")
            .count(),
        20
    );
}

#[test]
fn logic_that_traps_in_its_first_iteration_is_swapped_back() {
    // The adversary logic traps mid-publish when its client id says so; the
    // demo runs fine under the same id.
    let pki = TestPki::new();
    let broker = pki.broker();
    let device = pki.dir.path().join("device.wasm");
    std::fs::copy(demo_wasm(), &device).unwrap();
    let mut host = watched(broker.port, &pki, &device, "trap-mid-publish", 6);
    host.wait_for("iteration 1 completed successfully", LIMIT);
    replace_atomically(
        &device,
        &std::fs::read(device_tests::adversary_wasm()).unwrap(),
    );
    let line = host.wait_for("trapped in its first iteration", LIMIT);
    assert!(line.contains("back to sha256"), "{line}");
    let (ok, stdout, stderr) = host.finish(LIMIT);
    assert!(
        ok,
        "the demo finishes every iteration after the fallback: {stderr}\n{stdout}"
    );
    assert_eq!(
        stdout.matches("completed successfully:").count(),
        6,
        "{stdout}"
    );
}

#[test]
fn second_start_hits_the_cache_and_a_corrupted_entry_is_rebuilt() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let cache = tempfile::tempdir().unwrap();
    let run = || {
        let out = output_within(
            host_run(broker.port, &pki.ca, Some(&pki.device))
                .args(["--iterations", "1", "--publish-count", "1", "--cache-dir"])
                .arg(cache.path()),
            LIMIT,
        );
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}\n{stdout}");
        stdout
    };
    let first = run();
    assert!(first.contains(", compiled in"), "{first}");
    let second = run();
    assert!(second.contains("precompiled cache hit"), "{second}");

    let entry = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("a cache entry");
    let mut bytes = std::fs::read(&entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&entry, &bytes).unwrap();
    let third = run();
    assert!(third.contains("is corrupted; recompiling"), "{third}");
    assert!(third.contains(", compiled in"), "{third}");
    assert!(
        run().contains("precompiled cache hit"),
        "rebuilt entry is used again"
    );

    // A file that passes the checksum but is not this engine's code (another
    // wasmtime version, say) is refused by wasmtime's header check.
    std::fs::write(&entry, b"not an ELF file from this engine").unwrap();
    std::fs::write(
        entry.with_extension("sha256"),
        sha256_hex(b"not an ELF file from this engine"),
    )
    .unwrap();
    let fifth = run();
    assert!(
        fifth.contains("unusable") && fifth.contains("recompiling"),
        "{fifth}"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn a_replacement_that_hangs_is_stopped_and_rolled_back() {
    // The adversary hangs when its client id says so; the demo runs fine
    // under the same id.
    let pki = TestPki::new();
    let broker = pki.broker();
    let device = pki.dir.path().join("device.wasm");
    std::fs::copy(demo_wasm(), &device).unwrap();
    let mut host = Running::spawn(
        host_run_component(&device, broker.port, &pki.ca, Some(&pki.device))
            .args(["--watch", "--publish-count", "2", "--client-id", "hang"])
            .args(["--iterations", "8", "--iteration-timeout-ms", "2000"]),
    );
    host.wait_for("iteration 1 completed successfully", LIMIT);
    replace_atomically(
        &device,
        &std::fs::read(device_tests::adversary_wasm()).unwrap(),
    );
    let line = host.wait_for("in its first iteration", LIMIT);
    assert!(
        line.contains("was stopped by a sandbox limit")
            && line.contains("--iteration-timeout-ms 2000")
            && line.contains("back to sha256"),
        "{line}"
    );
    let (ok, stdout, stderr) = host.finish(LIMIT);
    assert!(
        ok,
        "the demo finishes after the rollback: {stderr}\n{stdout}"
    );
    assert_eq!(
        stdout.matches("completed successfully:").count(),
        8,
        "{stdout}"
    );
}

#[test]
fn a_good_replacement_rescues_a_hung_logic() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let device = pki.dir.path().join("device.wasm");
    std::fs::copy(device_tests::adversary_wasm(), &device).unwrap();
    let mut host = Running::spawn(
        host_run_component(&device, broker.port, &pki.ca, Some(&pki.device))
            .args(["--watch", "--publish-count", "2", "--client-id", "hang"])
            .args(["--iterations", "2", "--iteration-timeout-ms", "5000"]),
    );
    host.wait_for("session open; hanging", LIMIT);
    replace_atomically(&device, &std::fs::read(demo_wasm()).unwrap());
    host.wait_for("swapped device.wasm", LIMIT);
    let took_over = host.wait_for("takes over from", LIMIT);
    assert!(took_over.contains("at iteration 2"), "{took_over}");
    let (ok, stdout, stderr) = host.finish(LIMIT);
    assert!(ok, "{stderr}\n{stdout}");
    assert!(
        stdout.contains("iteration timeout"),
        "the hung logic was stopped: {stdout}"
    );
    assert!(
        !stdout.contains("restarting the device logic"),
        "the waiting logic took over at once, without a restart delay: {stdout}"
    );
    assert_eq!(
        stdout.matches("completed successfully:").count(),
        2,
        "{stdout}"
    );
}

/// `--watch --devices 4`: a replaced component goes to the canary first.
fn local_rollout(
    client_id: &str,
    replacement: &std::path::Path,
) -> (Running, TestPki, host::broker::mosquitto::Mosquitto) {
    let pki = TestPki::new();
    let broker = pki.broker();
    let device = pki.dir.path().join("device.wasm");
    std::fs::copy(demo_wasm(), &device).unwrap();
    let mut host = Running::spawn(
        host_run_component(&device, broker.port, &pki.ca, Some(&pki.device))
            .args(["--watch", "--devices", "4", "--client-id", client_id])
            .args([
                "--canary",
                "1",
                "--promote-after",
                "2",
                "--publish-count",
                "1",
            ])
            .args([
                "--iteration-delay-ms",
                "200",
                "--iteration-timeout-ms",
                "2000",
            ]),
    );
    host.wait_for(&format!("[{client_id}-0004] iteration 1 completed"), LIMIT);
    replace_atomically(&device, &std::fs::read(replacement).unwrap());
    (host, pki, broker)
}

#[test]
fn watch_with_devices_rolls_out_canary_first() {
    let (mut host, _pki, _broker) = local_rollout("local", &counter_wasm());
    let done = host.wait_for("runs on 4/4 devices", LIMIT);
    assert!(done.contains("0 rolled it back"), "{done}");
    let log = host.seen.join("\n");
    let promoted = log.find("canaries passed").expect("a promotion");
    let canary = log
        .find("[local-0001] sha256")
        .expect("the canary took over");
    assert!(canary < promoted, "the canary first:\n{log}");
    for other in ["0002", "0003", "0004"] {
        let at = log
            .find(&format!("[local-{other}] sha256"))
            .unwrap_or_else(|| panic!("{other} took over:\n{log}"));
        assert!(at > promoted, "{other} only after the promotion:\n{log}");
    }
    let _ = host.child.kill();
}

#[test]
fn watch_with_devices_stops_when_the_canary_rolls_back() {
    // The demo runs under any id; the adversary hangs on every device of a
    // fleet named "hang", so on the canary hang-0001.
    let (mut host, _pki, _broker) = local_rollout("hang", &device_tests::adversary_wasm());
    let line = host.wait_for("stopped: canary hang-0001 rolled it back", LIMIT);
    assert!(line.contains("3 devices keep their logic"), "{line}");
    std::thread::sleep(std::time::Duration::from_millis(600));
    let _ = host.child.kill();
    let (_, log, _) = host.finish(LIMIT);
    for other in ["0002", "0003", "0004"] {
        assert!(
            !log.contains(&format!("[hang-{other}] sha256")),
            "{other} never got it:\n{log}"
        );
    }
}
