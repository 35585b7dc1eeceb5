//! The wire protocol of remote workers over NATS, shared by the
//! coordinator's side and the worker's: subjects, messages, connecting.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::handler::Work;
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
    /// Where workers report outcomes any coordinator may store.
    pub fn results(&self) -> String {
        format!("{}.results", self.prefix)
    }
    /// Where workers report the outcomes of attempts `coordinator`
    /// offered.
    pub fn results_for(&self, coordinator: &str) -> String {
        format!("{}.results.{coordinator}", self.prefix)
    }
    /// Where workers register.
    pub fn register(&self) -> String {
        format!("{}.register", self.prefix)
    }
    /// Where workers send heartbeats.
    pub fn heartbeat(&self) -> String {
        format!("{}.heartbeat", self.prefix)
    }
}

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
    #[error("{url} is not a NATS URL backstop can read")]
    Url {
        /// The URL, without credentials.
        url: String,
        /// Why.
        #[source]
        source: async_nats::ConnectError,
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

/// Connects to the NATS server at `url`, retrying reconnections forever
/// once connected.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, NatsError> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .connect(url)
        .await
        .map_err(|source| {
            use async_nats::ConnectErrorKind as K;
            let url = shown_url(url);
            match source.kind() {
                K::ServerParse => NatsError::Url { url, source },
                K::Authentication | K::AuthorizationViolation | K::Tls => {
                    NatsError::Refused { url, source }
                }
                _ => NatsError::Connect { url, source },
            }
        })
}

/// [`connect`], waiting for a server that does not answer yet: each
/// failure is logged and the connection tried again after a backoff with
/// full jitter ([`crate::coordinator::startup_retry`]), until the server
/// answers or `shutdown` fires (`Ok(None)`). A URL of the wrong shape
/// ([`NatsError::Url`]) or a refusal ([`NatsError::Refused`]) is returned
/// at once.
pub async fn connect_when_ready(
    url: &str,
    name: &str,
    shutdown: &CancellationToken,
) -> Result<Option<async_nats::Client>, NatsError> {
    let policy = crate::coordinator::startup_retry();
    let mut rng = fastrand::Rng::new();
    let mut retry = 0;
    loop {
        let tried = tokio::select! {
            tried = connect(url, name) => tried,
            () = shutdown.cancelled() => return Ok(None),
        };
        match tried {
            Ok(client) => {
                if retry > 0 {
                    tracing::info!("NATS at {} answers", shown_url(url));
                }
                return Ok(Some(client));
            }
            Err(e @ NatsError::Connect { .. }) => {
                let wait = policy.delay_after(retry, &mut rng);
                retry = retry.saturating_add(1);
                tracing::warn!(
                    "{}; trying again in {}",
                    crate::error_chain(&e),
                    backstop_core::HumanDuration(wait)
                );
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(None),
                    () = tokio::time::sleep(wait) => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// `url` without any user or password.
pub fn shown_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://{host}"),
            None => url.to_owned(),
        },
        None => match url.rsplit_once('@') {
            Some((_, host)) => host.to_owned(),
            None => url.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_prefixes() {
        let s = Subjects::new("backstop.test-1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.deliver("gpu-1"), "backstop.test-1.node.gpu-1.deliver");
        assert_eq!(s.results(), "backstop.test-1.results");
        for bad in ["", "a..b", "a b", "a.*", ">", ".a"] {
            assert!(Subjects::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(
            shown_url("nats://u:hunter2@10.0.0.1:4222"),
            "nats://10.0.0.1:4222"
        );
        assert_eq!(shown_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(shown_url("tok@host:4222"), "host:4222");
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
        };
        let json = serde_json::to_string(&msg).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"token":{"delivery":4,"attempt":2},"node":"gpu-1","outcome":"failed","error":"exit 3"}"#
        );
        let back: Result<ResultMsg, _> = serde_json::from_str(&json);
        assert_eq!(back.ok(), Some(msg));
    }
}
