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
        ("older version", older, "older than the running version 1", 0),
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
