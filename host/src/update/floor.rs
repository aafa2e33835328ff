//! The lowest version a device accepts: the highest version it has
//! accepted, whoever offered it (the watched file, the broker), kept across
//! restarts in the cache directory. Updates below it are downgrades.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// A device's version floor.
#[derive(Debug)]
pub struct Floor {
    version: AtomicU64,
    file: Option<PathBuf>,
}

impl Floor {
    /// The floor of a device: `start` (the version it starts with) or what
    /// `file` remembers, whichever is higher.
    pub fn new(start: u64, file: Option<PathBuf>) -> Self {
        let remembered = file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        Self {
            version: AtomicU64::new(start.max(remembered)),
            file,
        }
    }

    /// The lowest version accepted now.
    pub fn get(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// Records that `version` was accepted.
    pub fn raise(&self, version: u64) {
        let before = self.version.fetch_max(version, Ordering::Relaxed);
        if version > before
            && let Some(file) = &self.file
        {
            if let Some(dir) = file.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            if let Err(e) = std::fs::write(file, version.to_string()) {
                tracing::warn!(target: "host::update", "cannot remember version {version} in {}: {e}", file.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_only_rises_and_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("d.floor");
        let floor = Floor::new(2, Some(file.clone()));
        floor.raise(5);
        floor.raise(3);
        assert_eq!(floor.get(), 5);
        assert_eq!(
            Floor::new(1, Some(file)).get(),
            5,
            "remembered across restarts"
        );
        assert_eq!(Floor::new(7, None).get(), 7);
    }
}
