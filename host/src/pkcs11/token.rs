//! Opening a token: load the module, find the token and the key, log in.
//! One session per host process, shared behind a lock (PKCS#11 sessions
//! are not for concurrent use); its login lasts while it is open.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use crate::pkcs11::uri::Pkcs11Uri;

/// DER of the P-256 curve's OID, as CKA_EC_PARAMS holds it.
const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the P-384 curve's OID.
const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// Why the token or its key cannot be used; one line each naming the
/// cause (the command line adds the flags and the fix).
#[derive(Debug, thiserror::Error)]
pub enum Pkcs11Error {
    /// No module named.
    #[error("no PKCS#11 module is named for the token's key")]
    NoModule,
    /// The module cannot be loaded.
    #[error("cannot load the PKCS#11 module {}", path.display())]
    Module {
        /// The module.
        path: PathBuf,
        /// Why.
        source: CkError,
    },
    /// No token matches the URI.
    #[error("no token {wanted} in {} (tokens there: {present})", module.display())]
    NoToken {
        /// What the URI asks for.
        wanted: String,
        /// The module.
        module: PathBuf,
        /// The tokens found.
        present: String,
    },
    /// Several tokens match the URI.
    #[error("several tokens in {} match the key's URI (tokens there: {present})", module.display())]
    SeveralTokens {
        /// The module.
        module: PathBuf,
        /// The tokens found.
        present: String,
    },
    /// The token needs a PIN and none was given.
    #[error("the token {0} needs its user PIN")]
    NoPin(String),
    /// The PIN file cannot be read.
    #[error("cannot read the PIN file {}", path.display())]
    PinFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The token refused the PIN.
    #[error("the token {0} refused the PIN")]
    WrongPin(String),
    /// The user PIN is locked.
    #[error("the token {0}'s user PIN is locked")]
    PinLocked(String),
    /// No private key matches the URI.
    #[error("no private key {uri} on the token {token}")]
    NoKey {
        /// The URI.
        uri: String,
        /// The token.
        token: String,
        /// A hint about the id, or nothing.
        hint: &'static str,
    },
    /// Several private keys match.
    #[error("{count} private keys match {uri} on the token {token}")]
    Ambiguous {
        /// The URI.
        uri: String,
        /// The token.
        token: String,
        /// How many.
        count: usize,
    },
    /// The token cannot sign with the key the way TLS needs.
    #[error(
        "the token offers no mechanism to sign TLS handshakes with the key {uri} (it needs ECDSA for an EC key, RSA-PSS or RSA PKCS#1 for an RSA key)"
    )]
    NoMechanism {
        /// The URI.
        uri: String,
    },
    /// A key this host cannot sign TLS handshakes with.
    #[error(
        "the key {uri} is {what}; this host signs with ECDSA P-256 or P-384 and RSA keys (make one of those)"
    )]
    UnsupportedKey {
        /// The URI.
        uri: String,
        /// What it is.
        what: String,
    },
    /// The token's key is not the certificate's.
    #[error("the token's key {uri} does not match the public key of the client certificate")]
    KeyMismatch {
        /// The URI.
        uri: String,
    },
    /// The token failed an operation.
    #[error("the token failed to {action}")]
    Token {
        /// What it was doing.
        action: &'static str,
        /// Why.
        source: CkError,
    },
}

/// Where the user PIN comes from. Its `Debug` never shows the PIN.
#[derive(Debug, Clone, Default)]
pub enum Pin {
    /// No PIN (a token without login).
    #[default]
    None,
    /// The first line of a file.
    File(PathBuf),
    /// A value from the environment (zeroed when dropped).
    Value(AuthPin),
}

impl Pin {
    fn read(&self) -> Result<Option<AuthPin>, Pkcs11Error> {
        Ok(match self {
            Pin::None => None,
            Pin::Value(v) => Some(v.clone()),
            Pin::File(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| Pkcs11Error::PinFile {
                        path: path.clone(),
                        source,
                    })?;
                Some(AuthPin::from(text.lines().next().unwrap_or_default()))
            }
        })
    }
}

/// What kind of key the token holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKeyKind {
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// RSA, of this many bits.
    Rsa(usize),
}

