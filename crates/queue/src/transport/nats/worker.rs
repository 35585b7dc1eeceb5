//! A remote node: `backstop worker`. It registers with the coordinators
//! over NATS, sends heartbeats, runs a handler per accepted attempt (a
//! bounded number at once), and reports every outcome until a coordinator
//! has stored it.
//!
//! On shutdown it stops taking attempts, tells the coordinators it is
//! leaving (its deliveries then wait for it without spending attempts),
//! lets running handlers finish for a grace period, stops the rest — their
//! deliveries are handed back, not failed — and reports what it has.
//!
//! Its handlers do not outlive it: killed with it, or stopped by its next
//! process before that one registers ([`backstop_process::owner`]), so a delivery is
//! never run twice at once on a restarted worker.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backstop_core::Policy;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connection::{NatsConnection, NatsServer};
use super::protocol::{
    DeliverAck, HeartbeatMsg, HoldingMsg, NatsError, NodeAck, Offer, RESULT_WAIT, Refusal,
    RegisterMsg, ResultAck, ResultMsg, StopMsg, Subjects,
};
use crate::handler::{Handler, Work};
use crate::model::{DeliveryId, Invalid, NodeSpec, Outcome, Token, transport_name};
use crate::node_health::DEFAULT_HEARTBEAT;
use backstop_process::owner::{self, Owner};

/// How a worker runs.
#[derive(Clone)]
pub struct WorkerConfig {
    /// The node's name (unique among nodes).
    pub name: String,
    /// Its type.
    pub node_type: String,
    /// A handler per kind it handles.
    pub handlers: BTreeMap<String, Arc<dyn Handler>>,
    /// Handlers run at once (at least 1).
    pub concurrency: u32,
    /// How often it sends a heartbeat.
    pub heartbeat: Duration,
    /// On shutdown, how long running handlers may go on before they are
    /// stopped and their deliveries handed back.
    pub grace: Duration,
}

impl WorkerConfig {
    /// A worker named `name` of `node_type`, 4 handlers at once, a
    /// heartbeat every 5 s and 30 s of grace at shutdown.
    pub fn new(name: impl Into<String>, node_type: impl Into<String>) -> Self {
        WorkerConfig {
            name: name.into(),
            node_type: node_type.into(),
            handlers: BTreeMap::new(),
            concurrency: 4,
            heartbeat: DEFAULT_HEARTBEAT,
            grace: Duration::from_secs(30),
        }
    }

    /// Handles `kind` with `handler`.
    pub fn handle(mut self, kind: impl Into<String>, handler: Arc<dyn Handler>) -> Self {
        self.handlers.insert(kind.into(), handler);
        self
    }

    /// The node as it registers; checks names and kinds.
    pub fn spec(&self, session: &str) -> Result<NodeSpec, Invalid> {
        NodeSpec {
            name: self.name.clone(),
            node_type: self.node_type.clone(),
            kinds: self.handlers.keys().cloned().collect(),
            capacity: self.concurrency,
            transport: transport_name::NATS.to_owned(),
            session: session.to_owned(),
            declaration: None,
        }
        .validate()
    }
}

/// Why a worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Its configuration is invalid.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// NATS failed.
    #[error(transparent)]
    Nats(#[from] NatsError),
    /// Another live worker process holds the name (at registration, or it
    /// took the name over while this one could not be heard).
    #[error("{0}")]
    NameTaken(String),
    /// An operator removed this node (`backstop nodes remove`): this
    /// process stops, its running handlers finished or handed back as at
    /// a shutdown. Started again, it registers as a new node.
    #[error("{0}")]
    Removed(String),
    /// The NATS server refuses this worker a subject of its own name: its
    /// credentials are confined to another name or prefix.
    #[error(
        "NATS does not let this worker use the subjects of node {name} ({said}); its \
         credentials are confined to another name or subject prefix"
    )]
    Denied {
        /// The node's name.
        name: String,
        /// What the server said.
        said: String,
    },
}

