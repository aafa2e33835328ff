//! Sandbox cost, measured against real alternatives in the same run, on the
//! same local mosquitto over mutual TLS:
//! - sandboxed: tests/guests/bench as a component in `host run`;
//! - native: the same workload (`guest_bench::workload`) compiled natively,
//!   over the same rustls transport (`host::tls::TlsClient`);
//! - rumqttc: the Rust client a user would pick instead, with the same rustls
//!   configuration, TCP_NODELAY, and the same window of 15 in-flight publishes.
//!
//! Each does N sequential QoS 1 echo round trips (publish, PUBACK, echoed
//! PUBLISH) and then N publishes pipelined in the window. Figures are medians
//! over RUNS runs. Run: `cargo bench -p device-tests --bench compare` (after
//! scripts/build); `COMPARE_N` (default 10000) and `COMPARE_RUNS` (3) change
//! the size.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use device_tests::{Running, TestPki, cpu_of, host_run_component, median, root};
use guest_bench::workload::percentile;
use guest_bench::workload::{self as bench, Config, WINDOW};
use host::tls::{ClientKey, Roots, TlsClient, TlsConnection, TlsFiles};
use mqtt_core::{Clock, Level, Platform, Transport, TransportError as ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One run's figures: sorted round trips (us), pipelined messages per
/// second, and the client process's CPU time (user + system) per message,
/// from before its connect to after its last message (for the sandboxed
/// client: from its "loaded" line to its last result line, read as they
/// come, so a few lines of logging either side are counted too).
struct Figures {
    rtts: Vec<u32>,
    per_sec: f64,
    cpu_us_per_msg: f64,
}

/// CPU time of this process so far.
fn own_cpu() -> Duration {
    cpu_of(std::process::id())
}

/// Microseconds of CPU per message for 2 * `n` messages (the sequential
/// and the pipelined phase).
fn per_message(cpu: Duration, n: u32) -> f64 {
    cpu.as_secs_f64() * 1e6 / (2.0 * f64::from(n))
}

fn config(port: u16, id: &str, n: u32) -> Config {
    Config {
        broker_host: "localhost".into(),
        broker_port: port,
        client_id: id.into(),
        topic: format!("{id}/example/topic"),
        messages: n,
        payload: "Hello World!".into(),
        connect_timeout_ms: 5000,
        connack_timeout_ms: 5000,
        process_loop_ms: 5000,
        timing: mqtt_core::Timing {
            keep_alive_secs: 60,
            pingresp_timeout_ms: 5000,
            send_timeout_ms: 1000,
        },
    }
}

fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

fn sandboxed(pki: &TestPki, port: u16, n: u32, run: usize) -> Figures {
    let wasm: PathBuf = root().join("target/bench.wasm");
    let mut host = Running::spawn(
        host_run_component(&wasm, port, &pki.ca, Some(&pki.device))
            .args([
                "--iterations",
                "1",
                "--publish-count",
                &n.to_string(),
                "--client-id",
                &format!("sandboxed-{run}"),
            ])
            .args(["--process-loop-ms", "5000"]),
    );
    host.wait_for(" INFO loaded ", Duration::from_secs(300));
    let before = cpu_of(host.child.id());
    let seq = host.wait_for("bench sequential", Duration::from_secs(300));
    let pipe = host.wait_for("bench pipelined", Duration::from_secs(300));
    let cpu = cpu_of(host.child.id()) - before;
    let (ok, _, err) = host.finish(Duration::from_secs(60));
    assert!(ok, "{err}");
    // The guest reports percentiles; spread them back for the medians.
    let (p50, p99) = (field(&seq, "p50_us=") as u32, field(&seq, "p99_us=") as u32);
    let mut rtts = vec![p50; 98];
    rtts.extend([p99, p99]);
    Figures {
        rtts,
        per_sec: f64::from(n) / (field(&pipe, "us=") as f64 / 1e6),
        cpu_us_per_msg: per_message(cpu, n),
    }
}

/// The native platform: blocking calls onto a current-thread runtime.
struct NativePlatform {
    rt: Arc<tokio::runtime::Runtime>,
    tls: TlsClient,
}

struct NativeConn {
    rt: Arc<tokio::runtime::Runtime>,
    stream: Option<TlsConnection>,
}

#[derive(Clone)]
struct NativeClock(Instant);

impl Clock for NativeClock {
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
    fn now_us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
    fn sleep_ms(&self, ms: u32) {
        std::thread::sleep(Duration::from_millis(u64::from(ms)));
    }
}

impl Transport for NativeConn {
    fn send(&mut self, data: &[u8], timeout_ms: u32) -> Result<(), ErrorCode> {
        let stream = self.stream.as_mut().ok_or(ErrorCode::ConnectionClosed)?;
        self.rt.block_on(async {
            let work = async {
                stream.write_all(data).await?;
                stream.flush().await
            };
            match tokio::time::timeout(Duration::from_millis(u64::from(timeout_ms)), work).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(ErrorCode::IoFailed),
                Err(_) => Err(ErrorCode::TimedOut),
            }
        })
    }
    fn receive(&mut self, max_len: u32, timeout_ms: u32) -> Result<Vec<u8>, ErrorCode> {
        let stream = self.stream.as_mut().ok_or(ErrorCode::ConnectionClosed)?;
        let mut buf = vec![0u8; max_len as usize];
        self.rt.block_on(async {
            match tokio::time::timeout(
                Duration::from_millis(u64::from(timeout_ms)),
                stream.read(&mut buf),
            )
            .await
            {
                Ok(Ok(0)) => Err(ErrorCode::ConnectionClosed),
                Ok(Ok(n)) => {
                    buf.truncate(n);
                    Ok(buf)
                }
                Ok(Err(_)) => Err(ErrorCode::IoFailed),
                Err(_) => Ok(Vec::new()),
            }
        })
    }
    fn close(&mut self) {
        self.stream = None;
    }
}

