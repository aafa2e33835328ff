//! `host certs DIR`: a development PKI in one command, a root CA, a broker
//! certificate and device certificates, with the mosquitto configuration
//! and the `host run` flags that use them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use host::broker::pki::{self, Authority, Issued, KeyKind, LeafOptions, Role};

use crate::cli::explain::Failure;

/// `host certs`: writes a development PKI.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// The directory to write (created if missing): ca.pem, ca.key,
    /// broker.pem, broker.key, mosquitto.conf and ID.pem / ID.key per device.
    pub dir: PathBuf,
    /// Further names the broker certificate is valid for, DNS names or IP
    /// addresses (repeatable); localhost and 127.0.0.1 always are.
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,
    /// Device certificates to issue, with client ids PREFIX-0001, ... as
    /// their common names.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub devices: u32,
    /// Client id prefix of the device certificates.
    #[arg(long, value_name = "PREFIX", default_value = "device")]
    pub prefix: String,
    /// A device certificate for this client id instead (repeatable).
    #[arg(long, value_name = "ID", conflicts_with_all = ["devices", "prefix"])]
    pub client_id: Vec<String>,
    /// RSA-2048 keys instead of ECDSA P-256.
    #[arg(long)]
    pub rsa: bool,
    /// The broker's port in the printed configuration and flags.
    #[arg(long, value_name = "PORT", default_value_t = 8883)]
    pub port: u16,
    /// Replace the files of a PKI already in DIR (its old certificates stop
    /// working: they were signed by the old CA).
    #[arg(long)]
    pub force: bool,
}

/// Names of the files a PKI in a directory is made of.
const CA: &str = "ca";
const BROKER: &str = "broker";

/// Runs `host certs`.
pub fn certs(args: CertsArgs) -> Result<(), Failure> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("cannot open {}", args.dir.display()))?;
    let ids = device_ids(&args)?;
    let mut names: Vec<&str> = [CA, BROKER].into();
    names.extend(ids.iter().map(String::as_str));
    let files: Vec<PathBuf> = names
        .iter()
        .flat_map(|n| [dir.join(format!("{n}.pem")), dir.join(format!("{n}.key"))])
        .chain([dir.join("mosquitto.conf")])
        .collect();
    if let Some(existing) = files.iter().find(|f| f.exists())
        && !args.force
    {
        return Err(anyhow::anyhow!(
            "{} already exists (pass another directory, or --force to replace the PKI there)",
            existing.display()
        )
        .into());
    }
    // Everything is made before anything is replaced.
    let pairs = make(&args, &ids)
        .with_context(|| format!("cannot make the certificates for {}", dir.display()))?;
    for f in files.iter().filter(|f| f.exists()) {
        std::fs::remove_file(f).with_context(|| format!("cannot replace {}", f.display()))?;
    }
    for (name, issued) in &pairs {
        write_pair(&dir, name, &issued.cert_pem, &issued.key_pem)?;
    }
    let conf = mosquitto_conf(&dir, args.port);
    pki::write(&dir, "mosquitto.conf", &conf)
        .with_context(|| format!("cannot write {}", dir.join("mosquitto.conf").display()))?;
    print!("{}", summary(&dir, &args, &ids, &conf));
    Ok(())
}

/// The CA, the broker's and the devices' certificates and keys, by file
/// name.
fn make(args: &CertsArgs, ids: &[String]) -> anyhow::Result<Vec<(String, Issued)>> {
    let kind = if args.rsa {
        KeyKind::Rsa2048
    } else {
        KeyKind::EcdsaP256
    };
    let ca = Authority::of_kind("mqtt-device development root CA", kind)?;
    let mut pairs = vec![(
        CA.to_string(),
        Issued {
            cert_pem: ca.cert_pem(),
            key_pem: ca.key_pem(),
        },
    )];
    let mut broker_names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    broker_names.extend(args.names.iter().cloned());
    let broker = ca
        .issue_with_key(
            &LeafOptions {
                common_name: args.names.first().cloned().unwrap_or("localhost".into()),
                names: broker_names,
                role: Role::Server,
                not_after: None,
            },
            kind.generate()?,
        )
        .with_context(|| format!("cannot issue the broker certificate for {:?}", args.names))?;
    pairs.push((BROKER.to_string(), broker));
    for id in ids {
        let device = ca.issue_with_key(&LeafOptions::client(id), kind.generate()?)?;
        pairs.push((id.clone(), device));
    }
    Ok(pairs)
}

