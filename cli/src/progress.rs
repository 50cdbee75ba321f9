//! Progress of the CLI's long commands (`dead replay`, `dead purge`,
//! `migrate`): on a terminal, a bar on stderr with the counts, the time
//! spent and the time left, redrawn in place; otherwise a plain line on
//! stderr at each tenth of the work (the last one at the total), so that
//! a log shows how far it got. What the command reports goes to stdout
//! either way, above the bar.

use std::io::IsTerminal;

use anyhow::Result;

use crate::print_out;

/// How far one command got.
pub struct Progress {
    /// The command's word for a step ("replay", "purge", "migrate").
    what: &'static str,
    total: u64,
    done: u64,
    /// On a terminal.
    bar: Option<indicatif::ProgressBar>,
    /// Plain lines: the tenths written so far.
    tenths: u64,
}

impl Progress {
    /// Progress of `total` steps of `what`.
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
            tenths: 0,
        }
    }

    /// `n` more steps done.
    pub fn advance(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(bar) => bar.inc(n),
            None => {
                let reached = tenths_reached(self.done, self.total);
                if reached > self.tenths {
                    self.tenths = reached;
                    eprintln!("{}: {}/{}", self.what, self.done, self.total);
                }
            }
        }
    }

    /// Names the step under way beside the bar.
    pub fn show_step(&self, text: &str) {
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

/// How many of the ten marks `done` has passed, the k-th at
/// ceil(k × total / 10): the tenth is the total itself.
fn tenths_reached(done: u64, total: u64) -> u64 {
    (1..=10)
        .take_while(|k| done >= (k * total).div_ceil(10))
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counts at which a plain line is written, advancing by `by`.
    fn lines(total: u64, by: u64) -> Vec<u64> {
        let (mut done, mut tenths, mut out) = (0, 0, Vec::new());
        while done < total {
            done = (done + by).min(total);
            let reached = tenths_reached(done, total);
            if reached > tenths {
                tenths = reached;
                out.push(done);
            }
        }
        out
    }

    #[test]
    fn a_line_at_each_tenth_and_the_last_at_the_total() {
        assert_eq!(lines(1, 1), [1]);
        assert_eq!(lines(2, 2), [2]);
        assert_eq!(lines(15, 1), [2, 3, 5, 6, 8, 9, 11, 12, 14, 15]);
        assert_eq!(lines(25, 1), [3, 5, 8, 10, 13, 15, 18, 20, 23, 25]);
        assert_eq!(
            lines(1005, 100),
            [200, 300, 400, 500, 600, 700, 800, 900, 1000, 1005]
        );
        assert_eq!(lines(3000, 100).len(), 10);
    }
}
