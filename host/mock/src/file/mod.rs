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

/// Why a scenario file cannot be used; each is one line that starts with
/// the place, `FILE:LINE:COLUMN:` (editors jump to it), and names the key.
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
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Line of the problem, from 1.
        line: usize,
        /// Column of the problem, from 1.
        column: usize,
        /// What is wrong, on one line.
        message: String,
    },
    /// A scenario in it is wrong.
    #[error("{path}:{line}:{column}: scenario {scenario:?}: {message}")]
    Scenario {
        /// The file.
        path: PathBuf,
        /// Line of the problem (the step, the expectations, or the
        /// scenario), from 1.
        line: usize,
        /// Column of the problem, from 1.
        column: usize,
        /// The scenario's name.
        scenario: String,
        /// What is wrong.
        message: String,
    },
    /// It has no scenario.
    #[error("{path}:1:1: no [[scenario]] in it")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

impl FileError {
    /// The error as compilers print theirs, `FILE:LINE:COLUMN: error:
    /// message`, so that an editor or CI annotation jumps to the place.
    pub fn editor_line(&self) -> String {
        match self {
            FileError::Read { path, source } => format!(
                "{}: error: cannot read it (check the path): {source}",
                path.display()
            ),
            FileError::Parse {
                path,
                line,
                column,
                message,
            } => format!("{}:{line}:{column}: error: {message}", path.display()),
            FileError::Scenario {
                path,
                line,
                column,
                scenario,
                message,
            } => format!(
                "{}:{line}:{column}: error: scenario {scenario:?}: {message}",
                path.display()
            ),
            FileError::Empty { path } => {
                format!("{}:1:1: error: no [[scenario]] in it", path.display())
            }
        }
    }
}

/// Line and column, from 1, of byte `offset` of `text`.
fn place(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Where each scenario, its steps and its expectations are in the file.
#[derive(Debug, Default, Clone)]
struct Places {
    scenario: (usize, usize),
    steps: Vec<(usize, usize)>,
    expect: Option<(usize, usize)>,
    /// Each key of the scenario's `expect` table.
    expect_keys: HashMap<String, (usize, usize)>,
}

/// The places of the file's scenarios, in order (from the file's own
/// spans, read apart from the format).
fn places(text: &str) -> Vec<Places> {
    use toml::de::{DeTable, DeValue};
    let Ok(doc) = DeTable::parse(text) else {
        return Vec::new();
    };
    let Some(DeValue::Array(scenarios)) = doc.get_ref().get("scenario").map(|v| v.get_ref()) else {
        return Vec::new();
    };
    let at = |span: std::ops::Range<usize>| place(text, span.start);
    scenarios
        .iter()
        .map(|scenario| {
            let DeValue::Table(table) = scenario.get_ref() else {
                return Places::default();
            };
            let key = |name: &str| table.iter().find(|(k, _)| k.get_ref().as_ref() == name);
            let steps = match key("steps").map(|(_, v)| v.get_ref()) {
                Some(DeValue::Array(steps)) => steps.iter().map(|s| at(s.span())).collect(),
                _ => Vec::new(),
            };
            let expect_keys = match key("expect").map(|(_, v)| v.get_ref()) {
                Some(DeValue::Table(expect)) => expect
                    .iter()
                    .map(|(k, _)| (k.get_ref().to_string(), at(k.span())))
                    .collect(),
                _ => HashMap::new(),
            };
            Places {
                scenario: key("name").map_or(at(scenario.span()), |(k, _)| at(k.span())),
                steps,
                expect: key("expect").map(|(k, _)| at(k.span())),
                expect_keys,
            }
        })
        .collect()
}

/// Where the `[defaults]` table starts, if the file has one.
fn defaults_place(text: &str) -> Option<(usize, usize)> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let (key, _) = doc
        .get_ref()
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == "defaults")?;
    Some(place(text, key.span().start))
}

