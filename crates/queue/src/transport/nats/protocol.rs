//! The wire protocol of remote workers over NATS, shared by the
//! coordinator's side and the worker's: subjects and messages.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::handler::{Output, Work};
use crate::model::{Outcome, Token};

/// The subject prefix used unless told otherwise.
pub const DEFAULT_PREFIX: &str = "backstop";

/// The queue group the coordinators of a fleet share.
pub const COORDINATORS: &str = "backstop-coordinators";

/// How long a worker has to accept or refuse an offered attempt.
pub const ACCEPT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a coordinator holds a worker's report of an outcome open while
/// it stores it; past that it answers "not stored yet" and the worker
/// reports again later (the coordinator keeps what it has meanwhile).
pub const RESULT_WAIT: Duration = Duration::from_secs(5);

/// How long a coordinator waits for the holder of a name to answer on its
/// session subject before it takes it for live.
pub const LIVE_PROBE: Duration = Duration::from_secs(2);

/// How long past the handler timeout the coordinator waits for an outcome
/// before it stops waiting (the attempt then stays in flight until its
/// lease ends).
pub const REPLY_MARGIN: Duration = Duration::from_secs(30);

/// The subjects under one prefix.
#[derive(Clone, Debug)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// Subjects under `prefix` (letters, digits, `_`, `-`, and dots between
    /// tokens).
    pub fn new(prefix: &str) -> Result<Self, NatsError> {
        let ok = !prefix.is_empty()
            && prefix.split('.').all(|token| {
                !token.is_empty()
                    && token
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
        if ok {
            Ok(Subjects {
                prefix: prefix.to_owned(),
            })
        } else {
            Err(NatsError::Prefix(prefix.to_owned()))
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where the worker process `session` of `node` answers while it
    /// lives.
    pub fn session(&self, node: &str, session: &str) -> String {
        format!("{}.node.{node}.session.{session}", self.prefix)
    }

    /// Where attempts are offered to `node`.
    pub fn deliver(&self, node: &str) -> String {
        format!("{}.node.{node}.deliver", self.prefix)
    }

    /// Where `node` says which attempts it holds.
    pub fn holding(&self, node: &str) -> String {
        format!("{}.node.{node}.holding", self.prefix)
    }

    /// Where `node` is told to stop attempts it runs ([`StopMsg`]).
    pub fn stop(&self, node: &str) -> String {
        format!("{}.node.{node}.stop", self.prefix)
    }

    /// Where `node` receives the answers to its own requests (its inbox
    /// prefix): under its own subjects, so that the server can confine it
    /// to them.
    pub fn inbox(&self, node: &str) -> String {
        format!("{}.node.{node}.inbox", self.prefix)
    }

    /// Every subject `node` receives on: `PREFIX.node.NAME.>`.
    pub fn to_node(&self, node: &str) -> String {
        format!("{}.node.{node}.>", self.prefix)
    }

    /// Every subject `node` sends on: `PREFIX.from.NAME.>`.
    pub fn from_node(&self, node: &str) -> String {
        format!("{}.from.{node}.>", self.prefix)
    }

    /// Where `node` reports outcomes any coordinator may store.
    pub fn results(&self, node: &str) -> String {
        format!("{}.from.{node}.results", self.prefix)
    }

    /// Where `node` reports the outcomes of attempts `coordinator`
    /// offered.
    pub fn results_for(&self, node: &str, coordinator: &str) -> String {
        format!("{}.from.{node}.results.{coordinator}", self.prefix)
    }

    /// Where `node` registers.
    pub fn register(&self, node: &str) -> String {
        format!("{}.from.{node}.register", self.prefix)
    }

    /// Where `node` sends heartbeats.
    pub fn heartbeat(&self, node: &str) -> String {
        format!("{}.from.{node}.heartbeat", self.prefix)
    }

    /// The node a message on one of the subjects it sends on
    /// (`PREFIX.from.NAME...`) came from: the name the server let it use.
    pub fn sender<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".from.")?;
        let name = rest.split('.').next()?;
        (!name.is_empty()).then_some(name)
    }
}

/// In a subject of [`Subjects`], any node (for the coordinators'
/// subscriptions).
pub const ANY_NODE: &str = "*";

/// An attempt offered to a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The attempt.
    #[serde(flatten)]
    pub work: Work,
    /// Where to report its outcome first (the offering coordinator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_to: Option<String>,
}

