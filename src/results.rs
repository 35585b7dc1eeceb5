//! `--json` for `pull` and `push`: the results on stdout as JSON Lines,
//! one object per file (or blob) as it ends, then one for the run.
//!
//! ```text
//! {"type":"file","source":"https://example.com/a.bin","path":"models/a.bin","size":1024,"sha256":"9f86…","outcome":"downloaded","attempts":2,"resumes":0,"fetched":1024}
//! {"type":"total","files":1,"downloaded":1,"already_there":0,"failed":0,"interrupted":0,"fetched":1024}
//! ```

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};

use backstop_oci::BlobOutcome;
use backstop_transfer::{Event, FileReport, Outcome, Progress, Sha256};
use serde::Serialize;
use serde_json::Value;

use crate::progress::{Tally, with_causes};

/// What is known of an item before it moves.
pub struct Known {
    /// Where it comes from: a URL, an `hf://` or `oci://` source, a local
    /// file.
    pub source: String,
    /// Where it goes: the file's path on disk (pull), its path in the
    /// artifact (push).
    pub path: String,
    /// Its size, when known in advance.
    pub size: Option<u64>,
    /// The digest it must have, when known in advance.
    pub sha256: Option<Sha256>,
}

/// One item's line.
#[derive(Serialize)]
struct ItemLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    source: &'a str,
    path: &'a str,
    size: Option<u64>,
    sha256: Option<String>,
    outcome: &'static str,
    /// Attempts made: the first, and one more for each retry after a
    /// failure (a transfer resumed after a break is not one).
    attempts: u32,
    /// Transfers resumed by Range (pull) or from the registry's offset
    /// (push) after a break.
    resumes: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    fetched: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The writer of a run's JSON Lines. As a [`Progress`] it counts each
/// item's retries and resumes, and writes a pull's file lines as they
/// end; a push gives it its blobs' ends ([`JsonResults::blob`]).
pub struct JsonResults {
    known: Vec<Known>,
    retries: Vec<AtomicU32>,
    resumes: Vec<AtomicU32>,
}

impl JsonResults {
    /// A writer for the items `known`, by index.
    pub fn new(known: Vec<Known>) -> JsonResults {
        let counters = || known.iter().map(|_| AtomicU32::new(0)).collect();
        JsonResults {
            retries: counters(),
            resumes: counters(),
            known,
        }
    }

    /// Item `index`'s line, with what the run counted of it.
    fn line<'a>(&'a self, index: usize, kind: &'static str, known: &'a Known) -> ItemLine<'a> {
        let count = |c: &[AtomicU32]| c.get(index).map_or(0, |n| n.load(Ordering::Relaxed));
        ItemLine {
            kind,
            source: &known.source,
            path: &known.path,
            size: known.size,
            sha256: known.sha256.map(|d| d.to_string()),
            outcome: "",
            attempts: 1 + count(&self.retries),
            resumes: count(&self.resumes),
            fetched: None,
            sent: None,
            error: None,
        }
    }

    /// A pull's file `index` ended.
    pub fn file(&self, index: usize, report: &FileReport) {
        let Some(known) = self.known.get(index) else {
            return;
        };
        let mut line = self.line(index, "file", known);
        line.fetched = Some(report.fetched);
        line.outcome = match &report.outcome {
            Outcome::Downloaded { bytes, sha256, .. } => {
                line.size = Some(*bytes);
                if let Some(d) = sha256 {
                    line.sha256 = Some(d.to_string());
                }
                "downloaded"
            }
            Outcome::AlreadyThere { bytes } => {
                line.size = Some(*bytes);
                "already_there"
            }
            Outcome::Interrupted { .. } => "interrupted",
            Outcome::Failed(e) => {
                line.error = Some(with_causes(e));
                "failed"
            }
        };
        write_line(item_text(&line));
    }

    /// A push's blob `index` ended.
    pub fn blob(&self, index: usize, outcome: &BlobOutcome) {
        let Some(known) = self.known.get(index) else {
            return;
        };
        let mut line = self.line(index, "blob", known);
        line.sent = Some(outcome.sent());
        line.outcome = match outcome {
            BlobOutcome::Uploaded { .. } => "pushed",
            BlobOutcome::AlreadyThere => "already_there",
            BlobOutcome::Mounted => "mounted",
            BlobOutcome::Interrupted { .. } => "interrupted",
            BlobOutcome::Failed(e) => {
                line.error = Some(with_causes(e));
                "failed"
            }
        };
        write_line(item_text(&line));
    }

    /// The run's line, from the same counts as the total on stderr, with
    /// `more` fields (a push's reference).
    pub fn total(&self, tally: &Tally<'_>, more: &[(&str, Value)]) {
        let counts = [
            ("type", Value::from("total")),
            (tally.noun.1, tally.total.into()),
            (tally.moved, tally.done.into()),
            ("already_there", tally.there.into()),
            ("failed", tally.failed.into()),
            ("interrupted", tally.interrupted.into()),
            (tally.bytes_verb, tally.bytes.into()),
        ];
        // In this order, "type" first, as the item lines have it.
        let fields: Vec<String> = counts
            .iter()
            .chain(more)
            .map(|(name, value)| format!("{}:{value}", Value::from(*name)))
            .collect();
        write_line(format!("{{{}}}", fields.join(",")));
    }
}

impl Progress for JsonResults {
    fn advance(&self, _: usize, _: u64) {}

    fn event(&self, file: usize, event: Event<'_>) {
        let bump = |c: &[AtomicU32]| {
            if let Some(n) = c.get(file) {
                n.fetch_add(1, Ordering::Relaxed);
            }
        };
        match event {
            Event::Retry { .. } => bump(&self.retries),
            Event::Resume { .. } => bump(&self.resumes),
            Event::Finish(report) => self.file(file, report),
            _ => {}
        }
    }
}

/// One object as a line on stdout, whole: lines of items that end at
/// once never interleave. A reader that went away (`| head`) is not an
/// error.
fn write_line(mut text: String) {
    text.push('\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// An item's line as JSON text (strings and numbers: it always
/// serializes).
fn item_text(line: &ItemLine<'_>) -> String {
    serde_json::to_string(line).unwrap_or_else(|_| "{}".to_owned())
}
