//! Reconnect storms: a fleet of N connected devices loses every connection
//! at once, and the bench measures the time until every device is connected
//! again and the handshake rate reached, from the host's own metrics
//! (`--metrics-listen`, polled every 50 ms).
//!
//! Rows, for each fleet size:
//! - network cut, TLS resumption on (the default): a TCP proxy between the
//!   host and mosquitto drops every connection; the broker keeps running, so
//!   the devices' TLS 1.3 tickets are still good;
//! - network cut, `--no-tls-resumption`: the same, every handshake in full
//!   (the baseline of the ratio);
//! - broker restart: mosquitto is killed and started again on its port; its
//!   ticket keys are new, so every handshake is full whatever the client
//!   keeps.
//!
//! The network-cut rows run twice: with ECDSA P-256 keys everywhere (the
//! default of `host certs` and of the embedded broker) and with RSA-2048
//! keys everywhere (what AWS IoT Core issues by default, and its server
//! certificates). A resumed TLS 1.3 handshake skips the certificate
//! signatures and their verification but still does an ECDHE exchange, so
//! how much it saves depends on what the signatures cost.
//!
//! Besides the rate, each row gives the CPU time one reconnect costs the
//! host process and, for the network cuts, the broker process (their CPU
//! clocks from the cut to recovery, less what the connected fleet used in
//! the same time before the cut, divided by the handshakes): the rate is
//! bound by the slower of the two and by when devices notice the cut (at
//! their next publish), the CPU per reconnect is not.
//!
//! Run: `cargo bench -p device-tests --bench storm` (after scripts/build);
//! `STORM_SIZES` (default "5000,10000") sets the fleet sizes.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use device_tests::{TestPki, cpu_of, demo_wasm, host_bin};
use host::broker::mosquitto::free_port;
use host::broker::pki::KeyKind;

/// A TCP proxy on 127.0.0.1 whose connections can all be cut at once.
struct Proxy {
    port: u16,
    live: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    _rt: tokio::runtime::Runtime,
}

