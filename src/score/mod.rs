//! `tagger score`: batch scoring of files and folders.
//!
//! The command line's paths are walked first ([`walk`]: deterministic order, `--shard`
//! applied), while the models load on another thread. Then each file is read, recognised by its
//! first bytes, decoded, preprocessed and inferred on a rayon pool of `--jobs` threads (one core
//! per inference), and its record is written ([`output`]) in input order as soon as it and every
//! file before it are done. At most a bounded window of files is in flight or waiting to be
//! written, so memory stays flat however many files there are (only the path list is held).
//!
//! Which files are scored: every file named on the command line; in folders, every file whose
//! first bytes are JPEG, PNG, GIF, BMP, TIFF or WebP whatever its name, plus every file whose
//! extension claims an image format (`.jpg`, `.heic`, ...) even if its content is not one (it is
//! reported as `unsupported_format`, so a mislabelled or broken photo is never silently
//! missed). Other files in folders (sidecars, videos, text) are skipped and only counted.
//!
//! A run ends [`Ending::Complete`] with the number of failed files (the CLI exits 1 when there
//! are any), or [`Ending::ReaderGone`] when stdout closed (`tagger score ... | head`): quietly.

pub mod output;
pub mod progress;
pub mod shard;
pub mod walk;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::digits::DigitMode;
use crate::image::{self, DecodeOptions, ImageFormat};
use crate::models::{Head, LoadOptions, ModelName, Models, Weights};
use crate::pipeline::{self, Classification, ClassifyOptions, DigitReading};

pub use output::OutputFormat;
pub use shard::Shard;
use walk::{Entry, WalkOptions};

/// Why one file has no answer: a stable machine-readable code and a message for people.
///
/// The codes are the library's ([`crate::Error::code`]: `unsupported_format`, `undecodable_image`,
/// `image_too_large`, `empty_image`, ...) plus the walk's own: `unreadable` (permission denied,
/// I/O error, broken symbolic link), `not_found`, `symlink_loop`, `not_a_file`, `too_deep`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    /// Stable code.
    pub code: &'static str,
    /// What happened.
    pub message: String,
}

impl Problem {
    /// A problem with this code and message.
    pub fn new(code: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            code,
            message: message.into(),
        }
    }
}

impl From<crate::Error> for Problem {
    fn from(e: crate::Error) -> Problem {
        Problem::new(e.code(), e.to_string())
    }
}

/// What became of one entry.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Tagged by an ImageNet model.
    Tags(Classification),
    /// Read by the digits model.
    Digit(DigitReading),
    /// Not scored; reported.
    Failed(Problem),
    /// Found in a folder but not an image: not reported, only counted.
    Skipped,
}

/// Extensions that claim an image: a file found in a folder with one of these is reported even
/// when its content is not an image we decode.
const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "jpe", "jfif", "png", "gif", "bmp", "dib", "tif", "tiff", "webp", "heic",
    "heif", "avif", "jxl", "jp2",
];

/// Whether a file name claims to be an image (by extension, case-insensitively).
pub fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Everything `score` needs, resolved from flags, environment and defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Files and folders, in command-line order.
    pub paths: Vec<String>,
    /// The model; `None`: the default tagging model.
    pub model: Option<ModelName>,
    /// The default tagging model override.
    pub tags_model: Option<ModelName>,
    /// top-k, min-confidence and decoding.
    pub classify: ClassifyOptions,
    /// Output format.
    pub format: OutputFormat,
    /// Worker threads.
    pub jobs: usize,
    /// Output file; `None`: stdout.
    pub output: Option<PathBuf>,
    /// Which part of the list.
    pub shard: Shard,
    /// Walk sub-folders.
    pub recursive: bool,
    /// How the digits model reads pictures.
    pub digits_preprocess: DigitMode,
}

/// Why a run stopped before every record was written.
#[derive(Debug)]
pub enum Error {
    /// The models could not be loaded, or the one asked for cannot score.
    Model(crate::Error),
    /// The results could not be written (`--output` or stdout).
    Output(String),
}

