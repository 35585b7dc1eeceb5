//! What the integration tests share: a quick client and policy, test
//! data, and a progress recorder.

#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backstop_core::{Jitter, Policy};
use backstop_http::Client;
use backstop_transfer::{Event, Item, Options, Outcome, Plan, Progress, Pull, Sha256, Summary};
use url::Url;

/// Millisecond waits, so that tests spend their time on behaviour.
pub fn policy() -> Policy {
    Policy::transfer(0)
        .with_initial_delay(Duration::from_millis(1))
        .with_max_delay(Duration::from_millis(5))
        .with_jitter(Jitter::None)
        .with_max_attempts(4)
}

pub fn client() -> Client {
    Client::builder()
        .header_timeout(Duration::from_millis(500))
        .read_idle_timeout(Duration::from_millis(300))
        .build()
        .unwrap()
}

pub fn options() -> Options {
    Options {
        policy: policy(),
        min_progress: None,
        checkpoint_every: Duration::from_millis(20),
        ..Options::default()
    }
}

/// `n` bytes that differ from one offset to the next.
pub fn data(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

pub fn item(url: &str, name: &str, size: Option<u64>, sha256: Option<Sha256>) -> Item {
    Item {
        name: name.to_owned(),
        url: Url::parse(url).unwrap(),
        size,
        sha256,
        token: None,
        headers: Vec::new(),
        authorizer: None,
        origin: url.to_owned(),
        repo: None,
        hub: None,
    }
}

/// Every event, as a line of text.
#[derive(Default)]
pub struct Recorder {
    pub events: Mutex<Vec<String>>,
}

impl Recorder {
    pub fn lines(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    pub fn any(&self, needle: &str) -> bool {
        self.lines().iter().any(|l| l.contains(needle))
    }
}

impl Progress for Recorder {
    fn advance(&self, _: usize, _: u64) {}
    fn event(&self, file: usize, event: Event<'_>) {
        let line = match event {
            Event::Retry {
                attempt,
                reason,
                delay,
                server_wait,
                ..
            } => {
                format!("{file} retry {attempt} {reason} {delay:?} server={server_wait}")
            }
            Event::Resume { at, reason, delay } => {
                format!("{file} resume {at} {reason} after {delay:?}")
            }
            Event::Restart { reason } => format!("{file} restart {reason}"),
            Event::Start { name, size, have } => format!("{file} start {name} {size:?} {have}"),
            Event::Finish(report) => format!("{file} finish {:?}", report.outcome),
            other => format!("{file} {other:?}"),
        };
        self.events.lock().unwrap().push(line);
    }
}

/// Pulls `items` into `dir`, recording events.
pub async fn pull(dir: &Path, items: Vec<Item>, options: Options) -> (Summary, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let plan = Plan::new(dir, items).unwrap();
    let summary = Pull::new(client())
        .options(options)
        .progress(recorder.clone())
        .run(&plan)
        .await
        .unwrap();
    (summary, recorder)
}

pub fn downloaded(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Downloaded { .. })
}

/// Asserts that file `i` of `summary` was downloaded and that `path`
/// holds `body`.
pub fn assert_arrived(summary: &Summary, i: usize, path: &Path, body: &[u8]) {
    assert!(
        downloaded(&summary.files[i].outcome),
        "{:?}",
        summary.files[i]
    );
    assert!(
        std::fs::read(path).unwrap() == body,
        "{} differs",
        path.display()
    );
}