impl Proxy {
    fn start(to: u16) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let live: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let handles = live.clone();
        rt.spawn(async move {
            let target = SocketAddr::from(([127, 0, 0, 1], to));
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                handles.lock().unwrap().push(task.abort_handle());
            }
        });
        Self {
            port,
            live,
            _rt: rt,
        }
    }

    /// Drops every connection through the proxy (both sides see it close).
    fn cut(&self) {
        for task in self.live.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// Sum of every sample of `name` in OpenMetrics `text`.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The machine's busy and total CPU time so far (jiffies, every core),
/// from /proc/stat.
fn cpu_times() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    // idle and iowait
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

#[derive(Clone, Copy)]
struct Sample {
    open: f64,
    opened: f64,
    resumed: f64,
}

fn scrape(port: u16) -> Option<Sample> {
    let mut body = String::new();
    ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .ok()?
        .into_body()
        .into_reader()
        .read_to_string(&mut body)
        .ok()?;
    Some(Sample {
        open: metric(&body, "mqtt_device_connections_open"),
        opened: metric(&body, "mqtt_device_connections_total"),
        resumed: metric(&body, "mqtt_device_tls_resumptions_total"),
    })
}

/// Polls until `done` holds for a sample (or `limit` passes).
fn wait(port: u16, limit: Duration, done: impl Fn(&Sample) -> bool) -> Option<(Sample, Instant)> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(s) = scrape(port)
            && done(&s)
        {
            return Some((s, Instant::now()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[derive(Clone, Copy, PartialEq)]
enum Storm {
    Cut,
    CutNoResumption,
    BrokerRestart,
}

struct Row {
    /// Share of the machine's CPU busy from the cut to recovery.
    busy: f64,
    /// CPU per reconnect, microseconds: the host, the broker (NaN when it
    /// was restarted).
    host_us: f64,
    broker_us: f64,
    recovered_secs: f64,
    rate: f64,
    resumed: f64,
    lost: f64,
}

fn storm(devices: u64, kind: Storm, keys: KeyKind) -> Row {
    let pki = TestPki::with_keys(keys);
    let mut broker = pki.broker();
    let proxy = Proxy::start(broker.port);
    let metrics = free_port().unwrap();
    let mut cmd = Command::new(host_bin());
    cmd.arg("run")
        .arg(demo_wasm())
        .arg("--broker")
        .arg(format!("mqtts://localhost:{}", proxy.port))
        .arg("--ca")
        .arg(&pki.ca)
        .arg("--cert")
        .arg(&pki.device.cert)
        .arg("--key")
        .arg(&pki.device.key)
        .args(["--devices", &devices.to_string(), "--client-id", "storm"])
        .args(["--publish-count", "1000000", "--publish-delay-ms", "2000"])
        .args(["--ramp-per-sec", "1000"])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if kind == Storm::CutNoResumption {
        cmd.arg("--no-tls-resumption");
    }
    let mut host = cmd.spawn().unwrap();
    let ramp = Duration::from_secs(devices / 500 + 60);
    let Some((before, _)) = wait(metrics, ramp, |s| s.open >= devices as f64) else {
        // This machine cannot hold them all connected at once.
        let open = scrape(metrics).map_or(0.0, |s| s.open);
        let _ = host.kill();
        let _ = host.wait();
        return Row {
            busy: f64::NAN,
            host_us: f64::NAN,
            broker_us: f64::NAN,
            recovered_secs: f64::NAN,
            rate: f64::NAN,
            resumed: 0.0,
            lost: devices as f64 - open,
        };
    };
    // Let every device receive its session tickets, and measure what the
    // connected fleet costs meanwhile.
    let (quiet, host_quiet, broker_quiet) =
        (Instant::now(), cpu_of(host.id()), cpu_of(broker.pid()));
    std::thread::sleep(Duration::from_secs(3));
    let before = scrape(metrics).unwrap_or(before);
    let started = Instant::now();
    let (host_cpu, broker_cpu) = (cpu_of(host.id()), cpu_of(broker.pid()));
    let per_sec = |now: Duration, then: Duration| {
        (now - then).as_secs_f64() / started.duration_since(quiet).as_secs_f64()
    };
    let (host_idle, broker_idle) = (
        per_sec(host_cpu, host_quiet),
        per_sec(broker_cpu, broker_quiet),
    );
    let cpu_before = cpu_times();
    match kind {
        Storm::Cut | Storm::CutNoResumption => proxy.cut(),
        Storm::BrokerRestart => {
            broker.kill();
            broker = pki.broker_on(broker.port);
        }
    }
    let limit = Duration::from_secs(devices / 100 + 120);
    let all = before.opened + devices as f64;
    let first = wait(metrics, limit, |s| s.opened > before.opened).map(|(_, t)| t);
    let recovered = wait(metrics, limit, |s| {
        s.opened >= all && s.open >= devices as f64
    });
    let cpu_after = cpu_times();
    let host_used = cpu_of(host.id()).saturating_sub(host_cpu).as_secs_f64();
    let broker_used = match kind {
        Storm::BrokerRestart => f64::NAN,
        _ => cpu_of(broker.pid())
            .saturating_sub(broker_cpu)
            .as_secs_f64(),
    };
    let busy = (cpu_after.0 - cpu_before.0) as f64 / (cpu_after.1 - cpu_before.1).max(1) as f64;
    let _ = host.kill();
    let _ = host.wait();
    drop(broker);
    let after = scrape(metrics);
    let (sample, at) = match recovered {
        Some(r) => r,
        None => {
            let s = after.unwrap_or(before);
            let lost = devices as f64 - s.open;
            return Row {
                busy,
                host_us: f64::NAN,
                broker_us: f64::NAN,
                recovered_secs: f64::NAN,
                rate: f64::NAN,
                resumed: s.resumed - before.resumed,
                lost,
            };
        }
    };
    let span = at
        .duration_since(first.unwrap_or(started))
        .as_secs_f64()
        .max(0.05);
    let handshakes = (sample.opened - before.opened).max(1.0);
    let took = at.duration_since(started).as_secs_f64();
    let per_reconnect = |used: f64, idle: f64| (used - idle * took) / handshakes * 1e6;
    Row {
        busy,
        host_us: per_reconnect(host_used, host_idle),
        broker_us: per_reconnect(broker_used, broker_idle),
        recovered_secs: took,
        rate: (sample.opened - before.opened) / span,
        resumed: sample.resumed - before.resumed,
        lost: devices as f64 - sample.open,
    }
}

fn main() {
    let sizes: Vec<u64> = std::env::var("STORM_SIZES")
        .unwrap_or_else(|_| "5000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!(
        "devices | keys     | storm                            | all connected again after | handshakes/s | resumed | lost | CPU busy | host CPU/reconnect | broker CPU/reconnect"
    );
    for devices in sizes {
        for (keys, key_name, storms) in [
            (
                KeyKind::EcdsaP256,
                "P-256",
                &[Storm::Cut, Storm::CutNoResumption, Storm::BrokerRestart][..],
            ),
            (
                KeyKind::Rsa2048,
                "RSA-2048",
                &[Storm::Cut, Storm::CutNoResumption][..],
            ),
        ] {
            let (mut rates, mut host, mut broker) = (Vec::new(), Vec::new(), Vec::new());
            for &kind in storms {
                let name = match kind {
                    Storm::Cut => "network cut, resumption on",
                    Storm::CutNoResumption => "network cut, --no-tls-resumption",
                    Storm::BrokerRestart => "broker restart",
                };
                let row = storm(devices, kind, keys);
                println!(
                    "{devices:>7} | {key_name:<8} | {name:<32} | {:>22.2} s | {:>12.0} | {:>7.0} | {:>4.0} | {:>7.0}% | {:>15.0} us | {:>17.0} us",
                    row.recovered_secs,
                    row.rate,
                    row.resumed,
                    row.lost,
                    row.busy * 100.0,
                    row.host_us,
                    row.broker_us
                );
                rates.push(row.rate);
                host.push(row.host_us);
                broker.push(row.broker_us);
            }
            println!(
                "{devices:>7} | {key_name:<8} | reconnect rate, resumed / full handshakes: {:.2}x (goal >= 2x)",
                rates[0] / rates[1]
            );
            println!(
                "{devices:>7} | {key_name:<8} | CPU per reconnect, full / resumed: host {:.2}x, broker {:.2}x",
                host[1] / host[0],
                broker[1] / broker[0]
            );
        }
    }
}