/// A worker's answer to an offered attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverAck {
    /// It runs the handler and will report the outcome.
    pub accepted: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
    /// Details for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why a worker refused an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// All its handler slots are taken, or an older attempt of the same
    /// delivery still runs: offered again shortly, nothing spent.
    Busy,
    /// It is shutting down: nothing spent.
    Stopping,
    /// It has no handler for the kind: a failure of the delivery.
    Unhandled,
    /// The offer could not be read: a failure of the delivery.
    Unreadable,
}

/// An outcome reported by a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultMsg {
    /// The attempt.
    pub token: Token,
    /// The node that ran it.
    pub node: String,
    /// What it came to.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// What its handler printed: at most the tail the offer asked for, and
    /// cut further when the whole message would not fit in one NATS
    /// message ([`ResultMsg::fit`]).
    #[serde(default, skip_serializing_if = "Output::is_empty")]
    pub output: Output,
}

impl ResultMsg {
    /// The message as JSON, at most `max` bytes when it can be: its output
    /// is cut from the front (whole lines, both streams alike) until it
    /// fits, then dropped. Only an outcome whose error alone is too long
    /// is sent longer (the server refuses it; the error is at most a few
    /// KiB, far below any server's limit).
    pub fn fit(&self, max: usize) -> Result<Vec<u8>, serde_json::Error> {
        let mut msg = self.clone();
        let mut tail = (msg.output.stdout.len().max(msg.output.stderr.len())) as u64;
        loop {
            let body = serde_json::to_vec(&msg)?;
            if body.len() <= max || msg.output.is_empty() {
                return Ok(body);
            }
            let over = (body.len() - max) as u64;
            tail = tail.saturating_sub(over.div_ceil(2).max(64));
            msg.output = self.output.clone().bounded(tail);
        }
    }
}

/// Stops attempts a worker runs: their handlers are stopped as at a
/// shutdown (their operation was cancelled with `--stop-running`). Sent by
/// a coordinator, not answered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopMsg {
    /// The attempts.
    pub tokens: Vec<Token>,
}

/// What a worker holds: attempts running, and outcomes not yet stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldingMsg {
    /// The attempts.
    pub tokens: Vec<Token>,
}

/// The coordinator's answer to a reported outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultAck {
    /// Stored (or found stale): the worker can forget it.
    pub stored: bool,
}

/// A worker declaring itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterMsg {
    /// Unique name.
    pub name: String,
    /// Its type.
    pub node_type: String,
    /// Kinds it handles.
    pub kinds: Vec<String>,
    /// Handlers it runs at once.
    pub capacity: u32,
    /// This worker process.
    pub session: String,
}

/// A heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatMsg {
    /// The node.
    pub name: String,
    /// The worker process.
    pub session: String,
    /// The worker is shutting down.
    #[serde(default)]
    pub leaving: bool,
}

