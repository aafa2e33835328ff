//! End to end: `host test` runs scenario files against logic built in Rust
//! and in Python, writes JUnit XML, reports a failing scenario with the
//! expected and the actual packet, names a bad file's line and key, and
//! contains hostile logic.

use std::path::Path;
use std::time::Duration;

use device_tests::{adversary_wasm, demo_wasm, output_within, root, telemetry_py_wasm, text};

const LIMIT: Duration = Duration::from_secs(120);

fn host_test(logic: &Path, files: &[&Path], extra: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = device_tests::host();
    cmd.arg("test").arg(logic).args(files).args(extra);
    let out = output_within(&mut cmd, LIMIT);
    let (stdout, stderr) = text(&out);
    (out.status.code(), stdout, stderr)
}

/// Scenario lines that passed and failed.
/// Scenarios in a scenario file.
fn scenarios_in(file: &std::path::Path) -> usize {
    std::fs::read_to_string(file)
        .unwrap()
        .matches("[[scenario]]")
        .count()
}

fn tally(stdout: &str) -> (usize, usize) {
    let ok = stdout.lines().filter(|l| l.starts_with("ok   ")).count();
    let failed = stdout.lines().filter(|l| l.starts_with("FAIL ")).count();
    (ok, failed)
}

#[test]
fn the_demos_scenario_file_passes_and_writes_junit() {
    let tmp = tempfile::tempdir().unwrap();
    let junit = tmp.path().join("demo.xml");
    let file = root().join("tests/scenarios/demo.toml");
    let (code, stdout, stderr) = host_test(
        &demo_wasm(),
        &[&file],
        &["--junit", junit.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{stderr}\n{stdout}");
    let scenarios = scenarios_in(&file);
    assert!(scenarios >= 25, "{scenarios}");
    assert_eq!(tally(&stdout), (scenarios, 0), "{stdout}");
    assert!(stdout.contains(&format!(
        "{scenarios} scenarios: {scenarios} passed, 0 failed"
    )));
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(&format!(r#"tests="{scenarios}" failures="0""#)),
        "{xml}"
    );
    assert_eq!(xml.matches("<testcase ").count(), scenarios, "{xml}");
}

#[test]
fn the_python_logic_passes_its_own_scenario_file() {
    let file = root().join("guest-examples/telemetry-py/scenarios.toml");
    let (code, stdout, stderr) = host_test(&telemetry_py_wasm(), &[&file], &[]);
    assert_eq!(code, Some(0), "{stderr}\n{stdout}");
    let (ok, failed) = tally(&stdout);
    assert!(ok >= 10 && failed == 0, "{stdout}");
    assert_eq!((ok, failed), (scenarios_in(&file), 0), "every scenario ran");
}

#[test]
fn the_demos_file_fails_against_the_python_logic_with_expected_and_actual() {
    // The same scenarios, another logic: the packets differ, and the output
    // says where and how.
    let tmp = tempfile::tempdir().unwrap();
    let junit = tmp.path().join("out.xml");
    let file = root().join("tests/scenarios/demo.toml");
    let (code, stdout, _) = host_test(
        &telemetry_py_wasm(),
        &[&file],
        &["--filter", "s01 happy", "--junit", junit.to_str().unwrap()],
    );
    assert_eq!(code, Some(2), "{stdout}");
    assert_eq!(tally(&stdout), (0, 1), "{stdout}");
    assert!(
        stdout.contains("sent: packet 2: expected SUBSCRIBE, got PUBLISH; actual Publish"),
        "{stdout}"
    );
    assert!(
        stdout.contains("report: expected published = 5, got 1"),
        "{stdout}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(r#"failures="1""#) && xml.contains("<failure"),
        "{xml}"
    );
}

#[test]
fn a_bad_scenario_file_is_refused_with_its_line_and_key_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    // Each problem is one line that starts with FILE:LINE:COLUMN, as a
    // compiler's, and names the key (never a Rust type) and the step.
    let cases = [
        (
            "[[scenario]]\nname = \"x\"\n\n[scenario.expect]\nresutl = \"ok\"\n",
            "bad.toml:5:1: error: unknown field `resutl`",
        ),
        (
            "[[scenario]]\nname = \"x\"\nsteps = [{ expect = \"PUBLSH\" }]\n",
            "bad.toml:3:10: error: scenario \"x\": step 1: unknown packet kind \"PUBLSH\"",
        ),
        (
            "[[scenario]]\nname = \"x\"\nsteps = [\n  { auto = 1 },\n  { refuse-connect = \"refused\" },\n]\n",
            "bad.toml:5:3: error: scenario \"x\": step 2: unknown error-code \"refused\" (one of not-permitted",
        ),
        (
            "[[scenario]]\nname = \"x\"\n[scenario.expect]\nlog = ['(']\n",
            "bad.toml:4:1: error: scenario \"x\": expect: `log`: bad regular expression /(/",
        ),
        (
            "[[scenario]]\nname = \"x\"\niterations = \"two\"\n",
            "bad.toml:3:14: error: `iterations`: invalid type: string \"two\", expected a whole number",
        ),
        (
            "[[scenario]]\nname = \"x\"\nlimits = { cpu-budget-ms = -1 }\n",
            "bad.toml:3:28: error: `cpu-budget-ms`: invalid value: integer `-1`, expected a whole number from 0 to 4294967295",
        ),
        (
            "[[scenario]]\nname = \"x\"\n[scenario.expect]\nstop-limit = \"cpu-time\"\n",
            "bad.toml:4:1: error: scenario \"x\": expect: `stop-limit`: \"cpu-time\" is no limit: one of iteration-timeout, cpu,",
        ),
        (
            "[defaults]\niterations = 0\n\n[[scenario]]\nname = \"x\"\n",
            "bad.toml:1:2: error: [defaults]: iterations = 0: give 1 to 10000",
        ),
        (
            "[[scenario]]\nname = \"x\"\ncpu-budget-ms = 5\n",
            "bad.toml:3:1: error: unknown field `cpu-budget-ms` here: it is a limit; write it as `limits = { cpu-budget-ms = 5 }`",
        ),
        ("# nothing\n", "bad.toml:1:1: error: no [[scenario]] in it"),
    ];
    for (text, want) in cases {
        let file = tmp.path().join("bad.toml");
        std::fs::write(&file, text).unwrap();
        let (code, stdout, stderr) = host_test(&demo_wasm(), &[&file], &[]);
        assert_eq!(code, Some(1), "{text}: {stderr}");
        let line = stderr.trim_end();
        assert_eq!(line.lines().count(), 1, "one line: {stderr}");
        let place = file.display().to_string();
        assert!(line.starts_with(&place), "the place first: {line}");
        assert!(line.contains(want), "{text}\nwant: {want}\ngot:  {line}");
        assert!(!line.contains("usize") && !line.contains("u32"), "{line}");
        assert!(stdout.is_empty(), "nothing ran: {stdout}");
    }
}

/// A wrong expectation on a step's packet is one failure, naming the step
/// and its line; the checks that would only repeat it are not run.
#[test]
fn one_wrong_expectation_is_one_failure_naming_its_step() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("wrong.toml");
    std::fs::write(
        &file,
        "[[scenario]]\nname = \"wrong topic\"\nsteps = [\n  { auto = 2 },\n  { expect = \"PUBLISH\", where = { topic = \"other/topic\" } },\n]\n[scenario.expect]\nresult = \"ok\"\nreport = { published = 5, acknowledged = 5, echoes = 5 }\nsent-count = { PUBLISH = 5 }\nlog = ['^Demo completed successfully']\n",
    )
    .unwrap();
    let (code, stdout, _) = host_test(&demo_wasm(), &[&file], &[]);
    assert_eq!(code, Some(2), "{stdout}");
    let failures: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("FAIL"))
        .skip(1)
        .take_while(|l| l.starts_with("       "))
        .collect();
    assert_eq!(failures.len(), 1, "one failure: {stdout}");
    assert!(
        failures[0].contains("step 2 (line 5)")
            && failures[0].contains("topic = \"other/topic\" (got \"mock-device/example/topic\")"),
        "{stdout}"
    );
}

