//! Progress of long work: a bar on a terminal, plain lines otherwise (logs, CI).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often plain progress lines are printed at most.
const LINE_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Progress {
    label: String,
    total: Option<u64>,
    bar: Option<ProgressBar>,
    last_line: Instant,
    done: u64,
}

impl Progress {
    pub fn new(label: &str, total: Option<u64>) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match total {
                Some(total) => ProgressBar::new(total),
                None => ProgressBar::new_spinner(),
            };
            let template = if total.is_some() {
                "{msg:>14} [{bar:40}] {pos}/{len} ({per_sec}, {eta})"
            } else {
                "{msg:>14} {spinner} {pos} ({per_sec})"
            };
            bar.set_style(ProgressStyle::with_template(template).expect("a valid template").progress_chars("=> "));
            bar.set_message(label.to_owned());
            bar
        });
        Progress { label: label.to_owned(), total, bar, last_line: Instant::now(), done: 0 }
    }

    pub fn set(&mut self, done: u64) {
        self.done = done;
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None if self.last_line.elapsed() >= LINE_INTERVAL => {
                self.last_line = Instant::now();
                eprintln!("{}", self.line());
            }
            None => {}
        }
    }

    pub fn add(&mut self, more: u64) {
        self.set(self.done + more);
    }

    fn line(&self) -> String {
        match self.total {
            Some(total) => format!("{}: {}/{}", self.label, self.done, total),
            None => format!("{}: {}", self.label, self.done),
        }
    }

    pub fn finish(self) {
        match self.bar {
            Some(bar) => bar.finish(),
            None => eprintln!("{} (done)", self.line()),
        }
    }
}
