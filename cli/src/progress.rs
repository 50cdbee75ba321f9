//! Progress of the CLI's long commands (`dead replay --all`, `dead purge
//! --all`, `migrate`): on a terminal, a bar on stderr with the counts, the
//! rate and the time left, redrawn in place; otherwise a plain line on
//! stderr at every tenth of the work, so that a log shows how far it got.
//! What the command reports goes to stdout either way, above the bar.

use std::io::IsTerminal;

use anyhow::Result;

use crate::print_out;

pub struct Progress {
    what: &'static str,
    total: u64,
    done: u64,
    bar: Option<indicatif::ProgressBar>,
    /// Plain lines: the count at which the next is written.
    next_line: u64,
}

impl Progress {
    /// Progress of `total` steps of `what` ("replay", "purge", ...).
    pub fn new(what: &'static str, total: u64) -> Self {
        let bar = (total > 0 && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:40}] {human_pos}/{human_len} ({percent}%) {msg} {elapsed} elapsed, {eta} left",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(what);
            bar
        });
        if bar.is_none() && total > 0 {
            eprintln!("{what}: 0/{total}");
        }
        Progress {
            what,
            total,
            done: 0,
            bar,
            next_line: step(total),
        }
    }

    /// `n` more steps done.
    pub fn advance(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(bar) => bar.inc(n),
            None if self.done >= self.next_line => {
                eprintln!("{}: {}/{}", self.what, self.done, self.total);
                while self.next_line <= self.done {
                    self.next_line += step(self.total);
                }
            }
            None => {}
        }
    }

    /// What the step is at (shown beside the bar).
    pub fn at(&self, text: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(text.to_owned());
        }
    }

    /// A line of the command's report, on stdout, above the bar.
    pub fn println(&self, text: &str) -> Result<()> {
        match &self.bar {
            Some(bar) => bar.suspend(|| print_out(text)),
            None => print_out(text),
        }
    }

    /// Removes the bar; the command prints its summary after.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A tenth of `total`, at least one.
fn step(total: u64) -> u64 {
    (total / 10).max(1)
}
