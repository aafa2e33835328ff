//! SoftHSM2, a real PKCS#11 token in files, for tests: a token directory
//! of the test's own (no root needed), initialised and loaded with keys
//! through `softhsm2-util`.

use std::path::PathBuf;
use std::process::Command;

use tempfile::TempDir;

/// The command that installs SoftHSM2 on Debian and Ubuntu.
pub const INSTALL_HINT: &str = "apt-get update && apt-get install -y softhsm2";

/// A SoftHSM2 configuration with its own token directory.
pub struct SoftHsm {
    /// Holds the configuration and the tokens.
    pub dir: TempDir,
    /// The configuration file (`SOFTHSM2_CONF`).
    pub conf: PathBuf,
    /// The PKCS#11 module.
    pub module: PathBuf,
}

/// The SoftHSM2 module, where Debian puts it.
fn module() -> Option<PathBuf> {
    let known = [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    ];
    known.iter().map(PathBuf::from).find(|p| p.is_file())
}

impl SoftHsm {
    /// A fresh configuration; fails the test, with the install command, if
    /// SoftHSM2 is missing.
    pub fn new() -> Self {
        let module =
            module().unwrap_or_else(|| panic!("SoftHSM2 is not installed: {INSTALL_HINT}"));
        assert!(
            Command::new("softhsm2-util")
                .arg("--version")
                .output()
                .is_ok(),
            "softhsm2-util is not installed: {INSTALL_HINT}"
        );
        let dir = tempfile::Builder::new()
            .prefix("softhsm-test-")
            .tempdir()
            .unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        Self { dir, conf, module }
    }

    /// `softhsm2-util` with this configuration.
    fn util(&self) -> Command {
        let mut cmd = Command::new("softhsm2-util");
        cmd.env("SOFTHSM2_CONF", &self.conf);
        cmd
    }

    fn run(&self, cmd: &mut Command) {
        let out = cmd.output().expect("run softhsm2-util");
        assert!(
            out.status.success(),
            "softhsm2-util failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Initialises a token labelled `label` with the user PIN `pin`.
    pub fn init_token(&self, label: &str, pin: &str) {
        self.run(self.util().args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            pin,
            "--so-pin",
            "5555",
        ]));
    }

    /// Imports the PKCS#8 PEM private key `key_pem` into the token `token`
    /// as the object `label` with CKA_ID `id` (hex).
    pub fn import(&self, token: &str, pin: &str, label: &str, id: &str, key_pem: &str) {
        let file = self.dir.path().join(format!("{label}.pk8"));
        std::fs::write(&file, key_pem).unwrap();
        self.run(
            self.util()
                .args(["--import"])
                .arg(&file)
                .args(["--token", token, "--label", label, "--id", id, "--pin", pin]),
        );
        // The key lives in the token now.
        std::fs::remove_file(&file).unwrap();
    }

    /// Points `cmd` (a host process) at this configuration.
    pub fn env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env("SOFTHSM2_CONF", &self.conf)
    }
}

impl Default for SoftHsm {
    fn default() -> Self {
        Self::new()
    }
}
