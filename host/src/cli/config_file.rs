//! `host run --config FILE`: a TOML file with one key per flag of `host run`
//! (`broker = "mqtts://..."`, `iterations = 3`, `trust = ["a.pub"]`,
//! `watch = true`, and `component` for the logic). Flags override the
//! file, and so do environment variables: every flag `--some-flag` also
//! reads `MQTT_DEVICE_SOME_FLAG`. Relative paths in the file are relative
//! to the file's directory.
//!
//! The command line is parsed once, by clap: the file's values become the
//! defaults of their flags, so clap's own order (flag, then variable, then
//! default) puts the file between the variables and the built-in defaults,
//! and every value, wherever it came from, is checked by its flag's parser.
//! A value it refuses from the file is reported with the file, line and key.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, CommandFactory, FromArgMatches, ValueHint};
use toml::de::{DeTable, DeValue};

use crate::cli::Cli;

pub use host::ENV_PREFIX;

/// Why the configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file cannot be read.
    #[error("cannot read the --config file {} (check the path)", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("{}:{line}: not valid TOML: {message} (write key = value lines)", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What the parser said.
        message: String,
    },
    /// A key names no flag.
    #[error("{}:{line}: unknown key `{key}`{hint} (keys are the flags of host run --help, without the dashes)", path.display())]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// The key.
        key: String,
        /// ` (did you mean ...?)`, or nothing.
        hint: String,
    },
    /// A value of the wrong kind, or refused by the flag.
    #[error("{}:{line}: {key}: {message}", path.display())]
    Value {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// The key.
        key: String,
        /// What is wrong, and the fix.
        message: String,
    },
}

/// Why the command line gave no [`Cli`].
#[derive(Debug)]
pub enum ParseError {
    /// The configuration file is wrong.
    Config(ConfigFileError),
    /// clap's own error or message (`--help` and `--version` among them).
    Clap(clap::Error),
}

/// Where a value from the file came from, to name it if clap refuses it.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The file.
    pub path: PathBuf,
    /// The line, from 1.
    pub line: usize,
    /// The key as written.
    pub key: String,
}

/// The values one key of the file gives its flag.
#[derive(Debug, Clone)]
struct FileValue {
    /// The flag's id.
    id: String,
    /// As command-line text: several for a repeatable flag.
    values: Vec<String>,
    origin: Origin,
}

/// The `host` command with the environment variable of every `host run`
/// flag.
pub fn command() -> clap::Command {
    Cli::command().mut_subcommand("run", |run| {
        run.mut_args(|arg| {
            let id = arg.get_id().as_str();
            // The file's [logic] table only: no variable of its own.
            if id == "logic_table" {
                return arg;
            }
            let var = env_var(id);
            // A repeatable flag's variable holds a comma-separated list;
            // a logic setting's value may hold commas, so its variable
            // holds one KEY=VALUE.
            let arg = if matches!(arg.get_action(), ArgAction::Append) && id != "logic_config" {
                arg.value_delimiter(',')
            } else {
                arg
            };
            // --help names the variables but never shows their values
            // (MQTT_DEVICE_PASSWORD, ...).
            arg.env(var).hide_env_values(true)
        })
    })
}

/// `MQTT_DEVICE_CLIENT_ID` for the flag `client_id` (`--client-id`).
pub fn env_var(id: &str) -> String {
    format!("{ENV_PREFIX}{}", id.to_ascii_uppercase().replace('-', "_"))
}

/// The command line `argv` (with the program's name first), with the
/// environment variables and, for `host run`, the `--config` file: one
/// parse. `config_var` is the value of `MQTT_DEVICE_CONFIG`, if set.
pub fn parse(argv: &[OsString], config_var: Option<OsString>) -> Result<Cli, ParseError> {
    let mut cmd = command();
    let mut from_file = Vec::new();
    let run = argv.get(1).map(OsString::as_os_str) == Some(OsStr::new("run"));
    // The variable is `host run`'s, as the flag is: other commands ignore it.
    let config_var = config_var.filter(|_| run).map(PathBuf::from);
    if let Some(path) = config_path(argv).or(config_var) {
        let text = std::fs::read_to_string(&path).map_err(|source| {
            ParseError::Config(ConfigFileError::Read {
                path: path.clone(),
                source,
            })
        })?;
        let run = cmd.find_subcommand("run").expect("run is a subcommand");
        from_file = File {
            path: &path,
            text: &text,
        }
        .values(run)
        .map_err(ParseError::Config)?;
        cmd = cmd.mut_subcommand("run", |mut run| {
            for value in &from_file {
                run = run.mut_arg(value.id.as_str(), |arg| {
                    arg.default_values(value.values.clone()).required(false)
                });
            }
            run
        });
    }
    cmd.try_get_matches_from(argv)
        .and_then(|m| Cli::from_arg_matches(&m))
        .map_err(|e| match from_file_error(&e, &from_file) {
            Some(bad) => ParseError::Config(bad),
            None => ParseError::Clap(e),
        })
}

