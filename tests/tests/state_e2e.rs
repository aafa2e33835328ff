//! The devices' durable state against real mosquitto over mutual TLS,
//! judged by an independent persistent subscriber: nothing acknowledged is
//! lost when the host is killed (SIGKILL) at random moments or the broker
//! goes away; a persistent session's unacknowledged PUBLISH is resent after
//! a restart; a state database that cannot be used stops the host at start
//! with one line naming the file and the fix; a swapped-in logic sees the
//! state its predecessor wrote.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use device_tests::{
    Running, Subscriber, TestPki, demo_wasm, host, host_run_component, output_within,
    replace_atomically, telemetry_wasm, text,
};
use host::broker::mosquitto::{Mosquitto, free_port};

/// A small deterministic generator (xorshift), seeded from the clock and
/// printed, so a failing run can be replayed by its seed.
struct Moments(u64);

impl Moments {
    fn next_ms(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo)
    }
}

/// The telemetry logic as `client_id`, a reading every 100 ms, its state
/// in `state`.
fn telemetry(port: u16, pki: &TestPki, state: &Path, client_id: &str, topic: &str) -> Command {
    let mut cmd = host_run_component(&telemetry_wasm(), port, &pki.ca, Some(&pki.device));
    cmd.args(["--client-id", client_id, "--iteration-delay-ms", "0"])
        .args([
            "--connect-interval-ms",
            "100",
            "--connect-timeout-ms",
            "1000",
        ])
        .args(["--logic-config", "interval-ms=100"])
        .arg("--logic-config")
        .arg(format!("topic={topic}"))
        .arg("--state-dir")
        .arg(state);
    cmd
}

/// The number after `word` in lines containing it ("Reading 7 taken").
fn numbers(lines: &[String], word: &str) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| {
            let rest = &l[l.find("Reading ")? + "Reading ".len()..];
            let (n, after) = rest.split_once(' ')?;
            after.starts_with(word).then(|| n.parse().ok()).flatten()
        })
        .collect()
}

fn reading_of(payload: &str) -> Option<u64> {
    let rest = &payload[payload.find("\"reading\":")? + 10..];
    rest.split([',', '}']).next()?.parse().ok()
}

#[test]
fn no_acknowledged_reading_is_lost_to_sigkill_or_a_broker_away() {
    let pki = TestPki::new();
    let port = free_port().unwrap();
    let dir = pki.dir.path();
    let mut broker = Mosquitto::start_on(dir, &pki.listener, port, true).unwrap();
    let topic = "power-cut/telemetry";
    let mut subscriber = Subscriber::start_with(port, &pki, topic, true);
    let state = tempfile::tempdir().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("moments seeded {seed}");
    let mut moments = Moments(seed);
    let mut lines = Vec::new();
    let mut received = Vec::new();
    let cuts = 20;
    for cut in 1..=cuts {
        let running = Running::spawn(&mut telemetry(port, &pki, state.path(), "power-cut", topic));
        // The broker goes away twice for 10 s while the device keeps reading.
        if cut == 7 || cut == 14 {
            std::thread::sleep(Duration::from_millis(moments.next_ms(200, 800)));
            received.extend(subscriber.stop());
            // Stopped, not crashed: mosquitto makes its store durable only
            // at intervals, so a SIGKILL could lose what it acknowledged
            // (the broker's loss, not the device's).
            broker.terminate();
            std::thread::sleep(Duration::from_secs(10));
            broker = Mosquitto::start_on(dir, &pki.listener, port, true).unwrap();
            subscriber = Subscriber::start_with(port, &pki, topic, true);
        }
        std::thread::sleep(Duration::from_millis(moments.next_ms(300, 1500)));
        lines.extend(running.kill());
    }
    // Every reading taken so far is on disk: a last run drains it all.
    let taken_before_last = numbers(&lines, "taken").into_iter().max().unwrap_or(0);
    let last = Running::spawn(&mut telemetry(port, &pki, state.path(), "power-cut", topic));
    std::thread::sleep(Duration::from_secs(3));
    lines.extend(last.kill());
    let taken = numbers(&lines, "taken").into_iter().max().unwrap_or(0);
    let acknowledged: BTreeSet<u64> = numbers(&lines, "acknowledged").into_iter().collect();
    let last_acked = acknowledged.last().copied().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut firsts: Vec<u64> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut duplicates = 0;
    loop {
        received.extend(subscriber.messages(usize::MAX, Duration::from_millis(300)));
        for (_, payload) in received.drain(..) {
            let n = reading_of(&payload).unwrap_or_else(|| panic!("not a reading: {payload}"));
            if seen.insert(n) {
                firsts.push(n);
            } else {
                duplicates += 1;
            }
        }
        let due = last_acked.max(taken_before_last);
        if (1..=due).all(|n| seen.contains(&n)) || Instant::now() > deadline {
            break;
        }
    }
    let dropped = lines
        .iter()
        .filter(|l| l.contains("dropped reading"))
        .count();
    println!(
        "power cut: {cuts} SIGKILLs, 2 broker stops of 10 s; readings taken {taken}, acknowledged {}, delivered {}, duplicated {duplicates}, dropped for a full queue {dropped}",
        acknowledged.len(),
        seen.len()
    );
    assert!(
        last_acked >= 40,
        "the device kept reading and publishing: {last_acked}"
    );
    let missing: Vec<u64> = (1..=last_acked).filter(|n| !seen.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but never delivered: {missing:?}"
    );
    let lost: Vec<u64> = (1..=taken_before_last)
        .filter(|n| !seen.contains(n))
        .collect();
    assert!(
        lost.is_empty(),
        "taken (on disk) but never delivered: {lost:?}"
    );
    assert!(
        firsts.windows(2).all(|w| w[0] < w[1]),
        "in order after de-duplication: {firsts:?}"
    );
    assert_eq!(dropped, 0, "the queue never filled");
}

