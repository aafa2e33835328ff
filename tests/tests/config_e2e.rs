//! End to end: `host run --config device.toml` runs the demo against real
//! mosquitto from the file alone; flags and MQTT_DEVICE_* variables
//! override it; a bad key names the file, line and key.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use device_tests::{TestPki, demo_wasm, output_within, text};

const LIMIT: Duration = Duration::from_secs(90);

/// A configuration for the test broker, with paths relative to the file.
fn write_config(dir: &Path, pki: &TestPki, port: u16, extra: &str) -> std::path::PathBuf {
    let conf = dir.join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    for (from, to) in [
        (&pki.ca, "ca.pem"),
        (&pki.device.cert, "device.pem"),
        (&pki.device.key, "device.key"),
    ] {
        std::fs::copy(from, conf.join(to)).unwrap();
    }
    std::fs::copy(demo_wasm(), conf.join("demo.wasm")).unwrap();
    let path = conf.join("device.toml");
    std::fs::write(
        &path,
        format!(
            "# the demo against the test broker\n\
             component = \"demo.wasm\"\n\
             broker = \"mqtts://localhost:{port}\"\n\
             ca = \"ca.pem\"\n\
             cert = \"device.pem\"\n\
             key = \"device.key\"\n\
             client-id = \"from-file\"\n\
             iterations = 1\n\
             publish_delay_ms = 20\n\
             iteration-delay-ms = 50\n\
             {extra}"
        ),
    )
    .unwrap();
    path
}

fn host_in(dir: &Path) -> Command {
    let mut cmd = device_tests::host();
    // Another directory: relative paths must be the file's.
    cmd.current_dir(dir).env("RUST_LOG", "info");
    cmd
}

#[test]
fn the_demo_runs_from_a_config_file_alone() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &pki, broker.port, "");
    let out = output_within(
        host_in(dir.path()).arg("run").arg("--config").arg(&config),
        LIMIT,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "[from-file] iteration 1 completed successfully: 5 published, 5 acknowledged"
        ),
        "{stdout}"
    );
}

#[test]
fn flags_and_environment_variables_override_the_file() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &pki, broker.port, "publish-count = 4\n");
    let out = output_within(
        host_in(dir.path())
            .args(["run", "--iterations", "2"])
            .env("MQTT_DEVICE_CONFIG", &config)
            .env("MQTT_DEVICE_CLIENT_ID", "from-env")
            .env("MQTT_DEVICE_PUBLISH_COUNT", "2"),
        LIMIT,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains("from-file"), "{stdout}");
    assert!(
        stdout.contains("[from-env] iteration 2 completed successfully: 2 published"),
        "the flag's 2 iterations, the variable's client id and count: {stdout}"
    );
    assert!(!stdout.contains("iteration 3"), "{stdout}");

    // A flag overrides the variable too.
    let out = output_within(
        host_in(dir.path())
            .args(["run", "--client-id", "from-flag"])
            .env("MQTT_DEVICE_CONFIG", &config)
            .env("MQTT_DEVICE_CLIENT_ID", "from-env"),
        LIMIT,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("[from-flag] iteration 1 completed"),
        "{stdout}"
    );
    assert!(!stdout.contains("from-env"), "{stdout}");
}

#[test]
fn a_bad_key_or_value_names_the_file_line_and_key() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    for (extra, want) in [
        (
            "publish-cout = 3\n",
            ":11: unknown key `publish-cout` (did you mean `publish-count`?)",
        ),
        (
            "keep_alive_secs = 70000\n",
            ":11: keep_alive_secs: invalid value '70000'",
        ),
    ] {
        let config = write_config(dir.path(), &pki, 1, extra);
        let out = output_within(
            host_in(dir.path()).arg("run").arg("--config").arg(&config),
            LIMIT,
        );
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let line = stderr.trim_end().lines().last().unwrap_or_default();
        assert!(line.starts_with("error: "), "{line}");
        assert!(line.contains(&format!("device.toml{want}")), "{line}");
    }
}
