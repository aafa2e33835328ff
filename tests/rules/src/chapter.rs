//! The rules as the layout chapter writes them: Markdown tables under
//! fixed headings, each row's first cell naming a folder or crate in
//! backticks and the other cells listing names in backticks (a cell with
//! none allows nothing).

/// The heading of the table of every folder.
pub const FOLDERS: &str = "## Folders";
/// The heading of the table of crate dependencies.
pub const CRATES: &str = "## Crates";
/// The heading of the table of the host's folders.
pub const HOST_FOLDERS: &str = "## The host's folders";
/// The heading of the table of where generated types may appear.
pub const GENERATED: &str = "## Generated types";

/// Why the chapter cannot be read as rules.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChapterError {
    /// A heading the rules need is missing.
    #[error("the layout chapter has no `{0}` heading followed by a table")]
    MissingTable(&'static str),
    /// A row's first cell names nothing.
    #[error(
        "the layout chapter's table under `{heading}` has a row without a name in backticks: {row}"
    )]
    UnnamedRow {
        /// The table's heading.
        heading: &'static str,
        /// The row as written.
        row: String,
    },
}

/// What one crate may and may not depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrateRule {
    /// The crate (package name).
    pub name: String,
    /// Workspace crates it may depend on; any other is a violation.
    pub may_use: Vec<String>,
    /// Crates (of the workspace or not) it must never depend on.
    pub must_not_use: Vec<String>,
}

/// What one of the host's folders may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderRule {
    /// The folder, from the repository root, with a trailing `/`.
    pub folder: String,
    /// Folders (as written in the first column) it may use.
    pub may_use: Vec<String>,
}

/// Every rule of the chapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Every folder of the tree, with a trailing `/`.
    pub folders: Vec<String>,
    /// One row per workspace crate.
    pub crates: Vec<CrateRule>,
    /// One row per folder of the host's library and binary.
    pub host_folders: Vec<FolderRule>,
    /// Paths (folders with a trailing `/`, or files) where generated WIT
    /// types may be named.
    pub generated: Vec<String>,
}

impl Rules {
    /// Reads the rules from the chapter's text.
    pub fn parse(chapter: &str) -> Result<Self, ChapterError> {
        let folders = rows(chapter, FOLDERS)?
            .into_iter()
            .map(|r| r.name)
            .collect();
        let crates = rows(chapter, CRATES)?
            .into_iter()
            .map(|r| CrateRule {
                name: r.name,
                may_use: r.cells.first().cloned().unwrap_or_default(),
                must_not_use: r.cells.get(1).cloned().unwrap_or_default(),
            })
            .collect();
        let host_folders = rows(chapter, HOST_FOLDERS)?
            .into_iter()
            .map(|r| FolderRule {
                folder: r.name,
                may_use: r.cells.first().cloned().unwrap_or_default(),
            })
            .collect();
        let generated = rows(chapter, GENERATED)?
            .into_iter()
            .map(|r| r.name)
            .collect();
        Ok(Self {
            folders,
            crates,
            host_folders,
            generated,
        })
    }
}

/// A table row: the name in its first cell, the names in each other cell.
struct Row {
    name: String,
    cells: Vec<Vec<String>>,
}

/// The rows of the first table after `heading`.
fn rows(chapter: &str, heading: &'static str) -> Result<Vec<Row>, ChapterError> {
    let mut lines = chapter.lines().skip_while(|l| l.trim_end() != heading);
    if lines.next().is_none() {
        return Err(ChapterError::MissingTable(heading));
    }
    let table: Vec<&str> = lines
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .collect();
    // The header row and the separator row.
    if table.len() < 2 {
        return Err(ChapterError::MissingTable(heading));
    }
    table[2..]
        .iter()
        .map(|line| {
            let cells: Vec<Vec<String>> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(backticked)
                .collect();
            match cells.first().and_then(|c| c.first()) {
                Some(name) => Ok(Row {
                    name: name.clone(),
                    cells: cells[1..].to_vec(),
                }),
                None => Err(ChapterError::UnnamedRow {
                    heading,
                    row: line.to_string(),
                }),
            }
        })
        .collect()
}

/// The names in backticks in `cell`, in order.
fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAPTER: &str = "# Layout\n\n## Folders\n\n| path | what |\n| --- | --- |\n\
        | `wit/` | the WIT package |\n| `host/src/tls/` | rustls |\n\n\
        ## Crates\n\n| crate | may use | must not use |\n| --- | --- | --- |\n\
        | `mqtt-core` | nothing | `wit-bindgen`, `wasmtime` |\n| `host` | `mqtt-core` | |\n\n\
        ## The host's folders\n\n| folder | may use |\n| --- | --- |\n\
        | `host/src/tls/` | |\n| `host/src/cli/` | `host/src/tls/` |\n\n\
        ## Generated types\n\n| path | why |\n| --- | --- |\n| `host/src/imports/` | the imports |\n";

    #[test]
    fn every_table_is_read() {
        let rules = Rules::parse(CHAPTER).unwrap();
        assert_eq!(rules.folders, ["wit/", "host/src/tls/"]);
        assert_eq!(
            rules.crates[0],
            CrateRule {
                name: "mqtt-core".into(),
                may_use: vec![],
                must_not_use: vec!["wit-bindgen".into(), "wasmtime".into()],
            }
        );
        assert_eq!(rules.crates[1].may_use, ["mqtt-core"]);
        assert_eq!(rules.host_folders[1].may_use, ["host/src/tls/"]);
        assert_eq!(rules.generated, ["host/src/imports/"]);
    }

    #[test]
    fn a_missing_table_or_an_unnamed_row_is_an_error() {
        let without = CHAPTER.replace("## Generated types", "## Other");
        assert_eq!(
            Rules::parse(&without),
            Err(ChapterError::MissingTable(GENERATED))
        );
        let unnamed = CHAPTER.replace("| `wit/` |", "| wit/ |");
        assert!(matches!(
            Rules::parse(&unnamed),
            Err(ChapterError::UnnamedRow { .. })
        ));
    }
}
