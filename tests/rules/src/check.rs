//! One function per rule of the layout chapter, each returning every
//! violation it finds in what [`crate::tree`] read (or what a test made up).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::chapter::Rules;
use crate::source;

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which rule: `folders`, `crates`, `host folders`, `circles` or
    /// `generated types`.
    pub rule: &'static str,
    /// What is wrong, and where.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.message)
    }
}

fn violation(rule: &'static str, message: String) -> Violation {
    Violation { rule, message }
}

/// A workspace crate and every crate it depends on (normal, build and dev
/// dependencies alike: a forbidden edge is forbidden in tests too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// Its name.
    pub name: String,
    /// The names of its dependencies.
    pub dependencies: Vec<String>,
}

/// A Rust file of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Its path from the repository root, with `/`.
    pub path: String,
    /// Its text.
    pub text: String,
}

/// Every folder of the tree has a row in the folders table, and every row
/// is a folder of the tree.
pub fn folders(rules: &Rules, tree: &BTreeSet<String>) -> Vec<Violation> {
    let listed: BTreeSet<&String> = rules.folders.iter().collect();
    let mut found = Vec::new();
    for folder in tree {
        if !listed.contains(folder) {
            found.push(violation(
                "folders",
                format!("{folder} is not in the layout chapter's folders table (add a row saying what it holds)"),
            ));
        }
    }
    for folder in listed {
        if !tree.contains(folder) {
            found.push(violation(
                "folders",
                format!("{folder} is in the layout chapter but not in the tree (remove or rename its row)"),
            ));
        }
    }
    found
}

/// Each workspace crate has a row; it depends on no workspace crate its row
/// does not allow, and on no crate its row forbids.
pub fn crates(rules: &Rules, packages: &[Package]) -> Vec<Violation> {
    let workspace: BTreeSet<&str> = packages.iter().map(|p| p.name.as_str()).collect();
    let mut found = Vec::new();
    for package in packages {
        let Some(rule) = rules.crates.iter().find(|r| r.name == package.name) else {
            found.push(violation(
                "crates",
                format!(
                    "crate {} has no row in the layout chapter's crates table",
                    package.name
                ),
            ));
            continue;
        };
        for dep in &package.dependencies {
            if rule.must_not_use.contains(dep) {
                found.push(violation(
                    "crates",
                    format!("{} depends on {dep}, which its row forbids", package.name),
                ));
            } else if workspace.contains(dep.as_str()) && !rule.may_use.contains(dep) {
                found.push(violation(
                    "crates",
                    format!(
                        "{} depends on {dep}, which its row does not allow",
                        package.name
                    ),
                ));
            }
        }
    }
    for rule in &rules.crates {
        if !workspace.contains(rule.name.as_str()) {
            found.push(violation(
                "crates",
                format!(
                    "the crates table has a row for {}, which is no workspace crate",
                    rule.name
                ),
            ));
        }
    }
    found
}

/// The folder of the host a file is in, if it is in one of the table's.
fn host_folder<'r>(rules: &'r Rules, path: &str) -> Option<&'r str> {
    rules
        .host_folders
        .iter()
        .map(|r| r.folder.as_str())
        .filter(|f| path.starts_with(f))
        .max_by_key(|f| f.len())
}

/// Files in the host's folders use only the folders their row allows. A
/// path from the library's root (`crate::X` in the library, `host::X` in
/// the binary) names folder `host/src/X/` when that folder has a row.
pub fn host_folders(rules: &Rules, files: &[SourceFile]) -> Vec<Violation> {
    let rows: BTreeMap<&str, &Vec<String>> = rules
        .host_folders
        .iter()
        .map(|r| (r.folder.as_str(), &r.may_use))
        .collect();
    let mut found = Vec::new();
    for file in files {
        let Some(folder) = host_folder(rules, &file.path) else {
            continue;
        };
        let Some(root) = folder
            .strip_suffix('/')
            .and_then(|f| f.rsplit_once('/'))
            .map(|(root, _)| root)
        else {
            continue;
        };
        let code = source::code_only(&file.text);
        for module in source::root_modules(&code, &["crate", "host"]) {
            let used = format!("{root}/{module}/");
            if used == folder || !rows.contains_key(used.as_str()) {
                continue;
            }
            if !rows[folder].contains(&used) {
                found.push(violation(
                    "host folders",
                    format!(
                        "{} uses {used}, which the row of {folder} does not allow",
                        file.path
                    ),
                ));
            }
        }
    }
    found
}

