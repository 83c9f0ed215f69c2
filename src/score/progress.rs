//! The progress bar (indicatif): drawn on stderr only when stderr is a terminal, never when it
//! is piped or redirected (logs and CI output stay clean).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// While the folders are walked: how many entries so far.
const SCANNING: &str = "{spinner} scanning: {pos} files";
/// While files are scored: a bar, done/total, images/s and the time left.
const SCORING: &str = "[{bar:24}] {pos}/{len} {percent:>3}%  {rate} images/s  ETA {eta}";

/// A one-line progress display on stderr.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A display on stderr, hidden unless stderr is a terminal.
    pub fn new() -> Progress {
        Progress::with_target(ProgressDrawTarget::stderr())
    }

    /// A display drawn to `target`.
    pub fn with_target(target: ProgressDrawTarget) -> Progress {
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(style(SCANNING));
        Progress { bar }
    }

    /// Shows "scanning" while the file list is built (`seen` entries so far).
    pub fn scanning(&self, seen: usize) {
        self.bar.set_position(seen as u64);
    }

    /// Turns into a bar for `total` files and restarts the clock (after the file list is built).
    pub fn start(&self, total: usize) {
        self.bar.set_style(style(SCORING));
        self.bar.set_length(total as u64);
        self.bar.reset();
    }

    /// `done` files of the total are finished.
    pub fn update(&self, done: usize) {
        self.bar.set_position(done as u64);
    }

    /// Runs `f` with the bar erased, so that what `f` writes to the same terminal is not
    /// drawn over; the bar comes back afterwards.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// Erases the bar for good.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("the templates are tested")
        .with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}", state.per_sec());
            },
        )
        .progress_chars("#>-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::{InMemoryTerm, TermLike};

    #[test]
    fn a_terminal_sees_the_scan_then_the_bar_with_rate_and_eta() {
        let term = InMemoryTerm::new(4, 100);
        let progress = Progress::with_target(ProgressDrawTarget::term_like(Box::new(term.clone())));
        progress.scanning(1024);
        progress.bar.tick();
        assert!(
            term.contents().contains("scanning: 1024 files"),
            "{}",
            term.contents()
        );
        progress.start(10);
        progress.update(3);
        progress.bar.tick();
        let line = term.contents();
        assert!(line.starts_with("[#######>"), "{line}");
        assert!(line.contains("] 3/10  30%"), "{line}");
        assert!(line.contains(" images/s  ETA "), "{line}");
        progress.suspend(|| assert_eq!(term.contents(), ""));
        progress.finish();
        assert_eq!(term.contents(), "");
        assert_eq!(term.width(), 100);
    }

    #[test]
    fn nothing_is_drawn_when_hidden() {
        let progress = Progress::with_target(ProgressDrawTarget::hidden());
        progress.start(5);
        progress.update(5);
        assert!(progress.bar.is_hidden());
    }
}
