//! `host test LOGIC.wasm SCENARIOS.toml...`: runs a logic's scenario files
//! on the mock host (a scripted broker, seeded entropy, virtual time), one
//! line per scenario, the expected and actual packet on a failure, and
//! JUnit XML for CI systems with `--junit`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use host::limits::Limits;
use host::sandbox::cache::{self, Source};
use host::sandbox::engine;
use host_core::WORLD;
use mock_host::file::{ScenarioFile, ScenarioResult};
use mock_host::{MockHost, MockLimits};
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use crate::cli::explain::Failure;

/// `host test`: the logic against scripted brokers.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// The logic (a component of the device world, in any language).
    pub logic: PathBuf,
    /// Scenario files (TOML; the manual's "Scenario files" section, in
    /// docs/testing.md).
    #[arg(required = true, value_name = "SCENARIOS.toml")]
    pub scenarios: Vec<PathBuf>,
    /// Also write the results as JUnit XML to this file.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Run only the scenarios whose name contains this text.
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
    /// Real time one scenario may take, seconds; a logic still computing
    /// then is stopped and its scenario fails.
    #[arg(long, value_name = "SECS", default_value_t = MockLimits::default().real_time.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout_secs: u64,
    /// Linear memory per instance, MiB (as `host run --max-memory-mib`).
    #[arg(long, value_name = "MIB", default_value_t = Limits::MAX_MEMORY_MIB as u64,
        value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_memory_mib: u64,
    /// Directory of the precompiled-component cache [default: ~/.cache/mqtt-device-host].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// Runs `host test`.
pub fn test(args: TestArgs) -> Result<(), Failure> {
    let started = Instant::now();
    // Every file is checked before anything runs.
    let files = args
        .scenarios
        .iter()
        .map(ScenarioFile::load)
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::from)?;
    let host = load(&args)?;
    let mut suites = Vec::new();
    let (mut passed, mut failed) = (0, 0);
    for file in &files {
        let results = quietly(|| file.run(&host, args.filter.as_deref(), print_result));
        passed += results.iter().filter(|r| r.passed()).count();
        failed += results.iter().filter(|r| !r.passed()).count();
        suites.push((file.path().to_path_buf(), results));
    }
    if passed + failed == 0 {
        return Err(anyhow::anyhow!(
            "no scenario's name contains {:?} (--filter)",
            args.filter.unwrap_or_default()
        )
        .into());
    }
    println!(
        "{} scenarios: {passed} passed, {failed} failed (real {:.2} s)",
        passed + failed,
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.junit {
        write_junit(path, &args.logic, &suites)?;
    }
    if failed > 0 {
        return Err(Failure::Scenarios { failed });
    }
    Ok(())
}

/// The logic on a mock host, compiled through the precompiled cache.
fn load(args: &TestArgs) -> Result<MockHost, Failure> {
    let engine = engine::engine(None).map_err(anyhow::Error::from)?;
    let dir = args.cache_dir.clone().or_else(cache::default_dir);
    let loaded = cache::load(&engine, &args.logic, dir.as_deref())
        .with_context(|| format!("cannot load {}", args.logic.display()))?;
    let host = MockHost::from_component(&engine, &loaded.component).map_err(|e| {
        anyhow::anyhow!(
            "{} does not match the world {WORLD} (build it against this project's wit/): {e:#}",
            args.logic.display()
        )
    })?;
    println!(
        "{}: {} in {} ms",
        args.logic.display(),
        match loaded.source {
            Source::CacheHit => "loaded from the precompiled cache",
            Source::Compiled => "compiled",
        },
        loaded.millis
    );
    Ok(host.with_limits(MockLimits {
        sandbox: Limits {
            max_memory_bytes: (args.max_memory_mib as usize) << 20,
            ..Limits::default()
        },
        real_time: Duration::from_secs(args.timeout_secs),
    }))
}

/// Runs `f` with panic messages kept off the terminal: a scenario that
/// panics the mock host is reported as its failure instead.
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let out = f();
    std::panic::set_hook(hook);
    out
}

fn print_result(r: &ScenarioResult) {
    println!(
        "{} {} (virtual {:.1} s, real {:.1} ms)",
        if r.passed() { "ok  " } else { "FAIL" },
        r.name,
        r.virtual_ms as f64 / 1000.0,
        r.real.as_secs_f64() * 1000.0
    );
    for f in &r.failures {
        println!("       {f}");
    }
}

fn write_junit(
    path: &Path,
    logic: &Path,
    suites: &[(PathBuf, Vec<ScenarioResult>)],
) -> Result<(), Failure> {
    let mut report = Report::new(format!("host test {}", logic.display()));
    for (file, results) in suites {
        let mut suite = TestSuite::new(file.display().to_string());
        for r in results {
            let status = if r.passed() {
                TestCaseStatus::success()
            } else {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(r.failures[0].clone());
                s.set_description(r.failures.join("\n"));
                s
            };
            let mut case = TestCase::new(r.name.clone(), status);
            case.set_classname(file.display().to_string());
            case.set_time(r.real);
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    let xml = report.to_string().context("cannot write JUnit XML")?;
    std::fs::write(path, xml).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// A scenario's `[limits]` keys are `host run`'s flags of the same
    /// names: one set of words for both hosts.
    #[test]
    fn every_limit_key_of_a_scenario_is_a_flag_of_host_run() {
        let cli = crate::cli::Cli::command();
        let run = cli.find_subcommand("run").expect("host run");
        let flags: Vec<&str> = run.get_arguments().filter_map(|a| a.get_long()).collect();
        let keys = mock_host::file::format::LimitsSpec::KEYS;
        for key in keys {
            assert!(flags.contains(&key), "--{key} is not a flag of host run");
        }
        // And every sandbox limit of host run can be set by a scenario.
        for arg in run.get_arguments() {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            if help.starts_with("Sandbox:") {
                let flag = arg.get_long().unwrap_or_default();
                assert!(keys.contains(&flag), "--{flag} is no key of [limits]");
            }
        }
    }
}
