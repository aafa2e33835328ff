//! Every line a user reads about a failure, with its fix, in one place:
//! socket errors and failed iterations ([`socket`]), stopped guests
//! ([`stop`]), and what stops a command before it runs ([`setup`]: TLS
//! files, tokens, keys, signatures). The layers below return typed errors
//! that name the cause; the flags and fixes are worded here.

pub mod setup;
pub mod socket;
pub mod stop;

use host::sandbox::{RunError, StartError};
use host_core::outcome::TimeoutSetBy;
use host_core::settings::DeviceSettings;
use host_core::supervisor::Ending;

use crate::cli::exit;
pub use socket::iteration_failure;
pub use stop::stop;

/// What `host run` ended in, when it did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// A setting, file or component is wrong.
    #[error(transparent)]
    Setup(#[from] anyhow::Error),
    /// The device's run failed.
    #[error("the device's run failed")]
    Device {
        /// Why.
        #[source]
        error: RunError,
        /// Its settings, for the message.
        settings: Box<DeviceSettings>,
    },
    /// A rollout did not reach every device.
    #[error("{line}")]
    Rollout {
        /// The summary line.
        line: String,
        /// The exit code.
        code: u8,
    },
    /// `host inspect`: this host would not run the logic, or its signature
    /// does not verify (the output above says why).
    #[error("{0}")]
    Refused(String),
    /// `host test`: scenarios failed (the output above says how).
    #[error("{failed} scenario(s) failed")]
    Scenarios {
        /// How many.
        failed: usize,
    },
    /// Devices of a fleet gave up.
    #[error("{failed} of {devices} devices failed (their log lines say why)")]
    Fleet {
        /// Devices that gave up.
        failed: usize,
        /// Devices in the fleet.
        devices: usize,
    },
}

impl Failure {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Setup(_)
            | Failure::Device {
                error: RunError::Instantiate(_),
                ..
            } => exit::SETUP,
            Failure::Device {
                error: RunError::Ended(Ending::IterationFailed { .. }),
                ..
            }
            | Failure::Fleet { .. } => exit::ITERATION_FAILED,
            Failure::Rollout { code, .. } => *code,
            Failure::Refused(_) => exit::REFUSED,
            Failure::Scenarios { .. } => exit::SCENARIOS_FAILED,
            Failure::Device {
                error: RunError::Ended(Ending::GuestFailed { .. }),
                ..
            } => exit::GUEST_FAILED,
        }
    }
}

/// A device's failed run on one line.
pub fn run_error(error: &RunError, settings: &DeviceSettings) -> String {
    match error {
        RunError::Ended(Ending::IterationFailed {
            iteration,
            failure,
            socket,
        }) => format!(
            "iteration {iteration} failed: {}",
            iteration_failure(failure, settings, socket.as_ref())
        ),
        RunError::Ended(Ending::GuestFailed { stops, last }) => format!(
            "the device logic was stopped {stops} time(s) in a row and the restarts are exhausted; last: {} (fix the guest or raise the limit; the host was unaffected)",
            stop(last)
        ),
        RunError::Instantiate(e) => match e.downcast_ref::<StartError>() {
            Some(StartError::TimedOut {
                limit_ms,
                set_by: TimeoutSetBy::Operator,
            }) => format!(
                "cannot start the device logic: its start did not finish within {limit_ms} ms (--iteration-timeout-ms)"
            ),
            Some(
                start @ StartError::TimedOut {
                    set_by: TimeoutSetBy::Logic,
                    ..
                },
            ) => format!(
                "cannot start the device logic: {start} (the bound it declared while starting; --iteration-timeout-ms MS overrides it)"
            ),
            Some(
                start @ StartError::TimedOut {
                    set_by: TimeoutSetBy::Maximum,
                    ..
                },
            ) => format!(
                "cannot start the device logic: {start} (the host's maximum; set --iteration-timeout-ms MS)"
            ),
            Some(StartError::Interrupted) => "cannot start the device logic: the host stopped while it started (--stop-timeout-ms)".into(),
            None => format!("cannot start the device logic: {e:#}"),
        },
    }
}

/// The last line `host run` prints on failure (after `error: `).
pub fn failure_line(failure: &Failure) -> String {
    let line = match failure {
        Failure::Setup(e) => setup_line(e),
        Failure::Device { error, settings } => run_error(error, settings),
        Failure::Fleet { .. }
        | Failure::Rollout { .. }
        | Failure::Refused(_)
        | Failure::Scenarios { .. } => failure.to_string(),
    };
    line.replace('\n', " ")
}

/// A failure in a file the user wrote (a scenario file) as compilers
/// print theirs, `FILE:LINE:COLUMN: error: message`, for editors and CI
/// annotations to jump to; `None` for every other failure.
pub fn editor_line(failure: &Failure) -> Option<String> {
    match failure {
        Failure::Setup(e) => e
            .downcast_ref::<mock_host::file::FileError>()
            .map(|e| e.editor_line().replace('\n', " ")),
        _ => None,
    }
}

/// A setup failure's chain on one line, each cause in the user's words
/// where [`setup::line`] has them, else as it displays itself.
fn setup_line(e: &anyhow::Error) -> String {
    e.chain()
        .map(|cause| setup::line(cause).unwrap_or_else(|| cause.to_string()))
        .collect::<Vec<_>>()
        .join(": ")
}

/// `error` and its sources on one line, worded as [`setup_line`] words
/// them.
pub fn error_line(error: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(error), |e| e.source())
        .map(|cause| setup::line(cause).unwrap_or_else(|| cause.to_string()))
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use host::tls::{CredentialError, TlsFile};
    use host::update::verify::Refusal;

    use super::*;

    /// The layers below name the cause; the line names the flag and the
    /// fix, and keeps the contexts around the cause and its sources.
    #[test]
    fn a_setup_line_words_typed_causes_with_their_flag_and_fix() {
        let read = CredentialError::Read {
            file: TlsFile::Ca,
            path: PathBuf::from("/x/ca.pem"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(read.to_string(), "cannot read the CA file /x/ca.pem");
        let e = anyhow::Error::from(read).context("cannot load the TLS files");
        assert_eq!(
            failure_line(&Failure::Setup(e)),
            "cannot load the TLS files: cannot read --ca file /x/ca.pem (check the path given to --ca): entity not found"
        );
        let e = anyhow::Error::from(Refusal::Downgrade {
            offered: 1,
            running: 2,
        })
        .context("refused demo.wasm");
        assert_eq!(
            failure_line(&Failure::Setup(e)),
            "refused demo.wasm: version 1 is older than the running version 2 (no downgrade without --allow-downgrade)"
        );
        let plain = anyhow::anyhow!("something else");
        assert_eq!(failure_line(&Failure::Setup(plain)), "something else");
    }

    #[test]
    fn a_start_cut_short_names_the_flag_that_bounds_it() {
        let settings = DeviceSettings::new("b", 1, "d");
        let e = RunError::Instantiate(
            StartError::TimedOut {
                limit_ms: 50,
                set_by: TimeoutSetBy::Operator,
            }
            .into(),
        );
        assert!(run_error(&e, &settings).ends_with("within 50 ms (--iteration-timeout-ms)"));
        let e = RunError::Instantiate(StartError::Interrupted.into());
        assert!(run_error(&e, &settings).ends_with("(--stop-timeout-ms)"));
    }
}
