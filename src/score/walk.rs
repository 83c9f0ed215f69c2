//! Finding the files to score: a deterministic walk of the command-line paths.
//!
//! - Arguments are taken in the order given; a directory's entries are visited in byte order
//!   of their names (not locale order), depth first, so every machine lists the same files in
//!   the same order.
//! - Symbolic links are followed, to files and to directories. A link that leads back into one
//!   of its own ancestor directories, or a chain of links that never ends, is reported as a
//!   `symlink_loop` entry instead of being followed; a dangling link as `unreadable`.
//! - A directory that cannot be listed is reported as `unreadable`, and the walk goes on.
//! - Only regular files are candidates (FIFOs, sockets and devices met in a folder are passed
//!   over; given as an argument they are reported as `not_a_file`).
//! - Whether a candidate is an image is decided later, from its first bytes (see
//!   [`super::is_image_name`] and the worker): files are recognised by content, not extension.
//!
//! Entries outside the requested [`Shard`] are dropped as they are found, so each shard holds
//! only its own part of the list.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::shard::Shard;
use super::Problem;

/// One thing to report on: a candidate file, or a problem met while walking.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The path to open.
    pub path: PathBuf,
    /// The path as printed in records (lossy UTF-8).
    pub display: String,
    /// Named on the command line (always reported, image or not) rather than found in a folder.
    pub explicit: bool,
    /// Set when the walk itself failed here; the entry is reported as this error.
    pub problem: Option<Problem>,
}

/// How to walk.
#[derive(Debug, Clone, Copy)]
pub struct WalkOptions {
    /// Descend into sub-folders.
    pub recursive: bool,
    /// Keep only this shard's entries.
    pub shard: Shard,
}

/// Deeper folders than this are reported instead of walked (a guard, not a expected limit).
const MAX_DEPTH: usize = 512;

/// Lists the entries under `roots`, in deterministic order. `seen` is called with the number of
/// entries looked at so far, now and then (for a "scanning" indicator).
pub fn walk(roots: &[String], options: WalkOptions, seen: &mut dyn FnMut(usize)) -> Vec<Entry> {
    let mut walker = Walker {
        options,
        entries: Vec::new(),
        seen: 0,
        report: seen,
    };
    for root in roots {
        walker.root(root);
    }
    walker.entries
}

struct Walker<'a> {
    options: WalkOptions,
    entries: Vec<Entry>,
    seen: usize,
    report: &'a mut dyn FnMut(usize),
}

/// A directory's identity, to recognise a link back to an ancestor.
type DirId = (u64, u64);

#[cfg(unix)]
fn dir_id(_path: &Path, meta: &fs::Metadata) -> Option<DirId> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn dir_id(path: &Path, _meta: &fs::Metadata) -> Option<DirId> {
    // No inode numbers: identify a directory by a hash of its canonical path.
    let canonical = fs::canonicalize(path).ok()?;
    Some((
        0,
        super::shard::fnv1a64(canonical.to_string_lossy().as_bytes()),
    ))
}

/// The bytes of a relative path, `/`-separated on every platform.
fn rel_bytes(rel: &Path) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        rel.as_os_str().as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        rel.to_string_lossy().replace('\\', "/").into_bytes()
    }
}

/// Whether an I/O error is "too many levels of symbolic links".
pub fn is_symlink_loop(e: &io::Error) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const ELOOP: i32 = 40;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const ELOOP: i32 = 62; // macOS and the BSDs
    e.raw_os_error() == Some(ELOOP)
}

/// The problem an I/O error on `path` amounts to.
pub fn io_problem(e: &io::Error, what: &str) -> Problem {
    if is_symlink_loop(e) {
        Problem::new("symlink_loop", format!("symbolic link loop: {e}"))
    } else if e.kind() == io::ErrorKind::NotFound {
        Problem::new("not_found", format!("{what}: {e}"))
    } else {
        Problem::new("unreadable", format!("{what}: {e}"))
    }
}