/// The coordinator's answer to a registration or a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAck {
    /// Recorded.
    pub ok: bool,
    /// The coordinator does not know this node (or this process of it):
    /// register again.
    #[serde(default)]
    pub register: bool,
    /// Refused: another live process holds the name. Trying again does
    /// not help while it runs.
    #[serde(default)]
    pub taken: bool,
    /// Refused: an operator removed this node, and this process is the
    /// one that was removed. It stops; a new process registers as a new
    /// node.
    #[serde(default)]
    pub removed: bool,
    /// Why not, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What can go wrong with NATS itself.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The server could not be reached (trying again may help).
    #[error("cannot connect to NATS at {url}")]
    Connect {
        /// The URL, without credentials.
        url: String,
        /// Why.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The URL cannot be read; nothing was tried.
    #[error("{url} is not a NATS URL backstop can read: {why}")]
    Url {
        /// The URL, without credentials.
        url: String,
        /// Why, quoting no part of it.
        why: String,
    },
    /// The server answered and refused this client: its credentials, or
    /// TLS. Trying again does not help.
    #[error("NATS at {url} refused the connection")]
    Refused {
        /// The URL, without credentials.
        url: String,
        /// Why.
        #[source]
        source: async_nats::ConnectError,
    },
    /// Credentials that cannot be used (a seed or a credentials file that
    /// does not parse); nothing was tried. Never shows them.
    #[error("the NATS credentials ({kind}) cannot be used")]
    Credentials {
        /// What kind they are.
        kind: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Two kinds of credentials at once: which one was meant cannot be
    /// told.
    #[error("NATS credentials given twice: {first} and {second}; give one")]
    TwoCredentials {
        /// The first.
        first: &'static str,
        /// The second.
        second: &'static str,
    },
    /// A TLS file that cannot be used; nothing was tried.
    #[error("cannot use {} for TLS to NATS: {why}", file.display())]
    Tls {
        /// The file.
        file: std::path::PathBuf,
        /// Why.
        why: String,
    },
    /// A subscription failed.
    #[error("cannot subscribe to {subject}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// Why.
        #[source]
        source: async_nats::SubscribeError,
    },
    /// A prefix that is not a valid subject.
    #[error("{0:?} is not a valid NATS subject prefix (letters, digits, '_', '-', dot-separated)")]
    Prefix(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_prefixes() {
        let s = Subjects::new("backstop.test-1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.deliver("gpu-1"), "backstop.test-1.node.gpu-1.deliver");
        assert_eq!(s.results("gpu-1"), "backstop.test-1.from.gpu-1.results");
        for sent in [
            s.register("gpu-1"),
            s.heartbeat("gpu-1"),
            s.results("gpu-1"),
            s.results_for("gpu-1", "c0ffee"),
        ] {
            assert_eq!(s.sender(&sent), Some("gpu-1"), "{sent}");
        }
        assert_eq!(s.sender("backstop.test-1.node.gpu-1.deliver"), None);
        assert_eq!(s.sender("backstop.test-1x.from.gpu-1.register"), None);
        assert_eq!(s.sender("backstop.test-1.from..register"), None);
        for bad in ["", "a..b", "a b", "a.*", ">", ".a"] {
            assert!(Subjects::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn results_on_the_wire() {
        let msg = ResultMsg {
            token: Token {
                delivery: 4,
                attempt: 2,
            },
            node: "gpu-1".into(),
            outcome: Outcome::Failed("exit 3".into()),
            output: Output::default(),
        };
        let json = serde_json::to_string(&msg).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"token":{"delivery":4,"attempt":2},"node":"gpu-1","outcome":"failed","error":"exit 3"}"#
        );
        let back: Result<ResultMsg, _> = serde_json::from_str(&json);
        assert_eq!(back.ok(), Some(msg));
    }

    #[test]
    fn an_outcome_with_its_output_fits_in_one_message() {
        let line = "x".repeat(99);
        let msg = ResultMsg {
            token: Token {
                delivery: 4,
                attempt: 2,
            },
            node: "gpu-1".into(),
            outcome: Outcome::Failed("exit 3".into()),
            output: Output {
                stdout: format!("{line}\n").repeat(2000),
                stderr: format!("first\n{line}\nlast\n"),
            },
        };
        let whole = serde_json::to_vec(&msg).unwrap_or_default();
        assert_eq!(msg.fit(usize::MAX).unwrap_or_default(), whole);
        for max in [100_000, 10_000, 1000, 300] {
            let body = msg.fit(max).unwrap_or_default();
            assert!(body.len() <= max, "{max}: {}", body.len());
            let back: ResultMsg = serde_json::from_slice(&body).unwrap();
            assert_eq!(back.token, msg.token);
            assert_eq!(back.outcome, msg.outcome);
            assert!(
                msg.output.stdout.ends_with(&back.output.stdout),
                "{max}: the end is kept"
            );
        }
        let tiny = msg.fit(10).unwrap_or_default();
        let back: ResultMsg = serde_json::from_slice(&tiny).unwrap();
        assert_eq!(
            back.output,
            Output::default(),
            "the outcome goes without its output"
        );
    }
}
