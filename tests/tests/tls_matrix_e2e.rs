//! End to end: the TLS failure matrix, one test per row, each failing at the
//! first attempt with a message that names the problem; and two mixed-key
//! PKIs that must work. The rows "broker requires a client certificate, none
//! given" and "client certificate from another CA" are in failures_e2e.rs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use device_tests::{ClientFiles, host_run, output_within, text};
use host::broker::mosquitto::{ListenerTls, Mosquitto};
use host::broker::pki::{self, Authority, Issued, LeafOptions, Role};
use rcgen::KeyPair;

const LIMIT: Duration = Duration::from_secs(60);

/// A fresh RSA-2048 key (ring signs RSA but cannot generate it).
fn rsa_key(dir: &Path) -> KeyPair {
    let path = tempfile::NamedTempFile::new_in(dir)
        .unwrap()
        .into_temp_path();
    let status = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&*path)
        .stderr(Stdio::null())
        .status()
        .expect("openssl is not installed: apt-get install -y openssl");
    assert!(status.success());
    KeyPair::from_pem(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn server_for(name: &str) -> LeafOptions {
    LeafOptions {
        common_name: name.into(),
        names: vec![name.into(), "127.0.0.1".into()],
        role: Role::Server,
        not_after: None,
    }
}

fn client(name: &str) -> LeafOptions {
    LeafOptions {
        common_name: name.into(),
        names: Vec::new(),
        role: Role::Client,
        not_after: None,
    }
}

struct Setup {
    dir: tempfile::TempDir,
    ca: PathBuf,
    device: ClientFiles,
}

fn write_client(dir: &Path, name: &str, issued: &Issued) -> ClientFiles {
    ClientFiles {
        cert: pki::write(dir, &format!("{name}.pem"), &issued.cert_pem).unwrap(),
        key: pki::write(dir, &format!("{name}.key"), &issued.key_pem).unwrap(),
    }
}

/// A broker presenting `server`, trusting client certificates from
/// `client_ca`.
fn broker(setup: &Setup, server: &Issued, client_ca: &Authority) -> Mosquitto {
    device_tests::require_mosquitto();
    let d = setup.dir.path();
    let tls = ListenerTls {
        cafile: pki::write(d, "client-ca.pem", &client_ca.cert_pem()).unwrap(),
        certfile: pki::write(d, "server.pem", &server.cert_pem).unwrap(),
        keyfile: pki::write(d, "server.key", &server.key_pem).unwrap(),
        require_certificate: true,
        tls_version: None,
    };
    Mosquitto::start(d, &tls).unwrap()
}

fn setup(ca: &Authority) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let device = ca.issue(&client("device")).unwrap();
    Setup {
        ca: pki::write(dir.path(), "ca.pem", &ca.cert_pem()).unwrap(),
        device: write_client(dir.path(), "device", &device),
        dir,
    }
}

