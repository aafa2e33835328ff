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
//! Before the storms, for each kind of keys, the broker alone: eight
//! clients in this process (rustls, the host's TLS client) connect, send
//! MQTT CONNECT, read CONNACK and close, over and over, with full and with
//! resumed handshakes. The ratio of those rates is what any client gets
//! from resumption when this broker is the only bottleneck; a storm's
//! ratio passes it only when full handshakes also cost the fleet's host
//! more (RSA signatures).
//!
//! Run: `cargo bench -p device-tests --bench storm` (after scripts/build);
//! `STORM_SIZES` (default "5000,10000") sets the fleet sizes.
//! `STORM_MAX_CONNECTING` passes `--max-connecting` to the host (0 = no
//! limit, as before that flag existed).

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use device_tests::{TestPki, cpu_of, demo_wasm};
use host::broker::mosquitto::free_port;
use host::broker::pki::KeyKind;

/// A TCP proxy on 127.0.0.1 whose connections can all be cut at once: one
/// or more child processes (this bench run in proxy mode) sharing one port
/// with SO_REUSEPORT, since each connection holds two sockets and one
/// process may not have enough file descriptors for them all.
struct Proxy {
    port: u16,
    children: Vec<std::process::Child>,
}

/// Environment of a proxy process: the port to listen on and the broker's.
const PROXY_LISTEN: &str = "STORM_PROXY_LISTEN";
const PROXY_TO: &str = "STORM_PROXY_TO";

impl Proxy {
    fn start(to: u16, processes: u64) -> Self {
        let port = free_port().unwrap();
        let children = (0..processes)
            .map(|_| {
                let mut child = Command::new(std::env::current_exe().unwrap())
                    .env(PROXY_LISTEN, port.to_string())
                    .env(PROXY_TO, to.to_string())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut ready = [0u8; 6];
                child
                    .stdout
                    .as_mut()
                    .unwrap()
                    .read_exact(&mut ready)
                    .expect("proxy ready");
                child
            })
            .collect();
        Self { port, children }
    }

    /// Drops every connection through the proxy (both sides see it close).
    fn cut(&self) {
        for child in &self.children {
            // SAFETY: kill only sends a signal to our own child.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGUSR1);
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Proxy mode: listens on `listen` (shared with the other proxy processes),
/// forwards to `to`, drops every connection on SIGUSR1, and exits when the
/// bench closes its stdin.
fn run_proxy(listen: u16, to: u16) {
    std::thread::spawn(|| {
        let _ = std::io::stdin().read(&mut [0u8; 1]);
        std::process::exit(0);
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseport(true).unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], listen)))
            .unwrap();
        let listener = socket.listen(4096).unwrap();
        // The handler before "ready": SIGUSR1 would otherwise end the process.
        let mut cut =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).unwrap();
        println!("ready");
        let mut live = tokio::task::JoinSet::new();
        let target = SocketAddr::from(([127, 0, 0, 1], to));
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((mut inbound, _)) = accepted else {
                        // Out of descriptors, most likely: let some close.
                        eprintln!("proxy: accept failed: {}", accepted.err().map(|e| e.to_string()).unwrap_or_default());
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    live.spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                            let _ = inbound.set_nodelay(true);
                            let _ = outbound.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    while live.try_join_next().is_some() {}
                }
                _ = cut.recv() => live.abort_all(),
            }
        }
    });
}

/// Sum of every sample of `name` in OpenMetrics `text`.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// SYNs the kernel dropped so far because a listening socket's accept
/// queue was full (`ListenOverflows` in /proc/net/netstat, counted over the
/// whole machine, so other work running meanwhile adds to it): each is a
/// connect retried a second or more later.
fn listen_overflows() -> f64 {
    let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = netstat.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if let Some(at) = names
            .split_whitespace()
            .position(|n| n == "ListenOverflows")
        {
            return values
                .split_whitespace()
                .nth(at)
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
        }
    }
    f64::NAN
}

/// The machine's busy and total CPU time so far (jiffies, every core),
/// from /proc/stat.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    // idle and iowait
    let idle = fields.get(3)? + fields.get(4)?;
    Some((total - idle, total))
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

/// The recovery after a storm, polled every 50 ms.
struct Recovery {
    /// The sample that showed every device connected again, and when.
    done: Option<(Sample, Instant)>,
    /// When the first new connection showed.
    first: Option<Instant>,
    /// Connections open, integrated over time: device-seconds connected.
    connected_secs: f64,
    /// The last sample seen.
    last: Option<Sample>,
}

