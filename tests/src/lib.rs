//! Shared fixtures of the end-to-end tests: the built `host` binary and
//! `demo.wasm`, a per-test PKI, a real mosquitto on a free loopback port, and
//! an independent `mosquitto_sub` subscriber with its own certificate.

#![deny(unsafe_code)]

pub mod softhsm;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use host::broker::mosquitto::{INSTALL_HINT, ListenerTls, Mosquitto};
use host::broker::pki::{self, Authority, KeyKind, LeafOptions};
use tempfile::TempDir;

/// The `host` binary as a command, with the devices' state in a directory
/// of its own (`MQTT_DEVICE_STATE_DIR`), so tests running at once never
/// share a state database (a host process holds its database alone). A
/// test that restarts a host on the same state passes `--state-dir`.
pub fn host() -> Command {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir()
        .join("device-tests-state")
        .join(format!("{}-{n}", std::process::id()));
    let mut cmd = Command::new(host_bin());
    cmd.env("MQTT_DEVICE_STATE_DIR", dir);
    cmd
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn built(path: PathBuf) -> PathBuf {
    assert!(
        path.is_file(),
        "{} is missing: build it with scripts/build (scripts/test does this)",
        path.display()
    );
    path
}

/// The release `host` binary.
pub fn host_bin() -> PathBuf {
    built(root().join("target/release/host"))
}

/// The demo component.
pub fn demo_wasm() -> PathBuf {
    built(root().join("target/demo.wasm"))
}

/// The test-only logic that attacks the sandbox (tests/guests/adversary).
pub fn adversary_wasm() -> PathBuf {
    built(root().join("target/adversary.wasm"))
}

/// `host run adversary.wasm` against `port` with the test PKI's device
/// credentials; the client id picks the attack.
pub fn host_run_adversary(port: u16, pki: &TestPki) -> Command {
    host_run_component(&adversary_wasm(), port, &pki.ca, Some(&pki.device))
}

/// Lines saying that `device` completed an iteration.
pub fn iterations_completed(stdout: &str, device: &str) -> usize {
    let tag = format!("[{device}] iteration");
    stdout
        .lines()
        .filter(|l| l.contains(&tag) && l.contains("completed successfully"))
        .count()
}

/// The Python telemetry logic (guest-examples/telemetry-py, built by
/// scripts/build-python).
pub fn telemetry_py_wasm() -> PathBuf {
    built(root().join("target/telemetry-py.wasm"))
}

/// The second example logic (a JSON counter), for hot swap.
pub fn counter_wasm() -> PathBuf {
    built(root().join("target/counter.wasm"))
}

/// target/telemetry.wasm (scripts/build --all): the offline-queue logic.
pub fn telemetry_wasm() -> PathBuf {
    built(root().join("target/telemetry.wasm"))
}

/// `component` with a custom section appended: the same logic under other
/// bytes (another SHA-256), a new component as far as a host knows.
pub fn renamed(component: &[u8], name: &str) -> Vec<u8> {
    let mut out = component.to_vec();
    let payload_len = 1 + name.len() + 1;
    assert!(name.len() < 100, "a short name");
    out.extend([0u8, payload_len as u8, name.len() as u8]);
    out.extend(name.as_bytes());
    out.push(1);
    out
}

/// Replaces `path` with `bytes` the way a build does: write aside, rename onto.
pub fn replace_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Reads `stdout` line by line on a thread of its own, into a channel.
pub fn line_reader(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A running process whose stdout lines are collected as they come.
pub struct Running {
    /// The process.
    pub child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every stdout line so far.
    pub seen: Vec<String>,
}

impl Running {
    /// Spawns `cmd` with piped stdout (stderr to a pipe too).
    pub fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let lines = line_reader(child.stdout.take().unwrap());
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stdout line containing `needle`, failing after `limit`.
    pub fn wait_for(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(20)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let mut stderr = String::new();
                    if let Some(mut e) = self.child.stderr.take() {
                        use std::io::Read;
                        let _ = e.read_to_string(&mut stderr);
                    }
                    panic!(
                        "exited before a line with {needle:?}; stderr: {stderr}\nseen:\n{}",
                        self.seen.join("\n")
                    );
                }
                Err(_) => {}
            }
        }
        panic!(
            "no line with {needle:?} within {limit:?}; seen:\n{}",
            self.seen.join("\n")
        );
    }

    /// Kills the process at once (SIGKILL, as a power cut would) and
    /// returns every stdout line it printed.
    pub fn kill(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(line);
        }
        self.seen
    }

    /// Waits for exit; returns success and the whole stdout and stderr.
    pub fn finish(mut self, limit: Duration) -> (bool, String, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "still running after {limit:?}; seen:\n{}",
                    self.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(line);
        }
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        (status.success(), self.seen.join("\n"), stderr)
    }
}