/// The file named by `--config FILE` or `--config=FILE` after `host run`,
/// before any `--`. (A flag's value never starts with `--`: clap refuses
/// it, so the word after another flag is never taken for this one.)
fn config_path(argv: &[OsString]) -> Option<PathBuf> {
    if argv.get(1).map(OsString::as_os_str) != Some(OsStr::new("run")) {
        return None;
    }
    let mut words = argv[2..].iter().take_while(|w| *w != "--");
    let mut found = None;
    while let Some(word) = words.next() {
        let word = word.to_string_lossy();
        if word == "--config" {
            found = words.next().map(PathBuf::from);
        } else if let Some(path) = word.strip_prefix("--config=") {
            found = Some(PathBuf::from(path));
        }
    }
    found
}

/// A clap error about a value the file gave, as a [`ConfigFileError`] naming
/// the file, line and key; `None` if the value in question is not the
/// file's (a flag or a variable set it).
fn from_file_error(error: &clap::Error, from_file: &[FileValue]) -> Option<ConfigFileError> {
    use clap::error::{ContextKind, ContextValue};
    let ContextValue::String(arg) = error.get(ContextKind::InvalidArg)? else {
        return None;
    };
    let ContextValue::String(value) = error.get(ContextKind::InvalidValue)? else {
        return None;
    };
    // `--publish-count <N>`, or `<COMPONENT>` for the positional.
    let name = arg
        .trim_start_matches("--")
        .split([' ', '='])
        .next()?
        .trim_matches(['<', '>'])
        .to_ascii_lowercase()
        .replace('-', "_");
    let given = from_file
        .iter()
        .find(|v| v.id == name && v.values.contains(value))?;
    let rendered = error.render().to_string();
    let message = rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ");
    Some(ConfigFileError::Value {
        path: given.origin.path.clone(),
        line: given.origin.line,
        key: given.origin.key.clone(),
        message: message.to_string(),
    })
}

/// The file being read.
struct File<'a> {
    path: &'a Path,
    text: &'a str,
}

