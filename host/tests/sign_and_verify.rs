//! Signed here, verified as a device does: the publisher's repository
//! ([`host::publish`]) against the device's verification
//! ([`host::update::verify`]), from a directory and from files received
//! over the broker, with every refusal a device makes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use host::publish::keys::{SigningKey, generate};
use host::publish::signing::sign;
use host::update::repository::{TARGET, VERSION_KEY};
use host::update::trust::Trust;
use host::update::trust::load_public;
use host::update::verify::{Refusal, Source, verify, verify_file};

const WORLD_NAME: &str = host_core::WORLD;

struct Fixture {
    dir: tempfile::TempDir,
    key: SigningKey,
    trust: Trust,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("publisher.key");
    let public = generate(&key_path).unwrap();
    let trust = Trust {
        keys: vec![load_public(&public).unwrap()],
        allow_downgrade: false,
        world: WORLD_NAME.into(),
        datastore: None,
        check_expiry: true,
    };
    Fixture {
        key: SigningKey::load(&key_path).unwrap(),
        dir,
        trust,
    }
}

async fn signed(f: &Fixture, bytes: &[u8], version: u64, world: &str) -> PathBuf {
    let wasm = f.dir.path().join(format!("logic-{version}.wasm"));
    std::fs::write(&wasm, bytes).unwrap();
    let repo = f.dir.path().join("repo");
    sign(
        &wasm,
        &f.key,
        version,
        world,
        &repo,
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    repo
}

/// The repository as files received over the broker.
fn files(repo: &Path) -> HashMap<String, Bytes> {
    let mut files = HashMap::new();
    for sub in ["metadata", "targets"] {
        for e in std::fs::read_dir(repo.join(sub)).unwrap().flatten() {
            let name = format!("{sub}/{}", e.file_name().to_string_lossy());
            files.insert(name, Bytes::from(std::fs::read(e.path()).unwrap()));
        }
    }
    files
}

#[tokio::test]
async fn a_signed_logic_verifies_from_a_directory_and_from_received_files() {
    let f = fixture();
    let repo = signed(&f, b"component bytes", 3, WORLD_NAME).await;
    let v = verify(&Source::Dir(repo.clone()), &f.trust, None)
        .await
        .unwrap();
    assert_eq!((v.version, v.wasm.as_slice()), (3, &b"component bytes"[..]));
    let v = verify(&Source::Files(Arc::new(files(&repo))), &f.trust, Some(2))
        .await
        .unwrap();
    assert_eq!(v.version, 3);
}

#[tokio::test]
async fn a_tampered_component_is_refused() {
    let f = fixture();
    let repo = signed(&f, b"component bytes", 1, WORLD_NAME).await;
    let mut files = files(&repo);
    let (_, target) = files
        .iter_mut()
        .find(|(n, _)| n.starts_with("targets/"))
        .unwrap();
    let mut bytes = target.to_vec();
    bytes[0] ^= 1;
    *target = Bytes::from(bytes);
    let e = verify(&Source::Files(Arc::new(files)), &f.trust, None)
        .await
        .unwrap_err();
    assert!(matches!(e, Refusal::Tuf(_)), "{e}");
}

#[tokio::test]
async fn tampered_metadata_is_refused() {
    let f = fixture();
    let repo = signed(&f, b"component bytes", 1, WORLD_NAME).await;
    let mut files = files(&repo);
    let (_, targets) = files
        .iter_mut()
        .find(|(n, _)| n.ends_with(".targets.json"))
        .unwrap();
    // Raise the logic's version without re-signing.
    let mut json: serde_json::Value = serde_json::from_slice(targets).unwrap();
    json["signed"]["targets"][TARGET]["custom"][VERSION_KEY] = 9.into();
    *targets = Bytes::from(serde_json::to_vec(&json).unwrap());
    let e = verify(&Source::Files(Arc::new(files)), &f.trust, None)
        .await
        .unwrap_err();
    assert!(matches!(e, Refusal::Tuf(_)), "{e}");
}

#[tokio::test]
async fn another_key_an_older_version_a_wrong_world_and_no_signature_are_refused() {
    let f = fixture();
    let other = fixture();
    let repo = signed(&other, b"component bytes", 5, WORLD_NAME).await;
    let e = verify(&Source::Dir(repo), &f.trust, None)
        .await
        .unwrap_err();
    assert!(matches!(e, Refusal::UntrustedKey), "{e}");

    let repo = signed(&f, b"old", 2, WORLD_NAME).await;
    let e = verify(&Source::Dir(repo.clone()), &f.trust, Some(4))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Refusal::Downgrade {
                offered: 2,
                running: 4
            }
        ),
        "{e}"
    );
    let mut allow = f.trust.clone();
    allow.allow_downgrade = true;
    assert!(verify(&Source::Dir(repo), &allow, Some(4)).await.is_ok());

    let repo = signed(&f, b"elsewhere", 6, "other:world/device@1.0.0").await;
    let e = verify(&Source::Dir(repo), &f.trust, None)
        .await
        .unwrap_err();
    assert!(matches!(e, Refusal::WrongWorld { .. }), "{e}");

    let empty = f.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = verify(&Source::Dir(empty), &f.trust, None)
        .await
        .unwrap_err();
    assert!(matches!(e, Refusal::Unsigned), "{e}");
}

#[tokio::test]
async fn a_file_must_be_the_signed_component() {
    let f = fixture();
    let repo = signed(&f, b"component bytes", 1, WORLD_NAME).await;
    let other = f.dir.path().join("other.wasm");
    std::fs::write(&other, b"other bytes").unwrap();
    let e = verify_file(&other, &repo, &f.trust, None)
        .await
        .unwrap_err();
    assert!(matches!(e, Refusal::NotTheSignedFile { .. }), "{e}");
    let same = f.dir.path().join("logic-1.wasm");
    assert!(verify_file(&same, &repo, &f.trust, None).await.is_ok());
}
