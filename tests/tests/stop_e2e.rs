//! End to end: stopping the host. SIGTERM and Ctrl-C (SIGINT) let the
//! iteration in flight end (its DISCONNECT sent, every acknowledged message
//! delivered) and exit 0; the embedded broker goes with the host, however
//! it ends, and leaves no files.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use device_tests::{Running, Subscriber, TestPki, demo_wasm, host_run, wait_output};

const LIMIT: Duration = Duration::from_secs(60);

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// Whether something accepts TCP on 127.0.0.1:`port`.
fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
        .is_ok()
}

/// Waits up to 3 s for the port to close.
fn closes(port: u16) -> bool {
    (0..30).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        !listening(port)
    })
}

#[test]
fn sigterm_lets_the_iteration_in_flight_end_and_loses_nothing() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let topic = "stop-dev/example/topic";
    let mut sub = Subscriber::start(broker.port, &pki, topic);
    let mut host = Running::spawn(host_run(broker.port, &pki.ca, Some(&pki.device)).args([
        "--client-id",
        "stop-dev",
        "--publish-delay-ms",
        "400",
    ]));
    let first = host.wait_for("iteration 1 completed successfully", LIMIT);
    assert!(first.contains("5 acknowledged"), "{first}");
    // Well inside iteration 2: a publish in flight, idle waits to come.
    host.seen.clear();
    host.wait_for("Publish to the MQTT topic", LIMIT);
    signal(host.child.id(), "TERM");
    let (ok, stdout, stderr) = host.finish(Duration::from_secs(10));
    assert!(ok, "exit 0: {stderr}\n{stdout}");
    let after = &stdout[stdout
        .find("SIGTERM: stopping")
        .expect("the stop is logged")..];
    assert!(
        after.contains("Disconnecting the MQTT connection"),
        "{after}"
    );
    assert!(
        after.contains("iteration 2 completed successfully: 5 published, 5 acknowledged"),
        "{after}"
    );
    assert!(
        !stdout.contains("iteration 3"),
        "no new iteration starts: {stdout}"
    );
    // Iteration 1's five, and iteration 2's (the lines seen since).
    let acked = 5 + stdout.matches("PUBACK received for packet Id").count();
    assert_eq!(acked, 10);
    let got = sub.messages(acked, Duration::from_secs(10));
    assert_eq!(
        got.len(),
        acked,
        "every acknowledged message arrived: {got:?}"
    );
}

/// `host run` with the embedded broker and a temporary directory of its own.
fn embedded(tmp: &std::path::Path) -> Running {
    device_tests::require_mosquitto();
    let mut cmd = device_tests::host();
    cmd.arg("run")
        .arg(demo_wasm())
        .args(["--publish-delay-ms", "300", "--iteration-delay-ms", "100"])
        .env("TMPDIR", tmp)
        .env("RUST_LOG", "info");
    let mut host = Running::spawn(&mut cmd);
    host.wait_for("Publish to the MQTT topic", LIMIT);
    host
}

