//! The repository against its layout chapter: every rule of
//! `docs/layout.md`, checked on the real tree; and the lint command, shown
//! to fail on a crate with a formatting or clippy warning.

use std::path::Path;
use std::process::Command;

use house_rules::{Rules, check, tree};

#[test]
fn the_tree_keeps_the_layout_chapters_rules() {
    let root = tree::root();
    let chapter = std::fs::read_to_string(root.join("docs/layout.md"))
        .expect("docs/layout.md holds the layout and its rules");
    let rules = Rules::parse(&chapter).unwrap_or_else(|e| panic!("{e}"));
    let files = tree::files(&root).unwrap_or_else(|e| panic!("{e}"));
    let rust = tree::rust_files(&root, &files).unwrap_or_else(|e| panic!("{e}"));
    let packages = tree::packages(&root).unwrap_or_else(|e| panic!("{e}"));
    let mut found = check::folders(&rules, &tree::folders(&files));
    found.extend(check::crates(&rules, &packages));
    found.extend(check::host_folders(&rules, &rust));
    found.extend(check::host_folder_rows(&rules));
    found.extend(check::circles(&rules));
    found.extend(check::generated(&rules, &rust));
    let lines: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert!(
        lines.is_empty(),
        "the tree breaks {} rule(s) of docs/layout.md:\n{}",
        lines.len(),
        lines.join("\n")
    );
    // Each table was read and applies to something.
    assert!(rules.folders.len() > 40 && rules.crates.len() >= 10 && rules.host_folders.len() >= 10);
}

#[test]
fn the_manuals_links_and_table_of_contents_hold() {
    let root = tree::root();
    let files = tree::files(&root).unwrap_or_else(|e| panic!("{e}"));
    let pages = house_rules::docs::pages(&root, &files).expect("the Markdown pages read");
    let all: std::collections::BTreeSet<String> = files.iter().cloned().collect();
    let mut found = house_rules::docs::links(&pages, &all);
    let chapters: Vec<String> = files
        .iter()
        .filter(|f| f.starts_with("docs/") && f.ends_with(".md"))
        .cloned()
        .collect();
    let summary = std::fs::read_to_string(root.join("docs/SUMMARY.md")).expect("docs/SUMMARY.md");
    found.extend(house_rules::docs::summary(&summary, &chapters));
    let lines: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert!(lines.is_empty(), "{}", lines.join("\n"));
    assert!(
        pages.len() > 10 && chapters.len() > 10,
        "the manual was read"
    );
}

/// A crate of its own in `dir`, with `lib` as its library.
fn sample_crate(dir: &Path, lib: &str) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"sample\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("Cargo.lock"),
        "version = 4\n\n[[package]]\nname = \"sample\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), lib).unwrap();
}

/// Runs `scripts/lint` on the crate in `dir`: its output, and whether it passed.
fn lint(dir: &Path) -> (bool, String) {
    let out = Command::new(tree::root().join("scripts/lint"))
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .output()
        .expect("scripts/lint runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_lint_command_passes_a_clean_crate() {
    let dir = tempfile::tempdir().unwrap();
    sample_crate(
        dir.path(),
        "//! A sample.\n\n/// Adds.\npub fn add(a: u32, b: u32) -> u32 {\n    a + b\n}\n",
    );
    let (passed, output) = lint(dir.path());
    assert!(passed, "{output}");
}

#[test]
fn the_lint_command_fails_on_a_clippy_warning() {
    let dir = tempfile::tempdir().unwrap();
    // clippy::needless_return warns by default: only `-D warnings` fails it.
    sample_crate(
        dir.path(),
        "//! A sample.\n\n/// One.\npub fn one() -> u32 {\n    return 1;\n}\n",
    );
    let (passed, output) = lint(dir.path());
    assert!(!passed, "{output}");
    assert!(output.contains("needless_return"), "{output}");
}

#[test]
fn the_lint_command_fails_on_unformatted_code() {
    let dir = tempfile::tempdir().unwrap();
    sample_crate(
        dir.path(),
        "//! A sample.\n\n/// Adds.\npub fn add(a:u32,b:u32)->u32{a+b}\n",
    );
    let (passed, output) = lint(dir.path());
    assert!(!passed, "{output}");
    assert!(output.contains("Diff in"), "{output}");
}

/// The unit graph of `cargo COMMAND` with `args` (read, not built).
fn unit_graph(command: &str, args: &[String]) -> String {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            command,
            "--offline",
            "--unit-graph",
            "-Z",
            "unstable-options",
        ])
        .args(args)
        .current_dir(tree::root())
        // `--unit-graph` is unstable; it only reads, nothing is built.
        .env("RUSTC_BOOTSTRAP", "1")
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo {command} {args:?} --unit-graph: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 JSON")
}

/// Regression (the first demo took 15 minutes): `scripts/build` compiles
/// the host for the demo; `scripts/build --all` and the tests must reuse
/// every crate it compiled, not compile wasmtime again with other features.
#[test]
fn the_test_build_reuses_every_crate_the_demo_build_compiles() {
    let root = tree::root();
    let build = std::fs::read_to_string(root.join("scripts/build")).unwrap();
    let test = std::fs::read_to_string(root.join("scripts/test")).unwrap();
    // A command's arguments after `cargo build`/`cargo test`, as a script runs it.
    let args = |script: &str, start: &str| -> Vec<String> {
        let line = script
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting `{start}`"));
        let line = line.split(" -- ").next().unwrap_or(line);
        line.split_whitespace().skip(2).map(String::from).collect()
    };
    let demo = args(&build, "cargo build --locked --release -p host");
    let demo_graph = unit_graph("build", &demo);
    for (command, start, script) in [
        (
            "build",
            "cargo build --locked --release --workspace",
            &build,
        ),
        ("test", "cargo test --locked --release --workspace", &test),
    ] {
        let full = args(script, start);
        let missing =
            house_rules::reuse::not_reused(&demo_graph, &unit_graph(command, &full)).unwrap();
        assert!(
            missing.is_empty(),
            "`cargo {command} {}` would compile {} crate(s) of the demo's build again, first: {:?}",
            full.join(" "),
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
}