#[test]
fn a_file_that_is_not_a_component_of_the_world_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let logic = tmp.path().join("not.wasm");
    std::fs::write(&logic, b"not wasm at all").unwrap();
    let file = root().join("tests/scenarios/demo.toml");
    let (code, _, stderr) = host_test(&logic, &[&file], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot load") && stderr.contains("not.wasm"),
        "{stderr}"
    );
}

#[test]
fn hostile_logic_ends_its_own_scenarios_and_never_the_run() {
    let file = root().join("tests/scenarios/adversary.toml");
    let (code, stdout, stderr) = host_test(&adversary_wasm(), &[&file], &["--timeout-secs", "2"]);
    assert_eq!(code, Some(0), "{stderr}\n{stdout}");
    let (ok, failed) = tally(&stdout);
    assert!(ok >= 8 && failed == 0, "{stdout}");
    assert_eq!((ok, failed), (scenarios_in(&file), 0), "every scenario ran");
}

#[test]
fn a_missing_scenario_file_is_one_line_naming_it_and_its_cause_once() {
    let missing = std::path::Path::new("/nonexistent/scenarios.toml");
    let (code, _, stderr) = host_test(&demo_wasm(), &[missing], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    let line = stderr.trim();
    assert_eq!(line.lines().count(), 1, "{stderr}");
    assert!(
        line.starts_with("/nonexistent/scenarios.toml: error: cannot read it (check the path)"),
        "{line}"
    );
    assert_eq!(
        line.matches("No such file or directory").count(),
        1,
        "{line}"
    );
}

/// The manual's scenario files run on the demo as printed, and pass.
#[test]
fn the_manuals_scenario_examples_pass_on_the_demo() {
    let manual = std::fs::read_to_string(root().join("docs/testing.md")).unwrap();
    let blocks: Vec<&str> = manual
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .filter(|b| b.contains("[[scenario]]"))
        .collect();
    assert!(blocks.len() >= 2, "the manual's examples: {}", blocks.len());
    let tmp = tempfile::tempdir().unwrap();
    for (i, block) in blocks.iter().enumerate() {
        let file = tmp.path().join(format!("example-{i}.toml"));
        std::fs::write(&file, block).unwrap();
        let (code, stdout, stderr) = host_test(&demo_wasm(), &[&file], &[]);
        assert_eq!(code, Some(0), "{block}\n{stdout}\n{stderr}");
        assert_eq!(tally(&stdout), (1, 0), "{stdout}");
    }
}

/// The hint for a limit written outside `limits` works when pasted as
/// printed.
#[test]
fn the_hint_for_a_misplaced_limit_works_as_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("limit.toml");
    std::fs::write(&file, "[[scenario]]\nname = \"x\"\ncpu-budget-ms = 500\n").unwrap();
    let (code, _, stderr) = host_test(&demo_wasm(), &[&file], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    let hint = stderr
        .split("write it as `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .unwrap_or_else(|| panic!("no hint: {stderr}"));
    std::fs::write(&file, format!("[[scenario]]\nname = \"x\"\n{hint}\n")).unwrap();
    let (code, stdout, stderr) = host_test(&demo_wasm(), &[&file], &[]);
    assert_eq!(code, Some(0), "{hint}: {stdout}{stderr}");
}
