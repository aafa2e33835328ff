//! The `host` binary: parse the command line, run, print any failure on one
//! line with the exit code that says what kind it was.

#![deny(unsafe_code)]

mod cli;

use std::process::ExitCode;

use crate::cli::config_file::{self, ParseError};
use crate::cli::explain::Failure;
use crate::cli::run::{Devices, RunConfig};
use crate::cli::{Cli, Command, explain};

/// The command line, with `host run --config FILE` and the environment
/// variables applied. A usage error or a bad configuration file is a wrong
/// setting: exit 1 (2 and 3 mean a failed run); --help and --version exit 0.
fn parse() -> Result<Cli, ExitCode> {
    let argv: Vec<_> = std::env::args_os().collect();
    let config_var = std::env::var_os(config_file::env_var("config"));
    config_file::parse(&argv, config_var).map_err(|e| match e {
        ParseError::Config(bad) => {
            eprintln!("error: {bad}");
            ExitCode::from(cli::exit::SETUP)
        }
        ParseError::Clap(e) => {
            let _ = e.print();
            ExitCode::from(if e.use_stderr() { cli::exit::SETUP } else { 0 })
        }
    })
}

/// Log lines to stdout: text shows each event's message alone (its
/// structured fields repeat what the message says); JSON has one object
/// per line with the fields flattened into it.
fn init_logging(format: cli::args::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match format {
        cli::args::LogFormat::Text => {
            let message_only = tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
                if field.name() == "message" {
                    write!(w, "{value:?}")
                } else {
                    Ok(())
                }
            });
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_target(false)
                .fmt_fields(message_only)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                .init();
        }
        cli::args::LogFormat::Json => {
            tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_env_filter(filter)
                .init();
        }
    }
}

/// What the command line asks for, with `host run`'s flags resolved.
enum Work {
    /// `host run`.
    Run(Box<RunConfig>),
    /// Any other subcommand.
    Other(Box<Command>),
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let work = match cli.command {
        Command::Run(mut args) => {
            args.logic_env = cli::args::logic_env(
                std::env::vars_os()
                    .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
            );
            match RunConfig::resolve(*args, |name| std::env::var(name).ok()) {
                Ok(config) => Work::Run(Box::new(config)),
                Err(e) => return fail(&Failure::Setup(e.into())),
            }
        }
        other => Work::Other(Box::new(other)),
    };
    let (format, fleet) = match &work {
        Work::Run(config) => (config.log_format, config.devices != Devices::One),
        Work::Other(_) => (cli::args::LogFormat::Text, false),
    };
    init_logging(format);
    // One device: a current-thread runtime wakes the guest with the least
    // latency. A fleet: every core.
    let runtime = if fleet {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let command = match work {
            Work::Run(config) => return cli::run::run(*config).await,
            Work::Other(command) => *command,
        };
        match command {
            Command::Run(_) => unreachable!("resolved above"),
            Command::Keygen(args) => cli::keys::keygen(args).map_err(Into::into),
            Command::Sign(args) => cli::keys::sign(args).await.map_err(Into::into),
            Command::Verify(args) => cli::keys::verify(args).await.map_err(Into::into),
            Command::Rollout(args) => cli::rollout::rollout(args).await,
            Command::Certs(args) => cli::certs::certs(args),
            Command::Inspect(args) => cli::inspect::inspect(args).await,
            Command::Test(args) => cli::test::test(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => fail(&failure),
    }
}

/// Prints `failure` on one line and returns its exit code.
fn fail(failure: &Failure) -> ExitCode {
    match explain::editor_line(failure) {
        Some(line) => eprintln!("{line}"),
        None => eprintln!("error: {}", explain::failure_line(failure)),
    }
    ExitCode::from(failure.exit_code())
}