struct Shared {
    client: async_nats::Client,
    subjects: Subjects,
    config: WorkerConfig,
    session: String,
    /// Marks the handlers it runs ([`backstop_process::owner`]).
    owner: Owner,
    /// A coordinator stored its registration under this process's
    /// session: until then it takes no offer and answers for nothing, so
    /// a second process under a live name never steals the first's work.
    registered: AtomicBool,
    /// Another process holds the name now, or the node was removed: this
    /// one stops.
    lost_name: CancellationToken,
    /// Why, for [`WorkerError::NameTaken`] or [`WorkerError::Removed`].
    taken: Mutex<Option<Refused>>,
    /// Attempts running, by delivery, with what stops each one.
    running: Mutex<HashMap<DeliveryId, (Token, CancellationToken)>>,
    /// Attempts stopped because their operation was cancelled.
    cancelled: Mutex<HashSet<Token>>,
    /// Outcomes not yet stored by a coordinator.
    reporting: Mutex<HashSet<Token>>,
    slots: Arc<Semaphore>,
    /// Stops running handlers (after the grace period).
    stop_handlers: CancellationToken,
    /// Gives up reporting outcomes (long after shutdown).
    give_up: CancellationToken,
}

/// Connects to the NATS `server` — waiting for it, as
/// [`NatsServer::connect_when_ready`] does — with its inbox under the
/// node's own subjects ([`Subjects::inbox`]), then runs a worker until
/// `shutdown` and shuts down as the module documentation says. A server
/// that refuses it a subject of its own name ends it
/// ([`WorkerError::Denied`]).
pub async fn run(
    server: &NatsServer,
    subjects: Subjects,
    config: WorkerConfig,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let session = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    let spec = config.spec(&session)?;
    let server = server.clone().with_inbox_prefix(subjects.inbox(&spec.name));
    let name = format!("backstop worker {}", spec.name);
    let Some(connection) = server.connect_when_ready(&name, &shutdown).await? else {
        return Ok(());
    };
    let denied = async {
        WorkerError::Denied {
            name: spec.name.clone(),
            said: connection.denied().await,
        }
    };
    tokio::select! {
        ran = serve(&connection, subjects, config, &spec, shutdown) => ran,
        denied = denied => Err(denied),
    }
}