#[test]
fn a_persistent_sessions_unacknowledged_publish_is_resent_after_a_sigkill() {
    let pki = TestPki::new();
    let port = free_port().unwrap();
    let broker = Mosquitto::start_on(pki.dir.path(), &pki.listener, port, true).unwrap();
    let topic = "power-cut/demo";
    let mut subscriber = Subscriber::start_with(port, &pki, topic, true);
    let state = tempfile::tempdir().unwrap();
    let demo = |payload: &str| {
        let mut cmd = host_run_component(&demo_wasm(), port, &pki.ca, Some(&pki.device));
        cmd.args([
            "--persistent-session",
            "--client-id",
            "cut-demo",
            "--topic",
            topic,
        ])
        .args(["--payload", payload, "--publish-count", "2"])
        .args(["--iterations", "1", "--process-loop-ms", "500"])
        .args(["--publish-delay-ms", "2000"])
        .arg("--state-dir")
        .arg(state.path());
        cmd
    };
    let mut first = Running::spawn(&mut demo("held-{iteration}-{publish}"));
    first.wait_for("Keeping Connection Idle", Duration::from_secs(20));
    // The first publish is acknowledged; the broker stops answering while
    // the device idles: the second PUBLISH goes out, its PUBACK cannot come
    // back; then the power goes.
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &broker.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    first.wait_for("not received within", Duration::from_secs(10));
    let before = first.kill();
    signal("-CONT");
    let acks = before
        .iter()
        .filter(|l| l.contains("PUBACK received"))
        .count();
    assert_eq!(acks, 1, "the second PUBACK was held back: {before:#?}");
    // A new process, publishing other payloads: the held message reaches
    // the subscriber only if the restart resends it.
    let out = output_within(
        &mut demo("after-{iteration}-{publish}"),
        Duration::from_secs(60),
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Restored unacknowledged publishes [3] of the persistent session"),
        "{stdout}"
    );
    assert!(
        stdout.contains("resent unacknowledged publishes [3] with DUP set"),
        "{stdout}"
    );
    let got = subscriber.messages(5, Duration::from_secs(5));
    assert!(
        got.iter().any(|(_, p)| p == "held-1-2"),
        "the held message reached the subscriber: {got:?}"
    );
}

fn run_line(args: &[&str], state: &Path) -> (i32, String) {
    let out = output_within(
        host()
            .args(["run", demo_wasm().to_str().unwrap(), "--iterations", "1"])
            .args(args)
            .arg("--state-dir")
            .arg(state),
        Duration::from_secs(60),
    );
    let (_, stderr) = text(&out);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn a_state_database_that_cannot_be_used_stops_the_host_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    // Damaged: never emptied, named with the way out.
    let damaged = dir.path().join("damaged");
    std::fs::create_dir(&damaged).unwrap();
    let file = damaged.join("state.redb");
    std::fs::write(&file, vec![0x5a; 8192]).unwrap();
    let (code, stderr) = run_line(&[], &damaged);
    assert_eq!(code, 1, "{stderr}");
    let line = stderr.lines().last().unwrap();
    assert!(line.contains(&file.display().to_string()), "{line}");
    assert!(
        line.contains("damaged") && line.contains("move it aside"),
        "{line}"
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        vec![0x5a; 8192],
        "left as it was"
    );
    // Another user's directory.
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let (code, stderr) = run_line(&[], &theirs);
    assert_eq!(code, 1, "{stderr}");
    let line = stderr.lines().last().unwrap();
    assert!(
        line.contains("belongs to user id 65534") && line.contains("--state-dir"),
        "{line}"
    );
    // Not a directory at all.
    let file_there = dir.path().join("plain-file");
    std::fs::write(&file_there, b"x").unwrap();
    let (code, stderr) = run_line(&[], &file_there.join("state"));
    assert_eq!(code, 1, "{stderr}");
    let line = stderr.lines().last().unwrap();
    assert!(
        line.contains("cannot create the state directory") && line.contains("--state-dir"),
        "{line}"
    );
    // In use by another host.
    let shared = dir.path().join("shared");
    let mut other = Running::spawn(
        host()
            .args([
                "run",
                demo_wasm().to_str().unwrap(),
                "--publish-delay-ms",
                "60000",
            ])
            .arg("--state-dir")
            .arg(&shared),
    );
    other.wait_for("Publish to the MQTT topic", Duration::from_secs(30));
    let (code, stderr) = run_line(&[], &shared);
    other.kill();
    assert_eq!(code, 1, "{stderr}");
    let line = stderr.lines().last().unwrap();
    assert!(line.contains("in use by another host process"), "{line}");
}