/// Every folder of the host's source (`host/src/X/`, from the folders
/// table) has a row in the host folders' table, so none is unconstrained.
pub fn host_folder_rows(rules: &Rules) -> Vec<Violation> {
    rules
        .folders
        .iter()
        .filter(|f| {
            f.strip_prefix("host/src/")
                .is_some_and(|rest| !rest.is_empty() && rest.matches('/').count() == 1)
        })
        .filter(|f| !rules.host_folders.iter().any(|r| &r.folder == *f))
        .map(|f| {
            violation(
                "host folders",
                format!("{f} has no row in the host folders' table (say which folders it may use)"),
            )
        })
        .collect()
}

/// The host folders' table allows no circle (so the code, which follows
/// it, has none either).
pub fn circles(rules: &Rules) -> Vec<Violation> {
    let edges: BTreeMap<&str, Vec<&str>> = rules
        .host_folders
        .iter()
        .map(|r| {
            (
                r.folder.as_str(),
                r.may_use.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    let mut found = Vec::new();
    for start in edges.keys() {
        // Depth-first from `start`, looking for a way back to it.
        let mut stack: Vec<Vec<&str>> = vec![vec![start]];
        let mut seen = BTreeSet::new();
        while let Some(path) = stack.pop() {
            let last = *path.last().unwrap_or(start);
            for next in edges.get(last).into_iter().flatten() {
                if next == start {
                    let mut circle = path.clone();
                    circle.push(next);
                    found.push(violation(
                        "circles",
                        format!(
                            "the host folders' table allows a circle: {}",
                            circle.join(" -> ")
                        ),
                    ));
                    return found;
                }
                if seen.insert(*next) {
                    let mut longer = path.clone();
                    longer.push(next);
                    stack.push(longer);
                }
            }
        }
    }
    found
}

/// Generated WIT types are named only where the generated-types table
/// allows: the edge modules that convert them, and the components'
/// export glue.
pub fn generated(rules: &Rules, files: &[SourceFile]) -> Vec<Violation> {
    let mut found = Vec::new();
    for file in files {
        let allowed = rules.generated.iter().any(|p| {
            if p.ends_with('/') {
                file.path.starts_with(p.as_str())
            } else {
                file.path == *p
            }
        });
        if allowed {
            continue;
        }
        if let Some(line) = source::generated_mention(&source::code_only(&file.text)) {
            found.push(violation(
                "generated types",
                format!(
                    "{} names generated WIT types ({line}); convert them in the interface's edge module instead",
                    file.path
                ),
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chapter::{CrateRule, FolderRule};

    fn rules() -> Rules {
        Rules {
            folders: vec!["host/".into(), "host/src/".into(), "host/src/tls/".into()],
            crates: vec![
                CrateRule {
                    name: "mqtt-core".into(),
                    may_use: vec![],
                    must_not_use: vec!["wit-bindgen".into()],
                },
                CrateRule {
                    name: "host".into(),
                    may_use: vec!["mqtt-core".into()],
                    must_not_use: vec!["guest".into()],
                },
                CrateRule {
                    name: "guest".into(),
                    may_use: vec!["mqtt-core".into()],
                    must_not_use: vec![],
                },
            ],
            host_folders: vec![
                FolderRule {
                    folder: "host/src/tls/".into(),
                    may_use: vec![],
                },
                FolderRule {
                    folder: "host/src/sandbox/".into(),
                    may_use: vec!["host/src/tls/".into()],
                },
                FolderRule {
                    folder: "host/src/cli/".into(),
                    may_use: vec!["host/src/sandbox/".into(), "host/src/tls/".into()],
                },
            ],
            generated: vec!["host/src/imports/".into(), "guest/src/bindings.rs".into()],
        }
    }

    fn package(name: &str, deps: &[&str]) -> Package {
        Package {
            name: name.into(),
            dependencies: deps.iter().map(|d| d.to_string()).collect(),
        }
    }

    fn file(path: &str, text: &str) -> SourceFile {
        SourceFile {
            path: path.into(),
            text: text.into(),
        }
    }

    fn workspace(host_deps: &[&str]) -> Vec<Package> {
        vec![
            package("mqtt-core", &["mqttbytes"]),
            package("host", host_deps),
            package("guest", &["mqtt-core"]),
        ]
    }

    #[test]
    fn the_allowed_tree_passes() {
        let r = rules();
        let tree = ["host/", "host/src/", "host/src/tls/"]
            .map(String::from)
            .into();
        assert_eq!(folders(&r, &tree), []);
        assert_eq!(crates(&r, &workspace(&["mqtt-core", "tokio"])), []);
        let files = [
            file(
                "host/src/cli/run.rs",
                "use host::sandbox::X; use host::tls;",
            ),
            file("host/src/sandbox/a.rs", "use crate::{tls::Y, ENV};"),
            file("host/src/imports/log.rs", "use host_core::wit::log::Host;"),
        ];
        assert_eq!(host_folders(&r, &files), []);
        assert_eq!(circles(&r), []);
        assert_eq!(generated(&r, &files), []);
    }

    #[test]
    fn a_folder_missing_from_the_chapter_fails() {
        let tree = ["host/", "host/src/", "host/src/tls/", "host/src/new/"]
            .map(String::from)
            .into();
        let found = folders(&rules(), &tree);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.starts_with("host/src/new/ is not in"));
    }

    #[test]
    fn a_listed_folder_missing_from_the_tree_fails() {
        let tree = ["host/", "host/src/"].map(String::from).into();
        let found = folders(&rules(), &tree);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0]
                .message
                .contains("host/src/tls/ is in the layout chapter but not in the tree")
        );
    }

    #[test]
    fn a_crate_edge_the_table_does_not_allow_fails() {
        let found = crates(&rules(), &workspace(&["mqtt-core", "guest"]));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].message,
            "host depends on guest, which its row forbids"
        );
        let mut packages = workspace(&["mqtt-core"]);
        packages[0].dependencies.push("guest".into());
        let found = crates(&rules(), &packages);
        assert_eq!(
            found[0].message,
            "mqtt-core depends on guest, which its row does not allow"
        );
    }

    #[test]
    fn a_forbidden_outside_crate_fails() {
        let mut packages = workspace(&["mqtt-core"]);
        packages[0].dependencies.push("wit-bindgen".into());
        let found = crates(&rules(), &packages);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].message,
            "mqtt-core depends on wit-bindgen, which its row forbids"
        );
    }

    #[test]
    fn a_crate_without_a_row_fails() {
        let mut packages = workspace(&["mqtt-core"]);
        packages.push(package("new-crate", &[]));
        let found = crates(&rules(), &packages);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("new-crate has no row"));
    }

    #[test]
    fn a_folder_edge_the_table_does_not_allow_fails() {
        let files = [file(
            "host/src/tls/mod.rs",
            "use crate::{sandbox::Limits, tls::X};",
        )];
        let found = host_folders(&rules(), &files);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].message,
            "host/src/tls/mod.rs uses host/src/sandbox/, which the row of host/src/tls/ does not allow"
        );
        // The binary's paths into the library count the same.
        let files = [file("host/src/tls/x.rs", "fn f() { host::cli::run(); }")];
        assert_eq!(host_folders(&rules(), &files).len(), 1);
    }

    #[test]
    fn a_host_folder_without_a_row_fails() {
        let mut r = rules();
        assert_eq!(host_folder_rows(&r), []);
        r.folders.push("host/src/new/".into());
        r.folders.push("host/src/cli/run/".into());
        let found = host_folder_rows(&r);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.starts_with("host/src/new/ has no row"));
    }

    #[test]
    fn a_circle_in_the_table_fails() {
        let mut r = rules();
        r.host_folders[0].may_use.push("host/src/cli/".into());
        let found = circles(&r);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("circle"), "{}", found[0]);
    }

    #[test]
    fn generated_types_outside_the_edge_fail() {
        let files = [file(
            "guest/src/demo.rs",
            "use crate::bindings::mqtt_device::runtime::types::Settings;",
        )];
        let found = generated(&rules(), &files);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0]
                .message
                .starts_with("guest/src/demo.rs names generated WIT types")
        );
    }
}
