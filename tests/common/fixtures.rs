//! Test data: the files under `tests/fixtures/` (written by `models/make_fixtures.py` and
//! `models/digits/make_fixtures.py`), scratch folders, and the one seeded random generator.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

pub use super::rng::Rng;

/// `tests/fixtures/<relative>`.
pub fn path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(relative)
}

/// The bytes of `tests/fixtures/<relative>`.
pub fn fixture(relative: &str) -> Vec<u8> {
    let path = path(relative);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The bytes of `tests/fixtures/images/<name>`.
pub fn image(name: &str) -> Vec<u8> {
    fixture(&format!("images/{name}"))
}

/// `tests/fixtures/reference.json`: the Python reference pipeline's figures.
pub fn reference() -> &'static serde_json::Value {
    static REFERENCE: OnceLock<serde_json::Value> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        serde_json::from_slice(&fixture("reference.json")).expect("reference.json is JSON")
    })
}

/// A fresh folder under the system temp dir, removed (with its contents) when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// `tagger-test-<tag>-<pid>-<n>`, empty.
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "tagger-test-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copies `tests/fixtures/images/<name>` to `<this folder>/<to>`, creating folders.
    pub fn copy_image(&self, name: &str, to: &str) -> PathBuf {
        let dest = self.path.join(to);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(path("images").join(name), &dest).unwrap();
        dest
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