impl File<'_> {
    /// Every key of the file, as its flag's values.
    fn values(&self, run: &clap::Command) -> Result<Vec<FileValue>, ConfigFileError> {
        let table = DeTable::parse(self.text).map_err(|e| ConfigFileError::Syntax {
            path: self.path.to_owned(),
            line: self.line(e.span().map_or(0, |s| s.start)),
            message: e.message().to_string(),
        })?;
        let mut found = Vec::new();
        for (key, value) in table.get_ref().iter() {
            let name = key.get_ref().replace('_', "-");
            let origin = Origin {
                path: self.path.to_owned(),
                line: self.line(key.span().start),
                key: key.get_ref().to_string(),
            };
            if name == "logic" {
                found.push(self.logic_table(origin, value.get_ref())?);
                continue;
            }
            let arg = run
                .get_arguments()
                .find(|a| {
                    a.get_long() == Some(name.as_str())
                        || (a.is_positional() && a.get_id() == name.as_str())
                })
                .filter(|a| a.get_id() != "config")
                .ok_or_else(|| self.unknown(&origin, run))?;
            let values = self.flag_values(&origin, arg, value.get_ref())?;
            found.push(FileValue {
                id: arg.get_id().to_string(),
                values,
                origin,
            });
        }
        Ok(found)
    }

    /// The `[logic]` table: the logic's own settings, as `KEY=VALUE`
    /// values of the hidden `--logic-table`.
    fn logic_table(
        &self,
        origin: Origin,
        value: &DeValue<'_>,
    ) -> Result<FileValue, ConfigFileError> {
        let DeValue::Table(table) = value else {
            return Err(self.value_error(
                &origin,
                "the logic's settings are a table: write [logic] and key = value lines under it"
                    .to_string(),
            ));
        };
        let mut values = Vec::new();
        for (key, value) in table.iter() {
            let text = match value.get_ref() {
                DeValue::String(s) => s.to_string(),
                DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                    .map_err(|e| {
                        self.value_error(&origin, format!("logic.{}: {e}", key.get_ref()))
                    })?
                    .to_string(),
                DeValue::Float(f) => f.as_str().to_string(),
                DeValue::Boolean(b) => b.to_string(),
                other => {
                    return Err(self.value_error(
                        &origin,
                        format!(
                            "logic.{}: a {} is not a setting (write a string, number or boolean)",
                            key.get_ref(),
                            other.type_str()
                        ),
                    ));
                }
            };
            values.push(format!("{}={text}", key.get_ref()));
        }
        Ok(FileValue {
            id: "logic_table".to_string(),
            values,
            origin,
        })
    }

    /// The line of byte `offset`, from 1.
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn value_error(&self, origin: &Origin, message: String) -> ConfigFileError {
        ConfigFileError::Value {
            path: self.path.to_owned(),
            line: origin.line,
            key: origin.key.clone(),
            message,
        }
    }

    /// An unknown key, with the closest flag if one is close.
    fn unknown(&self, origin: &Origin, run: &clap::Command) -> ConfigFileError {
        let closest = run
            .get_arguments()
            .filter_map(|a| a.get_long())
            .map(|long| (strsim::jaro_winkler(long, &origin.key), long))
            .filter(|(score, _)| *score > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        ConfigFileError::UnknownKey {
            path: self.path.to_owned(),
            line: origin.line,
            key: origin.key.clone(),
            hint: closest.map_or(String::new(), |(_, long)| {
                format!(" (did you mean `{long}`?)")
            }),
        }
    }

    /// The value(s) of `arg` that `value` gives, as command-line text.
    fn flag_values(
        &self,
        origin: &Origin,
        arg: &Arg,
        value: &DeValue<'_>,
    ) -> Result<Vec<String>, ConfigFileError> {
        let flag = matches!(arg.get_action(), ArgAction::SetTrue);
        let many = matches!(arg.get_action(), ArgAction::Append);
        match value {
            DeValue::Boolean(b) if flag => Ok(vec![b.to_string()]),
            _ if flag => Err(self.value_error(
                origin,
                format!("a switch: write {} = true or false", origin.key),
            )),
            DeValue::Array(items) if many => items
                .iter()
                .map(|item| self.scalar(origin, arg, item.get_ref()))
                .collect(),
            DeValue::Array(_) => {
                Err(self.value_error(origin, "takes one value, not a list".to_string()))
            }
            other => Ok(vec![self.scalar(origin, arg, other)?]),
        }
    }
    /// One value as command-line text; a relative path made relative to
    /// the file's directory.
    fn scalar(
        &self,
        origin: &Origin,
        arg: &Arg,
        value: &DeValue<'_>,
    ) -> Result<String, ConfigFileError> {
        let text = match value {
            DeValue::String(s) => s.to_string(),
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .map_err(|e| self.value_error(origin, format!("{e}")))?
                .to_string(),
            DeValue::Float(f) => f.as_str().to_string(),
            other => {
                return Err(self.value_error(
                    origin,
                    format!(
                        "a {} is not a value of this flag (write a string or a number)",
                        other.type_str()
                    ),
                ));
            }
        };
        Ok(self.relative_to_file(arg, text))
    }

    /// `text` as a path relative to the file's directory, when `arg` takes
    /// a path and `text` is a relative one (not `webpki`, `os` or a
    /// `pkcs11:` URI, which name no file).
    fn relative_to_file(&self, arg: &Arg, text: String) -> String {
        let path_hint = matches!(
            arg.get_value_hint(),
            ValueHint::AnyPath | ValueHint::FilePath | ValueHint::DirPath
        );
        // A module given by bare name is for the loader's search path.
        let bare_module = arg.get_id() == "pkcs11_module" && !text.contains('/');
        let names_no_file =
            matches!(text.as_str(), "webpki" | "os") || text.starts_with("pkcs11:") || bare_module;
        if !path_hint || names_no_file || Path::new(&text).is_absolute() {
            return text;
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        dir.join(&text).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;
    use crate::cli::args::RunArgs;

    fn parse(file: &str, argv: &[&str]) -> Result<RunArgs, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.toml");
        std::fs::write(&path, file).unwrap();
        let mut raw: Vec<OsString> = ["host", "run", "--config"].map(OsString::from).to_vec();
        raw.push(path.clone().into());
        raw.extend(argv.iter().map(OsString::from));
        let hide_dir = |e: String| e.replace(&dir.path().display().to_string(), "DIR");
        match super::parse(&raw, None) {
            Ok(cli) => match cli.command {
                Command::Run(args) => Ok(*args),
                _ => unreachable!(),
            },
            Err(ParseError::Config(e)) => Err(hide_dir(e.to_string())),
            Err(ParseError::Clap(e)) => Err(e.to_string()),
        }
    }

    #[test]
    fn the_file_sets_what_flags_do_not_and_paths_are_relative_to_it() {
        let args = parse(
            "component = \"logic.wasm\"\nbroker = \"mqtts://b:8883\"\nca = \"ca.pem\"\n\
             publish_count = 7\niterations = 0x10\nwatch = true\nno-sni = false\n\
             trust = [\"a.pub\", \"/abs/b.pub\"]\n",
            &["--publish-count", "9"],
        )
        .unwrap();
        assert!(args.component.ends_with("logic.wasm") && args.component.is_absolute());
        assert_eq!(args.broker.as_deref(), Some("mqtts://b:8883"));
        assert_eq!(args.publish_count, 9, "the flag wins");
        assert_eq!(args.iterations, Some(16));
        assert!(args.watch && !args.no_sni);
        assert_eq!(args.trust.len(), 2);
        assert!(args.trust[0].is_absolute() && args.trust[1] == Path::new("/abs/b.pub"));
        let Some(host::tls::Roots::File(ca)) = args.ca else {
            panic!("{:?}", args.ca)
        };
        assert!(ca.is_absolute());
    }

    /// Regression: a flag that requires one the file sets made the first
    /// parse fail, and the file was dropped.
    #[test]
    fn a_flag_may_require_what_the_file_sets() {
        let args = parse(
            "component = \"x.wasm\"\nbroker = \"mqtts://b\"\ntrust = [\"k.pub\"]\n",
            &["--ca", "webpki", "--allow-downgrade"],
        )
        .unwrap();
        assert_eq!(args.ca, Some(host::tls::Roots::Webpki));
        assert!(args.allow_downgrade && args.broker.is_some());
    }

    #[test]
    fn a_bare_module_name_is_left_to_the_loader() {
        let args = parse(
            "component = \"x.wasm\"\npkcs11-module = \"libsofthsm2.so\"\npkcs11-pin-file = \"pin\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            args.pkcs11_module.as_deref(),
            Some(Path::new("libsofthsm2.so"))
        );
        assert!(args.pkcs11_pin_file.unwrap().is_absolute());
    }

    #[test]
    fn names_that_are_no_files_are_kept() {
        let args = parse(
            "component = \"x.wasm\"\nbroker = \"mqtts://b\"\nca = \"webpki\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(args.ca, Some(host::tls::Roots::Webpki));
    }

    #[test]
    fn bad_keys_and_values_name_the_file_line_and_key() {
        let e = parse("component = \"x.wasm\"\n\nbrokr = \"mqtts://b\"\n", &[]).unwrap_err();
        assert!(
            e.starts_with("DIR/device.toml:3: unknown key `brokr` (did you mean `broker`?)"),
            "{e}"
        );
        let e = parse("component = \"x.wasm\"\npublish-count = \"many\"\n", &[]).unwrap_err();
        assert!(
            e.starts_with("DIR/device.toml:2: publish-count: invalid value 'many'"),
            "{e}"
        );
        let e = parse("component = \"x.wasm\"\nwatch = \"yes\"\n", &[]).unwrap_err();
        assert!(e.contains(":2: watch: a switch"), "{e}");
        let e = parse("component = \"x.wasm\"\nbroker = [\"a\", \"b\"]\n", &[]).unwrap_err();
        assert!(e.contains(":2: broker: takes one value"), "{e}");
        let e = parse("component = \"x.wasm\"\nbroker = \n", &[]).unwrap_err();
        assert!(e.contains("device.toml:2: not valid TOML"), "{e}");
        let e = parse("component = \"x.wasm\"\nconfig = \"other.toml\"\n", &[]).unwrap_err();
        assert!(e.contains(":2: unknown key `config`"), "{e}");
    }

    #[test]
    fn a_bad_value_from_a_flag_is_the_flags_not_the_files() {
        let e = parse(
            "component = \"x.wasm\"\npublish-count = 3\n",
            &["--publish-count", "many"],
        )
        .unwrap_err();
        assert!(!e.contains("device.toml"), "{e}");
        assert!(e.contains("invalid value 'many'"), "{e}");
    }

    /// Regression: MQTT_DEVICE_CONFIG was read for every command, so a
    /// missing file failed `host keygen` too.
    #[test]
    fn the_config_variable_is_run_s_only() {
        let argv: Vec<OsString> = ["host", "keygen", "--out", "k"]
            .map(OsString::from)
            .to_vec();
        let cli = super::parse(&argv, Some("/nonexistent/device.toml".into()));
        assert!(
            matches!(
                cli,
                Ok(Cli {
                    command: Command::Keygen(_)
                })
            ),
            "{cli:?}"
        );
        let argv: Vec<OsString> = ["host", "run", "x.wasm"].map(OsString::from).to_vec();
        let e = super::parse(&argv, Some("/nonexistent/device.toml".into())).unwrap_err();
        assert!(
            matches!(e, ParseError::Config(ConfigFileError::Read { .. })),
            "{e:?}"
        );
    }

    #[test]
    fn every_flag_has_an_environment_variable() {
        let cmd = command();
        let run = cmd.find_subcommand("run").unwrap();
        let broker = run
            .get_arguments()
            .find(|a| a.get_id() == "broker")
            .unwrap();
        assert_eq!(broker.get_env().unwrap(), "MQTT_DEVICE_BROKER");
        assert!(
            run.get_arguments()
                .all(|a| a.get_env().is_some() || a.is_hide_set())
        );
        assert_eq!(env_var("client_id"), "MQTT_DEVICE_CLIENT_ID");
    }

    #[test]
    fn a_logic_setting_keeps_its_commas() {
        let argv: Vec<OsString> = ["host", "run", "d.wasm", "--logic-config", "topics=a,b"]
            .iter()
            .map(OsString::from)
            .collect();
        let Ok(cli) = super::parse(&argv, None) else {
            panic!("parses");
        };
        let crate::cli::Command::Run(args) = cli.command else {
            panic!("run");
        };
        assert_eq!(
            args.logic_config,
            [("topics".to_string(), "a,b".to_string())]
        );
    }
}

#[cfg(test)]
mod example {
    use clap::CommandFactory;

    /// The manual's example file names every flag of `host run`, set or
    /// commented out, and the keys it sets are all flags.
    #[test]
    fn the_manuals_example_file_is_complete() {
        let chapter = include_str!("../../../docs/configuration.md");
        let start = chapter
            .find("```toml\n# device.toml")
            .expect("the configuration chapter has the example file");
        let block = &chapter[start + 8..];
        let block = &block[..block.find("```").unwrap()];
        let keys: Vec<&str> = block
            .lines()
            .map(|l| l.trim_start_matches("# "))
            .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.trim()))
            .collect();
        let cli = crate::cli::Cli::command();
        let run = cli.find_subcommand("run").unwrap();
        for arg in run.get_arguments() {
            let name = arg.get_long().unwrap_or(arg.get_id().as_str());
            if name == "config" {
                continue;
            }
            if name == "logic-table" {
                assert!(
                    block.contains("\n[logic]\n"),
                    "the example file lacks [logic]"
                );
                continue;
            }
            assert!(keys.contains(&name), "the example file lacks `{name}`");
        }
        let table: toml::Table = toml::from_str(block).expect("the example parses");
        for key in table.keys().filter(|k| *k != "logic") {
            assert!(
                run.get_arguments()
                    .any(|a| a.get_long() == Some(key.as_str()) || a.get_id() == key.as_str()),
                "`{key}` is no flag"
            );
        }
    }
}
