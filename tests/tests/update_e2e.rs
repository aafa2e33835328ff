//! End to end: signed logic updates over the broker, against real
//! mosquitto, with an independent subscriber as the judge. A fleet is
//! updated from the demo to the counter logic by `host rollout`, canaries
//! first; bad updates are refused by every device; an update that traps or
//! hangs rolls back on the canaries and goes no further; a device started
//! later gets the retained update; a component larger than the payload
//! limit comes in chunks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use device_tests::{Running, Subscriber, TestPki, counter_wasm, demo_wasm, output_within, text};
use host::publish::keys::{SigningKey, generate};
use host::publish::rollout::{Publisher, offer};
use host::publish::signing;
use host::tls::Endpoint;
use host::tls::{ClientKey, Handshake, Roots, TlsClient, TlsFiles};
use host::update::wire::Message;
use host::update::wire::{self, Status};
use host_core::WORLD;

const LIMIT: Duration = Duration::from_secs(120);

/// A publisher's key pair and the device logic, signed as version 1.
struct Signed {
    dir: tempfile::TempDir,
    key: PathBuf,
    public: PathBuf,
    /// The demo, signed (its repository next to it, as host run --trust wants).
    device: PathBuf,
}

fn signed() -> Signed {
    signed_logic(&demo_wasm())
}

/// `logic`, signed as version 1.
fn signed_logic(logic: &Path) -> Signed {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("publisher.key");
    let public = generate(&key).unwrap();
    let device = dir.path().join("device.wasm");
    std::fs::copy(logic, &device).unwrap();
    let status = device_tests::host()
        .args(["sign"])
        .arg(&device)
        .arg("--key")
        .arg(&key)
        .args(["--version", "1"])
        .status()
        .unwrap();
    assert!(status.success());
    Signed {
        dir,
        key,
        public,
        device,
    }
}

/// `host run` of the signed demo with --trust.
fn device_run(pki: &TestPki, port: u16, s: &Signed, client_id: &str) -> Command {
    let mut cmd = device_tests::host_run_component(&s.device, port, &pki.ca, Some(&pki.device));
    // A cache of its own: devices remember their version floor there.
    cmd.arg("--trust")
        .arg(&s.public)
        .args(["--client-id", client_id, "--publish-count", "1"])
        .args(["--iteration-delay-ms", "300", "--cache-dir"])
        .arg(s.dir.path().join("cache"));
    cmd
}

/// `host rollout` of `logic` as `version`.
fn rollout(
    pki: &TestPki,
    port: u16,
    s: &Signed,
    logic: &Path,
    version: u64,
    fleet: &str,
    devices: u32,
) -> Command {
    let mut cmd = device_tests::host();
    cmd.arg("rollout")
        .arg(logic)
        .arg("--key")
        .arg(&s.key)
        .args(["--version", &version.to_string(), "--fleet", fleet])
        .args(["--devices", &devices.to_string()])
        .args(["--broker", &format!("mqtts://localhost:{port}"), "--ca"])
        .arg(&pki.ca)
        .arg("--cert")
        .arg(&pki.subscriber.cert)
        .arg("--client-key")
        .arg(&pki.subscriber.key)
        .arg("--repo")
        .arg(s.dir.path().join(format!("rollout-{version}.tuf")))
        .env("RUST_LOG", "info");
    cmd
}

/// A publisher session for the test itself.
async fn publisher(pki: &TestPki, port: u16, limit: usize) -> Publisher {
    let tls = TlsClient::load_with(
        &TlsFiles {
            ca: Roots::File(pki.ca.clone()),
            cert: Some(pki.subscriber.cert.clone()),
            key: Some(ClientKey::File(pki.subscriber.key.clone())),
        },
        &Handshake::default(),
    )
    .unwrap();
    let broker = Endpoint {
        host: "localhost".into(),
        port,
    };
    let id = format!("test-publisher-{}", std::process::id());
    Publisher::connect(&broker, &tls, &id, limit).await.unwrap()
}