/// An open, logged-in token with the device's key.
#[derive(Clone)]
pub struct Token {
    inner: Arc<Inner>,
}

struct Inner {
    session: Mutex<Session>,
    key: ObjectHandle,
    kind: TokenKeyKind,
    /// The mechanisms the token offers.
    mechanisms: Vec<MechanismType>,
    /// The key's URI, for messages.
    uri: String,
    /// Keeps the module loaded as long as the token is used.
    _module: Pkcs11,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({}, {:?})", self.inner.uri, self.inner.kind)
    }
}

fn token_error(action: &'static str) -> impl FnOnce(CkError) -> Pkcs11Error {
    move |source| Pkcs11Error::Token { action, source }
}

impl Token {
    /// Loads `module` (or the URI's `module-path`), finds the token and the
    /// key `uri` names, and logs in with `pin` (or the URI's `pin-source`).
    pub fn open(module: Option<&Path>, uri: &Pkcs11Uri, pin: &Pin) -> Result<Self, Pkcs11Error> {
        let module = module
            .or(uri.module_path.as_deref())
            .ok_or(Pkcs11Error::NoModule)?;
        let pkcs11 = Pkcs11::new(module).map_err(|source| Pkcs11Error::Module {
            path: module.to_owned(),
            source,
        })?;
        match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(source) => {
                return Err(Pkcs11Error::Module {
                    path: module.to_owned(),
                    source,
                });
            }
        }
        let (slot, label) = find_slot(&pkcs11, module, uri)?;
        let session = pkcs11
            .open_ro_session(slot)
            .map_err(token_error("open a session"))?;
        let info = pkcs11
            .get_token_info(slot)
            .map_err(token_error("describe itself"))?;
        let pin = match uri.pin_source.as_ref() {
            Some(file) if matches!(pin, Pin::None) => Pin::File(file.clone()).read()?,
            _ => pin.read()?,
        };
        if info.login_required() {
            let pin = pin.ok_or_else(|| Pkcs11Error::NoPin(label.clone()))?;
            match session.login(UserType::User, Some(&pin)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                Err(CkError::Pkcs11(
                    RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
                    _,
                )) => {
                    return Err(Pkcs11Error::WrongPin(label));
                }
                Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                    return Err(Pkcs11Error::PinLocked(label));
                }
                Err(source) => return Err(token_error("log in")(source)),
            }
        }
        let (key, kind) = find_key(&session, uri, &label)?;
        let mechanisms = pkcs11
            .get_mechanism_list(slot)
            .map_err(token_error("list its mechanisms"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                session: Mutex::new(session),
                key,
                kind,
                mechanisms,
                uri: uri.to_string(),
                _module: pkcs11,
            }),
        })
    }

    /// The key's kind.
    pub fn kind(&self) -> TokenKeyKind {
        self.inner.kind
    }

    /// The key's URI (for messages).
    pub fn uri(&self) -> &str {
        &self.inner.uri
    }

    /// Whether the token offers `mechanism`.
    pub fn supports(&self, mechanism: MechanismType) -> bool {
        self.inner.mechanisms.contains(&mechanism)
    }

    /// Signs `data` with the token's key.
    pub fn sign(&self, mechanism: &Mechanism<'_>, data: &[u8]) -> Result<Vec<u8>, Pkcs11Error> {
        blocking(|| {
            let session = self.inner.session.lock().unwrap_or_else(|p| p.into_inner());
            session
                .sign(mechanism, self.inner.key, data)
                .map_err(token_error("sign"))
        })
    }

    /// Fills `buf` from the token's random number generator.
    pub fn random(&self, buf: &mut [u8]) -> Result<(), Pkcs11Error> {
        if buf.is_empty() {
            return Ok(());
        }
        blocking(|| {
            let session = self.inner.session.lock().unwrap_or_else(|p| p.into_inner());
            session
                .generate_random_slice(buf)
                .map_err(token_error("generate random bytes"))
        })
    }
}

/// Runs a token call, which blocks (a smart card may take a tenth of a
/// second to sign): on a multi-threaded runtime (a fleet) the worker hands
/// its other tasks over first, so devices not waiting for the token run
/// on. A single device's runtime is its own; the call just runs. Calls are
/// one at a time per token: one session serves the whole host.
fn blocking<R>(call: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(call)
        }
        _ => call(),
    }
}

