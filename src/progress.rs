//! Progress reporting for long work (pull, build, push): indicatif bars on a terminal, plain status lines
//! when output is a pipe or a log (one line per state change, never a carriage-return mess), nothing with
//! `-q`. Like docker, progress goes to stdout.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Live bars (stdout is a terminal).
    Bars,
    /// One line per state change.
    Plain,
    /// Nothing but the final result.
    Quiet,
}

/// A set of tasks shown together (one per layer during a pull).
pub struct Progress {
    mode: Mode,
    multi: Option<MultiProgress>,
    plain: Mutex<()>,
}

impl Progress {
    /// Bars on a terminal, plain lines otherwise; `quiet` silences both.
    pub fn new(quiet: bool) -> Progress {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stdout().is_terminal() {
            Mode::Bars
        } else {
            Mode::Plain
        };
        Progress::with_mode(mode)
    }

    /// A reporter in a given mode (tests and callers that decided already).
    pub fn with_mode(mode: Mode) -> Progress {
        let multi =
            (mode == Mode::Bars).then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout()));
        Progress { mode, multi, plain: Mutex::new(()) }
    }

    /// The mode in use.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Print a line that is not tied to a task (above the bars when they are live).
    pub fn line(&self, msg: &str) {
        match (&self.mode, &self.multi) {
            (Mode::Quiet, _) => {}
            (_, Some(m)) => {
                let _ = m.println(msg);
            }
            _ => self.plain_line(msg),
        }
    }

    fn plain_line(&self, msg: &str) {
        let _g = self.plain.lock();
        // Through output.rs: a closed pipe drops the lines, the pull or build goes on to the end.
        crate::outln!("{msg}");
    }

    /// A task named `id` (docker shows the first 12 hex digits of a layer digest) with `total` bytes to go.
    pub fn task(&self, id: &str, total: Option<u64>) -> Task<'_> {
        let bar = self.multi.as_ref().map(|m| {
            let bar = m.add(match total {
                Some(t) => ProgressBar::new(t),
                None => ProgressBar::new_spinner(),
            });
            let style = ProgressStyle::with_template(
                "{prefix}: {msg:<18} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(id.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Task { progress: self, id: id.to_string(), bar, status: String::new() }
    }
}

/// One unit of work with a status and a byte count.
pub struct Task<'a> {
    progress: &'a Progress,
    id: String,
    bar: Option<ProgressBar>,
    status: String,
}

impl Task<'_> {
    /// Change the status text ("Downloading", "Extracting", …); plain mode prints it once.
    pub fn status(&mut self, status: &str) {
        if self.status == status {
            return;
        }
        self.status = status.to_string();
        match &self.bar {
            Some(b) => b.set_message(status.to_string()),
            None if self.progress.mode == Mode::Plain => {
                self.progress.plain_line(&format!("{}: {status}", self.id))
            }
            None => {}
        }
    }

    /// Move the bytes counter forward.
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// Set the bytes counter (after a resume starts from an offset).
    pub fn set_position(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.set_position(n);
        }
    }

    /// Final status; the bar stops but stays on screen, as docker's do.
    pub fn finish(mut self, status: &str) {
        self.status(status);
        if let Some(b) = &self.bar {
            b.disable_steady_tick();
            b.set_style(
                ProgressStyle::with_template("{prefix}: {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.finish();
        }
    }
}
