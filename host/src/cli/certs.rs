//! `host certs DIR`: a development PKI in one command, a root CA, a broker
//! certificate and device certificates, with the mosquitto configuration
//! and the `host run` flags that use them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use host::broker::pki::{self, Authority, KeyKind, LeafOptions, Role};

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
    let ids = device_ids(&args);
    let mut names: Vec<&str> = [CA, BROKER].into();
    names.extend(ids.iter().map(String::as_str));
    let files: Vec<PathBuf> = names
        .iter()
        .flat_map(|n| [dir.join(format!("{n}.pem")), dir.join(format!("{n}.key"))])
        .chain([dir.join("mosquitto.conf")])
        .collect();
    if let Some(existing) = files.iter().find(|f| f.exists()) {
        if !args.force {
            return Err(anyhow::anyhow!(
                "{} already exists (pass another directory, or --force to replace the PKI there)",
                existing.display()
            )
            .into());
        }
        for f in files.iter().filter(|f| f.exists()) {
            std::fs::remove_file(f).with_context(|| format!("cannot replace {}", f.display()))?;
        }
    }
    let kind = if args.rsa {
        KeyKind::Rsa2048
    } else {
        KeyKind::EcdsaP256
    };
    let made = || format!("cannot make the certificates in {}", dir.display());
    let ca = Authority::of_kind("mqtt-device development root CA", kind).with_context(made)?;
    write_pair(&dir, CA, &ca.cert_pem(), &ca.key_pem())?;
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
            kind.generate().with_context(made)?,
        )
        .with_context(|| format!("cannot issue the broker certificate for {:?}", args.names))?;
    write_pair(&dir, BROKER, &broker.cert_pem, &broker.key_pem)?;
    for id in &ids {
        let device = ca
            .issue_with_key(
                &LeafOptions {
                    common_name: id.clone(),
                    names: Vec::new(),
                    role: Role::Client,
                    not_after: None,
                },
                kind.generate().with_context(made)?,
            )
            .with_context(made)?;
        write_pair(&dir, id, &device.cert_pem, &device.key_pem)?;
    }
    let conf = mosquitto_conf(&dir, args.port);
    pki::write(&dir, "mosquitto.conf", &conf)
        .with_context(|| format!("cannot write {}", dir.join("mosquitto.conf").display()))?;
    print!("{}", summary(&dir, &args, &ids, &conf));
    Ok(())
}

/// The device client ids: `--client-id`s, or PREFIX-0001 to PREFIX-N.
fn device_ids(args: &CertsArgs) -> Vec<String> {
    if args.client_id.is_empty() {
        (1..=args.devices)
            .map(|i| format!("{}-{i:04}", args.prefix))
            .collect()
    } else {
        args.client_id.clone()
    }
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
        assert_eq!(device_ids(&a), ["boiler"]);
        assert_eq!(
            device_ids(&args(Path::new("/unused"))),
            ["plant-0001", "plant-0002"]
        );
    }
}