impl Platform for NativePlatform {
    type Conn = NativeConn;
    type Clock = NativeClock;
    fn connect(&mut self, host: &str, port: u16, timeout_ms: u32) -> Result<NativeConn, ErrorCode> {
        // No --max-connecting here: the turn is empty.
        let (stream, _turn) = self
            .rt
            .block_on(self.tls.connect(
                host,
                port,
                Some(Duration::from_millis(u64::from(timeout_ms))),
            ))
            .map_err(|_| ErrorCode::IoFailed)?;
        Ok(NativeConn {
            rt: self.rt.clone(),
            stream: Some(stream),
        })
    }
    fn clock(&self) -> NativeClock {
        NativeClock(Instant::now())
    }
    fn log(&self, _level: Level, _message: &str) {}
    fn random_u32(&mut self) -> u32 {
        0
    }
}

fn tls_files(pki: &TestPki) -> TlsFiles {
    TlsFiles {
        ca: Roots::File(pki.ca.clone()),
        cert: Some(pki.device.cert.clone()),
        key: Some(ClientKey::File(pki.device.key.clone())),
    }
}

fn native(pki: &TestPki, port: u16, n: u32, run: usize) -> Figures {
    let rt = Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    );
    let mut platform = NativePlatform {
        rt,
        tls: TlsClient::load(&tls_files(pki)).unwrap(),
    };
    let before = own_cpu();
    let result = bench::run(&mut platform, &config(port, &format!("native-{run}"), n)).unwrap();
    let cpu = own_cpu() - before;
    let mut rtts = result.round_trips_us;
    rtts.sort_unstable();
    Figures {
        rtts,
        per_sec: f64::from(result.pipelined) / (result.pipelined_us as f64 / 1e6),
        cpu_us_per_msg: per_message(cpu, n),
    }
}