impl From<crate::Error> for Error {
    fn from(e: crate::Error) -> Self {
        Error::Model(e)
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every file has its record; `failed` of them are error records.
    Complete {
        /// Files with an error record.
        failed: usize,
    },
    /// The reader of stdout went away (`tagger score ... | head`): stopped early, quietly.
    ReaderGone,
}

/// Scores every image under the given paths, writes the records and a summary on stderr.
pub fn run(config: Config) -> Result<Ending, Error> {
    let started = Instant::now();
    // Created first, so a bad --output fails before any work.
    let mut sink = match &config.output {
        Some(path) => Sink::File(AtomicFile::create(path).map_err(|e| {
            Error::Output(format!("cannot write --output {}: {e}", path.display()))
        })?),
        None => Sink::Stdout(BufWriter::with_capacity(64 * 1024, io::stdout())),
    };

    // Load the models while the folders are walked.
    let load = LoadOptions {
        threads_per_inference: 1,
        tags_model: config.tags_model,
        ..LoadOptions::default()
    };
    let loader = std::thread::spawn(move || Models::load_embedded(&load));
    let mut progress = progress::Progress::new(0);
    let walk_options = WalkOptions {
        recursive: config.recursive,
        shard: config.shard,
    };
    let entries = walk::walk(&config.paths, walk_options, &mut |seen| {
        progress.scanning(seen)
    });
    let models = loader
        .join()
        .map_err(|_| crate::Error::Internal("model loading panicked".into()))??;
    let load_secs = started.elapsed().as_secs_f64();

    let task = match config.model.unwrap_or_else(|| models.default_tags()) {
        ModelName::Digits => Task::Digits,
        name => Task::Tags(name),
    };
    let model = models.get(task.model())?;
    if model.manifest.weights == Weights::StandIn {
        let warning = pipeline::stand_in_warning(model.name());
        if !pipeline::log_stand_in_once(model.name(), &warning)
            || !log::log_enabled!(log::Level::Warn)
        {
            // The logger is off or already said it: say it once here anyway.
            eprintln!("tagger: warning: {warning}");
        }
    }
    let longest_label = match &model.head {
        Head::Tags { labels, .. } => labels.iter().map(|l| l.chars().count()).max().unwrap_or(0),
        Head::Digits { .. } => 1,
    };
    let longest_path = entries
        .iter()
        .map(|e| e.display.chars().count())
        .max()
        .unwrap_or(0);
    let weights = model.manifest.weights;
    let stdout_is_terminal = config.output.is_none() && io::stdout().is_terminal();

    let mut writer = output::RecordWriter::new(
        &mut sink,
        config.format,
        weights,
        longest_path,
        longest_label,
    );
    let context = Arc::new(Context {
        models,
        task,
        classify: config.classify,
        digits_preprocess: config.digits_preprocess,
        cancel: AtomicBool::new(false),
    });
    progress.clear();
    progress.start(entries.len());
    let scoring = Instant::now();
    let result = score_all(
        &context,
        entries,
        config.jobs,
        &mut writer,
        &mut progress,
        stdout_is_terminal,
    );
    progress.clear();
    let counts = match result {
        Ok(counts) => counts,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            // The reader went away (`| head`): stop quietly, as Unix tools do.
            context.cancel.store(true, Ordering::Relaxed);
            return Ok(Ending::ReaderGone);
        }
        Err(e) => {
            context.cancel.store(true, Ordering::Relaxed);
            return Err(Error::Output(format!("writing results: {e}")));
        }
    };
    match sink.finish() {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(Ending::ReaderGone),
        Err(e) => return Err(Error::Output(format!("writing results: {e}"))),
    }