fn recover(port: u16, limit: Duration, before: Sample, devices: f64) -> Recovery {
    let started = Instant::now();
    let mut r = Recovery {
        done: None,
        first: None,
        connected_secs: 0.0,
        last: None,
    };
    let mut at = started;
    while started.elapsed() < limit {
        if let Some(s) = scrape(port) {
            let now = Instant::now();
            let open_before = r.last.map_or(devices, |l| l.open);
            r.connected_secs += (open_before + s.open) / 2.0 * now.duration_since(at).as_secs_f64();
            at = now;
            r.last = Some(s);
            if r.first.is_none() && s.opened > before.opened {
                r.first = Some(now);
            }
            if s.opened >= before.opened + devices && s.open >= devices {
                r.done = Some((s, now));
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    r
}

/// Each device publishes at this interval, so that the fleet publishes
/// 2,500 messages a second whatever its size (5,000 devices: every 2 s).
/// Devices notice a cut when they next publish, so within one interval.
fn publish_delay_ms(devices: u64) -> u64 {
    devices * 2 / 5
}

/// Raises this process's open-file limit (inherited by the host, the broker
/// and the proxies it starts) toward `want`, as far as the hard limit
/// allows (further where permitted). Returns the limit in force.
fn raise_open_files(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `lim`.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < want {
            let raised = libc::rlimit {
                rlim_cur: want,
                rlim_max: lim.rlim_max.max(want),
            };
            let within = libc::rlimit {
                rlim_cur: want.min(lim.rlim_max),
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            } else if libc::setrlimit(libc::RLIMIT_NOFILE, &within) == 0 {
                lim = within;
            }
        }
    }
    lim.rlim_cur
}

/// Proxy processes for `devices` connections under `open_files`: each
/// connection holds two sockets.
fn proxies(devices: u64, open_files: u64) -> u64 {
    (2 * devices + 256)
        .div_ceil(open_files.saturating_sub(256).max(1))
        .max(1)
}

/// A child process killed when this goes out of scope, panic or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    /// CPU per reconnect, microseconds, less what the devices connected at
    /// the time use anyway: the host, the broker (NaN when it was
    /// restarted).
    host_us: f64,
    broker_us: f64,
    /// The same without that subtraction.
    host_raw_us: f64,
    broker_raw_us: f64,
    recovered_secs: f64,
    rate: f64,
    resumed: f64,
    lost: f64,
    /// SYNs dropped at a full accept queue from the cut to recovery.
    overflows: f64,
}

impl Row {
    fn failed(lost: f64, resumed: f64) -> Self {
        Row {
            busy: f64::NAN,
            host_us: f64::NAN,
            broker_us: f64::NAN,
            host_raw_us: f64::NAN,
            broker_raw_us: f64::NAN,
            recovered_secs: f64::NAN,
            rate: f64::NAN,
            resumed,
            lost,
            overflows: f64::NAN,
        }
    }
}

fn storm(devices: u64, kind: Storm, keys: KeyKind, open_files: u64) -> Row {
    let pki = TestPki::with_keys(keys);
    let mut broker = pki.broker();
    let proxy = Proxy::start(broker.port, proxies(devices, open_files));
    let metrics = free_port().unwrap();
    let mut cmd = device_tests::host();
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
        .args(["--publish-count", "1000000", "--publish-delay-ms"])
        .arg(publish_delay_ms(devices).to_string())
        .args(["--ramp-per-sec", "500"])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match std::env::var("STORM_HOST_LOG") {
        // For looking into a row: the host's warnings and errors, in a file.
        Ok(path) => {
            static ROW: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let row = ROW.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let log = std::fs::File::create(format!("{path}.{row}")).unwrap();
            cmd.env("RUST_LOG", "warn")
                .stdout(log.try_clone().unwrap())
                .stderr(log);
        }
        Err(_) => {
            cmd.env("RUST_LOG", "error");
        }
    }
    if kind == Storm::CutNoResumption {
        cmd.arg("--no-tls-resumption");
    }
    if let Ok(n) = std::env::var("STORM_MAX_CONNECTING") {
        cmd.args(["--max-connecting", &n]);
    }
    let host = KillOnDrop(cmd.spawn().unwrap());
    let host_pid = host.0.id();
    let ramp = Duration::from_secs(devices / 500 + 60);
    if wait(metrics, ramp, |s| s.open >= devices as f64).is_none() {
        // This machine cannot hold them all connected at once.
        let open = scrape(metrics).map_or(0.0, |s| s.open);
        return Row::failed(devices as f64 - open, 0.0);
    }
    // Let every device receive its session tickets and the ramp's last
    // handshakes end, then measure what the connected fleet costs.
    std::thread::sleep(Duration::from_secs(3));
    let (quiet, host_quiet, broker_quiet) =
        (Instant::now(), cpu_of(host_pid), cpu_of(broker.pid()));
    std::thread::sleep(Duration::from_secs(3));
    let Some(before) = scrape(metrics) else {
        return Row::failed(f64::NAN, 0.0);
    };
    let started = Instant::now();
    let (host_cpu, broker_cpu) = (cpu_of(host_pid), cpu_of(broker.pid()));
    // CPU per connected device and second.
    let idle = |now: Duration, then: Duration| {
        (now - then).as_secs_f64() / started.duration_since(quiet).as_secs_f64() / before.open
    };
    let (host_idle, broker_idle) = (idle(host_cpu, host_quiet), idle(broker_cpu, broker_quiet));
    let cpu_before = cpu_times();
    let overflows_before = listen_overflows();
    match kind {
        Storm::Cut | Storm::CutNoResumption => proxy.cut(),
        Storm::BrokerRestart => {
            broker.kill();
            broker = pki.broker_on(broker.port);
        }
    }
    let limit = Duration::from_secs(devices / 100 + 120);
    let recovery = recover(metrics, limit, before, devices as f64);
    let busy = match (cpu_before, cpu_times()) {
        (Some(b), Some(a)) => (a.0 - b.0) as f64 / (a.1 - b.1).max(1) as f64,
        _ => f64::NAN,
    };
    let overflows = listen_overflows() - overflows_before;
    let host_used = cpu_of(host_pid).saturating_sub(host_cpu).as_secs_f64();
    let broker_used = match kind {
        Storm::BrokerRestart => f64::NAN,
        _ => cpu_of(broker.pid())
            .saturating_sub(broker_cpu)
            .as_secs_f64(),
    };
    drop(host);
    drop(broker);
    let Some((sample, at)) = recovery.done else {
        let s = recovery.last.unwrap_or(before);
        return Row {
            busy,
            overflows,
            ..Row::failed(devices as f64 - s.open, s.resumed - before.resumed)
        };
    };
    let span = at
        .duration_since(recovery.first.unwrap_or(started))
        .as_secs_f64()
        .max(0.05);
    let handshakes = (sample.opened - before.opened).max(1.0);
    let per_handshake = |cpu: f64| cpu / handshakes * 1e6;
    let net = |used: f64, idle: f64| per_handshake(used - idle * recovery.connected_secs);
    Row {
        busy,
        host_us: net(host_used, host_idle),
        broker_us: net(broker_used, broker_idle),
        host_raw_us: per_handshake(host_used),
        broker_raw_us: per_handshake(broker_used),
        recovered_secs: at.duration_since(started).as_secs_f64(),
        rate: (sample.opened - before.opened) / span,
        resumed: sample.resumed - before.resumed,
        lost: devices as f64 - sample.open,
        overflows,
    }
}

/// The broker alone: connections a second and broker CPU per connection
/// (microseconds), with full or resumed handshakes.
struct Alone {
    rate: f64,
    broker_us: f64,
    resumed: u64,
}

/// Eight clients connecting to a fresh broker over and over for
/// `seconds`, after one connection each to get their tickets.
fn broker_alone(keys: KeyKind, resume: bool, seconds: f64) -> Alone {
    use host::tls::{ClientKey, Roots, TlsClient, TlsFiles};
    use mqtt_core::packets::{Decoder, encode};
    use mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Packet};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = TestPki::with_keys(keys);
    let broker = pki.broker();
    let files = TlsFiles {
        ca: Roots::File(pki.ca.clone()),
        cert: Some(pki.device.cert.clone()),
        key: Some(ClientKey::File(pki.device.key.clone())),
    };
    let tls = TlsClient::load(&files).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let port = broker.port;
    let connect = move |tls: TlsClient, id: String| async move {
        let (mut conn, _turn) = tls
            .connect("localhost", port, Some(Duration::from_secs(10)))
            .await
            .expect("connect to the broker");
        let connect = encode(&Packet::Connect(Connect::new(id))).unwrap();
        conn.write_all(&connect).await.unwrap();
        // CONNACK is four bytes.
        let mut connack = [0u8; 4];
        conn.read_exact(&mut connack).await.unwrap();
        let mut decoder = Decoder::default();
        decoder.push(&connack);
        assert_eq!(
            decoder.next_packet().unwrap(),
            Some(Packet::ConnAck(ConnAck::new(
                ConnectReturnCode::Success,
                false
            ))),
            "CONNACK accepted"
        );
        let resumed = host::tls::resumed(&conn);
        let _ = conn.shutdown().await;
        resumed
    };
    rt.block_on(async {
        let clients: Vec<TlsClient> = (0..8).map(|_| tls.with_own_sessions(resume)).collect();
        for (i, c) in clients.iter().enumerate() {
            connect(c.clone(), format!("alone-{i}")).await;
        }
        let cpu = cpu_of(broker.pid());
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, c) in clients.into_iter().enumerate() {
            tasks.spawn(async move {
                let (mut done, mut resumed) = (0u64, 0u64);
                while started.elapsed().as_secs_f64() < seconds {
                    resumed += u64::from(connect(c.clone(), format!("alone-{i}")).await);
                    done += 1;
                }
                (done, resumed)
            });
        }
        let (mut done, mut resumed) = (0u64, 0u64);
        while let Some(r) = tasks.join_next().await {
            let (d, r) = r.unwrap();
            done += d;
            resumed += r;
        }
        let span = started.elapsed().as_secs_f64();
        let used = cpu_of(broker.pid()).saturating_sub(cpu).as_secs_f64();
        Alone {
            rate: done as f64 / span,
            broker_us: used / done.max(1) as f64 * 1e6,
            resumed,
        }
    })
}

