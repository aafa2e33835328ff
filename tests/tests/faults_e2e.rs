//! End to end: nothing is lost. With a persistent session, the demo survives
//! a broker killed (SIGKILL) and restarted while it connects, while it is
//! subscribed, and with a publish in flight; and a proxy that cuts the TCP
//! stream at random byte offsets. An independent subscriber with its own
//! persistent session must receive every message at least once. (The broker
//! saves its database after every change, or a SIGKILL would lose messages
//! it had already acknowledged: its durability, which no client can repair.)

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use device_tests::{Running, Subscriber, TestPki, host_run};
use host::broker::mosquitto::Mosquitto;

const LIMIT: Duration = Duration::from_secs(120);

/// The flags of a demo that must not lose anything and may retry a lot.
fn resilient(cmd: &mut std::process::Command, iterations: u32, id: &str) {
    cmd.args([
        "--persistent-session",
        "--client-id",
        id,
        "--payload",
        "msg-{iteration}-{publish}",
    ])
    .args([
        "--iterations",
        &iterations.to_string(),
        "--publish-count",
        "5",
        "--publish-delay-ms",
        "100",
    ])
    .args([
        "--backoff-base-ms",
        "100",
        "--backoff-max-ms",
        "800",
        "--backoff-max-attempts",
        "30",
    ])
    .args([
        "--connect-timeout-ms",
        "2000",
        "--connack-timeout-ms",
        "3000",
    ]);
}

/// Counts each payload received; prints the figures.
fn tally(
    label: &str,
    faults: usize,
    published: u32,
    got: &[(String, String)],
) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for (_, payload) in got {
        *seen.entry(payload.clone()).or_insert(0) += 1;
    }
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    println!(
        "{label}: faults injected {faults}, messages published {published}, received {} ({} distinct), duplicates {duplicates}",
        got.len(),
        seen.len()
    );
    seen
}

fn assert_all_arrived(seen: &BTreeMap<String, usize>, iterations: u32) {
    for i in 1..=iterations {
        for p in 1..=5 {
            let payload = format!("msg-{i}-{p}");
            assert!(
                seen.contains_key(&payload),
                "{payload} never arrived; got {seen:?}"
            );
        }
    }
}

#[test]
fn broker_killed_and_restarted_three_times_loses_nothing() {
    let pki = TestPki::new();
    let port = host::broker::mosquitto::free_port().unwrap();
    let start =
        || Mosquitto::start_on(pki.dir.path(), &pki.listener, port, true).expect("start mosquitto");
    let mut broker = start();
    let topic = "faulty-dev/example/topic";
    let mut sub = Subscriber::start_with(port, &pki, topic, true);

    let iterations = 4;
    let mut cmd = host_run(port, &pki.ca, Some(&pki.device));
    resilient(&mut cmd, iterations, "faulty-dev");
    let mut host = Running::spawn(&mut cmd);

    // mosquitto_sub exits when its broker dies; like any subscriber it comes
    // back with the same id, and its persistent session delivers what was
    // queued meanwhile.
    let mut got = Vec::new();
    let mut restart = |broker: &mut Mosquitto, sub: &mut Subscriber| {
        broker.kill();
        got.extend(sub.messages(usize::MAX, Duration::from_millis(100)));
        std::thread::sleep(Duration::from_millis(300));
        *broker = start();
        *sub = Subscriber::start_with(port, &pki, topic, true);
    };
    // While connecting: the broker dies right after the TLS connection opens.
    host.wait_for("Creating an MQTT connection", LIMIT);
    restart(&mut broker, &mut sub);
    // While subscribed.
    host.wait_for("Subscribed to the topic", LIMIT);
    restart(&mut broker, &mut sub);
    // With a publish in flight.
    host.seen.clear();
    host.wait_for("Publish to the MQTT topic", LIMIT);
    restart(&mut broker, &mut sub);
    let faults = 3;

    let (ok, stdout, stderr) = host.finish(LIMIT);
    assert!(
        ok,
        "the host must finish every iteration: {stderr}\n{stdout}"
    );
    println!(
        "broker restarts: reconnects {}, sessions resumed with DUP resends {}, republished on a new session {}",
        stdout.matches("Reconnecting with backoff").count(),
        stdout.matches("resent unacknowledged publishes").count(),
        stdout.matches("Republished the message").count()
    );
    got.extend(sub.messages(usize::MAX, Duration::from_secs(3)));
    let seen = tally("broker restarts", faults, iterations * 5, &got);
    assert_all_arrived(&seen, iterations);
}

/// A TCP proxy on loopback that cuts each of its first `cuts` connections
/// after a pseudo-random number of bytes (either direction), then passes
/// connections through untouched.
struct CuttingProxy {
    port: u16,
    cut: Arc<AtomicUsize>,
}

impl CuttingProxy {
    fn start(upstream: u16, cuts: usize, seed: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicUsize::new(0));
        let done = cut.clone();
        std::thread::spawn(move || {
            let mut state = seed;
            for (n, client) in listener.incoming().enumerate() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                // xorshift: byte offsets from 50 to 1549.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let budget = if n < cuts {
                    Some(50 + (state % 1500) as usize)
                } else {
                    None
                };
                let counter = Arc::new(AtomicUsize::new(0));
                let done = done.clone();
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let counter = counter.clone();
                    let done = done.clone();
                    std::thread::spawn(move || pump(from, to, budget, &counter, &done));
                }
            }
        });
        Self { port, cut }
    }
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    budget: Option<usize>,
    used: &AtomicUsize,
    cut: &AtomicUsize,
) {
    let mut buf = [0u8; 512];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let before = used.fetch_add(n, Ordering::SeqCst);
        if let Some(limit) = budget
            && before + n >= limit
        {
            // Forward up to the cut point, mid-record, then drop both sides.
            let keep = limit.saturating_sub(before).min(n);
            let _ = to.write_all(&buf[..keep]);
            if before < limit {
                cut.fetch_add(1, Ordering::SeqCst);
            }
            break;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[test]
fn streams_cut_at_random_byte_offsets_lose_nothing() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let topic = "cut-dev/example/topic";
    let mut sub = Subscriber::start_with(broker.port, &pki, topic, true);
    let proxy = CuttingProxy::start(broker.port, 5, 0x9e37_79b9_7f4a_7c15);

    let iterations = 3;
    let mut cmd = host_run(proxy.port, &pki.ca, Some(&pki.device));
    resilient(&mut cmd, iterations, "cut-dev");
    let host = Running::spawn(&mut cmd);
    let (ok, stdout, stderr) = host.finish(LIMIT);
    assert!(ok, "{stderr}\n{stdout}");
    let faults = proxy.cut.load(Ordering::SeqCst);
    assert!(faults >= 1, "the proxy cut at least one stream");
    let got = sub.messages(usize::MAX, Duration::from_secs(5));
    let seen = tally("cut streams", faults, iterations * 5, &got);
    assert_all_arrived(&seen, iterations);
}
