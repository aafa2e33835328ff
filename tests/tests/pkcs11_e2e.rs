//! End to end: the device's key in a real PKCS#11 token (SoftHSM2), which
//! signs the TLS handshakes with mosquitto; ECDSA P-256 and RSA-2048; the
//! guest's entropy from the token; and the token's failures, one line each.

use std::process::Command;
use std::time::Duration;

use device_tests::softhsm::SoftHsm;
use device_tests::{ClientFiles, TestPki, demo_wasm, output_within, text};
use host::broker::pki::{KeyKind, LeafOptions, Role};

const LIMIT: Duration = Duration::from_secs(90);
const TOKEN: &str = "device-token";
const PIN: &str = "1234";

/// A token holding a key of `kind` as `device-key`, and the certificate
/// the test CA issued for it (the key itself is only in the token).
fn token_with_key(pki: &TestPki, kind: KeyKind) -> (SoftHsm, std::path::PathBuf) {
    let hsm = SoftHsm::new();
    hsm.init_token(TOKEN, PIN);
    let key = kind.generate().unwrap();
    let issued = pki
        .authority
        .issue_with_key(
            &LeafOptions {
                common_name: "token-device".into(),
                names: Vec::new(),
                role: Role::Client,
                not_after: None,
            },
            key,
        )
        .unwrap();
    hsm.import(TOKEN, PIN, "device-key", "01", &issued.key_pem);
    let cert = hsm.dir.path().join("device.pem");
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    (hsm, cert)
}

/// `host run` against `port` with the token's key.
fn run_with_token(
    pki: &TestPki,
    hsm: &SoftHsm,
    port: u16,
    cert: &std::path::Path,
    uri: &str,
) -> Command {
    let mut cmd = device_tests::host();
    cmd.arg("run")
        .arg(demo_wasm())
        .arg("--broker")
        .arg(format!("mqtts://localhost:{port}"))
        .arg("--ca")
        .arg(&pki.ca)
        .arg("--cert")
        .arg(cert)
        .args(["--key", uri, "--pkcs11-module"])
        .arg(&hsm.module)
        .args([
            "--client-id",
            "token-device",
            "--iterations",
            "1",
            "--publish-delay-ms",
            "20",
        ])
        .env("RUST_LOG", "info")
        .env_remove("MQTT_DEVICE_PKCS11_PIN");
    hsm.env(&mut cmd);
    cmd
}

fn runs_the_demo(kind: KeyKind) {
    let pki = TestPki::new();
    let broker = pki.broker();
    let (hsm, cert) = token_with_key(&pki, kind);
    let pin_file = hsm.dir.path().join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    let out = output_within(
        run_with_token(
            &pki,
            &hsm,
            broker.port,
            &cert,
            &format!("pkcs11:token={TOKEN};object=device-key"),
        )
        .arg("--pkcs11-pin-file")
        .arg(&pin_file)
        .args(["--entropy", "pkcs11"]),
        LIMIT,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{kind:?}: {stdout}\n{stderr}");
    assert!(
        stdout
            .contains("client key pkcs11:token=device-token;object=device-key in a PKCS#11 token"),
        "{stdout}"
    );
    assert!(
        stdout.contains("guest entropy from the PKCS#11 token"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "[token-device] iteration 1 completed successfully: 5 published, 5 acknowledged"
        ),
        "{kind:?}: {stdout}"
    );
}

#[test]
fn an_ecdsa_p256_key_in_the_token_runs_the_demo() {
    runs_the_demo(KeyKind::EcdsaP256);
}

#[test]
fn an_rsa_2048_key_in_the_token_runs_the_demo() {
    runs_the_demo(KeyKind::Rsa2048);
}

/// Each failure: exit 1 before any connection, one line naming the fix.
#[test]
fn wrong_pin_missing_object_missing_module_and_a_foreign_key_are_named() {
    let pki = TestPki::new();
    let (hsm, cert) = token_with_key(&pki, KeyKind::EcdsaP256);
    let good = format!("pkcs11:token={TOKEN};object=device-key");
    let other_cert = ClientFiles::clone(&pki.device).cert;
    let cases: Vec<(&str, Command, &str)> = vec![
        (
            "wrong PIN",
            {
                let mut c = run_with_token(&pki, &hsm, 1, &cert, &good);
                c.env("MQTT_DEVICE_PKCS11_PIN", "9999");
                c
            },
            "the token device-token refused the PIN (check --pkcs11-pin-file or MQTT_DEVICE_PKCS11_PIN",
        ),
        (
            "no PIN",
            run_with_token(&pki, &hsm, 1, &cert, &good),
            "needs its user PIN: pass --pkcs11-pin-file FILE or set MQTT_DEVICE_PKCS11_PIN",
        ),
        (
            "missing object",
            {
                let mut c = run_with_token(
                    &pki,
                    &hsm,
                    1,
                    &cert,
                    &format!("pkcs11:token={TOKEN};object=nothing"),
                );
                c.env("MQTT_DEVICE_PKCS11_PIN", PIN);
                c
            },
            "no private key pkcs11:token=device-token;object=nothing on the token device-token (check object= or id= in --key",
        ),
        (
            "missing token",
            {
                let mut c = run_with_token(
                    &pki,
                    &hsm,
                    1,
                    &cert,
                    "pkcs11:token=elsewhere;object=device-key",
                );
                c.env("MQTT_DEVICE_PKCS11_PIN", PIN);
                c
            },
            "no token labelled \"elsewhere\"",
        ),
        (
            "missing module",
            {
                let mut c = run_with_token(&pki, &hsm, 1, &cert, &good);
                c.args(["--pkcs11-module", "/nonexistent/libpkcs11.so"])
                    .env("MQTT_DEVICE_PKCS11_PIN", PIN);
                c
            },
            "cannot load the PKCS#11 module /nonexistent/libpkcs11.so",
        ),
        (
            "another key's certificate",
            {
                let mut c = run_with_token(&pki, &hsm, 1, &other_cert, &good);
                c.env("MQTT_DEVICE_PKCS11_PIN", PIN);
                c
            },
            "does not match the public key of --cert",
        ),
    ];
    for (what, mut cmd, want) in cases {
        let out = output_within(&mut cmd, LIMIT);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        let line = stderr.trim_end().lines().last().unwrap_or_default();
        assert!(line.starts_with("error: "), "{what}: {line}");
        assert!(line.contains(want), "{what}: {line}");
        assert!(
            !stdout.contains("Creating a TLS connection"),
            "{what}: no connection: {stdout}"
        );
    }
}

#[test]
fn a_pin_in_the_uri_is_refused_without_echoing_it() {
    let pki = TestPki::new();
    let hsm = SoftHsm::new();
    let out = output_within(
        &mut run_with_token(
            &pki,
            &hsm,
            1,
            &pki.device.cert,
            "pkcs11:object=k?pin-value=1234",
        ),
        LIMIT,
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("would be visible in ps"), "{stderr}");
    assert!(
        !stderr.contains("1234"),
        "the refusal does not echo the PIN: {stderr}"
    );
}
