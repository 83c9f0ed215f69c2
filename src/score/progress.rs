//! The progress bar: drawn on stderr only when stderr is a terminal, never when it is piped or
//! redirected (logs and CI output stay clean).

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the bar is redrawn at most.
const REDRAW: Duration = Duration::from_millis(100);
const BAR_WIDTH: usize = 24;

/// A one-line progress display: done/total, a bar, images/s and the time left.
pub struct Progress {
    enabled: bool,
    total: usize,
    start: Instant,
    last_draw: Option<Instant>,
    visible: bool,
}

impl Progress {
    /// A bar for `total` files, shown only if stderr is a terminal.
    pub fn new(total: usize) -> Progress {
        Progress {
            enabled: io::stderr().is_terminal(),
            total,
            start: Instant::now(),
            last_draw: None,
            visible: false,
        }
    }

    /// Whether anything is drawn at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Shows "scanning" while the file list is built (`seen` entries so far).
    pub fn scanning(&mut self, seen: usize) {
        if self.due() {
            self.draw(&format!("scanning: {seen} files"));
        }
    }

    /// Redraws the bar for `done` files, at most every 100 ms.
    pub fn update(&mut self, done: usize) {
        if !self.due() {
            return;
        }
        let elapsed = self.start.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 {
            done as f64 / elapsed
        } else {
            0.0
        };
        let fraction = if self.total == 0 {
            1.0
        } else {
            done as f64 / self.total as f64
        };
        let filled = ((fraction * BAR_WIDTH as f64) as usize).min(BAR_WIDTH);
        let eta = if rate > 0.0 && done > 0 {
            clock((self.total.saturating_sub(done)) as f64 / rate)
        } else {
            "--:--".to_string()
        };
        let line = format!(
            "[{}{}] {done}/{} {:>3.0}%  {rate:.1} images/s  ETA {eta}",
            "#".repeat(filled),
            "-".repeat(BAR_WIDTH - filled),
            self.total,
            fraction * 100.0,
        );
        self.draw(&line);
    }

    /// Restarts the clock (after the file list is built).
    pub fn start(&mut self, total: usize) {
        self.total = total;
        self.start = Instant::now();
        self.last_draw = None;
    }

    /// Erases the bar (before other output reaches the same terminal, and at the end).
    pub fn clear(&mut self) {
        if self.visible {
            let mut err = io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.visible = false;
        }
    }

    fn due(&mut self) -> bool {
        if !self.enabled {
            return false;
        }
        let now = Instant::now();
        match self.last_draw {
            Some(last) if now.duration_since(last) < REDRAW => false,
            _ => {
                self.last_draw = Some(now);
                true
            }
        }
    }

    fn draw(&mut self, line: &str) {
        let mut err = io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
        self.visible = true;
    }
}

/// `m:ss` or `h:mm:ss`.
fn clock(seconds: f64) -> String {
    let s = seconds.round().max(0.0) as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn clock_formats() {
        assert_eq!(super::clock(5.4), "0:05");
        assert_eq!(super::clock(125.0), "2:05");
        assert_eq!(super::clock(3725.0), "1:02:05");
    }
}
