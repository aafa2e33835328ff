//! The command line of the `host` binary: its flags ([`args`]), `host run`
//! ([`run`]), and every message a user reads ([`explain`], [`report`]).

pub mod args;
pub mod certs;
pub mod config_file;
pub mod endpoint;
pub mod explain;
pub mod inspect;
pub mod keys;
pub mod report;
pub mod rollout;
pub mod run;
pub mod signals;
pub mod test;

use clap::{Parser, Subcommand};

use args::RunArgs;

/// Runs sandboxed MQTT device logic (a WebAssembly component) with a
/// mutually-authenticated TLS socket and OS entropy; the TLS key never enters
/// the sandbox.
#[derive(Debug, Parser)]
#[command(name = "host", version, args_override_self = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a device component (for example demo.wasm) against a broker.
    Run(Box<RunArgs>),
    /// Make a key pair for signing logic updates.
    Keygen(keys::KeygenArgs),
    /// Sign a logic into a TUF repository (root, targets, snapshot,
    /// timestamp), with its version and world.
    Sign(keys::SignArgs),
    /// Check a signed logic as a device with --trust would.
    Verify(keys::VerifyArgs),
    /// Sign a logic and roll it out over the broker to a fleet, canaries
    /// first; stop as soon as a canary refuses it or rolls it back.
    ///
    /// Exit codes: 0 every device runs it; 2 a canary stopped the rollout,
    /// or devices refused it; 3 timed out; 1 a setting or file is wrong, or
    /// the rollout could not see a canary finish (nothing was published).
    Rollout(rollout::RolloutArgs),
    /// Write a development PKI: a root CA, a broker certificate and device
    /// certificates, and print the mosquitto configuration and the host
    /// run flags that use them.
    Certs(certs::CertsArgs),
    /// Describe a logic file: size, SHA-256, whether this host can run it,
    /// its imports and exports, and its signature.
    ///
    /// Exit codes: 0 this host can run it (and, with --trust, its signature
    /// verifies); 2 it cannot; 1 the file cannot be read.
    Inspect(inspect::InspectArgs),
    /// Test a logic against scenario files on the mock host: a scripted
    /// broker, seeded entropy, virtual time. One line per scenario; on a
    /// failure, what was expected and what happened.
    ///
    /// Exit codes: 0 every scenario passed; 2 one failed; 1 a file or the
    /// logic is wrong (the message names the file, line and key).
    Test(test::TestArgs),
}

/// Process exit codes (`host run`'s, and the 2 of `host inspect` and `host test`).
pub mod exit {
    /// A setting, file or component was wrong (the message says which).
    pub const SETUP: u8 = 1;
    /// An iteration failed in `--iterations` mode, or a fleet device gave up.
    pub const ITERATION_FAILED: u8 = 2;
    /// The guest trapped or hit a limit, and the restarts are exhausted.
    pub const GUEST_FAILED: u8 = 3;
    /// `host inspect`: this host would not run the logic.
    pub const REFUSED: u8 = 2;
    /// `host test`: a scenario failed.
    pub const SCENARIOS_FAILED: u8 = 2;
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The README and every chapter of the manual, by path.
    fn manual() -> Vec<(String, String)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut pages = vec![root.join("README.md")];
        for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
            let path = entry.expect("a docs/ entry").path();
            if path.extension().is_some_and(|e| e == "md") {
                pages.push(path);
            }
        }
        pages
            .into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p).expect("a page reads");
                (p.display().to_string(), text)
            })
            .collect()
    }

    /// Every `--flag N` with a number the README or the manual writes is
    /// the flag's default (their examples use other spellings, such as
    /// `--flag=N`).
    #[test]
    fn the_defaults_the_manual_names_are_the_flags() {
        let run = Cli::command();
        let run = run.find_subcommand("run").expect("run subcommand");
        let mut checked = 0;
        for (page, text) in manual() {
            for arg in run.get_arguments() {
                let (Some(long), [default]) = (arg.get_long(), arg.get_default_values()) else {
                    continue;
                };
                let default = default.to_string_lossy();
                let mentioned = format!("`--{long} ");
                for at in text
                    .match_indices(&mentioned)
                    .map(|(i, _)| i + mentioned.len())
                {
                    let value: String = text[at..].chars().take_while(|c| *c != '`').collect();
                    if !value.chars().all(|c| c.is_ascii_digit()) {
                        continue;
                    }
                    assert_eq!(
                        value, default,
                        "{page} says --{long} {value}; the flag's default is {default}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked >= 20, "the manual names {checked} defaults");
    }

    /// The default of `arg` as the manual's table writes it: its value, the
    /// `[default: ...]` its help gives, `off` for a switch, or `none`.
    fn default_of(arg: &clap::Arg) -> String {
        if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
            return "off".into();
        }
        if let [default] = arg.get_default_values() {
            return format!("`{}`", default.to_string_lossy());
        }
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default()
            .replace('\n', " ");
        match help.find("[default: ") {
            Some(at) => {
                let rest = &help[at + "[default: ".len()..];
                let end = rest.rfind(']').unwrap_or(rest.len());
                // `<client-id>` is text, not an HTML tag.
                rest[..end]
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .replace('<', "\\<")
                    .replace('>', "\\>")
            }
            None => "none".into(),
        }
    }

    /// The one list of defaults: the table of `host run`'s settings in the
    /// configuration chapter is made from the flags themselves. When a flag
    /// changes, this test prints the table to paste.
    #[test]
    fn the_manuals_table_of_defaults_is_the_flags() {
        let cli = Cli::command();
        let run = cli.find_subcommand("run").expect("run subcommand");
        let mut table = String::from(
            "| flag (file key) | environment variable | default |\n| --- | --- | --- |\n",
        );
        // A hidden flag is set another way (`--logic-table`: the file's [logic]).
        for arg in run.get_arguments().filter(|a| !a.is_hide_set()) {
            let id = arg.get_id().as_str();
            let flag = match arg.get_long() {
                Some(long) => format!("`--{long}` (`{long}`)"),
                None => format!("`{id}` (the positional argument)"),
            };
            let var = crate::cli::config_file::env_var(id);
            table.push_str(&format!("| {flag} | `{var}` | {} |\n", default_of(arg)));
        }
        let chapter = include_str!("../../../docs/configuration.md");
        let heading = "## Every setting and its default\n";
        let start = chapter.find(heading).expect("the chapter has the heading") + heading.len();
        let section = &chapter[start..];
        let written: String = section
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(
            written == table,
            "docs/configuration.md's table of defaults is not the flags'; it should read:\n\n{table}"
        );
    }
}
