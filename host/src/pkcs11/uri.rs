//! PKCS#11 URIs (RFC 7512) naming a private key in a token:
//! `pkcs11:token=NAME;object=LABEL` with optional `id=%01`, `serial=`,
//! `slot-id=`, `type=private`, and the query attributes `module-path=` and
//! `pin-source=FILE`. A `pin-value` is refused: the command line is visible
//! to every local user in `ps`.

use std::path::PathBuf;

use percent_encoding::percent_decode_str;

/// A parsed `pkcs11:` URI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// The token's label (`token=`).
    pub token: Option<String>,
    /// The token's serial number (`serial=`).
    pub serial: Option<String>,
    /// The slot (`slot-id=`).
    pub slot_id: Option<u64>,
    /// The key's label (`object=`).
    pub object: Option<String>,
    /// The key's CKA_ID (`id=`, percent-encoded bytes).
    pub id: Option<Vec<u8>>,
    /// The module to load (`?module-path=`).
    pub module_path: Option<PathBuf>,
    /// A file holding the PIN (`?pin-source=`).
    pub pin_source: Option<PathBuf>,
}

/// Why a URI cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UriError {
    /// Not a `pkcs11:` URI.
    #[error("{0:?} is not a pkcs11: URI (write pkcs11:token=NAME;object=LABEL)")]
    NotPkcs11(String),
    /// An attribute this host does not know.
    #[error(
        "the PKCS#11 URI attribute {0:?} is not supported (use token, object, id, serial, slot-id, type, module-path, pin-source)"
    )]
    Unknown(String),
    /// A PIN in the URI.
    #[error("a pin-value in the PKCS#11 URI would be visible in ps")]
    PinValue,
    /// A value that does not parse.
    #[error("the PKCS#11 URI attribute {attribute}={value:?} is malformed ({why})")]
    Malformed {
        /// The attribute.
        attribute: String,
        /// Its value.
        value: String,
        /// What is wrong.
        why: &'static str,
    },
    /// Neither a label nor an id for the key.
    #[error("the PKCS#11 URI names no key (add object=LABEL or id=%NN)")]
    NoObject,
}

impl std::str::FromStr for Pkcs11Uri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("pkcs11:")
            .ok_or_else(|| UriError::NotPkcs11(s.to_string()))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut uri = Pkcs11Uri::default();
        let attributes = path
            .split(';')
            .chain(query.split('&'))
            .filter(|a| !a.is_empty());
        for attribute in attributes {
            let (name, raw) = attribute.split_once('=').unwrap_or((attribute, ""));
            let malformed = |why| UriError::Malformed {
                attribute: name.to_string(),
                value: raw.to_string(),
                why,
            };
            let bytes: Vec<u8> = percent_decode_str(raw).collect();
            let text = || String::from_utf8(bytes.clone()).map_err(|_| malformed("not UTF-8"));
            match name {
                "token" => uri.token = Some(text()?),
                "serial" => uri.serial = Some(text()?),
                "object" => uri.object = Some(text()?),
                "id" => uri.id = Some(bytes),
                "slot-id" => {
                    uri.slot_id = Some(text()?.parse().map_err(|_| malformed("not a number"))?)
                }
                "type" if text()? == "private" => {}
                "type" => return Err(malformed("this host uses private keys: type=private")),
                "module-path" => uri.module_path = Some(PathBuf::from(text()?)),
                "pin-source" => {
                    let t = text()?;
                    let path = t.strip_prefix("file:").unwrap_or(&t);
                    uri.pin_source = Some(PathBuf::from(path));
                }
                "pin-value" => return Err(UriError::PinValue),
                other => return Err(UriError::Unknown(other.to_string())),
            }
        }
        if uri.object.is_none() && uri.id.is_none() {
            return Err(UriError::NoObject);
        }
        Ok(uri)
    }
}

impl std::fmt::Display for Pkcs11Uri {
    /// The URI's token and key, for messages (no PIN is ever in it).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("pkcs11:")?;
        let mut parts = Vec::new();
        if let Some(t) = &self.token {
            parts.push(format!("token={t}"));
        }
        if let Some(o) = &self.object {
            parts.push(format!("object={o}"));
        }
        if let Some(id) = &self.id {
            parts.push(format!(
                "id={}",
                id.iter().map(|b| format!("%{b:02x}")).collect::<String>()
            ));
        }
        f.write_str(&parts.join(";"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_object_id_and_query_attributes_parse() {
        let uri: Pkcs11Uri =
            "pkcs11:token=My%20Token;object=device;id=%01%ff;type=private?module-path=/lib/p.so&pin-source=file:/run/pin"
                .parse()
                .unwrap();
        assert_eq!(uri.token.as_deref(), Some("My Token"));
        assert_eq!(uri.object.as_deref(), Some("device"));
        assert_eq!(uri.id, Some(vec![1, 0xff]));
        assert_eq!(uri.module_path, Some(PathBuf::from("/lib/p.so")));
        assert_eq!(uri.pin_source, Some(PathBuf::from("/run/pin")));
        assert_eq!(
            uri.to_string(),
            "pkcs11:token=My Token;object=device;id=%01%ff"
        );
    }

    #[test]
    fn pins_unknown_attributes_and_keyless_uris_are_refused() {
        let e = |s: &str| s.parse::<Pkcs11Uri>().unwrap_err();
        assert_eq!(e("pkcs11:object=k?pin-value=1234"), UriError::PinValue);
        assert!(
            e("pkcs11:object=k;color=red")
                .to_string()
                .contains("\"color\"")
        );
        assert_eq!(e("pkcs11:token=t"), UriError::NoObject);
        assert!(matches!(e("file:key.pem"), UriError::NotPkcs11(_)));
        assert!(matches!(
            e("pkcs11:object=k;type=cert"),
            UriError::Malformed { .. }
        ));
        assert!(matches!(
            e("pkcs11:object=k;slot-id=x"),
            UriError::Malformed { .. }
        ));
    }
}
