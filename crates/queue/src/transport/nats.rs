//! Remote workers over NATS core request/reply.
//!
//! Subjects, under a prefix (default `backstop`):
//!
//! - `PREFIX.node.NAME.deliver` — the coordinator offers an attempt
//!   ([`Work`]); the worker answers at once with [`DeliverAck`]: accepted,
//!   or refused (busy, stopping, a kind it does not handle). NATS answers
//!   "no responders" itself when no worker listens: the node is
//!   unreachable and the handler surely did not start.
//! - `PREFIX.results.COORDINATOR` — the worker reports each outcome
//!   ([`ResultMsg`]) to the coordinator that offered the attempt (named in
//!   the [`Offer`]) and repeats it until a coordinator answers that it is
//!   stored; when that coordinator is gone ("no responders"), to
//!   `PREFIX.results`, which any coordinator answers — so an outcome
//!   survives the death of the coordinator that offered it.
//! - `PREFIX.register`, `PREFIX.heartbeat` — a worker declares itself
//!   ([`RegisterMsg`]) and then proves it is alive ([`HeartbeatMsg`]).
//! - `PREFIX.node.NAME.session.SESSION` — each worker process answers
//!   here, under the random session it registers with, from its start to
//!   its end: how a coordinator tells a live holder of a name from a dead
//!   one.
//!
//! Names are unique. A registration under a name another process holds
//! (another session) is refused with [`NodeAck::taken`] while that process
//! is live: it answers on its session subject, or its node is healthy and
//! it does not answer in time (so it may be). A name whose holder gets "no
//! responders" (its connection is gone), or is silent while its node is
//! not healthy (its heartbeats stopped, it left), is taken over: what the
//! old process had in flight runs again. A name of a node inside a
//! coordinator is never taken by a worker.
//!
//! The coordinators of a fleet share `PREFIX.results`, `PREFIX.register`
//! and `PREFIX.heartbeat` as a queue group: each message is handled by one
//! of them.
//!
//! Offering and reporting are separate so that a handler may run for as
//! long as its timeout allows without a request held open, and so that a
//! reply that comes late is still matched to its attempt by token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::client::RequestErrorKind;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{Holding, LateReply, Receipt, Reply, Transport};
use crate::dispatch::LateSender;
use crate::handler::Work;
use crate::model::{NodeSpec, NodeStatus, Outcome, Token, transport_name};
use crate::node_health::Health;
use crate::store::Heartbeat;

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

type Waiters = Arc<Mutex<HashMap<Token, oneshot::Sender<(Outcome, Receipt)>>>>;

/// The coordinator's side: offers attempts to workers and serves their
/// registrations, heartbeats and outcomes.
pub struct NatsTransport {
    client: async_nats::Client,
    subjects: Subjects,
    waiting: Waiters,
    /// This coordinator, for outcomes of the attempts it offers.
    id: String,
}

impl NatsTransport {
    /// A transport on a connected `client`.
    pub fn new(client: async_nats::Client, subjects: Subjects) -> Self {
        NatsTransport {
            client,
            subjects,
            waiting: Arc::new(Mutex::new(HashMap::new())),
            id: format!("{:016x}", fastrand::u64(..)),
        }
    }

    fn waiters(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Token, oneshot::Sender<(Outcome, Receipt)>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves registrations, heartbeats and outcomes until `shutdown`.
    /// Outcomes nobody waits for go to `late`.
    pub async fn serve(
        &self,
        health: Health,
        late: LateSender,
        shutdown: CancellationToken,
    ) -> Result<(), NatsError> {
        let subscribe = |subject: String, shared: bool| {
            let client = self.client.clone();
            async move {
                let subscribed = if shared {
                    client
                        .queue_subscribe(subject.clone(), COORDINATORS.to_owned())
                        .await
                } else {
                    client.subscribe(subject.clone()).await
                };
                subscribed.map_err(|source| NatsError::Subscribe { subject, source })
            }
        };
        let mut registrations = subscribe(self.subjects.register(), true).await?;
        let mut heartbeats = subscribe(self.subjects.heartbeat(), true).await?;
        let mut results = futures_util::stream::select(
            subscribe(self.subjects.results(), true).await?,
            subscribe(self.subjects.results_for(&self.id), false).await?,
        );
        let tasks = tokio_util::task::TaskTracker::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(msg) = registrations.next() => {
                    let (client, health) = (self.client.clone(), health.clone());
                    let subjects = self.subjects.clone();
                    tasks.spawn(async move { on_register(client, subjects, health, msg).await });
                }
                Some(msg) = heartbeats.next() => {
                    let (client, health) = (self.client.clone(), health.clone());
                    tasks.spawn(async move { on_heartbeat(client, health, msg).await });
                }
                Some(msg) = results.next() => {
                    let client = self.client.clone();
                    let waiting = Arc::clone(&self.waiting);
                    let late = late.clone();
                    tasks.spawn(async move { on_result(client, waiting, late, msg).await });
                }
                else => break,
            }
        }
        tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
        Ok(())
    }
}

