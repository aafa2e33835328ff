//! The user's words for what stops a command before it runs: the typed
//! errors of the TLS files, the PKCS#11 token, trusted and signing keys,
//! signed repositories, publishing and metrics, each worded with the flag
//! it is about and the fix. The layers below name the cause only.

use std::error::Error;

use host::metrics::server::ListenError;
use host::pkcs11::{Pkcs11Error, UriError};
use host::publish::keys::KeyError;
use host::publish::rollout::PublishError;
use host::publish::signing::SignError;
use host::sandbox::cache::LoadError;
use host::sandbox::engine::EngineError;
use host::state::OpenError;
use host::tls::{CredentialError, TlsFile};
use host::update::trust::TrustError;
use host::update::verify::Refusal;

use crate::cli::args::PIN_VAR;

/// The flag that names a TLS file.
fn flag(file: TlsFile) -> &'static str {
    match file {
        TlsFile::Ca => "--ca",
        TlsFile::Cert => "--cert",
        TlsFile::Key => "--key",
    }
}

/// `cause` in the user's words, if it is one of the errors worded here
/// (its own sources are not repeated: the caller prints them after it).
pub fn line(cause: &(dyn Error + 'static)) -> Option<String> {
    worded(cause, credential)
        .or_else(|| worded(cause, pkcs11))
        .or_else(|| worded(cause, uri))
        .or_else(|| worded(cause, refusal))
        .or_else(|| worded(cause, trust))
        .or_else(|| worded(cause, signing_key))
        .or_else(|| worded(cause, sign))
        .or_else(|| worded(cause, publish))
        .or_else(|| worded(cause, load))
        .or_else(|| worded(cause, engine))
        .or_else(|| worded(cause, state))
        .or_else(|| {
            worded(cause, |e: &ListenError| {
                format!(
                    "cannot listen on --metrics-listen {} (pick a free port, or an address of this machine)",
                    e.addr
                )
            })
        })
}

/// `cause` worded by `word`, if it is an `E`.
fn worded<E: Error + 'static>(
    cause: &(dyn Error + 'static),
    word: impl Fn(&E) -> String,
) -> Option<String> {
    cause.downcast_ref::<E>().map(word)
}

/// The state database at start. Nothing is ever emptied to get past one:
/// each names the file and what the user does.
pub fn state(e: &OpenError) -> String {
    match e {
        OpenError::Directory(..) => {
            format!("{e} (give --state-dir a directory this user may create and write)")
        }
        OpenError::Owner { .. } => format!(
            "{e} (run the host as that user, or give --state-dir a directory of this user's own)"
        ),
        OpenError::InUse(_) => {
            format!("{e} (stop the other host, or give this one its own --state-dir)")
        }
        OpenError::Unreadable(..) => format!(
            "{e} (the host's user must read and write it; check its permissions and the disk)"
        ),
        OpenError::Damaged(path, _) => format!(
            "{e} (move it aside to start with an empty state, e.g. mv {0} {0}.damaged, or restore it from a backup)",
            path.display()
        ),
    }
}

/// A component file that cannot be loaded.
pub fn load(e: &LoadError) -> String {
    match e {
        LoadError::Read { .. } => format!("{e} (build it first, or check the path)"),
        LoadError::Invalid(_) => format!("{e} (build the guest for wasm32-wasip2)"),
    }
}

/// A component that does not fit the world.
pub fn engine(e: &EngineError) -> String {
    match e {
        EngineError::Imports(_) => format!("{e} (build it against this project's wit/)"),
        EngineError::Exports(_) | EngineError::Setup(_) => e.to_string(),
    }
}

/// The TLS files.
pub fn credential(e: &CredentialError) -> String {
    use CredentialError as E;
    match e {
        E::Read { file, path, .. } => format!(
            "cannot read {} file {} (check the path given to {})",
            flag(*file),
            path.display(),
            flag(*file)
        ),
        E::NoCertificate { file, path } => format!(
            "{} file {} holds no PEM certificate (pass a file with a -----BEGIN CERTIFICATE----- block)",
            flag(*file),
            path.display()
        ),
        E::MalformedPem { file, path, .. } => format!(
            "{} file {} has a malformed PEM block (check that the file is whole and unedited)",
            flag(*file),
            path.display()
        ),
        E::BadRoot { path, .. } => format!(
            "--ca file {} holds a certificate that cannot be a root CA (pass the PEM of the CA that signed the broker's certificate)",
            path.display()
        ),
        E::NoOsRoots { detail } => format!(
            "--ca os found no root certificate in the operating system's trust store{detail} (install ca-certificates, set SSL_CERT_FILE, or pass --ca FILE)"
        ),
        E::EncryptedKey(path) => format!(
            "--key file {} is encrypted (decrypt it first: openssl pkey -in KEY -out PLAIN.key)",
            path.display()
        ),
        E::NoKey(path) => format!(
            "--key file {} holds no usable PEM private key (pass a PKCS#8, PKCS#1 RSA or SEC1 EC key)",
            path.display()
        ),
        E::Unpaired { given, missing } => format!(
            "{} was given without {} (pass both the client certificate and its key, or neither)",
            flag(*given),
            flag(*missing)
        ),
        E::KeyMismatch => {
            "--key does not match the public key of --cert (pass the key the certificate was issued for)".into()
        }
        E::Provider(_) => {
            "the TLS library refused TLS 1.2 and 1.3 (rebuild the host with rustls' ring provider)"
                .into()
        }
        E::Token(e) => pkcs11(e),
        E::Unusable(_) => {
            "client certificate or key unusable (pass an RSA, ECDSA or Ed25519 key and its certificate)"
                .into()
        }
    }
}

/// The PKCS#11 token of `--key pkcs11:...`.
pub fn pkcs11(e: &Pkcs11Error) -> String {
    use Pkcs11Error as E;
    match e {
        E::NoModule => "--key pkcs11:... needs the token's PKCS#11 module: pass --pkcs11-module PATH (e.g. /usr/lib/softhsm/libsofthsm2.so) or module-path= in the URI".into(),
        E::Module { .. } => format!(
            "{e} (install the token's module, e.g. apt-get install softhsm2, and pass its path to --pkcs11-module)"
        ),
        E::NoToken { .. } => format!(
            "{e} (check token= in --key; for SoftHSM2, SOFTHSM2_CONF names the token directory)"
        ),
        E::SeveralTokens { module, present } => format!(
            "several tokens in {} match --key (tokens there: {present}) (name one with token= or serial=)",
            module.display()
        ),
        E::NoPin(_) => format!("{e}: pass --pkcs11-pin-file FILE or set {PIN_VAR}"),
        E::PinFile { .. } => format!("{e} (check --pkcs11-pin-file or pin-source=)"),
        E::WrongPin(_) => format!(
            "{e} (check --pkcs11-pin-file or {PIN_VAR}; repeated wrong PINs lock the token)"
        ),
        E::PinLocked(_) => {
            format!("{e} (reset it with the security officer's PIN, e.g. pkcs11-tool --init-pin)")
        }
        E::NoKey { hint, .. } => format!(
            "{e} (check object= or id= in --key{hint}; list the keys with pkcs11-tool --list-objects)"
        ),
        E::Ambiguous { .. } => format!("{e} (add id= to --key to pick one)"),
        E::KeyMismatch { uri } => format!(
            "the token's key {uri} does not match the public key of --cert (pass the certificate issued for that key)"
        ),
        E::Token { .. } => format!("{e} (check the token and its module)"),
        E::NoMechanism { .. } | E::UnsupportedKey { .. } => e.to_string(),
    }
}

/// A `pkcs11:` URI.
pub fn uri(e: &UriError) -> String {
    match e {
        UriError::PinValue => {
            format!("{e} (put the PIN in a file for --pkcs11-pin-file, or in {PIN_VAR})")
        }
        other => other.to_string(),
    }
}

/// A signed logic refused.
pub fn refusal(e: &Refusal) -> String {
    match e {
        Refusal::Unsigned => format!("{e} (sign it with host sign)"),
        Refusal::UntrustedKey => format!("{e} (sign with a key given to --trust)"),
        Refusal::Downgrade { .. } => format!("{e} (no downgrade without --allow-downgrade)"),
        Refusal::WrongWorld { .. } => format!("{e} (build it against this host's wit/)"),
        other => other.to_string(),
    }
}

/// A `--trust` key.
pub fn trust(e: &TrustError) -> String {
    match e {
        TrustError::Read { path, .. } => {
            format!(
                "cannot read --trust file {} (check the path)",
                path.display()
            )
        }
        TrustError::NotAPublicKey(path) => format!(
            "--trust file {} holds no public key (pass the KEY.pub that host keygen wrote)",
            path.display()
        ),
    }
}

/// A publisher's key (`host keygen`, `host sign --key`).
pub fn signing_key(e: &KeyError) -> String {
    match e {
        KeyError::Io { .. } => format!("{e} (check the path)"),
        KeyError::Exists(path) => format!(
            "{} exists already (remove it, or pick another --out)",
            path.display()
        ),
        KeyError::NotAPrivateKey(path) => format!(
            "--key file {} holds no Ed25519, ECDSA P-256 or RSA private key in PEM (make one with host keygen)",
            path.display()
        ),
        KeyError::Generate(_) => e.to_string(),
    }
}

/// Signing into a repository.
pub fn sign(e: &SignError) -> String {
    match e {
        SignError::Io { .. } => format!("{e} (check the path and permissions)"),
        SignError::OtherKey(_) => {
            format!("{e} (sign with the key it was made with, or use a new --repo)")
        }
        other => other.to_string(),
    }
}

/// Publishing over the broker.
pub fn publish(e: &PublishError) -> String {
    match e {
        PublishError::Connect(_) => format!("{e} (check --broker and the TLS files)"),
        other => other.to_string(),
    }
}