/// Fails the test, with the install command, when a tool is missing.
pub fn require_mosquitto() {
    assert!(
        host::broker::mosquitto::binary().is_some(),
        "mosquitto is not installed: {INSTALL_HINT}"
    );
    assert!(
        Command::new("mosquitto_sub").arg("--help").output().is_ok(),
        "mosquitto_sub is not installed: {INSTALL_HINT}"
    );
}

/// Paths of one client's certificate and key.
#[derive(Debug, Clone)]
pub struct ClientFiles {
    /// Certificate, PEM.
    pub cert: PathBuf,
    /// Key, PEM.
    pub key: PathBuf,
}

/// A test PKI written to a temporary directory: the broker's CA and
/// certificates, plus a second, unrelated CA for negative tests.
pub struct TestPki {
    /// The directory holding every file.
    pub dir: TempDir,
    /// The CA that signed the broker's and the good clients' certificates.
    pub ca: PathBuf,
    /// The broker's listener settings (client certificates required).
    pub listener: ListenerTls,
    /// A client certificate the broker accepts.
    pub device: ClientFiles,
    /// Another accepted client certificate, for the independent subscriber.
    pub subscriber: ClientFiles,
    /// A CA that signed nothing the broker uses.
    pub other_ca: PathBuf,
    /// A client certificate from the other CA.
    pub stranger: ClientFiles,
    /// The CA itself, to issue more certificates.
    pub authority: Authority,
}

impl TestPki {
    /// Makes the PKI, every key ECDSA P-256.
    pub fn new() -> Self {
        Self::with_keys(KeyKind::EcdsaP256)
    }

