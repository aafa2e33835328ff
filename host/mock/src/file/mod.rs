//! Scenario files: a logic's tests in plain TOML, in the mock host's words
//! (a scripted broker, seeded entropy, virtual time) with the expectations
//! next to them. `host test LOGIC.wasm FILE.toml` runs them; Rust users can
//! too:
//!
//! ```no_run
//! let host = mock_host::MockHost::load("target/demo.wasm").unwrap();
//! let file = mock_host::file::ScenarioFile::load("tests/scenarios/demo.toml").unwrap();
//! let results = file.run(&host, None, |_| {});
//! assert!(results.iter().all(|r| r.passed()));
//! ```
//!
//! The format is in [`format`] and the manual's "Scenario files" section (docs/testing.md).

pub mod expect;
pub mod format;
pub mod scenario;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{MemoryBackend, MockHost};
use expect::Checks;
use format::{Common, FileSpec, ScenarioSpec};

/// Why a scenario file cannot be used; each names the file and the place.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// It cannot be read.
    #[error("{path}: cannot read it (check the path)")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not TOML of the scenario format.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Line of the problem, from 1.
        line: usize,
        /// What is wrong, on one line.
        message: String,
    },
    /// A scenario in it is wrong.
    #[error("{path}: scenario {scenario:?}: {message}")]
    Scenario {
        /// The file.
        path: PathBuf,
        /// The scenario's name.
        scenario: String,
        /// What is wrong.
        message: String,
    },
    /// It has no scenario.
    #[error("{path}: no [[scenario]] in it")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// A loaded, checked scenario file.
pub struct ScenarioFile {
    path: PathBuf,
    defaults: Common,
    scenarios: Vec<(ScenarioSpec, Checks)>,
}

/// What one scenario came to.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    /// Its name.
    pub name: String,
    /// Every failed check; empty when it passed.
    pub failures: Vec<String>,
    /// Virtual time the run took, milliseconds.
    pub virtual_ms: u64,
    /// Real time the run took.
    pub real: Duration,
}

impl ScenarioResult {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

impl ScenarioFile {
    /// Reads and checks the file: its syntax, every key, every step and
    /// every expectation, before anything runs.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, FileError> {
        let path = path.as_ref().to_path_buf();
        let text = std::fs::read_to_string(&path).map_err(|source| FileError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(&path, &text)
    }

    /// Like [`ScenarioFile::load`] on `text`; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, FileError> {
        let spec: FileSpec = toml::from_str(text).map_err(|e| FileError::Parse {
            path: path.to_path_buf(),
            line: e
                .span()
                .and_then(|s| text.get(..s.start))
                .map(|before| before.matches('\n').count() + 1)
                .unwrap_or(1),
            message: e.message().trim().replace('\n', " "),
        })?;
        if spec.scenarios.is_empty() {
            return Err(FileError::Empty {
                path: path.to_path_buf(),
            });
        }
        let mut scenarios: Vec<(ScenarioSpec, Checks)> = Vec::new();
        for mut s in spec.scenarios {
            let invalid = |message: String| FileError::Scenario {
                path: path.to_path_buf(),
                scenario: s.name.clone(),
                message,
            };
            if scenarios.iter().any(|(other, _)| other.name == s.name) {
                return Err(invalid("a second scenario of this name".into()));
            }
            // Made once here so that every mistake shows before any run.
            scenario::scenario(&s, &spec.defaults).map_err(invalid)?;
            if let Some(before) = &s.store_after
                && !scenarios.iter().any(|(other, _)| &other.name == before)
            {
                return Err(invalid(format!(
                    "store-after = {before:?} names no earlier scenario"
                )));
            }
            let checks = Checks::new(std::mem::take(&mut s.expect)).map_err(invalid)?;
            scenarios.push((s, checks));
        }
        Ok(Self {
            path: path.to_path_buf(),
            defaults: spec.defaults,
            scenarios,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs the scenarios in order (those whose name contains `filter`,
    /// when given) on `host`, calling `each` as each one ends. A scenario
    /// that panics the mock host fails with the panic's message; the others
    /// still run.
    pub fn run(
        &self,
        host: &MockHost,
        filter: Option<&str>,
        mut each: impl FnMut(&ScenarioResult),
    ) -> Vec<ScenarioResult> {
        let mut results = Vec::new();
        let mut stores = std::collections::HashMap::new();
        for (spec, checks) in &self.scenarios {
            if filter.is_some_and(|f| !spec.name.contains(f)) {
                // Its state may start a later scenario.
                if self
                    .scenarios
                    .iter()
                    .any(|(s, _)| s.store_after.as_ref() == Some(&spec.name))
                {
                    let (_, store) = run_one(host, spec, &self.defaults, checks, &stores);
                    stores.insert(spec.name.clone(), store);
                }
                continue;
            }
            let (result, store) = run_one(host, spec, &self.defaults, checks, &stores);
            stores.insert(spec.name.clone(), store);
            each(&result);
            results.push(result);
        }
        results
    }
}

/// Runs `spec`; returns its result and the state it left (for a later
/// scenario's `store-after`, among the `stores` of those run before).
fn run_one(
    host: &MockHost,
    spec: &ScenarioSpec,
    defaults: &Common,
    checks: &Checks,
    stores: &HashMap<String, Arc<MemoryBackend>>,
) -> (ScenarioResult, Arc<MemoryBackend>) {
    let empty = MemoryBackend::new(Default::default());
    let started = Instant::now();
    let result = |failures, virtual_ms| ScenarioResult {
        name: spec.name.clone(),
        failures,
        virtual_ms,
        real: started.elapsed(),
    };
    let scenario = match scenario::scenario(spec, defaults) {
        Ok(s) => s,
        Err(e) => return (result(vec![e], 0), empty),
    };
    let device = scenario.settings.client_id.clone();
    if let Some(before) = spec.store_after.as_ref().and_then(|n| stores.get(n)) {
        let own = scenario.store.bucket(&device);
        for (key, value) in before.bucket(&device) {
            if !own.contains_key(key.as_str()) {
                scenario.store.seed(&device, &key, value);
            }
        }
    }
    let store = scenario.store.clone();
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| host.run(scenario)));
    let result = match run {
        Ok(out) => {
            let failures = checks.failures(&out);
            result(failures, out.now_ms)
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            result(
                vec![format!("the mock host could not run the logic: {message}")],
                0,
            )
        }
    };
    (result, store)
}