/// Runs one iteration; returns (exit code, TLS connection attempts, last stderr line).
fn run(port: u16, setup: &Setup, client: Option<&ClientFiles>) -> (i32, usize, String) {
    let out = output_within(
        host_run(port, &setup.ca, client).args(["--iterations", "1", "--publish-count", "1"]),
        LIMIT,
    );
    let (stdout, stderr) = text(&out);
    // Shown with a failing test's output: every attempt and how it ended.
    println!("host stdout:\n{stdout}\nhost stderr:\n{stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or("").to_string();
    (
        out.status.code().unwrap(),
        stdout.matches("Creating a TLS connection").count(),
        last,
    )
}

#[test]
fn server_certificate_signed_by_an_unknown_ca() {
    let ca = Authority::new("device's CA").unwrap();
    let rogue = Authority::new("rogue CA").unwrap();
    let s = setup(&ca);
    let b = broker(&s, &rogue.issue(&server_for("localhost")).unwrap(), &ca);
    let (code, attempts, line) = run(b.port, &s, Some(&s.device));
    assert_eq!((code, attempts), (2, 1), "{line}");
    assert!(
        line.contains("UnknownIssuer") && line.contains("--ca"),
        "{line}"
    );
}

#[test]
fn server_certificate_expired() {
    let ca = Authority::new("CA").unwrap();
    let s = setup(&ca);
    let mut opts = server_for("localhost");
    opts.not_after = Some(time::OffsetDateTime::now_utc() - time::Duration::days(2));
    let b = broker(&s, &ca.issue(&opts).unwrap(), &ca);
    let (code, attempts, line) = run(b.port, &s, Some(&s.device));
    assert_eq!((code, attempts), (2, 1), "{line}");
    assert!(line.contains("Expired") && line.contains("renew"), "{line}");
}

#[test]
fn server_certificate_for_another_host_name() {
    let ca = Authority::new("CA").unwrap();
    let s = setup(&ca);
    let b = broker(
        &s,
        &ca.issue(&server_for("broker.other.example")).unwrap(),
        &ca,
    );
    let (code, attempts, line) = run(b.port, &s, Some(&s.device));
    assert_eq!((code, attempts), (2, 1), "{line}");
    assert!(
        line.contains("not valid for name") && line.contains("host name"),
        "{line}"
    );
}

#[test]
fn client_key_that_does_not_match_the_certificate() {
    let ca = Authority::new("CA").unwrap();
    let s = setup(&ca);
    let other = write_client(s.dir.path(), "other", &ca.issue(&client("other")).unwrap());
    let mismatched = ClientFiles {
        cert: s.device.cert.clone(),
        key: other.key,
    };
    let (code, attempts, line) = run(1, &s, Some(&mismatched));
    assert_eq!((code, attempts), (1, 0), "{line}");
    assert!(line.contains("--key does not match"), "{line}");
}

#[test]
fn encrypted_client_key() {
    let ca = Authority::new("CA").unwrap();
    let s = setup(&ca);
    let encrypted = s.dir.path().join("device-encrypted.key");
    let status = Command::new("openssl")
        .args([
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "pass:secret",
            "-in",
        ])
        .arg(&s.device.key)
        .arg("-out")
        .arg(&encrypted)
        .status()
        .expect("openssl is not installed: apt-get install -y openssl");
    assert!(status.success());
    let files = ClientFiles {
        cert: s.device.cert.clone(),
        key: encrypted,
    };
    let (code, _, line) = run(1, &s, Some(&files));
    assert_eq!(code, 1, "{line}");
    assert!(
        line.contains("is encrypted") && line.contains("openssl pkey"),
        "{line}"
    );
}

#[test]
fn unsupported_client_key_format() {
    let ca = Authority::new("CA").unwrap();
    let s = setup(&ca);
    // A certificate where the key should be.
    let files = ClientFiles {
        cert: s.device.cert.clone(),
        key: s.device.cert.clone(),
    };
    let (code, _, line) = run(1, &s, Some(&files));
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("no usable PEM private key"), "{line}");
}

/// `openssl s_server` speaking only TLS 1.1 (mosquitto 2 cannot cap the
/// version), killed on drop.
struct OldTlsServer(Child);

impl Drop for OldTlsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn broker_offering_only_tls_1_1_is_refused_by_policy() {
    let ca = Authority::new("CA").unwrap();
    let s = setup(&ca);
    let server = ca.issue(&server_for("localhost")).unwrap();
    let cert = pki::write(s.dir.path(), "old.pem", &server.cert_pem).unwrap();
    let key = pki::write(s.dir.path(), "old.key", &server.key_pem).unwrap();
    let port = host::broker::mosquitto::free_port().unwrap();
    let child = Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
            "-accept",
            &port.to_string(),
        ])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl is not installed: apt-get install -y openssl");
    let _server = OldTlsServer(child);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "openssl s_server did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, attempts, line) = run(port, &s, Some(&s.device));
    assert_eq!((code, attempts), (2, 1), "{line}");
    assert!(
        line.contains("ProtocolVersion") && line.contains("TLS 1.2 or 1.3"),
        "{line}"
    );
}

#[test]
fn ecdsa_root_with_an_rsa_client_certificate_works() {
    let ca = Authority::new("ECDSA root").unwrap();
    let s = setup(&ca);
    let rsa_device = ca
        .issue_with_key(&client("rsa-device"), rsa_key(s.dir.path()))
        .unwrap();
    let files = write_client(s.dir.path(), "rsa-device", &rsa_device);
    let b = broker(&s, &ca.issue(&server_for("localhost")).unwrap(), &ca);
    let (code, attempts, line) = run(b.port, &s, Some(&files));
    assert_eq!((code, attempts), (0, 1), "{line}");
}

#[test]
fn rsa_root_with_an_ecdsa_client_certificate_works() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::with_key("RSA root", rsa_key(dir.path())).unwrap();
    let s = setup(&ca);
    let b = broker(&s, &ca.issue(&server_for("localhost")).unwrap(), &ca);
    let (code, attempts, line) = run(b.port, &s, Some(&s.device));
    assert_eq!((code, attempts), (0, 1), "{line}");
}