    let secs = scoring.elapsed().as_secs_f64();
    let files = counts.ok + counts.failed;
    let rate = if secs > 0.0 { files as f64 / secs } else { 0.0 };
    let mut summary = format!(
        "tagger score: {files} files: {} ok, {} failed",
        counts.ok, counts.failed
    );
    if counts.skipped > 0 {
        summary += &format!(" (and {} non-image files skipped)", counts.skipped);
    }
    summary += &format!(
        "; {secs:.2} s, {rate:.1} images/s; model {}, jobs {}, start-up {load_secs:.2} s",
        task.model(),
        config.jobs,
    );
    if config.shard != Shard::ALL {
        summary += &format!(", shard {}", config.shard);
    }
    eprintln!("{summary}");
    Ok(Ending::Complete {
        failed: counts.failed,
    })
}

/// What to run on each image.
#[derive(Debug, Clone, Copy)]
enum Task {
    Tags(ModelName),
    Digits,
}

impl Task {
    fn model(self) -> ModelName {
        match self {
            Task::Tags(name) => name,
            Task::Digits => ModelName::Digits,
        }
    }
}

/// Shared by the workers.
struct Context {
    models: Models,
    task: Task,
    classify: ClassifyOptions,
    digits_preprocess: DigitMode,
    /// Set when the run ends early: queued files are not scored.
    cancel: AtomicBool,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    ok: usize,
    failed: usize,
    skipped: usize,
}

/// Scores `entries` on `jobs` threads and writes each record in input order as soon as it and
/// all before it are done. At most `window` files are queued, running or waiting to be written.
fn score_all<W: Write>(
    context: &Arc<Context>,
    entries: Vec<Entry>,
    jobs: usize,
    writer: &mut output::RecordWriter<W>,
    progress: &mut progress::Progress,
    stdout_is_terminal: bool,
) -> io::Result<Counts> {
    writer.header()?;
    writer.flush()?;
    let total = entries.len();
    let entries: Arc<[Entry]> = entries.into();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .thread_name(|i| format!("tagger-score-{i}"))
        .build()
        .map_err(io::Error::other)?;
    // Enough slack that one slow file (a 50 MP photo) does not idle the other workers, small
    // enough that memory does not depend on the number of files (records are small).
    let window = (jobs * 16).max(64);
    let (sender, receiver) = mpsc::channel::<(usize, Outcome)>();
    let mut ready: BTreeMap<usize, Outcome> = BTreeMap::new();
    let mut counts = Counts::default();
    let (mut dispatched, mut written) = (0usize, 0usize);

    while written < total {
        while dispatched < total && dispatched < written + window {
            let (context, entries, sender) = (context.clone(), entries.clone(), sender.clone());
            let index = dispatched;
            pool.spawn(move || {
                let outcome = if context.cancel.load(Ordering::Relaxed) {
                    Outcome::Skipped
                } else {
                    catch_unwind(AssertUnwindSafe(|| score_one(&context, &entries[index])))
                        .unwrap_or_else(|_| {
                            Outcome::Failed(Problem::new(
                                "internal_error",
                                "internal error: scoring this file panicked",
                            ))
                        })
                };
                let _ = sender.send((index, outcome));
            });
            dispatched += 1;
        }
        match receiver.recv_timeout(Duration::from_millis(100)) {
            Ok((index, outcome)) => {
                ready.insert(index, outcome);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                progress.update(written);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(io::Error::other("the worker pool stopped"));
            }
        }
        while let Ok((index, outcome)) = receiver.try_recv() {
            ready.insert(index, outcome);
        }
        let mut wrote_any = false;
        while let Some(outcome) = ready.remove(&written) {
            match &outcome {
                Outcome::Tags(_) | Outcome::Digit(_) => counts.ok += 1,
                Outcome::Failed(_) => counts.failed += 1,
                Outcome::Skipped => counts.skipped += 1,
            }
            if !matches!(outcome, Outcome::Skipped) {
                if stdout_is_terminal && !wrote_any {
                    progress.clear();
                }
                writer.record(&entries[written].display, &outcome)?;
                wrote_any = true;
            }
            written += 1;
        }
        if wrote_any {
            writer.flush()?;
        }
        progress.update(written);
    }
    Ok(counts)
}

