//! End to end: `host inspect` describes a logic file, says whether this
//! host runs it (exit 0) or not and why (exit 2), and checks its signature.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use device_tests::{demo_wasm, output_within, text};
use sha2::{Digest, Sha256};

const LIMIT: Duration = Duration::from_secs(120);

fn host(dir: &Path) -> Command {
    let mut cmd = device_tests::host();
    cmd.current_dir(dir);
    cmd
}

fn inspect(dir: &Path, file: &Path, extra: &[&str]) -> (Output, serde_json::Value) {
    let out = output_within(
        host(dir)
            .arg("inspect")
            .arg(file)
            .arg("--json")
            .args(extra)
            .arg("--cache-dir")
            .arg(dir.join("cache")),
        LIMIT,
    );
    let json =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out).0));
    (out, json)
}

#[test]
fn the_demo_is_described_and_runs_here() {
    let dir = tempfile::tempdir().unwrap();
    let (out, json) = inspect(dir.path(), &demo_wasm(), &[]);
    assert!(out.status.success(), "{}", text(&out).1);
    let bytes = std::fs::read(demo_wasm()).unwrap();
    assert_eq!(json["sha256"], hex::encode(Sha256::digest(&bytes)));
    assert_eq!(json["size"], bytes.len());
    assert_eq!(json["kind"], "component");
    assert_eq!(json["runs_here"], true);
    let names = |key: &str| -> Vec<String> {
        json[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("exports"), ["run-iteration"]);
    assert!(
        names("imports").contains(&"mqtt-device:runtime/mtls-socket@0.2.2".to_string()),
        "{json}"
    );
    assert_eq!(json["signature"]["state"], "unsigned");
    assert_eq!(
        json["keeps_state"], true,
        "the demo keeps a persistent session"
    );
    assert_eq!(json["reads_settings"], false);
}

#[test]
fn whether_a_logic_keeps_state_and_reads_settings_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let before = device_tests::root().join("tests/fixtures/demo-wit-0.2.0.wasm");
    let (_, old) = inspect(dir.path(), &before, &[]);
    assert_eq!(old["keeps_state"], false, "{old}");
    assert_eq!(old["reads_settings"], false, "{old}");
    let (_, telemetry) = inspect(dir.path(), &device_tests::telemetry_wasm(), &[]);
    assert_eq!(telemetry["keeps_state"], true, "{telemetry}");
    assert_eq!(telemetry["reads_settings"], true, "{telemetry}");
    let out = output_within(
        host(dir.path())
            .arg("inspect")
            .arg(device_tests::telemetry_wasm()),
        LIMIT,
    );
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("state:     durable, through wasi:keyvalue"),
        "{stdout}"
    );
    assert!(
        stdout.contains("settings:  its own, through wasi:config"),
        "{stdout}"
    );
}

#[test]
fn what_this_host_cannot_run_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "module.wasm",
            b"\0asm\x01\0\0\0".to_vec(),
            "a core module, not a component",
        ),
        (
            "empty.wasm",
            wat::parse_str("(component)").unwrap(),
            "run-iteration",
        ),
        (
            "elsewhere.wasm",
            wat::parse_str(r#"(component (import "acme:radio/modem@1.0.0" (instance)))"#).unwrap(),
            "does not match the world",
        ),
    ];
    for (name, bytes, why) in cases {
        let file = dir.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        let (out, json) = inspect(dir.path(), &file, &[]);
        assert_eq!(out.status.code(), Some(2), "{name}: {json}");
        assert_eq!(json["runs_here"], false, "{name}");
        let refusal = json["refusal"].as_str().unwrap();
        assert!(refusal.contains(why), "{name}: {refusal}");
        let line = text(&out).1;
        assert!(line.contains("this host cannot run"), "{name}: {line}");
    }
}

#[test]
fn the_signature_is_shown_and_checked_against_trust() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let logic = d.join("logic.wasm");
    std::fs::copy(demo_wasm(), &logic).unwrap();
    for (what, args) in [
        ("keygen", vec!["keygen", "--out", "pub.key"]),
        ("keygen", vec!["keygen", "--out", "other.key"]),
        (
            "sign",
            vec!["sign", "logic.wasm", "--key", "pub.key", "--version", "7"],
        ),
    ] {
        let out = output_within(host(d).args(args), LIMIT);
        assert!(out.status.success(), "{what}: {}", text(&out).1);
    }
    let (out, json) = inspect(d, &logic, &[]);
    assert!(out.status.success());
    assert_eq!(json["signature"]["state"], "not-checked");
    assert_eq!(json["signature"]["version"], 7);

    let (out, json) = inspect(d, &logic, &["--trust", "pub.key.pub"]);
    assert!(out.status.success(), "{json}");
    assert_eq!(json["signature"]["state"], "verified");
    assert_eq!(json["signature"]["version"], 7);

    let (out, json) = inspect(d, &logic, &["--trust", "other.key.pub"]);
    assert_eq!(out.status.code(), Some(2), "{json}");
    assert_eq!(json["signature"]["state"], "refused");
    let reason = json["signature"]["reason"].as_str().unwrap();
    assert!(reason.contains("does not trust"), "{reason}");
}

#[test]
fn a_missing_file_is_exit_1_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = output_within(
        host(dir.path()).args(["inspect", "nothing-here.wasm"]),
        LIMIT,
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot read nothing-here.wasm"), "{stderr}");
}