/// The device client ids: `--client-id`s, or PREFIX-0001 to PREFIX-N.
/// Each names its files, so it must be a plain file name, unique, and not
/// one of the CA's or the broker's.
fn device_ids(args: &CertsArgs) -> anyhow::Result<Vec<String>> {
    let ids: Vec<String> = if args.client_id.is_empty() {
        (1..=args.devices)
            .map(|i| format!("{}-{i:04}", args.prefix))
            .collect()
    } else {
        args.client_id.clone()
    };
    let mut seen = std::collections::HashSet::new();
    for id in &ids {
        let plain = !id.is_empty()
            && !id.starts_with('.')
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        anyhow::ensure!(
            plain,
            "client id {id:?} cannot name a file (use letters, digits, '.', '_' and '-')"
        );
        anyhow::ensure!(
            ![CA, BROKER, "mosquitto"].contains(&id.as_str()),
            "client id {id:?} would overwrite the PKI's own files (pick another)"
        );
        anyhow::ensure!(seen.insert(id), "client id {id:?} is given twice");
    }
    Ok(ids)
}

/// Writes NAME.pem (0644) and NAME.key (0600).
fn write_pair(dir: &Path, name: &str, cert: &str, key: &str) -> Result<(), Failure> {
    pki::write(dir, &format!("{name}.pem"), cert)
        .with_context(|| format!("cannot write {name}.pem in {}", dir.display()))?;
    pki::write_secret(dir, &format!("{name}.key"), key)
        .with_context(|| format!("cannot write {name}.key in {}", dir.display()))?;
    Ok(())
}

/// A mosquitto listener that requires client certificates from this CA.
fn mosquitto_conf(dir: &Path, port: u16) -> String {
    let path = |name: &str| dir.join(name).display().to_string();
    format!(
        "listener {port}\n\
         cafile {}\n\
         certfile {}\n\
         keyfile {}\n\
         require_certificate true\n\
         use_identity_as_username true\n",
        path("ca.pem"),
        path("broker.pem"),
        path("broker.key"),
    )
}

/// What was written and how to use it.
fn summary(dir: &Path, args: &CertsArgs, ids: &[String], conf: &str) -> String {
    let path = |name: String| dir.join(name).display().to_string();
    let mut out = String::new();
    let kind = if args.rsa { "RSA-2048" } else { "ECDSA P-256" };
    let _ = writeln!(
        out,
        "wrote a development PKI ({kind}) to {}: ca.pem, broker.pem and {} device certificate(s); keys owner-only",
        dir.display(),
        ids.len()
    );
    let _ = writeln!(
        out,
        "\n# mosquitto (also in mosquitto.conf; broker.key must be readable by the user mosquitto runs as):"
    );
    out.push_str(conf);
    let _ = writeln!(out, "\n# host run, one line per device:");
    for id in ids {
        let _ = writeln!(
            out,
            "host run target/demo.wasm --broker mqtts://localhost:{} --ca {} --cert {} --key {} --client-id {id}",
            args.port,
            path(format!("{CA}.pem")),
            path(format!("{id}.pem")),
            path(format!("{id}.key")),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path) -> CertsArgs {
        CertsArgs {
            dir: dir.to_owned(),
            names: vec!["broker.example".into()],
            devices: 2,
            prefix: "plant".into(),
            client_id: Vec::new(),
            rsa: false,
            port: 8883,
            force: false,
        }
    }

    #[test]
    fn writes_every_file_with_keys_owner_only_and_refuses_to_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        certs(args(&dir)).unwrap();
        for name in ["ca", "broker", "plant-0001", "plant-0002"] {
            let cert = std::fs::read_to_string(dir.join(format!("{name}.pem"))).unwrap();
            assert!(cert.contains("BEGIN CERTIFICATE"), "{name}");
            let key = dir.join(format!("{name}.key"));
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}.key");
        }
        let again = certs(args(&dir)).unwrap_err().to_string();
        assert!(again.contains("--force"), "{again}");
        let before = std::fs::read(dir.join("ca.pem")).unwrap();
        certs(CertsArgs {
            force: true,
            ..args(&dir)
        })
        .unwrap();
        assert_ne!(before, std::fs::read(dir.join("ca.pem")).unwrap());
    }

    #[test]
    fn client_ids_replace_the_numbered_devices() {
        let a = CertsArgs {
            client_id: vec!["boiler".into()],
            ..args(Path::new("/unused"))
        };
        assert_eq!(device_ids(&a).unwrap(), ["boiler"]);
        assert_eq!(
            device_ids(&args(Path::new("/unused"))).unwrap(),
            ["plant-0001", "plant-0002"]
        );
        for bad in ["ca", "broker", "../x", ".hidden", "a/b", ""] {
            let a = CertsArgs {
                client_id: vec![bad.into()],
                ..args(Path::new("/unused"))
            };
            assert!(device_ids(&a).is_err(), "{bad:?}");
        }
        let twice = CertsArgs {
            client_id: vec!["a".into(), "a".into()],
            ..args(Path::new("/unused"))
        };
        assert!(device_ids(&twice).is_err());
    }
}
