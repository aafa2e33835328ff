//! `host keygen`, `host sign` and `host verify`: thin commands over
//! [`host::publish`] and [`host::update`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use host::publish::keys::{self, SigningKey};
use host::publish::signing;
use host::update::repository::repository_of;
use host::update::trust::Trust;
use host::update::verify;
use host_core::WORLD;

/// `host keygen`: makes a signing key pair for logic updates.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The private key to write (PEM, owner-only); the public key goes to
    /// OUT.pub, which devices take with --trust.
    #[arg(long, value_name = "KEY", default_value = "publisher.key")]
    pub out: PathBuf,
}

/// `host sign`: signs a logic into a TUF repository.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The component to sign.
    pub logic: PathBuf,
    /// The private key (from host keygen).
    #[arg(long = "signing-key", visible_alias = "key", value_name = "KEY")]
    pub key: PathBuf,
    /// The logic's version; devices refuse versions lower than the one they
    /// run (unless --allow-downgrade).
    #[arg(long, value_name = "N")]
    pub version: u64,
    /// The repository to write [default: LOGIC.tuf, next to the component,
    /// where host run --trust looks for it].
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// Days the targets, snapshot and timestamp metadata stay valid;
    /// devices refuse it after (freeze protection).
    #[arg(long, value_name = "DAYS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=36500))]
    pub valid_days: u64,
}

/// `host verify`: checks a signed logic as a device would.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The component to check.
    pub logic: PathBuf,
    /// A public key the signature may be made with (repeatable).
    #[arg(long, value_name = "KEY.pub", required = true)]
    pub trust: Vec<PathBuf>,
    /// The repository [default: LOGIC.tuf].
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
}

/// Runs `host keygen`.
pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let public = keys::generate(&args.out)?;
    println!(
        "wrote {} (private, keep it safe) and {} (public: give it to devices with --trust)",
        args.out.display(),
        public.display()
    );
    Ok(())
}

/// Runs `host sign`.
pub async fn sign(args: SignArgs) -> anyhow::Result<()> {
    let key = SigningKey::load(&args.key)?;
    let repo = args
        .repo
        .clone()
        .unwrap_or_else(|| repository_of(&args.logic));
    let valid = Duration::from_secs(args.valid_days.saturating_mul(24 * 3600));
    let signed = signing::sign(&args.logic, &key, args.version, WORLD, &repo, valid)
        .await
        .with_context(|| format!("cannot sign {}", args.logic.display()))?;
    println!(
        "signed {} as version {} (sha256 {}) into {}",
        args.logic.display(),
        signed.version,
        &signed.sha256[..12],
        repo.display()
    );
    Ok(())
}

/// Runs `host verify`.
pub async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let trust = Trust::load(&args.trust, false, WORLD)?;
    let repo = args
        .repo
        .clone()
        .unwrap_or_else(|| repository_of(&args.logic));
    let v = verify::verify_file(&args.logic, &repo, &trust, None)
        .await
        .with_context(|| format!("refused {}", args.logic.display()))?;
    println!(
        "{}: version {}, sha256 {}, signed with a trusted key, for {WORLD}",
        args.logic.display(),
        v.version,
        &v.sha256[..12]
    );
    Ok(())
}