async fn serve(
    connection: &NatsConnection,
    subjects: Subjects,
    config: WorkerConfig,
    spec: &NodeSpec,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let client = connection.client().clone();
    let session = spec.session.clone();
    // Handlers a previous process of this worker left running (it was
    // killed) go before anything is offered: their deliveries run again.
    let owner = owner_of(&subjects, &spec.name);
    let leftovers = owner::stop_previous(vec![owner.clone()]).await;
    if let Some(pid) = leftovers.live_owners.first() {
        return Err(WorkerError::NameTaken(format!(
            "another worker process (pid {pid}) on this machine runs handlers as node {}; \
             stop it, or pick another --name",
            spec.name
        )));
    }
    let subject = subjects.deliver(&spec.name);
    // Subscribed before registering: a node that registers is a node that
    // answers.
    let mut offers = client
        .subscribe(subject.clone())
        .await
        .map_err(|source| NatsError::Subscribe { subject, source })?;
    let shared = Arc::new(Shared {
        client,
        subjects,
        slots: Arc::new(Semaphore::new(spec.capacity as usize)),
        config,
        session,
        owner,
        registered: AtomicBool::new(false),
        lost_name: CancellationToken::new(),
        taken: Mutex::new(None),
        running: Mutex::new(HashMap::new()),
        cancelled: Mutex::new(HashSet::new()),
        reporting: Mutex::new(HashSet::new()),
        stop_handlers: CancellationToken::new(),
        give_up: CancellationToken::new(),
    });
    let holding = shared.subjects.holding(&spec.name);
    let questions = shared
        .client
        .subscribe(holding.clone())
        .await
        .map_err(|source| NatsError::Subscribe {
            subject: holding,
            source,
        })?;
    let answers = tokio::spawn(answer_holding(Arc::clone(&shared), questions));
    let session_subject = shared.subjects.session(&spec.name, &shared.session);
    let probes = shared
        .client
        .subscribe(session_subject.clone())
        .await
        .map_err(|source| NatsError::Subscribe {
            subject: session_subject,
            source,
        })?;
    let alive = tokio::spawn(answer_alive(Arc::clone(&shared), probes));
    let stop_subject = shared.subjects.stop(&spec.name);
    let stops = shared
        .client
        .subscribe(stop_subject.clone())
        .await
        .map_err(|source| NatsError::Subscribe {
            subject: stop_subject,
            source,
        })?;
    let stopping = tokio::spawn(answer_stop(Arc::clone(&shared), stops));
    let registered = tokio::select! {
        r = register(&shared, spec) => r,
        () = shutdown.cancelled() => Ok(()),
    };
    if let Err(refused) = registered {
        answers.abort();
        alive.abort();
        stopping.abort();
        return Err(refused.into());
    }
    if shutdown.is_cancelled() {
        answers.abort();
        alive.abort();
        stopping.abort();
        return Ok(());
    }
    let beats = tokio::spawn(heartbeats(
        Arc::clone(&shared),
        spec.clone(),
        shutdown.clone(),
    ));
    let handlers = TaskTracker::new();
    let reports = TaskTracker::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = shared.lost_name.cancelled() => break,
            msg = offers.next() => {
                let Some(msg) = msg else { break };
                offer(&shared, msg, &handlers, &reports).await;
            }
        }
    }
    // No more offers: a coordinator that offers now hears "no responders"
    // and parks this node until it is back.
    let _ = offers.unsubscribe().await;
    beats.abort();
    let leaving = HeartbeatMsg {
        name: spec.name.clone(),
        session: shared.session.clone(),
        leaving: true,
    };
    let _ = request::<NodeAck>(&shared, shared.subjects.heartbeat(&spec.name), &leaving).await;
    handlers.close();
    let count = shared.running.lock().map(|r| r.len()).unwrap_or(0);
    if count > 0 {
        tracing::info!(
            "waiting up to {} for {count} running handlers",
            backstop_core::HumanDuration(shared.config.grace)
        );
    }
    if tokio::time::timeout(shared.config.grace, handlers.wait())
        .await
        .is_err()
    {
        tracing::warn!("stopping the handlers still running; their deliveries are handed back");
        shared.stop_handlers.cancel();
        handlers.wait().await;
    }
    reports.close();
    if tokio::time::timeout(Duration::from_secs(15), reports.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "some outcomes could not be reported; their deliveries return to pending when their leases end"
        );
        shared.give_up.cancel();
    }
    answers.abort();
    alive.abort();
    stopping.abort();
    let _ = shared.client.flush().await;
    let taken = shared.taken.lock().ok().and_then(|mut t| t.take());
    match taken {
        Some(refused) => Err(refused.into()),
        None => Ok(()),
    }
}

/// Why a registration was refused for good.
#[derive(Debug)]
enum Refused {
    /// Another live process holds the name.
    Taken(String),
    /// An operator removed the node this process registered.
    Removed(String),
}

impl From<Refused> for WorkerError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Taken(why) => WorkerError::NameTaken(why),
            Refused::Removed(why) => WorkerError::Removed(why),
        }
    }
}

/// Stops the handlers of the attempts a coordinator names, for as long as
/// this process runs: their operation was cancelled with `--stop-running`.
async fn answer_stop(shared: Arc<Shared>, mut asks: async_nats::Subscriber) {
    while let Some(msg) = asks.next().await {
        let Ok(stop) = serde_json::from_slice::<StopMsg>(&msg.payload) else {
            tracing::warn!("an unreadable request to stop handlers arrived on NATS; ignored");
            continue;
        };
        let running = shared.running.lock().unwrap_or_else(|p| p.into_inner());
        for token in &stop.tokens {
            if let Some((held, stop)) = running.get(&token.delivery)
                && held == token
            {
                tracing::info!("stopping the handler of {token}: its operation was cancelled");
                if let Ok(mut c) = shared.cancelled.lock() {
                    c.insert(*token);
                }
                stop.cancel();
            }
        }
    }
}