impl Walker<'_> {
    fn tick(&mut self) {
        self.seen += 1;
        if self.seen.is_multiple_of(1024) {
            (self.report)(self.seen);
        }
    }

    fn push(&mut self, path: PathBuf, rel: &Path, explicit: bool, problem: Option<Problem>) {
        self.tick();
        if !self.options.shard.contains(&rel_bytes(rel)) {
            return;
        }
        let display = path.to_string_lossy().into_owned();
        self.entries.push(Entry {
            path,
            display,
            explicit,
            problem,
        });
    }

    fn root(&mut self, root: &str) {
        let path = PathBuf::from(root);
        // A file's shard key is its name; a folder's entries are keyed relative to the folder.
        let name = path
            .file_name()
            .map_or_else(|| PathBuf::from(root), PathBuf::from);
        match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                let ancestors = dir_id(&path, &meta).into_iter().collect();
                self.dir(&path, Path::new(""), ancestors);
            }
            Ok(meta) if meta.is_file() => self.push(path, &name, true, None),
            Ok(_) => self.push(
                path,
                &name,
                true,
                Some(Problem::new(
                    "not_a_file",
                    "not a regular file or folder (FIFO, socket or device)",
                )),
            ),
            Err(e) => {
                let problem = dangling(&path, &e).unwrap_or_else(|| io_problem(&e, "cannot open"));
                self.push(path, &name, true, Some(problem));
            }
        }
    }

    fn dir(&mut self, dir: &Path, rel: &Path, ancestors: Vec<DirId>) {
        let mut children: Vec<(std::ffi::OsString, fs::FileType)> = Vec::new();
        let listing = fs::read_dir(dir).and_then(|read| {
            for entry in read {
                let entry = entry?;
                // `file_type` does not follow links; fall back to `symlink_metadata`.
                let kind = match entry.file_type() {
                    Ok(kind) => kind,
                    Err(_) => fs::symlink_metadata(entry.path())?.file_type(),
                };
                children.push((entry.file_name(), kind));
            }
            Ok(())
        });
        if let Err(e) = listing {
            let problem = io_problem(&e, "cannot list folder");
            self.push(dir.to_path_buf(), rel, false, Some(problem));
            return;
        }
        children.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (name, kind) in children {
            let path = dir.join(&name);
            let child_rel = rel.join(&name);
            if kind.is_file() {
                self.push(path, &child_rel, false, None);
            } else if kind.is_dir() {
                if self.options.recursive {
                    self.subdir(path, &child_rel, &ancestors);
                }
            } else if kind.is_symlink() {
                match fs::metadata(&path) {
                    Ok(meta) if meta.is_file() => self.push(path, &child_rel, false, None),
                    Ok(meta) if meta.is_dir() => {
                        if self.options.recursive {
                            self.subdir(path, &child_rel, &ancestors);
                        }
                    }
                    Ok(_) => {} // a link to a FIFO, socket or device: passed over
                    Err(e) => {
                        let problem = dangling(&path, &e)
                            .unwrap_or_else(|| io_problem(&e, "cannot follow link"));
                        self.push(path, &child_rel, false, Some(problem));
                    }
                }
            }
            // FIFOs, sockets, devices: passed over (opening a FIFO would block).
        }
    }

    fn subdir(&mut self, path: PathBuf, rel: &Path, ancestors: &[DirId]) {
        let meta = match fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) => {
                let problem = io_problem(&e, "cannot open folder");
                self.push(path, rel, false, Some(problem));
                return;
            }
        };
        let id = dir_id(&path, &meta);
        if let Some(id) = id {
            if ancestors.contains(&id) {
                let target = fs::read_link(&path)
                    .map(|t| format!(" (-> {})", t.to_string_lossy()))
                    .unwrap_or_default();
                let problem = Problem::new(
                    "symlink_loop",
                    format!("symbolic link loop: leads back into its own parent folders{target}"),
                );
                self.push(path, rel, false, Some(problem));
                return;
            }
        }
        if ancestors.len() >= MAX_DEPTH {
            let problem = Problem::new(
                "too_deep",
                format!("more than {MAX_DEPTH} nested folders; not walked"),
            );
            self.push(path, rel, false, Some(problem));
            return;
        }
        let mut chain = ancestors.to_vec();
        chain.extend(id);
        self.dir(&path, rel, chain);
    }
}

/// A link whose target is missing, as a clearer problem than "not found".
fn dangling(path: &Path, e: &io::Error) -> Option<Problem> {
    if e.kind() != io::ErrorKind::NotFound {
        return None;
    }
    let meta = fs::symlink_metadata(path).ok()?;
    meta.file_type().is_symlink().then(|| {
        let target = fs::read_link(path)
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default();
        Problem::new(
            "unreadable",
            format!("broken symbolic link: its target `{target}` does not exist"),
        )
    })
}
