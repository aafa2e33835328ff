//! End to end: a broker that drops connections after accepting them (a
//! proxy in front of mosquitto closes each one a moment after it opened,
//! once the MQTT session is up). The demo reopens a lost connection only
//! after a Full-Jitter wait, so the gaps between its connects follow the
//! backoff windows; and what it resends after a reconnect is counted once
//! in its report, the fleet's summary line and the metrics.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use device_tests::{Running, TestPki, host_run, output_within, text};
use host::broker::mosquitto::free_port;

/// A TCP proxy on loopback that closes each of its first `closes`
/// connections `after` it was accepted, and records when each was accepted.
struct ClosingProxy {
    port: u16,
    accepted: Arc<Mutex<Vec<Instant>>>,
}

impl ClosingProxy {
    fn start(upstream: u16, closes: usize, after: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let record = accepted.clone();
        std::thread::spawn(move || {
            for (n, client) in listener.incoming().enumerate() {
                let Ok(client) = client else { continue };
                record.lock().unwrap().push(Instant::now());
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server.try_clone().unwrap(), client.try_clone().unwrap()),
                ] {
                    std::thread::spawn(move || pump(from, to));
                }
                if n < closes {
                    std::thread::spawn(move || {
                        std::thread::sleep(after);
                        let _ = client.shutdown(Shutdown::Both);
                        let _ = server.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Self { port, accepted }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// The delays the demo logged before each reconnect, milliseconds.
fn reconnect_waits(stdout: &str) -> Vec<u64> {
    stdout
        .lines()
        .filter_map(|l| {
            let rest = l.split("Reconnecting with backoff and jitter: ").nth(1)?;
            rest.strip_suffix(" ms.")?.parse().ok()
        })
        .collect()
}

#[test]
fn lost_connections_are_reopened_after_full_jitter_waits() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let hold = Duration::from_millis(400);
    let proxy = ClosingProxy::start(broker.port, usize::MAX, hold);
    let out = output_within(
        host_run(proxy.port, &pki.ca, Some(&pki.device))
            .args(["--client-id", "dropped", "--iterations", "1"])
            .args(["--publish-count", "20", "--publish-delay-ms", "1000"]),
        Duration::from_secs(120),
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "the iteration fails once the reconnects run out: {stdout}\n{stderr}"
    );
    let waits = reconnect_waits(&stdout);
    // The original's windows: 500 ms doubling to 5,000 ms, five retries.
    let windows = [500, 1000, 2000, 4000, 5000];
    assert_eq!(
        waits.len(),
        5,
        "five reconnects, each after a wait: {stdout}"
    );
    for (wait, window) in waits.iter().zip(windows) {
        assert!(*wait <= window, "{wait} ms within the {window} ms window");
    }
    let accepted = proxy.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 6, "the first connect and five reconnects");
    let mut gaps = Vec::new();
    for (i, pair) in accepted.windows(2).enumerate() {
        // Each connection lived `hold`; the next came at least the logged
        // wait after it closed (a little scheduling slack).
        let gap = pair[1].duration_since(pair[0]).saturating_sub(hold);
        gaps.push(gap.as_millis());
        assert!(
            gap + Duration::from_millis(20) >= Duration::from_millis(waits[i]),
            "reconnect {} came {gap:?} after the loss, before its {} ms wait",
            i + 1,
            waits[i]
        );
    }
    println!(
        "reconnect waits (logged, ms): {waits:?}; gaps after each loss (measured, ms): {gaps:?}"
    );
}

#[test]
fn what_a_reconnect_resends_is_counted_once() {
    let pki = TestPki::new();
    let broker = pki.broker();
    // The first connection is dropped while the demo idles after its
    // first publish; the second lives.
    let proxy = ClosingProxy::start(broker.port, 1, Duration::from_millis(600));
    let out = output_within(
        host_run(proxy.port, &pki.ca, Some(&pki.device))
            .args([
                "--client-id",
                "resent",
                "--iterations",
                "1",
                "--persistent-session",
            ])
            .args(["--publish-count", "3", "--publish-delay-ms", "1000"])
            .arg("--state-dir")
            .arg(tempfile::tempdir().unwrap().path()),
        Duration::from_secs(120),
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(reconnect_waits(&stdout).len(), 1, "{stdout}");
    assert!(
        stdout.contains("iteration 1 completed successfully: 3 published, 3 acknowledged, 3 echoes received, 2 TLS connection(s)."),
        "{stdout}"
    );
}

/// Two devices with persistent sessions, each losing its first connection
/// while a publish is in flight or idle: the fleet's summary and the
/// metrics count every message once, as the devices' reports do.
#[test]
fn what_a_fleet_resends_is_counted_once_in_its_summary_and_metrics() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let proxy = ClosingProxy::start(broker.port, 2, Duration::from_millis(600));
    let metrics = free_port().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut fleet = Running::spawn(
        host_run(proxy.port, &pki.ca, Some(&pki.device))
            .args(["--devices", "2", "--client-id", "resent"])
            .args(["--persistent-session", "--metrics-listen"])
            .arg(format!("127.0.0.1:{metrics}"))
            .args(["--publish-count", "3", "--publish-delay-ms", "1000"])
            // One iteration each, then the counts hold still.
            .args(["--iteration-delay-ms", "60000", "--state-dir"])
            .arg(state.path()),
    );
    let limit = Duration::from_secs(120);
    for device in ["resent-0001", "resent-0002"] {
        let report = fleet.wait_for(&format!("[{device}] iteration 1 completed"), limit);
        assert!(
            report.contains("3 published, 3 acknowledged, 3 echoes received, 2 TLS connection(s)."),
            "{report}"
        );
    }
    let summary = fleet.wait_for(", 2 iterations done", limit);
    assert!(
        summary.contains("6 publishes acknowledged"),
        "each message once: {summary}"
    );
    let text = ureq::get(&format!("http://127.0.0.1:{metrics}/metrics"))
        .call()
        .expect("scrape")
        .body_mut()
        .read_to_string()
        .unwrap();
    let acknowledged: f64 = text
        .lines()
        .filter(|l| l.starts_with("mqtt_device_acknowledgements_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(acknowledged, 6.0, "{text}");
    let lines = fleet.kill();
    let reconnects = lines
        .iter()
        .filter(|l| l.contains("Reconnecting with backoff and jitter"))
        .count();
    assert_eq!(reconnects, 2, "one lost connection each: {lines:#?}");
}