fn refusal(node: &str, ack: &DeliverAck) -> Outcome {
    let reason = ack.reason.clone().unwrap_or_default();
    match ack.refused {
        Some(Refusal::Busy) => Outcome::Released(format!("node {node} is busy: {reason}")),
        Some(Refusal::Stopping) => {
            Outcome::Released(format!("node {node} is shutting down: {reason}"))
        }
        Some(Refusal::Unhandled) | Some(Refusal::Unreadable) | None => {
            Outcome::Failed(format!("node {node} refused the attempt: {reason}"))
        }
    }
}

impl Transport for NatsTransport {
    fn name(&self) -> &'static str {
        transport_name::NATS
    }

    fn available(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn holding<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Holding> {
        Box::pin(async move {
            let request = async_nats::Request::new()
                .payload(Bytes::from_static(b"{}"))
                .timeout(Some(Duration::from_secs(2)));
            match self
                .client
                .send_request(self.subjects.holding(node), request)
                .await
            {
                Ok(msg) => match serde_json::from_slice::<HoldingMsg>(&msg.payload) {
                    Ok(h) => Holding::These(h.tokens),
                    Err(_) => Holding::Unknown,
                },
                Err(e) if matches!(e.kind(), RequestErrorKind::NoResponders) => Holding::Nothing,
                Err(_) => Holding::Unknown,
            }
        })
    }

    fn deliver<'a>(&'a self, work: &'a Work) -> BoxFuture<'a, Reply> {
        Box::pin(async move {
            if self.client.connection_state() != async_nats::connection::State::Connected {
                return Reply::new(Outcome::Released(
                    "the coordinator is not connected to NATS right now; not counted as a failure"
                        .to_owned(),
                ));
            }
            let offer = Offer {
                work: work.clone(),
                report_to: Some(self.subjects.results_for(&self.id)),
            };
            let body = match serde_json::to_vec(&offer) {
                Ok(body) => Bytes::from(body),
                Err(e) => {
                    return Reply::new(Outcome::Failed(format!("cannot encode the attempt: {e}")));
                }
            };
            // Waiting before offering: the outcome of a quick handler may
            // arrive before the acceptance does.
            let (tx, rx) = oneshot::channel();
            self.waiters().insert(work.token, tx);
            let subject = self.subjects.deliver(&work.node);
            let request = async_nats::Request::new()
                .payload(body)
                .timeout(Some(ACCEPT_TIMEOUT));
            let refused = match self.client.send_request(subject.clone(), request).await {
                Ok(msg) => match serde_json::from_slice::<DeliverAck>(&msg.payload) {
                    Ok(ack) if ack.accepted => None,
                    Ok(ack) => Some(refusal(&work.node, &ack)),
                    Err(e) => Some(Outcome::Failed(format!(
                        "node {} answered the offer with something unreadable: {e}",
                        work.node
                    ))),
                },
                Err(e) => Some(match e.kind() {
                    RequestErrorKind::NoResponders => Outcome::Unreachable(format!(
                        "no worker listens on {subject} (no responders)"
                    )),
                    RequestErrorKind::TimedOut => Outcome::Unreachable(format!(
                        "node {} did not answer the offer within {}",
                        work.node,
                        backstop_core::HumanDuration(ACCEPT_TIMEOUT)
                    )),
                    _ => Outcome::Released(format!(
                        "the offer to node {} could not be sent ({e}); not counted as a failure",
                        work.node
                    )),
                }),
            };
            if let Some(outcome) = refused {
                self.waiters().remove(&work.token);
                return Reply::new(outcome);
            }
            let wait = Duration::from_millis(work.timeout_ms).saturating_add(REPLY_MARGIN);
            match tokio::time::timeout(wait, rx).await {
                Ok(Ok((outcome, receipt))) => Reply {
                    outcome,
                    receipt: Some(receipt),
                },
                _ => {
                    self.waiters().remove(&work.token);
                    Reply::new(Outcome::TimedOut)
                }
            }
        })
    }
}

async fn answer<T: Serialize>(client: &async_nats::Client, msg: &async_nats::Message, body: &T) {
    let Some(reply) = msg.reply.clone() else {
        return;
    };
    if let Ok(bytes) = serde_json::to_vec(body) {
        let _ = client.publish(reply, Bytes::from(bytes)).await;
    }
}

fn refused(error: String) -> NodeAck {
    NodeAck {
        ok: false,
        register: false,
        taken: false,
        error: Some(error),
    }
}