fn embedded_port(host: &Running) -> u16 {
    let line = host
        .seen
        .iter()
        .find(|l| l.contains("started an embedded mosquitto on 127.0.0.1:"))
        .expect("the embedded broker's line");
    let at = line.find("127.0.0.1:").unwrap() + "127.0.0.1:".len();
    line[at..].split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn sigterm_and_sigint_stop_the_embedded_broker_and_leave_no_files() {
    for name in ["TERM", "INT"] {
        let tmp = tempfile::tempdir().unwrap();
        let host = embedded(tmp.path());
        let port = embedded_port(&host);
        assert!(listening(port));
        signal(host.child.id(), name);
        let (ok, stdout, stderr) = host.finish(Duration::from_secs(10));
        assert!(ok, "SIG{name}: exit 0: {stderr}\n{stdout}");
        assert!(stdout.contains(&format!("SIG{name}: stopping")), "{stdout}");
        assert!(closes(port), "SIG{name}: the embedded broker stopped");
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert!(left.is_empty(), "SIG{name}: files left: {left:?}");
    }
}

#[test]
fn ctrl_c_at_a_terminal_reaches_the_host_not_the_broker_under_it() {
    // A terminal's Ctrl-C signals the whole foreground process group.
    let tmp = tempfile::tempdir().unwrap();
    device_tests::require_mosquitto();
    let mut cmd = device_tests::host();
    cmd.arg("run")
        .arg(demo_wasm())
        .args(["--publish-delay-ms", "300", "--iteration-delay-ms", "100"])
        .env("TMPDIR", tmp.path())
        .env("RUST_LOG", "info");
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut host = Running::spawn(&mut cmd);
    host.wait_for("Publish to the MQTT topic", LIMIT);
    host.seen.clear();
    host.wait_for("Publish to the MQTT topic", LIMIT);
    let group = format!("-{}", host.child.id());
    let status = Command::new("kill")
        .args(["-INT", "--", &group])
        .status()
        .unwrap();
    assert!(status.success());
    let (ok, stdout, stderr) = host.finish(Duration::from_secs(10));
    assert!(ok, "{stderr}\n{stdout}");
    assert!(
        stdout.contains("Disconnecting the MQTT connection")
            && stdout.contains("completed successfully"),
        "the iteration in flight still reached its broker: {stdout}"
    );
}

#[test]
fn sigkill_takes_the_embedded_broker_with_it_and_leaves_no_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let host = embedded(tmp.path());
    let port = embedded_port(&host);
    signal(host.child.id(), "KILL");
    let out = wait_output(host.child, LIMIT);
    assert!(!out.status.success());
    assert!(closes(port), "the embedded broker died with the host");
    // The keys were never left for a kill to strand: removed at start-up.
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "files left: {left:?}");
}

#[test]
fn the_embedded_brokers_files_are_the_owners_only_until_removed() {
    device_tests::require_mosquitto();
    let mut local = host::broker::embedded::LocalBroker::start("perm-check").expect("start");
    let Some(host::tls::ClientKey::File(key)) = local.files.key.clone() else {
        panic!("a client key file");
    };
    let dir = key.parent().unwrap().to_owned();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&dir.join("server.key")), 0o600);
    local.remove_files().unwrap();
    assert!(!dir.exists(), "removed once loaded");
    // The broker runs on without its files.
    assert!(listening(local.mosquitto.port));
}

#[test]
fn a_second_signal_stops_at_once() {
    let pki = TestPki::new();
    let broker = pki.broker();
    // A logic that never returns, with no watchdog, no CPU budget, and a long
    // stop timeout: only the second signal ends it.
    let mut host = Running::spawn(
        device_tests::host_run_adversary(broker.port, &pki)
            .args(["--client-id", "hang", "--iteration-timeout-ms", "0"])
            .args(["--cpu-budget-ms", "0", "--stop-timeout-ms", "60000"]),
    );
    host.wait_for("session open; hanging", LIMIT);
    signal(host.child.id(), "TERM");
    host.wait_for("SIGTERM: stopping", LIMIT);
    signal(host.child.id(), "TERM");
    let (ok, stdout, stderr) = host.finish(Duration::from_secs(10));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("stopping at once (second signal)"),
        "{stdout}"
    );
}

#[test]
fn a_broker_whose_port_was_taken_meanwhile_is_not_mistaken_for_another() {
    // Another process binds the chosen port before mosquitto does: the
    // start must not take that process's listener for its own broker.
    let pki = TestPki::new();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = other.local_addr().unwrap().port();
    let started =
        host::broker::mosquitto::Mosquitto::start_on(pki.dir.path(), &pki.listener, port, false);
    match started {
        Err(host::broker::mosquitto::BrokerError::PortTaken { port: p }) => assert_eq!(p, port),
        Err(e) => panic!("expected PortTaken, got {e}"),
        Ok(_) => panic!("took the other listener on {port} for its broker"),
    }
    // `start` chooses again and gets a broker of its own.
    let own = host::broker::mosquitto::Mosquitto::start(pki.dir.path(), &pki.listener).unwrap();
    assert_ne!(own.port, port);
    assert!(own.log_text().contains(&format!("port {}.", own.port)));
}
