//! Showing a pull's (or a push's) progress: indicatif bars per file and a total on a
//! terminal, plain lines otherwise.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once, OnceLock};
use std::time::Duration;

use backstop_core::HumanDuration;
use backstop_transfer::{Event, Outcome, Progress};
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::plural;

/// What a retry looks like on a bar or a line:
/// "retry 2 · HTTP 503 · waiting 7 s".
fn retry_text(attempt: u32, reason: &str, delay: Duration) -> String {
    format!(
        "retry {attempt} · {reason} · waiting {}",
        HumanDuration(delay)
    )
}

/// A file's name as shown: control characters dropped (names come from
/// servers), long names cut.
pub fn shown(name: &str) -> String {
    let clean: String = name.chars().filter(|c| !c.is_control()).collect();
    let count = clean.chars().count();
    if count <= 40 {
        clean
    } else {
        let tail: String = clean.chars().skip(count - 39).collect();
        format!("…{tail}")
    }
}

/// Bars: one per file in flight, a total at the bottom; a line above them
/// for every file that ends.
pub struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    files: Vec<OnceLock<ProgressBar>>,
    names: Vec<String>,
    finished: AtomicUsize,
    shown: Once,
}

impl Bars {
    /// Bars for `names`, drawn on stderr.
    pub fn new(names: Vec<String>) -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        // Added under the first file's bar: a total drawn alone, of no
        // length yet, would be drawn as full and left behind.
        let total = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        total.set_style(
            ProgressStyle::with_template(
                "{prefix:>42.bold} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        total.set_prefix("total");
        total.set_message(files_done(0, names.len()));
        Bars {
            multi,
            total,
            files: names.iter().map(|_| OnceLock::new()).collect(),
            names,
            finished: AtomicUsize::new(0),
            shown: Once::new(),
        }
    }

    fn bar(&self, file: usize) -> Option<&ProgressBar> {
        self.files.get(file)?.get()
    }
}

impl Progress for Bars {
    fn advance(&self, file: usize, bytes: u64) {
        if let Some(bar) = self.bar(file) {
            bar.inc(bytes);
        }
        self.total.inc(bytes);
    }

