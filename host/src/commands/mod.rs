//! Subcommands of the `host` binary.

pub mod run;