    /// Makes the PKI with keys of `kind` for the CAs, the broker and the
    /// clients.
    pub fn with_keys(kind: KeyKind) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mqtt-device-test-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let ca = Authority::of_kind("test root CA", kind).unwrap();
        let other = Authority::of_kind("unrelated root CA", kind).unwrap();
        let leaf = |auth: &Authority, options: &LeafOptions| {
            auth.issue_with_key(options, kind.generate().unwrap())
                .unwrap()
        };
        let server = leaf(&ca, &LeafOptions::localhost_server());
        let client = |auth: &Authority, name: &str| {
            let issued = leaf(auth, &LeafOptions::client(name));
            ClientFiles {
                cert: pki::write(d, &format!("{name}.pem"), &issued.cert_pem).unwrap(),
                key: pki::write(d, &format!("{name}.key"), &issued.key_pem).unwrap(),
            }
        };
        let device = client(&ca, "device");
        let subscriber = client(&ca, "subscriber");
        let stranger = client(&other, "stranger");
        let ca_path = pki::write(d, "ca.pem", &ca.cert_pem()).unwrap();
        let listener = ListenerTls {
            cafile: ca_path.clone(),
            certfile: pki::write(d, "server.pem", &server.cert_pem).unwrap(),
            keyfile: pki::write(d, "server.key", &server.key_pem).unwrap(),
            require_certificate: true,
            tls_version: None,
        };
        Self {
            ca: ca_path,
            listener,
            device,
            subscriber,
            other_ca: pki::write(d, "other-ca.pem", &other.cert_pem()).unwrap(),
            stranger,
            dir,
            authority: ca,
        }
    }

    /// Starts mosquitto with this PKI on a free loopback port.
    pub fn broker(&self) -> Mosquitto {
        require_mosquitto();
        Mosquitto::start(self.dir.path(), &self.listener).expect("start mosquitto")
    }

    /// Starts mosquitto on `port`.
    pub fn broker_on(&self, port: u16) -> Mosquitto {
        require_mosquitto();
        Mosquitto::start_on(self.dir.path(), &self.listener, port, false).expect("start mosquitto")
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// Command line of `host run demo.wasm` against `port` with `client`'s
/// credentials and fast timings; add flags with [`Command::args`].
pub fn host_run(port: u16, ca: &Path, client: Option<&ClientFiles>) -> Command {
    host_run_component(&demo_wasm(), port, ca, client)
}

/// Like [`host_run`], for another component file.
pub fn host_run_component(
    component: &Path,
    port: u16,
    ca: &Path,
    client: Option<&ClientFiles>,
) -> Command {
    let mut cmd = host();
    cmd.arg("run")
        .arg(component)
        .arg("--broker")
        .arg(format!("mqtts://localhost:{port}"))
        .arg("--ca")
        .arg(ca)
        .args(["--publish-delay-ms", "50", "--iteration-delay-ms", "100"])
        .env("RUST_LOG", "info");
    if let Some(c) = client {
        cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
    }
    cmd
}

/// `host run <component> --watch` with the test's credentials, two
/// publishes per iteration and `iterations` of them.
pub fn watched(
    port: u16,
    pki: &TestPki,
    component: &Path,
    client_id: &str,
    iterations: u32,
) -> Running {
    Running::spawn(
        host_run_component(component, port, &pki.ca, Some(&pki.device))
            .args(["--watch", "--publish-count", "2", "--client-id", client_id])
            .args(["--iterations", &iterations.to_string()]),
    )
}

/// Runs `host run LOGIC --iterations 1 --publish-count 1` with the cache in
/// `cache` and times, from the spawn, the first log line containing each
/// of `marks`; returns those times and every log line. For the start-up
/// benchmarks.
pub fn time_to_lines(
    logic: &Path,
    port: u16,
    pki: &TestPki,
    cache: &Path,
    marks: &[&str],
) -> (Vec<Duration>, Vec<String>) {
    use std::io::BufRead;
    let started = Instant::now();
    let mut child = host_run_component(logic, port, &pki.ca, Some(&pki.device))
        .args(["--iterations", "1", "--publish-count", "1"])
        .arg("--cache-dir")
        .arg(cache)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut times: Vec<Option<Duration>> = vec![None; marks.len()];
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        for (mark, time) in marks.iter().zip(times.iter_mut()) {
            if time.is_none() && line.contains(mark) {
                *time = Some(started.elapsed());
            }
        }
        lines.push(line);
    }
    assert!(child.wait().unwrap().success(), "{}", lines.join("\n"));
    let times = marks
        .iter()
        .zip(times)
        .map(|(mark, t)| t.unwrap_or_else(|| panic!("no {mark:?} line in the log")))
        .collect();
    (times, lines)
}

/// Runs `cmd` to completion, failing the test after `limit`.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_output(child, limit)
}