fn main() {
    if let (Ok(listen), Ok(to)) = (std::env::var(PROXY_LISTEN), std::env::var(PROXY_TO)) {
        run_proxy(listen.parse().unwrap(), to.parse().unwrap());
        return;
    }
    let sizes: Vec<u64> = std::env::var("STORM_SIZES")
        .unwrap_or_else(|_| "5000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let open_files = raise_open_files(3 * largest + 1000);
    println!(
        "broker alone: 8 clients in a loop of TLS connect, MQTT CONNECT, CONNACK, close (5 s each)"
    );
    println!("keys     | handshakes | connections/s | resumed | broker CPU/connection");
    let mut ceilings = Vec::new();
    for (keys, key_name) in [
        (KeyKind::EcdsaP256, "P-256"),
        (KeyKind::Rsa2048, "RSA-2048"),
    ] {
        let full = broker_alone(keys, false, 5.0);
        let resumed = broker_alone(keys, true, 5.0);
        for (name, a) in [("full", &full), ("resumed", &resumed)] {
            println!(
                "{key_name:<8} | {name:<10} | {:>13.0} | {:>7} | {:>18.0} us",
                a.rate, a.resumed, a.broker_us
            );
        }
        assert!(
            resumed.resumed > 0 && full.resumed == 0,
            "resumption on and off as asked"
        );
        let ceiling = resumed.rate / full.rate;
        println!(
            "{key_name:<8} | resumed / full: rate {ceiling:.2}x, broker CPU per connection {:.2}x (a storm's rate ratio when this broker is its only bottleneck)",
            full.broker_us / resumed.broker_us
        );
        ceilings.push((key_name, ceiling));
    }
    println!();
    println!(
        "devices | keys     | storm                            | all connected again after | handshakes/s | resumed | lost | CPU busy | SYNs dropped | host CPU/reconnect (raw) | broker CPU/reconnect (raw)"
    );
    let mut failed = 0;
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
                let row = storm(devices, kind, keys, open_files);
                println!(
                    "{devices:>7} | {key_name:<8} | {name:<32} | {:>22.2} s | {:>12.0} | {:>7.0} | {:>4.0} | {:>7.0}% | {:>12.0} | {:>9.0} ({:>5.0}) us | {:>11.0} ({:>5.0}) us",
                    row.recovered_secs,
                    row.rate,
                    row.resumed,
                    row.lost,
                    row.busy * 100.0,
                    row.overflows,
                    row.host_us,
                    row.host_raw_us,
                    row.broker_us,
                    row.broker_raw_us
                );
                if row.recovered_secs.is_nan() || row.lost != 0.0 {
                    failed += 1;
                }
                rates.push(row.rate);
                host.push(row.host_us);
                broker.push(row.broker_us);
            }
            println!(
                "{devices:>7} | {key_name:<8} | reconnect rate, resumed / full handshakes: {:.2}x (goal >= 2x; the broker alone: {:.2}x)",
                rates[0] / rates[1],
                ceilings
                    .iter()
                    .find(|(k, _)| *k == key_name)
                    .map_or(f64::NAN, |c| c.1)
            );
            println!(
                "{devices:>7} | {key_name:<8} | CPU per reconnect, full / resumed: host {:.2}x, broker {:.2}x",
                host[1] / host[0],
                broker[1] / broker[0]
            );
        }
    }
    assert_eq!(
        failed, 0,
        "{failed} row(s) lost devices or did not recover (NaN above)"
    );
}