/// Why `spec` may not have its name: another process that is live holds
/// it. `None` when it may (a new name, the same process, or a holder that
/// is gone).
async fn holder_of(
    client: &async_nats::Client,
    subjects: &Subjects,
    health: &Health,
    spec: &NodeSpec,
) -> Result<Option<String>, crate::store::StoreError> {
    let Some(node) = health.node(&spec.name).await? else {
        return Ok(None);
    };
    if node.transport == transport_name::LOCAL {
        return Ok(Some(format!(
            "node {} runs inside a coordinator (backstop.toml); a worker cannot take its name",
            node.name
        )));
    }
    if node.session == spec.session {
        return Ok(None);
    }
    let request = async_nats::Request::new()
        .payload(Bytes::from_static(b"{}"))
        .timeout(Some(LIVE_PROBE));
    let probe = client
        .send_request(subjects.session(&node.name, &node.session), request)
        .await;
    let how = match probe {
        Ok(_) => "it answers on NATS".to_owned(),
        // Its connection is gone.
        Err(e) if matches!(e.kind(), RequestErrorKind::NoResponders) => return Ok(None),
        // Silent, and its heartbeats stopped (or it left).
        Err(_) if node.status != NodeStatus::Healthy => return Ok(None),
        Err(_) => format!(
            "it is healthy and did not answer within {}",
            backstop_core::HumanDuration(LIVE_PROBE)
        ),
    };
    let beat = node
        .last_heartbeat
        .and_then(|t| health.now().duration_since(t).ok())
        .map(|ago| {
            format!(
                "; its last heartbeat was {} ago",
                backstop_core::HumanDuration(ago)
            )
        })
        .unwrap_or_default();
    Ok(Some(format!(
        "node name {} is held by another live worker process ({how}{beat}); stop that worker, \
         or pick another --name",
        node.name
    )))
}

async fn on_register(
    client: async_nats::Client,
    subjects: Subjects,
    health: Health,
    msg: async_nats::Message,
) {
    let ack = match serde_json::from_slice::<RegisterMsg>(&msg.payload) {
        Err(e) => refused(format!("unreadable registration: {e}")),
        Ok(r) => {
            let spec = NodeSpec {
                name: r.name,
                node_type: r.node_type,
                kinds: r.kinds,
                capacity: r.capacity,
                transport: transport_name::NATS.to_owned(),
                session: r.session,
            };
            match spec.validate() {
                Err(e) => refused(e.to_string()),
                Ok(spec) => match holder_of(&client, &subjects, &health, &spec).await {
                    Ok(Some(taken)) => {
                        tracing::warn!("refused a worker's registration: {taken}");
                        NodeAck {
                            taken: true,
                            ..refused(taken)
                        }
                    }
                    Ok(None) => match health.register(spec).await {
                        Ok(_) => NodeAck {
                            ok: true,
                            register: false,
                            taken: false,
                            error: None,
                        },
                        Err(e) => {
                            tracing::error!("cannot register a node: {}", crate::error_chain(&e));
                            refused("the coordinator cannot store the registration now".to_owned())
                        }
                    },
                    Err(e) => {
                        tracing::error!("cannot register a node: {}", crate::error_chain(&e));
                        refused("the coordinator cannot read its nodes now".to_owned())
                    }
                },
            }
        }
    };
    answer(&client, &msg, &ack).await;
}

async fn on_heartbeat(client: async_nats::Client, health: Health, msg: async_nats::Message) {
    let ack = match serde_json::from_slice::<HeartbeatMsg>(&msg.payload) {
        Err(e) => refused(format!("unreadable heartbeat: {e}")),
        Ok(h) => match health.heartbeat(&h.name, &h.session, h.leaving).await {
            Ok(Heartbeat::Unknown) => NodeAck {
                ok: false,
                register: true,
                taken: false,
                error: None,
            },
            Ok(_) => NodeAck {
                ok: true,
                register: false,
                taken: false,
                error: None,
            },
            Err(e) => {
                tracing::error!("cannot record a heartbeat: {}", crate::error_chain(&e));
                refused("the coordinator cannot store the heartbeat now".to_owned())
            }
        },
    };
    answer(&client, &msg, &ack).await;
}

async fn on_result(
    client: async_nats::Client,
    waiting: Waiters,
    late: LateSender,
    msg: async_nats::Message,
) {
    let result = match serde_json::from_slice::<ResultMsg>(&msg.payload) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("an unreadable outcome arrived on NATS ({e}); ignored");
            // Stored is a lie only in the sense that nothing can be done
            // with it: asking again would bring the same bytes.
            answer(&client, &msg, &ResultAck { stored: true }).await;
            return;
        }
    };
    let (receipt, stored) = Receipt::new();
    let waiter = waiting
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&result.token);
    match waiter {
        Some(tx) => {
            if let Err((outcome, receipt)) = tx.send((result.outcome, receipt)) {
                late.send(LateReply {
                    token: result.token,
                    outcome,
                    receipt: Some(receipt),
                });
            }
        }
        None => late.send(LateReply {
            token: result.token,
            outcome: result.outcome,
            receipt: Some(receipt),
        }),
    }
    let stored = matches!(tokio::time::timeout(RESULT_WAIT, stored).await, Ok(Ok(())));
    answer(&client, &msg, &ResultAck { stored }).await;
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
    fn refusals_spend_attempts_only_when_the_node_cannot_ever_run_it() {
        let ack = |r| DeliverAck {
            accepted: false,
            refused: Some(r),
            reason: Some("x".into()),
        };
        assert!(matches!(
            refusal("n", &ack(Refusal::Busy)),
            Outcome::Released(_)
        ));
        assert!(matches!(
            refusal("n", &ack(Refusal::Stopping)),
            Outcome::Released(_)
        ));
        assert!(matches!(
            refusal("n", &ack(Refusal::Unhandled)),
            Outcome::Failed(_)
        ));
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
