//! End to end: `host certs` makes a PKI that a real mosquitto and `host run`
//! use as printed, for ECDSA and RSA keys.

use std::path::PathBuf;
use std::time::Duration;

use device_tests::{demo_wasm, output_within, require_mosquitto, text};
use host::broker::mosquitto::{ListenerTls, Mosquitto, free_port};

const LIMIT: Duration = Duration::from_secs(90);

/// The value of `key VALUE` in the printed mosquitto lines.
fn conf_value(printed: &str, key: &str) -> PathBuf {
    let prefix = format!("{key} ");
    printed
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key} line in: {printed}"))
        .into()
}

fn run_as_printed(rsa: bool) {
    require_mosquitto();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let port = free_port().unwrap();
    let mut certs = device_tests::host();
    certs
        .arg("certs")
        .arg(&dir)
        .args(["--devices", "2", "--prefix", "meter", "--port"])
        .arg(port.to_string());
    if rsa {
        certs.arg("--rsa");
    }
    let out = output_within(&mut certs, LIMIT);
    let (printed, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(printed.contains("require_certificate true"), "{printed}");
    assert!(printed.contains(&format!("listener {port}")), "{printed}");
    let key = std::fs::read_to_string(dir.join("meter-0002.key")).unwrap();
    // rcgen writes PKCS#8 for both kinds; the key kind shows in its length.
    assert_eq!(key.len() > 1000, rsa, "RSA keys are long, P-256 keys short");

    let listener = ListenerTls {
        cafile: conf_value(&printed, "cafile"),
        certfile: conf_value(&printed, "certfile"),
        keyfile: conf_value(&printed, "keyfile"),
        require_certificate: true,
        tls_version: None,
    };
    let _broker = Mosquitto::start_on(tmp.path(), &listener, port, false).unwrap();

    let line = printed
        .lines()
        .find(|l| l.starts_with("host run") && l.contains("meter-0002"))
        .unwrap_or_else(|| panic!("no host run line for meter-0002: {printed}"));
    let flags: Vec<&str> = line.split_whitespace().skip(3).collect();
    assert!(flags.contains(&"--client-id"), "{line}");
    let out = output_within(
        device_tests::host()
            .arg("run")
            .arg(demo_wasm())
            .args(&flags)
            .args(["--iterations", "1", "--publish-delay-ms", "10"]),
        LIMIT,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("[meter-0002] iteration 1 completed successfully"),
        "{stdout}"
    );
}

#[test]
fn an_ecdsa_pki_runs_the_demo_as_printed() {
    run_as_printed(false);
}

#[test]
fn an_rsa_pki_runs_the_demo_as_printed() {
    run_as_printed(true);
}