/// Answers, for as long as this process runs, that it is alive: how a
/// coordinator tells a live holder of the name from a dead one.
async fn answer_alive(shared: Arc<Shared>, mut probes: async_nats::Subscriber) {
    while let Some(msg) = probes.next().await {
        if let Some(to) = msg.reply {
            let _ = shared.client.publish(to, Bytes::from_static(b"{}")).await;
        }
    }
}

/// Who runs the handlers of worker `name` under these subjects: the same
/// for every process of it on this machine.
pub fn owner_of(subjects: &Subjects, name: &str) -> Owner {
    Owner::new(&["worker", subjects.prefix(), name])
}

/// Tells a coordinator starting up which attempts this worker holds, so
/// that it returns the others a previous coordinator left in flight.
async fn answer_holding(shared: Arc<Shared>, mut questions: async_nats::Subscriber) {
    while let Some(msg) = questions.next().await {
        if !shared.registered.load(Ordering::SeqCst) {
            continue;
        }
        let mut tokens: Vec<Token> = shared
            .running
            .lock()
            .map(|r| r.values().map(|(token, _)| *token).collect())
            .unwrap_or_default();
        if let Ok(reporting) = shared.reporting.lock() {
            tokens.extend(reporting.iter().copied());
        }
        if let (Some(to), Ok(body)) = (msg.reply, serde_json::to_vec(&HoldingMsg { tokens })) {
            let _ = shared.client.publish(to, Bytes::from(body)).await;
        }
    }
}

/// Registers until a coordinator stores it. Refused for good when another
/// live process holds the name, or an operator removed this process's
/// node.
async fn register(shared: &Arc<Shared>, spec: &NodeSpec) -> Result<(), Refused> {
    let msg = RegisterMsg {
        name: spec.name.clone(),
        node_type: spec.node_type.clone(),
        kinds: spec.kinds.clone(),
        capacity: spec.capacity,
        session: shared.session.clone(),
    };
    let policy = Policy::api()
        .with_initial_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5));
    let mut rng = fastrand::Rng::new();
    let mut said = false;
    let mut retry = 0;
    loop {
        match request::<NodeAck>(shared, shared.subjects.register(&spec.name), &msg).await {
            Ok(ack) if ack.ok => {
                shared.registered.store(true, Ordering::SeqCst);
                tracing::info!(
                    "registered as node {} of type {} (handles {}; {} at once)",
                    spec.name,
                    spec.node_type,
                    spec.kinds.join(", "),
                    spec.capacity
                );
                return Ok(());
            }
            Ok(ack) if ack.taken => {
                return Err(Refused::Taken(
                    ack.error
                        .unwrap_or_else(|| format!("node name {} is taken", spec.name)),
                ));
            }
            Ok(ack) if ack.removed => {
                return Err(Refused::Removed(ack.error.unwrap_or_else(|| {
                    format!("node {} was removed from the fleet", spec.name)
                })));
            }
            Ok(ack) => {
                tracing::warn!(
                    "the coordinator refused the registration: {}; trying again",
                    ack.error.unwrap_or_default()
                );
            }
            Err(e) if !said => {
                tracing::info!("no coordinator answers yet ({e}); waiting for one");
                said = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(policy.delay_after(retry, &mut rng)).await;
        retry = retry.saturating_add(1);
    }
}

async fn heartbeats(shared: Arc<Shared>, spec: NodeSpec, shutdown: CancellationToken) {
    let msg = HeartbeatMsg {
        name: spec.name.clone(),
        session: shared.session.clone(),
        leaving: false,
    };
    let mut lost = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(shared.config.heartbeat) => {}
        }
        match request::<NodeAck>(&shared, shared.subjects.heartbeat(&spec.name), &msg).await {
            Ok(ack) if ack.register => {
                tracing::info!("the coordinator does not know this node; registering again");
                // Another process may hold the name now: no offer is taken
                // until the name is this one's again.
                shared.registered.store(false, Ordering::SeqCst);
                match register(&shared, &spec).await {
                    Ok(()) => {}
                    Err(Refused::Taken(taken)) => {
                        tracing::error!(
                            "{taken}; this worker stops, and its running handlers with it: the \
                             other process runs their deliveries now"
                        );
                        if let Ok(mut t) = shared.taken.lock() {
                            *t = Some(Refused::Taken(taken));
                        }
                        shared.stop_handlers.cancel();
                        shared.lost_name.cancel();
                        return;
                    }
                    Err(Refused::Removed(why)) => {
                        // Its handlers finish, or are handed back, as at a
                        // shutdown: nobody else runs their deliveries.
                        if let Ok(mut t) = shared.taken.lock() {
                            *t = Some(Refused::Removed(why));
                        }
                        shared.lost_name.cancel();
                        return;
                    }
                }
                lost = false;
            }
            Ok(_) => {
                if lost {
                    tracing::info!("a coordinator answers heartbeats again");
                    lost = false;
                }
            }
            Err(e) => {
                if !lost {
                    tracing::warn!("no coordinator answered a heartbeat ({e}); still trying");
                    lost = true;
                }
            }
        }
    }
}

