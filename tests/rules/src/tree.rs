//! The repository as the rules see it: its folders (those git tracks or
//! would track), its Rust files, and its crates with their dependencies
//! (from `cargo metadata`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::check::{Package, SourceFile};

/// Why the tree cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// git failed or is missing.
    #[error(
        "cannot list the repository's files with git ({0}; run from a git checkout with git installed)"
    )]
    Git(String),
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `cargo metadata` failed.
    #[error("cargo metadata failed: {0}")]
    Metadata(String),
}

/// The repository's root: two levels above this crate.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Every file git tracks, or would (untracked and not ignored), from the
/// root, with `/`.
pub fn files(root: &Path) -> Result<Vec<String>, TreeError> {
    let out = Command::new("git")
        .args([
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "-z",
        ])
        .current_dir(root)
        .output()
        .map_err(|e| TreeError::Git(e.to_string()))?;
    if !out.status.success() {
        return Err(TreeError::Git(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(out
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        // Deleted but not yet committed.
        .filter(|p| root.join(p).exists())
        .collect())
}

/// The folders holding `files`, each with a trailing `/`.
pub fn folders(files: &[String]) -> BTreeSet<String> {
    let mut folders = BTreeSet::new();
    for file in files {
        let mut path = file.as_str();
        while let Some((parent, _)) = path.rsplit_once('/') {
            folders.insert(format!("{parent}/"));
            path = parent;
        }
    }
    folders
}

/// The Rust files among `files`, read.
pub fn rust_files(root: &Path, files: &[String]) -> Result<Vec<SourceFile>, TreeError> {
    files
        .iter()
        .filter(|f| f.ends_with(".rs"))
        .map(|f| {
            let path = root.join(f);
            std::fs::read_to_string(&path)
                .map(|text| SourceFile {
                    path: f.clone(),
                    text,
                })
                .map_err(|source| TreeError::Read { path, source })
        })
        .collect()
}

/// What is read of `cargo metadata --no-deps`.
#[derive(serde::Deserialize)]
struct Metadata {
    packages: Vec<MetadataPackage>,
    workspace_members: Vec<String>,
}

#[derive(serde::Deserialize)]
struct MetadataPackage {
    name: String,
    id: String,
    dependencies: Vec<MetadataDependency>,
}

#[derive(serde::Deserialize)]
struct MetadataDependency {
    /// The package's name (not a rename).
    name: String,
}

/// The workspace's crates and what each depends on, every kind of
/// dependency and every target platform alike.
pub fn packages(root: &Path) -> Result<Vec<Package>, TreeError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .map_err(|e| TreeError::Metadata(e.to_string()))?;
    if !out.status.success() {
        return Err(TreeError::Metadata(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let metadata: Metadata =
        serde_json::from_slice(&out.stdout).map_err(|e| TreeError::Metadata(e.to_string()))?;
    Ok(metadata
        .packages
        .into_iter()
        .filter(|p| metadata.workspace_members.contains(&p.id))
        .map(|p| Package {
            name: p.name,
            dependencies: p.dependencies.into_iter().map(|d| d.name).collect(),
        })
        .collect())
}
