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
//! Run: `cargo bench -p device-tests --bench storm` (after scripts/build);
//! `STORM_SIZES` (default "5000,10000") sets the fleet sizes.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use device_tests::{TestPki, demo_wasm, host_bin};
use host::broker::mosquitto::free_port;

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
    recovered_secs: f64,
    rate: f64,
    resumed: f64,
    lost: f64,
}

fn storm(devices: u64, kind: Storm) -> Row {
    let pki = TestPki::new();
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
            recovered_secs: f64::NAN,
            rate: f64::NAN,
            resumed: 0.0,
            lost: devices as f64 - open,
        };
    };
    // Let every device receive its session tickets.
    std::thread::sleep(Duration::from_secs(3));
    let before = scrape(metrics).unwrap_or(before);
    let started = Instant::now();
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
    Row {
        recovered_secs: at.duration_since(started).as_secs_f64(),
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
        "devices | storm                          | all connected again after | handshakes/s | resumed | lost"
    );
    for devices in sizes {
        let mut rates = Vec::new();
        for (kind, name) in [
            (Storm::Cut, "network cut, resumption on"),
            (Storm::CutNoResumption, "network cut, --no-tls-resumption"),
            (Storm::BrokerRestart, "broker restart"),
        ] {
            let row = storm(devices, kind);
            println!(
                "{devices:>7} | {name:<30} | {:>22.2} s | {:>12.0} | {:>7.0} | {:>4.0}",
                row.recovered_secs, row.rate, row.resumed, row.lost
            );
            rates.push(row.rate);
        }
        println!(
            "{devices:>7} | reconnect rate, resumed / full handshakes: {:.2}x (goal >= 2x)",
            rates[0] / rates[1]
        );
    }
}