/// The slot of the token the URI names (the only one if it names none).
fn find_slot(
    pkcs11: &Pkcs11,
    module: &Path,
    uri: &Pkcs11Uri,
) -> Result<(Slot, String), Pkcs11Error> {
    let slots = pkcs11
        .get_slots_with_token()
        .map_err(token_error("list its slots"))?;
    let mut present = Vec::new();
    let mut found = Vec::new();
    for slot in slots {
        let info = pkcs11
            .get_token_info(slot)
            .map_err(token_error("describe a token"))?;
        let label = info.label().trim().to_string();
        let matches = uri.token.as_ref().is_none_or(|t| *t == label)
            && uri
                .serial
                .as_ref()
                .is_none_or(|s| s == info.serial_number().trim())
            && uri.slot_id.is_none_or(|id| id == slot.id());
        if matches {
            found.push((slot, label.clone()));
        }
        present.push(label);
    }
    if found.len() == 1 {
        return Ok(found.remove(0));
    }
    if found.len() > 1 {
        return Err(Pkcs11Error::SeveralTokens {
            module: module.to_owned(),
            present: present.join(", "),
        });
    }
    let wanted = match &uri.token {
        Some(t) => format!("labelled {t:?}"),
        None => "at all".to_string(),
    };
    Err(Pkcs11Error::NoToken {
        wanted,
        module: module.to_owned(),
        present: if present.is_empty() {
            "none".to_string()
        } else {
            present.join(", ")
        },
    })
}

/// The private key the URI names, and its kind.
fn find_key(
    session: &Session,
    uri: &Pkcs11Uri,
    token: &str,
) -> Result<(ObjectHandle, TokenKeyKind), Pkcs11Error> {
    let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
    if let Some(label) = &uri.object {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    let keys = session
        .find_objects(&template)
        .map_err(token_error("find the key"))?;
    let key = match keys.as_slice() {
        [key] => *key,
        [] => {
            // `id=01` is the two bytes "01"; the key of softhsm2-util
            // --id 01 is `id=%01`.
            let textual_id = uri
                .id
                .as_ref()
                .is_some_and(|id| !id.is_empty() && id.iter().all(u8::is_ascii_hexdigit));
            return Err(Pkcs11Error::NoKey {
                uri: uri.to_string(),
                token: token.to_string(),
                hint: if textual_id {
                    "; id= takes percent-encoded bytes: id=%01 for the id 01"
                } else {
                    ""
                },
            });
        }
        more => {
            return Err(Pkcs11Error::Ambiguous {
                uri: uri.to_string(),
                token: token.to_string(),
                count: more.len(),
            });
        }
    };
    let attributes = session
        .get_attributes(
            key,
            &[
                AttributeType::KeyType,
                AttributeType::EcParams,
                AttributeType::Modulus,
            ],
        )
        .map_err(token_error("describe the key"))?;
    let mut key_type = None;
    let mut ec_params = None;
    let mut modulus = None;
    for a in attributes {
        match a {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::EcParams(p) => ec_params = Some(p),
            Attribute::Modulus(m) => modulus = Some(m),
            _ => {}
        }
    }
    let unsupported = |what: String| Pkcs11Error::UnsupportedKey {
        uri: uri.to_string(),
        what,
    };
    let kind = match key_type {
        Some(KeyType::EC) => match ec_params.as_deref() {
            Some(P256) => TokenKeyKind::EcdsaP256,
            Some(P384) => TokenKeyKind::EcdsaP384,
            _ => return Err(unsupported("an EC key on another curve".into())),
        },
        Some(KeyType::RSA) => {
            let m = modulus.unwrap_or_default();
            let bits = m.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < 2048 {
                return Err(unsupported(format!(
                    "an RSA key of {bits} bits (at least 2048)"
                )));
            }
            TokenKeyKind::Rsa(bits)
        }
        Some(other) => return Err(unsupported(format!("a key of type {other}"))),
        None => return Err(unsupported("a key of unknown type".into())),
    };
    Ok((key, kind))
}
