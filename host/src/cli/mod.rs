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
    /// or devices refused it; 3 timed out; 1 a setting or file is wrong.
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

    /// Every `--flag N` with a number the README writes is the flag's
    /// default (its examples use other spellings, such as `--flag=N`).
    #[test]
    fn readme_defaults_match_the_flags() {
        let readme = include_str!("../../../README.md");
        let run = Cli::command();
        let run = run.find_subcommand("run").expect("run subcommand");
        let mut checked = 0;
        for arg in run.get_arguments() {
            let (Some(long), [default]) = (arg.get_long(), arg.get_default_values()) else {
                continue;
            };
            let default = default.to_string_lossy();
            let mentioned = format!("`--{long} ");
            for at in readme
                .match_indices(&mentioned)
                .map(|(i, _)| i + mentioned.len())
            {
                let value: String = readme[at..].chars().take_while(|c| *c != '`').collect();
                if !value.chars().all(|c| c.is_ascii_digit()) {
                    continue;
                }
                assert_eq!(
                    value, default,
                    "README says --{long} {value}; the flag's default is {default}"
                );
                checked += 1;
            }
        }
        assert!(checked >= 10, "the README names {checked} defaults");
    }
}