/// A write over a quota or the write rate is the WIT's error to the logic,
/// which says so and goes on: the host neither traps it nor stops.
#[test]
fn quotas_and_the_write_rate_answer_the_logic_with_an_error() {
    let run = |flags: &[&str]| {
        let out = output_within(
            host()
                .args([
                    "run",
                    telemetry_wasm().to_str().unwrap(),
                    "--iterations",
                    "3",
                ])
                .args([
                    "--iteration-delay-ms",
                    "0",
                    "--logic-config",
                    "interval-ms=100",
                ])
                .args(flags),
            Duration::from_secs(60),
        );
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        stdout
    };
    let stdout = run(&["--state-max-value-bytes", "10"]);
    assert!(
        stdout.contains(
            "Could not keep a reading: the value of \"telemetry/q/00000000000000000001\" ("
        ) && stdout.contains("is over the host's limit of 10 (--state-max-value-bytes)"),
        "{stdout}"
    );
    let stdout = run(&["--state-max-keys", "1"]);
    assert!(
        stdout.contains("over its quota of 1 (--state-max-keys); delete keys first"),
        "{stdout}"
    );
    let stdout = run(&["--state-writes-per-sec", "1"]);
    assert!(
        stdout.contains(
            "a batch of 2 keys is more than the 1 writes a second the host allows (--state-writes-per-sec)"
        ),
        "{stdout}"
    );
    let stdout = run(&["--state-writes-per-sec", "2"]);
    assert!(
        stdout.contains("more than 2 writes a second (the host's --state-writes-per-sec)"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("completed successfully").count(),
        4,
        "three iterations and the end, held but never stopped: {stdout}"
    );
}

#[test]
fn a_swapped_in_logic_sees_the_state_its_predecessor_wrote() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let port = broker.port;
    let state = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let watched = work.path().join("logic.wasm");
    let original = std::fs::read(telemetry_wasm()).unwrap();
    std::fs::write(&watched, &original).unwrap();
    let mut cmd = Command::new(device_tests::host_bin());
    cmd.args(["run"])
        .arg(&watched)
        .args(["--watch", "--client-id", "swapping"])
        .arg("--broker")
        .arg(format!("mqtts://localhost:{port}"))
        .arg("--ca")
        .arg(&pki.ca)
        .arg("--cert")
        .arg(&pki.device.cert)
        .arg("--key")
        .arg(&pki.device.key)
        .args([
            "--iteration-delay-ms",
            "0",
            "--logic-config",
            "interval-ms=100",
        ])
        .arg("--state-dir")
        .arg(state.path());
    let mut running = Running::spawn(&mut cmd);
    running.wait_for("Reading 3 acknowledged", Duration::from_secs(30));
    // The same logic under other bytes (a custom section appended): a new
    // component as far as the host knows.
    replace_atomically(&watched, &device_tests::renamed(&original, "swap-test"));
    let swapped = running.wait_for("takes over from", Duration::from_secs(30));
    let taken_before = numbers(&running.seen, "taken").into_iter().max().unwrap();
    let next = format!("Reading {} taken", taken_before + 1);
    running.wait_for(&next, Duration::from_secs(10));
    let lines = running.kill();
    let after: Vec<&String> = lines.iter().skip_while(|l| *l != &swapped).collect();
    assert!(
        !after.iter().any(|l| l.contains("Reading 1 taken")),
        "the new logic continued the numbering: {after:#?}"
    );
}

/// The telemetry command the README and the state chapter print, run as
/// printed (against the embedded broker): it reads, publishes and deletes.
#[test]
fn the_telemetry_command_the_manual_prints_works_as_printed() {
    let root = device_tests::root();
    let mut commands = Vec::new();
    for page in ["README.md", "docs/state.md"] {
        let text = std::fs::read_to_string(root.join(page)).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("target/release/host run target/telemetry.wasm"))
            .unwrap_or_else(|| panic!("{page} prints the telemetry command"))
            .to_string();
        commands.push(line);
    }
    assert_eq!(commands[0], commands[1], "one command in both");
    let words: Vec<&str> = commands[0].split_whitespace().collect();
    assert_eq!(words[0], "target/release/host");
    let out = output_within(
        host().current_dir(&root).args(&words[1..]),
        Duration::from_secs(120),
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("Reading 6 taken"), "{stdout}");
    assert!(stdout.contains("Reading 6 acknowledged"), "{stdout}");
}