/// Reads, recognises and scores one entry.
fn score_one(context: &Context, entry: &Entry) -> Outcome {
    if let Some(problem) = &entry.problem {
        return Outcome::Failed(problem.clone());
    }
    let decode = &context.classify.decode;
    let bytes = match read_image(
        &entry.path,
        entry.explicit || is_image_name(&entry.path),
        decode,
    ) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Outcome::Skipped,
        Err(problem) => return Outcome::Failed(problem),
    };
    let result = match context.task {
        Task::Tags(model) => {
            pipeline::classify(&context.models, model, &bytes, &context.classify).map(Outcome::Tags)
        }
        Task::Digits => {
            pipeline::read_digit(&context.models, &bytes, context.digits_preprocess, decode)
                .map(Outcome::Digit)
        }
    };
    result.unwrap_or_else(|e| Outcome::Failed(e.into()))
}

/// How many leading bytes decide whether a file is an image.
const SNIFF_BYTES: usize = 64;

/// The file's bytes if it is an image; `None` if it is not and need not be reported;
/// a problem if it cannot be read, or is not an image but must be reported (`report`).
fn read_image(
    path: &Path,
    report: bool,
    decode: &DecodeOptions,
) -> Result<Option<Vec<u8>>, Problem> {
    let mut file = File::open(path).map_err(|e| walk::io_problem(&e, "cannot open"))?;
    let len = file.metadata().map_or(0, |m| m.len());
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    (&mut file)
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|e| walk::io_problem(&e, "cannot read"))?;
    if ImageFormat::sniff(&head).is_none() {
        if !report {
            return Ok(None);
        }
        // The library's own verdict and message on these bytes (`unsupported_format` or
        // `empty_image`), without reading the rest of a possibly huge non-image.
        return Err(match image::decode(&head, decode) {
            Err(e) => e.into(),
            Ok(_) => Problem::new("unsupported_format", "not a recognised image"),
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0).max(head.len()));
    bytes.extend_from_slice(&head);
    file.read_to_end(&mut bytes)
        .map_err(|e| walk::io_problem(&e, "cannot read"))?;
    Ok(Some(bytes))
}

/// Where records go.
enum Sink {
    Stdout(BufWriter<io::Stdout>),
    File(AtomicFile),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Stdout(w) => w.write(buf),
            Sink::File(f) => f.writer.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(w) => w.flush(),
            // Flushed to the temporary file; it only appears under its name at the end.
            Sink::File(f) => f.writer.flush(),
        }
    }
}

impl Sink {
    fn finish(self) -> io::Result<()> {
        match self {
            Sink::Stdout(mut w) => w.flush(),
            Sink::File(f) => f.commit(),
        }
    }
}

/// A file written under a temporary name next to its destination and renamed into place when
/// complete, so readers never see half a result file; removed if the run fails.
struct AtomicFile {
    writer: BufWriter<File>,
    temp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl AtomicFile {
    fn create(dest: &Path) -> io::Result<AtomicFile> {
        let name = dest
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
        if dest.is_dir() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "is a folder"));
        }
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".tmp-{}", std::process::id()));
        let temp = dest.with_file_name(temp_name);
        let file = File::create(&temp)?;
        Ok(AtomicFile {
            writer: BufWriter::with_capacity(64 * 1024, file),
            temp,
            dest: dest.to_path_buf(),
            committed: false,
        })
    }

    fn commit(mut self) -> io::Result<()> {
        self.writer.flush()?;
        self.writer.get_ref().sync_all()?;
        fs::rename(&self.temp, &self.dest)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_are_recognised_case_insensitively() {
        assert!(is_image_name(Path::new("a/IMG_0001.JPG")));
        assert!(is_image_name(Path::new("b.heic")));
        assert!(!is_image_name(Path::new("notes.txt")));
        assert!(!is_image_name(Path::new("jpg")));
    }
}