    fn event(&self, file: usize, event: Event<'_>) {
        match event {
            Event::Start { name, size, have } => {
                // Hidden until added: a bar draws itself on stderr, outside
                // the group, and leaves that line behind.
                let bar = ProgressBar::with_draw_target(size, ProgressDrawTarget::hidden());
                let bar = match size {
                    Some(_) => sized(bar),
                    None => bar.with_style(
                        ProgressStyle::with_template(
                            "{prefix:>42} {bytes} {binary_bytes_per_sec} {msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    ),
                };
                bar.set_prefix(shown(name));
                bar.set_position(have);
                let mut first = false;
                self.shown.call_once(|| first = true);
                let bar = if first {
                    let bar = self.multi.add(bar);
                    self.multi.add(self.total.clone());
                    bar
                } else {
                    self.multi.insert_before(&self.total, bar)
                };
                self.total.inc_length(size.unwrap_or(0));
                self.total.inc(have);
                if let Some(slot) = self.files.get(file) {
                    let _ = slot.set(bar);
                }
            }
            Event::Size(size) => {
                if let Some(bar) = self.bar(file) {
                    bar.set_length(size);
                    sized(bar.clone());
                }
                self.total.inc_length(size);
            }
            Event::Retry {
                attempt,
                reason,
                delay,
                ..
            } => {
                if let Some(bar) = self.bar(file) {
                    bar.set_message(retry_text(attempt, reason, delay));
                }
            }
            Event::Resume { reason, delay, .. } => {
                if let Some(bar) = self.bar(file) {
                    if delay.is_zero() {
                        bar.set_message(format!("resumed · {reason}"));
                    } else {
                        bar.set_message(format!(
                            "resuming · {reason} · waiting {}",
                            HumanDuration(delay)
                        ));
                    }
                }
            }
            Event::Restart { reason } => {
                if let Some(bar) = self.bar(file) {
                    let had = bar.position();
                    self.total
                        .set_position(self.total.position().saturating_sub(had));
                    bar.set_position(0);
                    bar.set_message(format!("restarted · {reason}"));
                }
            }
            Event::Waiting { reason } => match self.bar(file) {
                Some(bar) => bar.set_message(reason.to_owned()),
                None => {
                    let name = self.names.get(file).map(String::as_str).unwrap_or("?");
                    let _ = self.multi.println(format!("{}: {reason}", shown(name)));
                }
            },
            Event::Verify => {
                if let Some(bar) = self.bar(file) {
                    bar.set_message("checking");
                }
            }
            Event::Finish(report) => {
                let name = self.names.get(file).map(String::as_str).unwrap_or("?");
                self.finish(file, &line(name, &report.outcome));
            }
        }
    }
}

/// Ends a file's bar or line with a line of the command's own: for a
/// command whose ends are not pull's [`Outcome`]s (push).
pub trait Finish: Progress {
    /// File `file` is done; `text` is its whole line.
    fn finish(&self, file: usize, text: &str);
}

impl Finish for Bars {
    fn finish(&self, file: usize, text: &str) {
        let done = self.finished.fetch_add(1, Ordering::Relaxed) + 1;
        self.total.set_message(files_done(done, self.names.len()));
        if let Some(bar) = self.bar(file) {
            bar.finish_and_clear();
        }
        let _ = self.multi.println(text);
        if done == self.names.len() {
            self.total.finish_and_clear();
        }
    }
}

impl Finish for Lines {
    fn finish(&self, _: usize, text: &str) {
        eprintln!("{text}");
    }
}

impl Finish for () {
    fn finish(&self, _: usize, _: &str) {}
}

/// The total bar's count: "0/1 file", "2/3 files".
fn files_done(done: usize, of: usize) -> String {
    format!("{done}/{}", plural(of as u64, "file", "files"))
}

/// A bar of known length.
fn sized(bar: ProgressBar) -> ProgressBar {
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>42} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

impl Notice for Bars {
    fn notice(&self, text: &str) {
        let _ = self.multi.println(text);
    }
}

impl Notice for Lines {
    fn notice(&self, text: &str) {
        eprintln!("{text}");
    }
}

impl Notice for () {
    fn notice(&self, text: &str) {
        eprintln!("{text}");
    }
}

/// Two views of one run: the bars or lines on stderr, and `--json`'s
/// results on stdout.
pub struct Both(pub Arc<dyn Progress>, pub Arc<dyn Progress>);

impl Progress for Both {
    fn advance(&self, file: usize, bytes: u64) {
        self.0.advance(file, bytes);
        self.1.advance(file, bytes);
    }

    fn event(&self, file: usize, event: Event<'_>) {
        self.0.event(file, event);
        self.1.event(file, event);
    }
}

/// A line for the person watching, printed without breaking the bars.
pub trait Notice: Send + Sync {
    /// Prints `text` on its own line.
    fn notice(&self, text: &str);
}

/// How a finished file is announced, live and in the summary:
/// "done, 4.68 GiB, sha256 ok", "failed: …".
pub fn outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Downloaded { bytes, sha256, .. } => {
            let check = if sha256.is_some() { ", sha256 ok" } else { "" };
            format!("done, {}{check}", HumanBytes(*bytes))
        }
        Outcome::AlreadyThere { bytes } => format!("already there, {}", HumanBytes(*bytes)),
        Outcome::Interrupted { have } => format!("interrupted, {} kept", HumanBytes(*have)),
        Outcome::Failed(e) => format!("failed: {e}"),
    }
}

/// The line of a file that ended: "backstop: NAME: done, 4.68 GiB".
pub fn line_of(name: &str, text: &str) -> String {
    format!("backstop: {}: {text}", shown(name))
}

fn line(name: &str, done: &Outcome) -> String {
    format!("backstop: {}: {}", shown(name), outcome(done))
}

/// Plain lines on stderr, for logs and pipes: one per event, none per
/// byte.
pub struct Lines {
    names: Vec<String>,
}

impl Lines {
    /// Lines for the files `names`.
    pub fn new(names: Vec<String>) -> Lines {
        Lines { names }
    }

    fn name(&self, file: usize) -> String {
        shown(self.names.get(file).map(String::as_str).unwrap_or("?"))
    }
}

impl Progress for Lines {
    fn advance(&self, _: usize, _: u64) {}