/// Waits for `child` to exit and collects its output (read as it comes, so
/// a chatty child never blocks on a full pipe), killing it and failing the
/// test after `limit`.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    use std::io::Read;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out.join().unwrap_or_default();
            let stderr = err.join().unwrap_or_default();
            panic!(
                "process still running after {limit:?}; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// An independent subscriber: `mosquitto_sub` with its own certificate,
/// subscribed at QoS 1, ready when constructed.
pub struct Subscriber {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    topic: String,
    /// Lines that came before the SUBACK.
    early: Vec<String>,
}

impl Subscriber {
    /// Subscribes to `topic` (clean session) and waits for the broker's SUBACK.
    pub fn start(port: u16, pki: &TestPki, topic: &str) -> Self {
        Self::start_with(port, pki, topic, false)
    }

    /// Subscribes to `topic`; with `persistent`, its session (clean session
    /// off) outlives disconnects, so messages queued meanwhile still arrive.
    pub fn start_with(port: u16, pki: &TestPki, topic: &str, persistent: bool) -> Self {
        require_mosquitto();
        // stdbuf: line-buffer its stdout, or the SUBACK line sits in a pipe buffer.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub"])
            .args([
                "-h",
                "localhost",
                "-p",
                &port.to_string(),
                "-q",
                "1",
                "-v",
                "-d",
            ])
            .args(["-i", &format!("independent-subscriber-{port}")])
            .args(if persistent { &["-c"][..] } else { &[][..] })
            .args(mosquitto_tls_args(&pki.ca, &pki.subscriber))
            .args(["-t", topic])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto_sub");
        // With -d it prints "Client ... received SUBACK" once subscribed.
        let rx = line_reader(child.stdout.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        // A resumed session delivers queued messages before the SUBACK: keep them.
        let mut early = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains("SUBACK") => break,
                Ok(line) => early.push(line),
                Err(_) if Instant::now() > deadline => {
                    panic!("mosquitto_sub did not subscribe within 10 s")
                }
                Err(_) => {}
            }
        }
        Self {
            child,
            lines: rx,
            topic: topic.to_string(),
            early,
        }
    }

    /// Messages received as `(topic, payload)`, waiting until `count` have
    /// arrived or `limit` passes.
    pub fn messages(&mut self, count: usize, limit: Duration) -> Vec<(String, String)> {
        let deadline = Instant::now() + limit;
        let filter = self.topic.clone();
        let parse = |line: &str| message_of(&filter, line);
        let mut got: Vec<(String, String)> = std::mem::take(&mut self.early)
            .iter()
            .filter_map(|l| parse(l))
            .collect();
        while got.len() < count && Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(50))
                && let Some(message) = parse(&line)
            {
                got.push(message);
            }
        }
        got
    }

    /// Stops the subscriber as a user would (SIGTERM: it finishes the
    /// message in hand, prints it and disconnects) and returns every message
    /// it printed that [`Subscriber::messages`] has not yet returned.
    /// Killing it instead could lose a message it had already acknowledged
    /// (it sends the PUBACK before printing) and the broker would not resend.
    pub fn stop(mut self) -> Vec<(String, String)> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Killed only if it did not stop; its pipe ends and the reader
        // thread hangs up once everything printed has been read.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut lines = std::mem::take(&mut self.early);
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            lines.push(line);
        }
        lines
            .iter()
            .filter_map(|line| message_of(&self.topic, line))
            .collect()
    }
}

/// A message `mosquitto_sub -v` printed as "topic payload", with a topic
/// `filter` matches; its debug and error lines are not messages.
fn message_of(filter: &str, line: &str) -> Option<(String, String)> {
    let (topic, payload) = line.split_once(' ')?;
    topic_matches(filter, topic).then(|| (topic.to_string(), payload.to_string()))
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// stdout and stderr of a finished process, as text.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether `topic` matches the MQTT filter `filter` (`+` and a final `#`):
/// the host's own matcher.
pub use host::publish::rollout::matches_filter as topic_matches;

/// `--cafile CA --cert CERT --key KEY` for `mosquitto_sub` and `mosquitto_pub`.
pub fn mosquitto_tls_args(ca: &Path, client: &ClientFiles) -> [std::ffi::OsString; 6] {
    [
        "--cafile".into(),
        ca.into(),
        "--cert".into(),
        client.cert.clone().into(),
        "--key".into(),
        client.key.clone().into(),
    ]
}

/// The middle of `values` (the upper middle for an even count): the figure
/// the benchmarks report.
pub fn median<T: PartialOrd + Copy>(mut values: Vec<T>) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).expect("comparable values"));
    values[values.len() / 2]
}

/// User + system CPU time of process `pid` so far, to the nanosecond (its
/// CPU-time clock).
pub fn cpu_of(pid: u32) -> Duration {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: both calls only write the out-parameters given.
    #[allow(unsafe_code)]
    let time = unsafe {
        assert_eq!(
            libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock),
            0,
            "no CPU clock for {pid}"
        );
        let mut t = std::mem::zeroed::<libc::timespec>();
        assert_eq!(libc::clock_gettime(clock, &mut t), 0);
        t
    };
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}

/// The largest resident memory a process reached, sampled from the side
/// until it exits.
pub struct PeakRss {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    sampler: std::thread::JoinHandle<()>,
}

impl PeakRss {
    /// Samples process `pid` every `every`.
    pub fn watch(pid: u32, every: Duration) -> Self {
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = peak.clone();
        let sampler = std::thread::spawn(move || {
            while let Some(rss) = host::fleet::stats::rss_of(&pid.to_string()) {
                seen.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(every);
            }
        });
        Self { peak, sampler }
    }

    /// The peak, bytes, once the process has exited.
    pub fn finish(self) -> u64 {
        self.sampler.join().expect("sampler thread");
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}
