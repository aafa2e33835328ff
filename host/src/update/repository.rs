//! A logic repository as the publisher writes it and every device reads
//! it: one TUF target, the logic, with its version and world in the
//! target's custom metadata; and where a component file's repository is.

use std::path::{Path, PathBuf};

/// The one target of a logic repository.
pub const TARGET: &str = "logic.wasm";
/// Custom target metadata: the logic's version.
pub const VERSION_KEY: &str = "version";
/// Custom target metadata: the WIT world it is built for.
pub const WORLD_KEY: &str = "world";

/// The repository of a component file: `COMPONENT.tuf` next to it, where
/// `host sign` writes it.
pub fn repository_of(component: &Path) -> PathBuf {
    let mut p = component.as_os_str().to_owned();
    p.push(".tuf");
    PathBuf::from(p)
}