/// Accepts or refuses one offered attempt.
async fn offer(
    shared: &Arc<Shared>,
    msg: async_nats::Message,
    handlers: &TaskTracker,
    reports: &TaskTracker,
) {
    let refuse = |refused, reason: String| DeliverAck {
        accepted: false,
        refused: Some(refused),
        reason: Some(reason),
    };
    if !shared.registered.load(Ordering::SeqCst) {
        // Not this process's name (yet): the process that holds it answers.
        return;
    }
    let (work, report_to) = match serde_json::from_slice::<Offer>(&msg.payload) {
        Ok(offer) => (
            Work {
                owner: Some(shared.owner.clone()),
                ..offer.work
            },
            offer.report_to,
        ),
        Err(e) => {
            let ack = refuse(Refusal::Unreadable, format!("unreadable offer: {e}"));
            reply(shared, &msg, &ack).await;
            return;
        }
    };
    let Some(handler) = shared.config.handlers.get(&work.kind).cloned() else {
        let ack = refuse(
            Refusal::Unhandled,
            format!("this worker has no handler for {:?}", work.kind),
        );
        reply(shared, &msg, &ack).await;
        return;
    };
    let fresh = shared
        .running
        .lock()
        .map(|r| !r.contains_key(&work.token.delivery))
        .unwrap_or(false);
    if !fresh {
        let ack = refuse(
            Refusal::Busy,
            format!(
                "an older attempt of delivery {} still runs here",
                work.token.delivery
            ),
        );
        reply(shared, &msg, &ack).await;
        return;
    }
    let Ok(permit) = Arc::clone(&shared.slots).try_acquire_owned() else {
        let ack = refuse(Refusal::Busy, "every handler slot is taken".to_owned());
        reply(shared, &msg, &ack).await;
        return;
    };
    // Stopped with every handler at a shutdown, or on its own when its
    // operation is cancelled.
    let stop = shared.stop_handlers.child_token();
    if let Ok(mut r) = shared.running.lock() {
        r.insert(work.token.delivery, (work.token, stop.clone()));
    }
    reply(
        shared,
        &msg,
        &DeliverAck {
            accepted: true,
            refused: None,
            reason: None,
        },
    )
    .await;
    tracing::debug!("running {} ({})", work.token, work.kind);
    let shared = Arc::clone(shared);
    let reports = reports.clone();
    handlers.spawn(async move {
        let mut handled = handler.handle(&work, &stop).await;
        drop(permit);
        if shared
            .cancelled
            .lock()
            .map(|mut c| c.remove(&work.token))
            .unwrap_or(false)
        {
            handled = handled.stopped_by_cancel();
        }
        // Reporting before no longer running, so that the attempt is never
        // held by neither.
        if let Ok(mut r) = shared.reporting.lock() {
            r.insert(work.token);
        }
        if let Ok(mut r) = shared.running.lock() {
            r.remove(&work.token.delivery);
        }
        match &handled.outcome {
            Outcome::Done => tracing::debug!("{} ({}): done", work.token, work.kind),
            other => tracing::info!("{} ({}): {}", work.token, work.kind, other.describe()),
        }
        let result = ResultMsg {
            token: work.token,
            node: work.node.clone(),
            outcome: handled.outcome,
            output: handled.output,
        };
        let reporter = Arc::clone(&shared);
        reports.spawn(async move { report(&reporter, result, report_to).await });
    });
}