/// A parse error's message in the format's words: the key it is about,
/// and no Rust type names.
fn parse_message(text: &str, error: &toml::de::Error) -> String {
    let mut message = error.message().trim().replace('\n', " ");
    for (rust, words) in [
        ("expected usize", "expected a whole number (0 or more)"),
        ("expected u64", "expected a whole number (0 or more)"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected i64", "expected a whole number"),
        ("expected a boolean", "expected true or false"),
        ("expected a string", "expected text in quotes"),
        ("expected a sequence", "expected a list [..]"),
        ("expected a map", "expected a table { .. }"),
    ] {
        message = message.replace(rust, words);
    }
    let key = error
        .span()
        .and_then(|span| text.get(..span.start))
        .and_then(|before| {
            let line = before.rsplit('\n').next().unwrap_or(before);
            let re = regex::Regex::new(r"([A-Za-z0-9_-]+)\s*=\s*(\[[^=]*)?$").ok()?;
            re.captures(line).map(|c| c[1].to_string())
        });
    // A limit written where the scenario's other keys go.
    if let Some(limit) = format::LimitsSpec::KEYS
        .iter()
        .find(|k| message.starts_with(&format!("unknown field `{k}`")))
    {
        // The line as written, moved into the table: ready to paste.
        let written = error
            .span()
            .and_then(|span| {
                let start = text.get(..span.start)?.rfind('\n').map_or(0, |i| i + 1);
                let line = text.get(start..)?.lines().next()?;
                Some(line.split('#').next()?.trim().to_string())
            })
            .filter(|l| l.starts_with(*limit))
            .unwrap_or_else(|| format!("{limit} = N"));
        message = format!(
            "unknown field `{limit}` here: it is a limit; write it as `limits = {{ {written} }}`"
        );
    }
    match key {
        Some(key) if !message.contains(&format!("`{key}`")) => format!("`{key}`: {message}"),
        _ => message,
    }
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
        let spec: FileSpec = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| place(text, s.start));
            FileError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message: parse_message(text, &e),
            }
        })?;
        if spec.scenarios.is_empty() {
            return Err(FileError::Empty {
                path: path.to_path_buf(),
            });
        }
        // The defaults alone, so that a mistake in them is placed there and
        // not on the first scenario.
        let alone: ScenarioSpec = toml::from_str("name = \"[defaults]\"").expect("a name alone");
        if let Err(e) = scenario::scenario(&alone, &spec.defaults, &crate::Limits::default()) {
            let (line, column) = defaults_place(text).unwrap_or((1, 1));
            return Err(FileError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message: format!("[defaults]: {}", e.message),
            });
        }
        let places = places(text);
        let mut scenarios: Vec<(ScenarioSpec, Checks)> = Vec::new();
        for (i, mut s) in spec.scenarios.into_iter().enumerate() {
            let at = places.get(i).cloned().unwrap_or_default();
            s.step_lines = at.steps.iter().map(|(line, _)| *line).collect();
            let invalid = |(line, column): (usize, usize), message: String| FileError::Scenario {
                path: path.to_path_buf(),
                line,
                column,
                scenario: s.name.clone(),
                message,
            };
            if scenarios.iter().any(|(other, _)| other.name == s.name) {
                return Err(invalid(
                    at.scenario,
                    "a second scenario of this name".into(),
                ));
            }
            // Made once here so that every mistake shows before any run.
            if let Err(e) = scenario::scenario(&s, &spec.defaults, &crate::Limits::default()) {
                let place = e
                    .step
                    .and_then(|step| at.steps.get(step).copied())
                    .unwrap_or(at.scenario);
                let message = match e.step {
                    Some(step) => format!("step {}: {}", step + 1, e.message),
                    None => e.message,
                };
                return Err(invalid(place, message));
            }
            if let Some(before) = &s.store_after
                && !scenarios.iter().any(|(other, _)| &other.name == before)
            {
                return Err(invalid(
                    at.scenario,
                    format!("store-after = {before:?} names no earlier scenario"),
                ));
            }
            let checks = Checks::new(std::mem::take(&mut s.expect)).map_err(|e| {
                let place = at
                    .expect_keys
                    .get(e.key)
                    .copied()
                    .or(at.expect)
                    .unwrap_or(at.scenario);
                invalid(place, format!("expect: {e}"))
            })?;
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
    let scenario = match scenario::scenario(spec, defaults, &host.limits().sandbox) {
        Ok(s) => s,
        Err(e) => return (result(vec![e.message], 0), empty),
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