    fn event(&self, file: usize, event: Event<'_>) {
        let text = match event {
            Event::Finish(report) => Some(line(
                self.names.get(file).map(String::as_str).unwrap_or("?"),
                &report.outcome,
            )),
            event => event_text(&self.name(file), &event).map(|t| format!("backstop: {t}")),
        };
        if let Some(text) = text {
            eprintln!("{text}");
        }
    }
}

/// The line for an event other than the end, when it is worth one: a
/// file that starts from nothing, or is found complete, says so only when
/// it ends, so that a file that simply arrives gets one line.
fn event_text(name: &str, event: &Event<'_>) -> Option<String> {
    Some(match *event {
        Event::Start { size, have, .. } if have > 0 && size.is_none_or(|s| have < s) => {
            match size {
                Some(size) => format!(
                    "{name}: resuming at {} of {}",
                    HumanBytes(have),
                    HumanBytes(size)
                ),
                None => format!("{name}: resuming at {}", HumanBytes(have)),
            }
        }
        Event::Retry {
            attempt,
            reason,
            delay,
            ..
        } => format!("{name}: {}", retry_text(attempt, reason, delay)),
        Event::Resume { at, reason, delay } if delay.is_zero() => {
            format!("{name}: {reason}; resuming at byte {at}")
        }
        Event::Resume { at, reason, delay } => {
            format!(
                "{name}: {reason}; resuming at byte {at} in {}",
                HumanDuration(delay)
            )
        }
        Event::Restart { reason } => format!("{name}: starting over: {reason}"),
        Event::Waiting { reason } => format!("{name}: {reason}"),
        Event::Start { .. } | Event::Size(_) | Event::Verify | Event::Finish(_) => return None,
    })
}

/// How the items of a `pull` or a `push` ended, for the run's one total
/// line on stderr.
pub struct Tally<'a> {
    /// "pulled", "pushed".
    pub verb: &'a str,
    /// What the items are: ("file", "files"), ("blob", "blobs").
    pub noun: (&'a str, &'a str),
    /// How a moved item is counted: "downloaded", "pushed".
    pub moved: &'a str,
    /// How its bytes are counted: "fetched", "sent".
    pub bytes_verb: &'a str,
    /// Items in all.
    pub total: usize,
    /// Items moved this run.
    pub done: usize,
    /// Items already in place (or mounted).
    pub there: usize,
    /// Items that failed.
    pub failed: usize,
    /// Items stopped by Ctrl-C or the deadline.
    pub interrupted: usize,
    /// Bytes moved over the network.
    pub bytes: u64,
}

impl Tally<'_> {
    /// "backstop: pulled 3 of 4 files: 2 downloaded, 1 already there,
    /// 1 failed (fetched 1.2 GiB)": the counts that are not zero.
    pub fn line(&self) -> String {
        let mut parts = vec![format!("{} {}", self.done, self.moved)];
        for (n, what) in [
            (self.there, "already there"),
            (self.failed, "failed"),
            (self.interrupted, "interrupted"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        format!(
            "backstop: {} {} of {}: {} ({} {})",
            self.verb,
            self.done + self.there,
            crate::report::plural(self.total as u64, self.noun.0, self.noun.1),
            parts.join(", "),
            self.bytes_verb,
            indicatif::HumanBytes(self.bytes)
        )
    }
}

/// `error` and its chain of sources on one line, for an item's line
/// under a total.
pub use backstop_core::with_causes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        assert_eq!(
            retry_text(2, "HTTP 503", Duration::from_secs(7)),
            "retry 2 · HTTP 503 · waiting 7 s"
        );
        assert_eq!(shown("a\x1b[2Jb.bin"), "a[2Jb.bin");
        let start = |size, have| {
            event_text(
                "f.bin",
                &Event::Start {
                    name: "f.bin",
                    size,
                    have,
                },
            )
        };
        assert_eq!(start(Some(2048), 0), None, "said when it ends");
        assert_eq!(start(Some(2048), 2048), None, "complete: nothing to resume");
        assert_eq!(
            start(Some(2048), 1024).as_deref(),
            Some("f.bin: resuming at 1.00 KiB of 2.00 KiB")
        );
        assert_eq!(
            start(None, 1024).as_deref(),
            Some("f.bin: resuming at 1.00 KiB"),
            "no size to tell"
        );
        assert_eq!(shown(&"x".repeat(50)).chars().count(), 40);
    }

    #[test]
    fn a_tally_names_only_the_counts_that_are_not_zero() {
        let tally = Tally {
            verb: "pushed",
            noun: ("blob", "blobs"),
            moved: "pushed",
            bytes_verb: "sent",
            total: 1,
            done: 1,
            there: 0,
            failed: 0,
            interrupted: 0,
            bytes: 2048,
        };
        assert_eq!(
            tally.line(),
            "backstop: pushed 1 of 1 blob: 1 pushed (sent 2.00 KiB)"
        );
        let tally = Tally {
            total: 4,
            done: 1,
            there: 1,
            failed: 1,
            interrupted: 1,
            ..tally
        };
        assert_eq!(
            tally.line(),
            "backstop: pushed 2 of 4 blobs: 1 pushed, 1 already there, 1 failed, 1 interrupted (sent 2.00 KiB)"
        );
    }
}