/// Reports an outcome until a coordinator has stored it: to the
/// coordinator that offered the attempt, or to any once that one is gone.
async fn report(shared: &Arc<Shared>, result: ResultMsg, to: Option<String>) {
    let policy = Policy::api()
        .with_initial_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5));
    let mut rng = fastrand::Rng::new();
    let mut retry = 0;
    let any = shared.subjects.results(&shared.config.name);
    // Only a subject of this node's own: the server may allow no other.
    let mut subject = to
        .filter(|to| {
            to.strip_prefix(any.as_str())
                .is_some_and(|c| c.starts_with('.'))
        })
        .unwrap_or_else(|| any.clone());
    // What the server takes in one message, less room for the headers.
    let max = shared.client.server_info().max_payload.saturating_sub(1024);
    let body = match result.fit(max) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!("cannot encode the outcome of {}: {e}", result.token);
            return;
        }
    };
    loop {
        let answer = request_raw::<ResultAck>(shared, subject.clone(), body.clone()).await;
        match answer {
            Ok(ResultAck { stored: true }) => break,
            Err(RequestError::NoResponders) if subject != any => {
                tracing::debug!(
                    "the coordinator that offered {} is gone; reporting to any",
                    result.token
                );
                subject = any.clone();
                continue;
            }
            _ => {}
        }
        tokio::select! {
            () = shared.give_up.cancelled() => break,
            () = tokio::time::sleep(policy.delay_after(retry, &mut rng)) => {}
        }
        retry = retry.saturating_add(1);
    }
    if let Ok(mut r) = shared.reporting.lock() {
        r.remove(&result.token);
    }
}

async fn reply(shared: &Shared, msg: &async_nats::Message, ack: &DeliverAck) {
    let Some(to) = msg.reply.clone() else {
        return;
    };
    if let Ok(body) = serde_json::to_vec(ack) {
        let _ = shared.client.publish(to, Bytes::from(body)).await;
    }
}

/// Why a request got no usable answer.
#[derive(Debug)]
enum RequestError {
    /// Nobody listens on the subject.
    NoResponders,
    /// Anything else, for people.
    Other(String),
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::NoResponders => f.write_str("no responders"),
            RequestError::Other(e) => f.write_str(e),
        }
    }
}

/// One request with a JSON body and a JSON answer.
/// Heartbeats and registrations are answered at once; an outcome once it
/// is stored, or after [`RESULT_WAIT`] with "not yet". A coordinator that
/// dies holding a report leaves it unanswered: it is sent again soon after.
async fn request<T: serde::de::DeserializeOwned>(
    shared: &Shared,
    subject: String,
    body: &impl serde::Serialize,
) -> Result<T, RequestError> {
    let body = serde_json::to_vec(body).map_err(|e| RequestError::Other(e.to_string()))?;
    request_raw(shared, subject, body).await
}

/// [`request`] with a body already encoded.
async fn request_raw<T: serde::de::DeserializeOwned>(
    shared: &Shared,
    subject: String,
    body: Vec<u8>,
) -> Result<T, RequestError> {
    let timeout = if subject.starts_with(&shared.subjects.results(&shared.config.name)) {
        RESULT_WAIT + Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    let request = async_nats::Request::new()
        .payload(Bytes::from(body))
        .timeout(Some(timeout));
    let msg = shared
        .client
        .send_request(subject, request)
        .await
        .map_err(|e| match e.kind() {
            async_nats::client::RequestErrorKind::NoResponders => RequestError::NoResponders,
            _ => RequestError::Other(e.to_string()),
        })?;
    serde_json::from_slice(&msg.payload)
        .map_err(|e| RequestError::Other(format!("an unreadable answer: {e}")))
}