/// Signs `logic` as `version` with `key` into a fresh repository.
async fn sign(dir: &Path, logic: &Path, key: &Path, version: u64, world: &str) -> PathBuf {
    let repo = dir.join(format!("repo-{version}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&repo);
    signing::sign(
        logic,
        &SigningKey::load(key).unwrap(),
        version,
        world,
        &repo,
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    repo
}

/// The statuses of `devices` (their update topics `<id>/logic`) until each
/// has one in `states`; returns them in device order.
async fn statuses(p: &mut Publisher, devices: &[String], states: &[&str]) -> Vec<Status> {
    for d in devices {
        p.subscribe(&wire::status_topic(&wire::update_topic(d)))
            .await
            .unwrap();
    }
    let mut got: std::collections::BTreeMap<String, Status> = Default::default();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while got.len() < devices.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Some((_, payload)) = p.next(left).await else {
            panic!("statuses {got:?}; waiting for {devices:?} to be {states:?}");
        };
        if let Ok(status) = serde_json::from_slice::<Status>(&payload)
            && states.contains(&status.state.as_str())
        {
            got.insert(status.device.clone(), status);
        }
    }
    got.into_values().collect()
}

fn fleet_ids(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}-{i:04}")).collect()
}

#[test]
fn an_updated_logic_sees_the_state_its_predecessor_wrote() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let s = signed_logic(&device_tests::telemetry_wasm());
    let state = tempfile::tempdir().unwrap();
    let mut device = Running::spawn(
        device_run(&pki, broker.port, &s, "kept")
            .args(["--devices", "2", "--iteration-delay-ms", "0"])
            .args(["--logic-config", "interval-ms=100", "--state-dir"])
            .arg(state.path()),
    );
    device.wait_for("[kept-0001] Reading 3 acknowledged", LIMIT);
    let v2 = s.dir.path().join("telemetry-v2.wasm");
    let original = std::fs::read(device_tests::telemetry_wasm()).unwrap();
    std::fs::write(&v2, device_tests::renamed(&original, "version-2")).unwrap();
    let out = output_within(
        &mut rollout(&pki, broker.port, &s, &v2, 2, "kept", 2),
        LIMIT,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    let updated = device.wait_for("[kept-0001] version 2", LIMIT);
    let lines = device.kill();
    let after: Vec<&String> = lines
        .iter()
        .skip_while(|l| **l != updated)
        .filter(|l| l.contains("[kept-0001]"))
        .collect();
    assert!(
        after
            .iter()
            .any(|l| l.contains("Reading") && l.contains("taken")),
        "the new version takes readings: {after:#?}"
    );
    assert!(
        !after.iter().any(|l| l.contains("Reading 1 taken")),
        "the new version continued the numbering in the state: {after:#?}"
    );
}

#[test]
fn a_fleet_of_twenty_is_updated_through_the_broker_canaries_first() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let s = signed();
    let mut sub = Subscriber::start(broker.port, &pki, "+/example/topic");
    let mut fleet = Running::spawn(device_run(&pki, broker.port, &s, "plant").args([
        "--devices",
        "20",
        "--ramp-per-sec",
        "100",
    ]));
    let pid = fleet.child.id();
    fleet.wait_for("[plant-0020] iteration 1 completed", LIMIT);
    let out = output_within(
        rollout(&pki, broker.port, &s, &counter_wasm(), 2, "plant", 20).args([
            "--canary",
            "2",
            "--promote-after",
            "2",
        ]),
        LIMIT,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert!(
        stdout.contains("runs on 20/20 devices (2 canaries passed 2 iterations)"),
        "{stdout}"
    );
    // Canaries first: the others were offered it only after both canaries
    // had run it twice.
    let log = stderr + &stdout;
    let offered_rest = log
        .find("canaries passed: offering to the 18 other devices")
        .expect("promotion");
    for canary in ["plant-0001", "plant-0002"] {
        let ran = log
            .find(&format!("{canary}: running, 2 iteration(s)"))
            .expect("canary ran twice");
        assert!(
            ran < offered_rest,
            "{canary} ran twice before the promotion"
        );
    }
    // Every device publishes the counter's messages, from the same process.
    let counters: BTreeSet<String> = sub
        .messages(400, Duration::from_secs(20))
        .into_iter()
        .filter(|(_, p)| p.contains(r#""logic":"counter""#))
        .map(|(t, _)| t.split('/').next().unwrap().to_string())
        .collect();
    assert_eq!(
        counters,
        fleet_ids("plant", 20).into_iter().collect(),
        "every device runs the counter"
    );
    assert_eq!(fleet.child.id(), pid);
    fleet.wait_for("[plant-0020] version 2", LIMIT);
    let _ = fleet.child.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_unsigned_wrong_key_older_and_wrong_world_updates_are_refused_by_every_device() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let s = signed();
    let mut fleet =
        Running::spawn(device_run(&pki, broker.port, &s, "guarded").args(["--devices", "4"]));
    fleet.wait_for("[guarded-0004] iteration 1 completed", LIMIT);
    let devices = fleet_ids("guarded", 4);
    let topics: Vec<String> = devices.iter().map(|d| wire::update_topic(d)).collect();
    let mut p = publisher(&pki, broker.port, wire_limit()).await;
    let other = s.dir.path().join("other.key");
    generate(&other).unwrap();
    let counter = counter_wasm();

    // A chunk of the component changed on the way.
    let repo = sign(s.dir.path(), &counter, &s.key, 2, WORLD).await;
    let mut tampered = wire::read(&repo, wire::TARGETS_TOPIC, wire_limit()).unwrap();
    let last = tampered.targets.last_mut().unwrap();
    let n = last.payload.len();
    last.payload[n - 1] ^= 0xff;
    // No root: not signed for at all (each device's retained root is
    // deleted below, before it is offered).
    let repo = sign(s.dir.path(), &counter, &s.key, 3, WORLD).await;
    let mut unsigned = wire::read(&repo, wire::TARGETS_TOPIC, wire_limit()).unwrap();
    unsigned
        .metadata
        .retain(|(name, _)| !name.contains("root.json"));
    let wrong_key = wire::read(
        &sign(s.dir.path(), &counter, &other, 4, WORLD).await,
        wire::TARGETS_TOPIC,
        wire_limit(),
    )
    .unwrap();
    let older = wire::read(
        &sign(s.dir.path(), &counter, &s.key, 0, WORLD).await,
        wire::TARGETS_TOPIC,
        wire_limit(),
    )
    .unwrap();
    let wrong_world = wire::read(
        &sign(
            s.dir.path(),
            &counter,
            &s.key,
            5,
            "other:world/device@1.0.0",
        )
        .await,
        wire::TARGETS_TOPIC,
        wire_limit(),
    )
    .unwrap();

    for (what, update, reason, version) in [
        ("tampered chunk", tampered, "Hash mismatch", 2),
        ("unsigned", unsigned, "unsigned", 3),
        ("wrong key", wrong_key, "does not trust", 4),
        (
            "older version",
            older,
            "older than the running version 1",
            0,
        ),
        ("wrong world", wrong_world, "built for the world", 5),
    ] {
        if what == "unsigned" {
            for t in &topics {
                p.clear(&format!("{t}/metadata/1.root.json/0"))
                    .await
                    .unwrap();
            }
        }
        offer(&mut p, &update, &topics).await.unwrap();
        let got = statuses(&mut p, &devices, &["refused"]).await;
        for status in &got {
            assert!(status.reason.contains(reason), "{what}: {status:?}");
            // Which update was refused: the version and hash its metadata
            // claims, kept as the last offer in later reports.
            assert_eq!(status.version, version, "{what}: {status:?}");
            assert_eq!(status.sha256.len(), 64, "{what}: {status:?}");
            assert_eq!(
                status.last_offer.as_ref().map(|o| o.state.as_str()),
                Some("refused"),
                "{what}: {status:?}"
            );
            // One line, each cause said once.
            assert!(status.reason.len() < 600, "{what}: {}", status.reason);
        }
        // Clear the statuses for the next case.
        for t in &topics {
            p.clear(&wire::status_topic(t)).await.unwrap();
        }
        p.flush().await.unwrap();
    }
    let _ = fleet.child.kill();
    let (_, stdout, _) = fleet.finish(LIMIT);
    assert!(
        !stdout.contains("takes over"),
        "no device swapped: {stdout}"
    );
    assert_eq!(
        stdout.matches("refused update version").count(),
        20,
        "each device refused each update"
    );
}

fn wire_limit() -> usize {
    host::update::chunks::PAYLOAD_LIMIT
}

/// An update of the adversary, which traps or hangs on device 0002.
fn bad_update_rolls_back_on_the_canaries(attack: &str) {
    let pki = TestPki::new();
    let broker = pki.broker();
    let s = signed();
    let prefix = format!("one-{attack}");
    let mut fleet = Running::spawn(device_run(&pki, broker.port, &s, &prefix).args([
        "--devices",
        "6",
        "--iteration-timeout-ms",
        "2000",
    ]));
    fleet.wait_for(&format!("[{prefix}-0006] iteration 1 completed"), LIMIT);
    let out = output_within(
        rollout(
            &pki,
            broker.port,
            &s,
            &device_tests::adversary_wasm(),
            2,
            &prefix,
            6,
        )
        .args(["--canary", "2", "--promote-after", "3"]),
        LIMIT,
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}\n{stdout}");
    assert!(
        stderr.contains(&format!(
            "rollout stopped: canary {prefix}-0002 rolled it back"
        )) && stderr.contains("4 devices left on their logic"),
        "{stderr}"
    );
    let _ = fleet.child.kill();
    let (_, log, _) = fleet.finish(LIMIT);
    assert!(
        log.contains(&format!("[{prefix}-0002]")) && log.contains("in its first iterations"),
        "{log}"
    );
    for device in 3..=6 {
        let id = format!("[{prefix}-{device:04}]");
        let touched = log
            .lines()
            .any(|l| l.contains(&id) && (l.contains("accepted") || l.contains("takes over")));
        assert!(!touched, "{id} never got the update: {log}");
    }
}

#[test]
fn an_update_that_traps_rolls_back_on_the_canaries_and_goes_no_further() {
    bad_update_rolls_back_on_the_canaries("traps");
}

#[test]
fn an_update_that_hangs_rolls_back_on_the_canaries_and_goes_no_further() {
    bad_update_rolls_back_on_the_canaries("hang");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_started_later_gets_the_retained_update_in_chunks() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let s = signed();
    // Chunks of 16 KiB: the counter (about 110 KB) comes in seven or more.
    let limit = 16 * 1024;
    let repo = sign(s.dir.path(), &counter_wasm(), &s.key, 2, WORLD).await;
    let update = wire::read(&repo, wire::TARGETS_TOPIC, limit).unwrap();
    assert!(update.targets.len() >= 7, "{} chunks", update.targets.len());
    let mut p = publisher(&pki, broker.port, limit).await;
    offer(&mut p, &update, &[wire::update_topic("late")])
        .await
        .unwrap();

    let mut sub = Subscriber::start(broker.port, &pki, "late/example/topic");
    let mut device = Running::spawn(
        device_run(&pki, broker.port, &s, "late")
            .args(["--update-payload-limit", &limit.to_string()]),
    );
    let accepted = device.wait_for("[late] update version 2", LIMIT);
    assert!(accepted.contains("accepted"), "{accepted}");
    device.wait_for("Counter logic", LIMIT);
    let got = statuses(&mut p, &["late".to_string()], &["running"]).await;
    assert_eq!(got[0].version, 2);
    let counted = sub
        .messages(6, Duration::from_secs(20))
        .into_iter()
        .any(|(_, payload)| payload.contains(r#""logic":"counter""#));
    assert!(counted, "the late device publishes the counter's messages");
    let _ = device.child.kill();
}

#[test]
fn trust_is_checked_at_start_and_for_every_watched_replacement() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let s = signed();
    // Unsigned at start: refused, exit 1, one line.
    let bare = s.dir.path().join("bare.wasm");
    std::fs::copy(demo_wasm(), &bare).unwrap();
    let mut cmd = device_tests::host_run_component(&bare, broker.port, &pki.ca, Some(&pki.device));
    cmd.arg("--trust")
        .arg(&s.public)
        .args(["--iterations", "1"]);
    let out = output_within(&mut cmd, LIMIT);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = stderr.trim_end().lines().last().unwrap();
    assert!(
        line.contains("refused") && line.contains("unsigned"),
        "{line}"
    );

    // Watched: a replacement signed with another key is refused; one signed
    // with the trusted key but older is refused; a newer one swaps in.
    let other = s.dir.path().join("other.key");
    generate(&other).unwrap();
    let mut host = Running::spawn(device_run(&pki, broker.port, &s, "watched").args([
        "--watch",
        "--iterations",
        "40",
    ]));
    host.wait_for("iteration 1 completed", LIMIT);
    let resign = |key: &Path, version: u64| {
        std::fs::copy(counter_wasm(), &s.device).unwrap();
        let status = device_tests::host()
            .arg("sign")
            .arg(&s.device)
            .arg("--key")
            .arg(key)
            .args(["--version", &version.to_string()])
            .arg("--repo")
            .arg(s.dir.path().join(format!("staging-{version}.tuf")))
            .status()
            .unwrap();
        assert!(status.success());
        // Put the repository in place at once, as a deployment would.
        let live = s.dir.path().join("device.wasm.tuf");
        let _ = std::fs::remove_dir_all(&live);
        std::fs::rename(s.dir.path().join(format!("staging-{version}.tuf")), &live).unwrap();
    };
    resign(&other, 5);
    let line = host.wait_for("refused the new device.wasm", LIMIT);
    assert!(line.contains("does not trust"), "{line}");
    host.seen.clear();
    resign(&s.key, 0);
    // The first replacement's file events may still be judged (refused
    // again for its key) before this one's: wait for this one's answer.
    let line = host.wait_for("older than the running version 1", LIMIT);
    assert!(line.contains("refused the new device.wasm"), "{line}");
    host.seen.clear();
    resign(&s.key, 2);
    let line = host.wait_for("swapped device.wasm", LIMIT);
    assert!(line.contains("version 2"), "{line}");
    host.wait_for("Counter logic", LIMIT);
    let _ = host.child.kill();
}

#[test]
fn allow_downgrade_lets_an_older_signed_version_start_watching_over() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let s = signed();
    let mut host = Running::spawn(device_run(&pki, broker.port, &s, "down").args([
        "--watch",
        "--allow-downgrade",
        "--iterations",
        "40",
    ]));
    host.wait_for("iteration 1 completed", LIMIT);
    std::fs::copy(counter_wasm(), &s.device).unwrap();
    let status = device_tests::host()
        .arg("sign")
        .arg(&s.device)
        .arg("--key")
        .arg(&s.key)
        .args(["--version", "0"])
        .status()
        .unwrap();
    assert!(status.success());
    let line = host.wait_for("swapped device.wasm", LIMIT);
    assert!(line.contains("version 0"), "{line}");
    let _ = host.child.kill();
}

/// SIGTERM, as an operator or systemd stops the host, and its output.
fn terminate(running: Running) -> String {
    let ok = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM");
    let (_, stdout, stderr) = running.finish(LIMIT);
    format!("{stdout}{stderr}")
}

/// The retained messages under `filters` on the broker now, and their bytes.
async fn retained(p: &mut Publisher, filters: &[&str]) -> (usize, usize) {
    let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
    let got = p.retained(&filters).await.unwrap();
    (got.len(), got.iter().map(|(t, m)| t.len() + m.len()).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_runs_the_update_it_accepted_and_the_floor_holds() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let s = signed();
    let state = tempfile::tempdir().unwrap();
    let fleet = |extra: &[&str]| {
        let mut cmd = device_run(&pki, broker.port, &s, "keep");
        cmd.args(["--devices", "2", "--state-dir"])
            .arg(state.path())
            .args(extra);
        cmd
    };
    let mut running = Running::spawn(&mut fleet(&[]));
    running.wait_for("[keep-0002] iteration 1 completed", LIMIT);
    let out = output_within(
        &mut rollout(&pki, broker.port, &s, &counter_wasm(), 2, "keep", 2),
        LIMIT,
    );
    assert!(out.status.success(), "{:?}", text(&out));
    // An older version is refused, with the fix for that cause.
    let out = output_within(
        &mut rollout(&pki, broker.port, &s, &demo_wasm(), 1, "keep", 2),
        LIMIT,
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("rollout stopped: canary keep-0001 refused it: version 1 is older than the running version 2 (publish a version above 2)"),
        "{stderr}"
    );
    terminate(running);
    // The refused update is deleted from the broker: what the status says
    // of it after the restart comes from the device's own state.
    let mut p = publisher(&pki, broker.port, wire_limit()).await;
    let filters = ["keep-0001/logic/metadata/#".to_string()];
    for (topic, _) in p.retained(&filters).await.unwrap() {
        p.clear(&topic).await.unwrap();
    }
    p.flush().await.unwrap();

    // Restarted on the same command line (the factory file, version 1): it
    // runs the version 2 it accepted, says so, and its status says so.
    let mut sub = Subscriber::start(broker.port, &pki, "keep-0001/example/topic");
    let mut running = Running::spawn(&mut fleet(&[]));
    let line = running.wait_for("[keep-0001] starts on", LIMIT);
    assert!(
        line.contains("version 2")
            && line.contains("version 1")
            && line.contains("--allow-downgrade"),
        "{line}"
    );
    running.wait_for("Counter logic", LIMIT);
    let counted = sub
        .messages(4, Duration::from_secs(20))
        .iter()
        .any(|(_, m)| m.contains(r#""logic":"counter""#));
    assert!(counted, "the counter runs after the restart");
    let got = statuses(&mut p, &fleet_ids("keep", 2), &["running"]).await;
    assert!(got.iter().all(|st| st.version == 2), "{got:?}");
    // The canary's refusal of version 1 stays visible after the restart.
    let offer = got[0].last_offer.as_ref().expect("the last offer is kept");
    assert_eq!(
        (offer.version, offer.state.as_str()),
        (1, "refused"),
        "{got:?}"
    );
    terminate(running);

    // --allow-downgrade: a factory reset onto the file.
    let mut running = Running::spawn(&mut fleet(&["--allow-downgrade"]));
    let line = running.wait_for("[keep-0001] --allow-downgrade", LIMIT);
    assert!(line.contains("below version 2"), "{line}");
    running.wait_for("[keep-0001] iteration 1 completed", LIMIT);
    let log = terminate(running);
    assert!(!log.contains("Counter logic"), "the demo runs again: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_below_the_floor_with_nothing_kept_is_refused_at_start_in_one_line() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let s = signed();
    let state = tempfile::tempdir().unwrap();
    let device = || {
        let mut cmd = device_run(&pki, broker.port, &s, "solo");
        cmd.arg("--state-dir").arg(state.path());
        cmd
    };
    let mut running = Running::spawn(&mut device());
    running.wait_for("iteration 1 completed", LIMIT);
    let repo = sign(s.dir.path(), &counter_wasm(), &s.key, 2, WORLD).await;
    let mut p = publisher(&pki, broker.port, wire_limit()).await;
    offer(
        &mut p,
        &wire::read(&repo, wire::TARGETS_TOPIC, wire_limit()).unwrap(),
        &[wire::update_topic("solo")],
    )
    .await
    .unwrap();
    running.wait_for("[solo] update version 2", LIMIT);
    let _ = running.kill();
    // The kept copy is lost (a disk replaced, a directory wiped).
    std::fs::remove_dir_all(state.path().join("logic")).unwrap();
    let out = output_within(&mut device(), LIMIT);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = stderr.trim_end().lines().last().unwrap();
    assert!(
        line.contains("version 1 is below version 2") && line.contains("--allow-downgrade"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_component_under_a_higher_version_is_answered_and_joiners_get_the_fleets_update() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let s = signed();
    let mut running = Running::spawn(device_run(&pki, broker.port, &s, "same").args([
        "--devices",
        "3",
        "--iteration-delay-ms",
        "100",
    ]));
    running.wait_for("[same-0003] iteration 1 completed", LIMIT);
    // Devices 1 and 2 are rolled out to; device 3 is outside the range.
    for version in [2, 3] {
        let started = std::time::Instant::now();
        let out = output_within(
            rollout(&pki, broker.port, &s, &counter_wasm(), version, "same", 2)
                .args(["--promote-after", "1"]),
            LIMIT,
        );
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "version {version}: {stderr}");
        assert!(stdout.contains("runs on 2/2 devices"), "{stdout}");
        println!(
            "version {version} of the counter: rolled out in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let line = running.wait_for("[same-0001] update version 3", LIMIT);
    assert!(line.contains("is the logic running"), "{line}");
    let mut p = publisher(&pki, broker.port, wire_limit()).await;
    let got = statuses(&mut p, &fleet_ids("same", 2), &["running"]).await;
    assert!(got.iter().all(|st| st.version == 3), "{got:?}");
    // Device 3 reads the fleet's topic: it took the fleet's update.
    let line = running.wait_for("[same-0003] update version", LIMIT);
    assert!(
        line.contains("accepted") && line.contains("same/logic"),
        "{line}"
    );
    // The manual's status subscription works as printed (with this test's
    // broker and files for its placeholders).
    for page in ["README.md", "docs/updates.md"] {
        let manual = std::fs::read_to_string(device_tests::root().join(page)).unwrap();
        let printed = manual
            .lines()
            .find(|l| l.starts_with("mosquitto_sub") && l.contains("+/logic/status"))
            .unwrap_or_else(|| panic!("{page} shows a status subscription"));
        let command = printed
            .replace("HOST", "localhost")
            .replace("8883", &broker.port.to_string())
            .replace("ROOT.pem", &pki.ca.display().to_string())
            .replace("TOOL.pem", &pki.subscriber.cert.display().to_string())
            .replace("TOOL.key", &pki.subscriber.key.display().to_string());
        let out = output_within(
            Command::new("sh").args(["-c", &format!("{command} -C 3 -W 20")]),
            LIMIT,
        );
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{page}: {command}: {stderr}");
        assert!(
            stdout.lines().count() == 3
                && stdout
                    .lines()
                    .all(|l| l.starts_with("same-000") && l.contains("/logic/status {")),
            "{page}: {stdout}"
        );
    }
    let _ = running.child.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_rollouts_in_a_row_reach_every_device_and_leave_bounded_files() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let s = signed();
    let state = tempfile::tempdir().unwrap();
    let mut running = Running::spawn(
        device_run(&pki, broker.port, &s, "many")
            .args([
                "--devices",
                "5",
                "--iteration-delay-ms",
                "50",
                "--state-dir",
            ])
            .arg(state.path()),
    );
    running.wait_for("[many-0005] iteration 1 completed", LIMIT);
    let counter = counter_wasm();
    let variants: Vec<PathBuf> = ["counter-b", "counter-c"]
        .iter()
        .map(|name| {
            let path = s.dir.path().join(format!("{name}.wasm"));
            let bytes = device_tests::renamed(&std::fs::read(&counter).unwrap(), name);
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect();
    let rollouts = 100u64;
    let started = std::time::Instant::now();
    for version in 2..2 + rollouts {
        // Three components in turn, each rollout a new version.
        let logic = match version % 3 {
            0 => &counter,
            1 => &variants[0],
            _ => &variants[1],
        };
        let out = output_within(
            rollout(&pki, broker.port, &s, logic, version, "many", 5)
                .args(["--promote-after", "1"]),
            LIMIT,
        );
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success(),
            "rollout of version {version}: {stderr}"
        );
        assert!(
            stdout.contains("runs on 5/5 devices"),
            "version {version}: {stdout}"
        );
    }
    let secs = started.elapsed().as_secs_f64();
    let mut p = publisher(&pki, broker.port, wire_limit()).await;
    let (metadata, metadata_bytes) = retained(&mut p, &["+/logic/metadata/#"]).await;
    let (components, component_bytes) = retained(&mut p, &["logic/targets/#"]).await;
    let mut log = running.kill();
    // A restart: every device runs the last version, and the kept
    // repositories are those the devices' records name.
    let mut running = Running::spawn(
        device_run(&pki, broker.port, &s, "many")
            .args([
                "--devices",
                "5",
                "--iteration-delay-ms",
                "50",
                "--state-dir",
            ])
            .arg(state.path()),
    );
    let last = rollouts + 1;
    let line = running.wait_for("[many-0005] starts on", LIMIT);
    assert!(line.contains(&format!("version {last}")), "{line}");
    log.extend(running.kill());
    let held: Vec<usize> = log
        .iter()
        .filter_map(|l| {
            let at = l.find(" metadata files held")?;
            l[..at].rsplit(' ').next()?.parse().ok()
        })
        .collect();
    let kept = std::fs::read_dir(state.path().join("logic"))
        .unwrap()
        .count();
    println!(
        "{rollouts} rollouts to 5 devices in {secs:.0} s ({:.1} s each); on the broker: {metadata} retained metadata chunks ({metadata_bytes} bytes), {components} component chunks ({component_bytes} bytes); a device held at most {} metadata files; {kept} kept repositories on disk",
        secs / rollouts as f64,
        held.iter().max().unwrap_or(&0)
    );
    // Each device topic and the fleet's: a root, targets, snapshot, timestamp.
    assert!(metadata <= 6 * 4, "{metadata} retained metadata chunks");
    assert_eq!(components, 1, "only the last component stays");
    assert!(held.iter().all(|n| *n <= 6), "{held:?}");
    // The last version and the one before it (a rollback goes back there).
    assert!(kept <= 2, "{kept} kept repositories");
}

/// Resident memory of `pid`, kB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_that_never_complete_expire_and_their_memory_is_returned() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let s = signed();
    let mut running = Running::spawn(device_run(&pki, broker.port, &s, "flood").args([
        "--update-partial-ttl-secs",
        "4",
        "--iteration-delay-ms",
        "500",
    ]));
    running.wait_for("iteration 2 completed", LIMIT);
    let pid = running.child.id();
    let before = rss_kb(pid);
    // 128 MiB: 256 files of two 512 KiB chunks, of which only the first comes.
    let chunk = 512 * 1024;
    let mut p = publisher(&pki, broker.port, chunk + 64).await;
    let mut peak = before;
    for batch in 0..16u32 {
        let messages: Vec<Message> = (0..16u32)
            .map(|i| {
                let mut payload = vec![0u8; chunk];
                payload[4..8].copy_from_slice(&2u32.to_be_bytes());
                Message {
                    topic: format!("flood/logic/metadata/{}.targets.json/0", batch * 16 + i + 1),
                    payload,
                }
            })
            .collect();
        p.publish(&messages).await.unwrap();
        p.flush().await.unwrap();
        peak = peak.max(rss_kb(pid));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    peak = peak.max(rss_kb(pid));
    let dropped = running.wait_for("whose chunks stopped coming", LIMIT);
    let bytes: usize = dropped
        .split("dropped ")
        .nth(1)
        .and_then(|r| r.split(' ').next()?.parse().ok())
        .expect("a byte count");
    // What was held in progress, at most the device's bound, then dropped.
    assert!((512 << 10..=4 << 20).contains(&bytes), "{dropped}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kb(pid);
    println!(
        "128 MiB of chunks that never complete: host RSS {before} kB before, {peak} kB at most during, {after} kB after the expiry ({:.2}x)",
        after as f64 / before as f64
    );
    running.wait_for("iteration", LIMIT);
    let _ = running.child.kill();
    assert!(
        after as f64 <= before as f64 * 1.10,
        "RSS {before} kB before, {after} kB after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_retained_on_the_update_topic_is_named_with_the_command_that_deletes_it() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let s = signed();
    let mut p = publisher(&pki, broker.port, wire_limit()).await;
    // A malformed root, a thousand junk names, before the device starts.
    let junk_root = "junk/logic/metadata/2.root.json/0";
    let mut junk = vec![Message {
        topic: junk_root.into(),
        payload: [&[0, 0, 0, 0, 0, 0, 0, 1][..], b"not metadata"].concat(),
    }];
    junk.extend((0..1000).map(|i| Message {
        topic: format!("junk/logic/metadata/junk-{i}.json/0"),
        payload: [&[0, 0, 0, 0, 0, 0, 0, 1][..], b"{}"].concat(),
    }));
    p.publish(&junk).await.unwrap();
    p.flush().await.unwrap();
    let mut running = Running::spawn(&mut device_run(&pki, broker.port, &s, "junk"));
    let line = running.wait_for("holds no TUF metadata", LIMIT);
    assert!(line.contains("junk/logic/metadata/2.root.json"), "{line}");
    // Updates still get through, the junk notwithstanding.
    let repo = sign(s.dir.path(), &counter_wasm(), &s.key, 2, WORLD).await;
    let update = wire::read(&repo, wire::TARGETS_TOPIC, wire_limit()).unwrap();
    p.publish(&update.targets).await.unwrap();
    p.publish(&update.metadata_for("junk/logic")).await.unwrap();
    p.flush().await.unwrap();
    running.wait_for("[junk] update version 2", LIMIT);
    // The command printed deletes it, as printed.
    let command = line.split("delete it: ").nth(1).expect("a command");
    let out = output_within(Command::new("sh").args(["-c", command]), LIMIT);
    assert!(out.status.success(), "{command}: {:?}", text(&out));
    let (left, _) = retained(&mut p, &[junk_root]).await;
    assert_eq!(left, 0, "{command} deleted {junk_root}");
    let _ = running.child.kill();
}

#[test]
fn a_hanging_canary_with_the_default_settings_stops_the_rollout() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let s = signed();
    // Device 0002 runs a logic that declares 1.5 s and hangs; no timeout
    // flag anywhere.
    let prefix = "one-hang-declared";
    let mut fleet =
        Running::spawn(device_run(&pki, broker.port, &s, prefix).args(["--devices", "3"]));
    fleet.wait_for(&format!("[{prefix}-0003] iteration 1 completed"), LIMIT);
    let out = output_within(
        rollout(
            &pki,
            broker.port,
            &s,
            &device_tests::adversary_wasm(),
            2,
            prefix,
            3,
        )
        .args(["--canary", "2"]),
        LIMIT,
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}\n{stdout}");
    assert!(
        stderr.contains(&format!(
            "rollout stopped: canary {prefix}-0002 rolled it back"
        )) && stderr.contains("fix the logic and publish a new version"),
        "{stderr}"
    );
    let log = terminate(fleet);
    assert!(
        log.contains(&format!("[{prefix}-0002] swapped-in")),
        "the rollback line names the device: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_that_could_not_see_a_canary_finish_does_not_start() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let s = signed();
    let mut fleet = Running::spawn(device_run(&pki, broker.port, &s, "window").args([
        "--devices",
        "2",
        "--iteration-timeout-ms",
        "20000",
    ]));
    fleet.wait_for("[window-0001] iteration 1 completed", LIMIT);
    for (fleet_name, timeout, expected) in [
        (
            "window",
            "10",
            "--timeout-secs 10 is shorter than the canaries' iteration timeout and delay (20 s)",
        ),
        (
            "ghost",
            "600",
            "no status from canary ghost-0001 on ghost-0001/logic/status",
        ),
    ] {
        let out = output_within(
            rollout(&pki, broker.port, &s, &counter_wasm(), 2, fleet_name, 1)
                .args(["--timeout-secs", timeout]),
            LIMIT,
        );
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("rollout not started") && stderr.contains(expected),
            "{stderr}"
        );
    }
    let mut p = publisher(&pki, broker.port, wire_limit()).await;
    let (published, _) = retained(&mut p, &["window-0001/logic/metadata/#"]).await;
    assert_eq!(published, 0, "nothing was published");
    let _ = fleet.child.kill();
}

#[test]
fn metadata_that_is_already_expired_is_not_signed() {
    let s = signed();
    let out = device_tests::host()
        .arg("sign")
        .arg(&s.device)
        .arg("--signing-key")
        .arg(&s.key)
        .args(["--version", "2", "--valid-days", "0"])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("'--valid-days <DAYS>': 0 is not in 1..=36500"),
        "{stderr}"
    );
}