fn rumqttc_run(pki: &TestPki, port: u16, n: u32, run: usize) -> Figures {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = TlsClient::load(&tls_files(pki)).unwrap().client_config();
    let before = own_cpu();
    let mut figures = rt.block_on(async move {
        let id = format!("rumqttc-{run}");
        let topic = format!("{id}/example/topic");
        let mut opts = MqttOptions::new(id, "localhost", port);
        opts.set_keep_alive(Duration::from_secs(60));
        opts.set_inflight(WINDOW as u16);
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        // As the host and the native client do; rumqttc leaves Nagle on.
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        client.subscribe(&topic, QoS::AtLeastOnce).await.unwrap();
        while !matches!(rx.recv().await, Some(Event::Incoming(Packet::SubAck(_)))) {}
        let mut rtts = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let start = Instant::now();
            client
                .publish(&topic, QoS::AtLeastOnce, false, "Hello World!")
                .await
                .unwrap();
            let (mut acked, mut echoed) = (false, false);
            while !(acked && echoed) {
                match rx.recv().await.expect("event loop ended") {
                    Event::Incoming(Packet::PubAck(_)) => acked = true,
                    Event::Incoming(Packet::Publish(_)) => echoed = true,
                    _ => {}
                }
            }
            rtts.push(start.elapsed().as_micros() as u32);
        }
        let start = Instant::now();
        let publisher = {
            let (client, topic) = (client.clone(), topic.clone());
            tokio::spawn(async move {
                for _ in 0..n {
                    client
                        .publish(&topic, QoS::AtLeastOnce, false, "Hello World!")
                        .await
                        .unwrap();
                }
            })
        };
        let (mut acks, mut echoes) = (0, 0);
        while acks < n || echoes < n {
            match rx.recv().await.expect("event loop ended") {
                Event::Incoming(Packet::PubAck(_)) => acks += 1,
                Event::Incoming(Packet::Publish(_)) => echoes += 1,
                _ => {}
            }
        }
        let elapsed = start.elapsed();
        publisher.await.unwrap();
        let _ = client.disconnect().await;
        rtts.sort_unstable();
        Figures {
            rtts,
            per_sec: f64::from(n) / elapsed.as_secs_f64(),
            cpu_us_per_msg: 0.0,
        }
    });
    figures.cpu_us_per_msg = per_message(own_cpu() - before, n);
    figures
}

fn main() {
    let n: u32 = std::env::var("COMPARE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let runs: usize = std::env::var("COMPARE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let pki = TestPki::new();
    let broker = pki.broker();
    let port = broker.port;
    let mut table = Vec::new();
    type Runner = fn(&TestPki, u16, u32, usize) -> Figures;
    let clients: [(&str, Runner); 3] = [
        ("sandboxed (wasm)", sandboxed),
        ("native, same code", native),
        ("rumqttc", rumqttc_run),
    ];
    for (name, f) in clients {
        let figs: Vec<Figures> = (0..runs).map(|r| f(&pki, port, n, r)).collect();
        let p50 = median(
            figs.iter()
                .map(|f| f64::from(percentile(&f.rtts, 50)))
                .collect(),
        );
        let p99 = median(
            figs.iter()
                .map(|f| f64::from(percentile(&f.rtts, 99)))
                .collect(),
        );
        let per_sec = median(figs.iter().map(|f| f.per_sec).collect());
        let cpu = median(figs.iter().map(|f| f.cpu_us_per_msg).collect());
        table.push((name, p50, p99, per_sec, cpu));
    }
    println!("QoS 1 echo, {n} messages, median of {runs} runs, window {WINDOW} for throughput");
    println!(
        "client             | round trip p50 | round trip p99 | throughput     | client CPU per message"
    );
    for (name, p50, p99, per_sec, cpu) in &table {
        println!(
            "{name:<18} | {:>11.1} us | {:>11.1} us | {per_sec:>8.0} msg/s | {cpu:>8.1} us",
            p50, p99
        );
    }
    let (s, nat, rq) = (&table[0], &table[1], &table[2]);
    println!(
        "sandboxed / native p50 round trip: {:.2}x (goal <= 1.10x)",
        s.1 / nat.1
    );
    println!(
        "sandboxed / rumqttc throughput:    {:.2}x (goal >= 0.90x)",
        s.3 / rq.3
    );
    println!("sandboxed / native throughput:     {:.2}x", s.3 / nat.3);
    println!(
        "sandboxed / native CPU per message:  {:.2}x (goal <= 1.20x)",
        s.4 / nat.4
    );
    println!("sandboxed / rumqttc CPU per message: {:.2}x", s.4 / rq.4);
}
