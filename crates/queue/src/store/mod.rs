//! Where the queue lives: a small trait, a SQLite store for one machine and
//! a PostgreSQL store for a fleet with several coordinators. Every store
//! passes the same conformance suite (`tests/conformance.rs`): claims carry
//! a lease, replies are matched by attempt token, and each housekeeping
//! step is its own call that a coordinator runs while it holds the
//! housekeeping lock ([`Store::lead`]).

mod postgres;
mod sqlite;

use std::time::{Duration, SystemTime};

use backstop_core::StateLocation;

pub use self::postgres::PostgresStore;
pub use self::sqlite::SqliteStore;
use crate::model::{
    Attempt, Cancellation, Claim, Delivery, DeliveryId, DeliveryState, Hold, NewOp, Node, NodeSpec,
    NodeStatus, Op, OpId, Settings, Target, Token,
};
use crate::schedule::Settle;

/// Storage of nodes, operations and deliveries.
///
/// Promises every implementation keeps (the conformance suite checks them):
///
/// - Every write is one transaction: it happens whole or not at all, and a
///   call that is refused ([`StoreError::Rejected`]) changes nothing.
/// - [`Store::claim`] never hands out the same attempt twice, never more
///   deliveries to a node than its capacity minus those in flight, never a
///   delivery to a node that is not healthy or is drained, never a kind the
///   node does not declare, and never a delivery whose node still runs an
///   older delivery with the same key.
/// - [`Store::settle`] applies a decision only while the delivery's
///   current attempt is the decision's token; a decision for an older
///   attempt is reported [`Settled::Stale`] and changes nothing. A late
///   success of the current attempt is still taken after the attempt was
///   returned to pending.
/// - Nothing is deleted but deliveries that can never be delivered (their
///   node is gone or no longer handles their kind, [`Store::prune`]) and,
///   once the retention time has passed, finished history
///   ([`Store::retain`]): dead deliveries stay until requeued. A cancelled
///   operation or a removed node keeps its deliveries, `cancelled`, with
///   who and when; the deliveries of a removed node are never revived.
/// - An attempt that is worth it ([`crate::handler::Handled::worth_keeping`])
///   is kept with its outcome and output, the last
///   [`ATTEMPTS_KEPT`] of each delivery, and removed with its delivery.
/// - A delivery read back says what holds now: no last error once done,
///   attempts since its last requeue beside its attempt number, and for a
///   pending one whose node is drained or parked, [`Hold`].
/// - Times read back equal times written, at millisecond precision.
/// - A handler's errors and output are kept with any NUL character
///   replaced by U+FFFD, by every store (PostgreSQL cannot hold one).
///
/// Every call blocks the calling thread until the database answers (a
/// SQLite file waiting out another writer, a PostgreSQL server across the
/// network): from async code, call it where blocking is allowed
/// (`tokio::task::spawn_blocking`).
pub trait Store: Send + Sync {
    /// Registers `node` (or updates it: type, kinds, capacity, session) and
    /// marks it healthy. A new session means the process behind the node
    /// restarted: its deliveries in flight are returned to pending without
    /// spending attempts. Deliveries of kinds it no longer declares are
    /// removed, and the live operations of its type that it has not had
    /// yet are delivered to it.
    ///
    /// A name an operator removed ([`Store::remove_node`]) is refused
    /// ([`Rejection::Removed`]) to the process that was removed (the same
    /// session) and, for a node declared in a file, while its declaration
    /// is the one it was removed with; anyone else registering it makes a
    /// new node, which gets none of the old one's deliveries.
    fn register(&self, node: &NodeSpec, now: SystemTime) -> Result<Registered, StoreError>;

    /// Removes the nodes of `transport` whose names are not in `keep` (the
    /// local nodes no longer in the configuration), with their deliveries
    /// not yet finished, and forgets the removals of such nodes
    /// ([`Store::remove_node`]): a file that names one again brings it
    /// back. Returns the removed names.
    fn retire(
        &self,
        transport: &str,
        keep: &[String],
        now: SystemTime,
    ) -> Result<Vec<String>, StoreError>;

    /// Records a heartbeat of `name` from the process `session`. A node
    /// that is unhealthy or unreachable becomes healthy. `leaving` marks it
    /// unhealthy at once (the worker is stopping).
    fn heartbeat(
        &self,
        name: &str,
        session: &str,
        leaving: bool,
        now: SystemTime,
    ) -> Result<Heartbeat, StoreError>;

    /// Marks unhealthy every healthy node whose last heartbeat is older
    /// than `stale_before` (nodes inside the coordinator send none and are
    /// never stale), so that nothing new is claimed for them. Returns the
    /// names. Their attempts in flight stay theirs: a late heartbeat does
    /// not prove a handler stopped, and its outcome is stored when it
    /// comes. They return to pending only on a sign that nothing runs
    /// them — the node registers anew ([`Store::register`]), says it does
    /// not hold them ([`Store::release`]), or their lease ends
    /// ([`Store::rescue`]).
    fn mark_stale(
        &self,
        stale_before: SystemTime,
        now: SystemTime,
    ) -> Result<Vec<String>, StoreError>;

    /// Drains `name` (no new deliveries) or undrains it.
    fn drain(&self, name: &str, drained: bool, now: SystemTime) -> Result<Node, StoreError>;

    /// Removes node `name` for `by` (decommission): a remote node that is
    /// not healthy, or any node while drained with no delivery in flight;
    /// else refused ([`Rejection::NotRemovable`]) and nothing changes. Its
    /// pending and dead deliveries end `cancelled` (with `by` and `now`);
    /// those in flight on a node that is down are marked as a cancelled
    /// operation's are (they end `done` on a late success, else
    /// `cancelled`). Its history stays, it is no target of anything from
    /// now on, and its removal is remembered (see [`Store::register`]).
    fn remove_node(&self, name: &str, by: &str, now: SystemTime) -> Result<Removed, StoreError>;

    /// Every node, by name, with counts of its deliveries.
    fn nodes(&self) -> Result<Vec<Node>, StoreError>;

    /// Submits an operation: supersedes the older operations with the same
    /// key on its nodes, and creates one pending delivery per target node
    /// that handles its kind. Refused, changing nothing, when it names an
    /// unknown node or when no target node handles its kind.
    ///
    /// With an idempotency key, the key is stored with the operation in the
    /// same transaction, unique: a repeat with the key answers what the
    /// first answered ([`Submitted::repeated`]) and writes nothing; one
    /// whose request differs is refused
    /// ([`Rejection::IdempotencyKeyReused`]). Concurrent repeats, on any
    /// handle or coordinator, create one operation: the key's unique
    /// constraint decides, and the others wait for the first to commit.
    /// A refused submission leaves no key behind.
    ///
    /// The batch of one ([`Store::submit_all`]).
    fn submit(&self, op: &NewOp, now: SystemTime) -> Result<Submitted, StoreError> {
        match self.submit_all(std::slice::from_ref(op), now) {
            Ok(mut submitted) => submitted.pop().ok_or_else(|| unanswered(&self.location())),
            Err(StoreError::Rejected(Rejection::InBatch { rejection, .. })) => {
                Err(StoreError::Rejected(*rejection))
            }
            Err(e) => Err(e),
        }
    }

    /// Submits `ops` in one transaction, as [`Store::submit`] submits
    /// each, in order: one [`Submitted`] per operation. A later operation
    /// with the key of an earlier one supersedes it; one that repeats an
    /// earlier one's idempotency key answers it. When one is refused, the
    /// whole batch is, changing nothing: [`Rejection::InBatch`] names the
    /// first refused operation's index and why. An empty batch writes
    /// nothing.
    fn submit_all(&self, ops: &[NewOp], now: SystemTime) -> Result<Vec<Submitted>, StoreError>;

    /// Operations, newest first, with counts of their deliveries by state.
    fn ops(&self, filter: &OpFilter) -> Result<Vec<OpSummary>, StoreError>;

    /// One operation and all its deliveries.
    fn op(&self, id: OpId) -> Result<(Op, Vec<Delivery>), StoreError>;

    /// Cancels operation `id` for `by`: its pending and dead deliveries
    /// (those waiting for their node too) end `cancelled`, with `by` and
    /// `now`; those in flight are marked and run on, to end `done` if
    /// their handler succeeds and `cancelled` otherwise; and it is no
    /// longer live (nodes that join later do not get it). Cancelling it
    /// again changes nothing but reports what still runs; the first
    /// cancellation's who and when stay.
    fn cancel(&self, id: OpId, by: &str, now: SystemTime) -> Result<Cancelled, StoreError>;

    /// The attempts kept ([`ATTEMPTS_KEPT`] per delivery), with their
    /// outcomes and output.
    fn attempts(&self, of: &AttemptsOf) -> Result<Vec<Attempt>, StoreError>;

    /// Deliveries, newest first.
    fn deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>, StoreError>;

    /// Returns dead deliveries to pending with their counters reset (the
    /// attempt number keeps growing, so replies to attempts before the
    /// requeue stay stale). Returns how many.
    fn requeue(&self, which: &Requeue, now: SystemTime) -> Result<u64, StoreError>;

    /// Claims due deliveries for the nodes this coordinator reaches: each
    /// becomes in flight under a new attempt token, leased until
    /// `now + lease`.
    fn claim(&self, request: &ClaimRequest) -> Result<Vec<Claim>, StoreError>;

    /// Applies decisions, in one transaction; one [`Settled`] per decision.
    /// An applied decision keeps the attempt's record when it has one
    /// ([`Settle::handled`]). A delivery whose operation was cancelled
    /// while it ran ends `done` on success, else `cancelled`. A decision
    /// offered again after it was applied (its answer lost: a connection
    /// cut between the commit and the reply) answers `Applied` as the
    /// first time did and changes nothing ([`Settled::replayed`]).
    fn settle(&self, batch: &[Settle]) -> Result<Vec<Settled>, StoreError>;

    /// Returns to pending, without spending attempts, the deliveries in
    /// flight whose lease ended before `now` (the coordinator that held
    /// them died, or no reply came). Returns their tokens.
    fn rescue(&self, now: SystemTime) -> Result<Vec<Token>, StoreError>;

    /// Returns these attempts to pending, without spending attempts, if
    /// they are still in flight (their node does not hold them: its worker
    /// process is gone, or a coordinator that stopped had claimed them).
    /// Returns those released.
    fn release(
        &self,
        tokens: &[Token],
        why: &str,
        now: SystemTime,
    ) -> Result<Vec<Token>, StoreError>;

    /// Start-up housekeeping, under the store's exclusive lock so that one
    /// coordinator does it at a time: removes the unfinished deliveries
    /// that can never be delivered — their node is gone, or no longer
    /// handles their kind. A removed node's are history, and stay.
    fn prune(&self, now: SystemTime) -> Result<Pruned, StoreError>;

    /// Retention: removes finished history older than `before`, so that
    /// the hot table stays small. Keyless operations created before it stop
    /// being live (nodes that join later no longer receive them); then the
    /// done, superseded and cancelled deliveries of operations that are not
    /// live, finished before it, are removed with the attempts kept of
    /// them — at most `limit` per call, oldest first — and so are those
    /// operations once nothing of theirs is left. Dead deliveries, and the
    /// live operation of each key with its deliveries (the desired state:
    /// who has it), stay.
    ///
    /// Idempotency keys are kept [`IDEMPOTENCY_WINDOW`] longer than
    /// history: those created before `before - IDEMPOTENCY_WINDOW` are
    /// removed (at most `limit` per call), and an operation stays while
    /// a key names it, however short the retention time.
    ///
    /// [`IDEMPOTENCY_WINDOW`]: crate::model::IDEMPOTENCY_WINDOW
    fn retain(&self, before: SystemTime, limit: u32) -> Result<Retained, StoreError>;

    /// Takes the housekeeping lock, or checks that this handle still holds
    /// it: `true` while it does. Housekeeping (the health monitor, the
    /// start-up prune, the lease rescue, retention) runs on the one
    /// coordinator that holds it; when that one dies, the lock moves to
    /// another. A store one machine owns holds it always.
    fn lead(&self) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// Lets the housekeeping lock go (a clean stop), so that another
    /// coordinator takes it at once.
    fn resign(&self) {}

    /// The earliest next attempt time among pending deliveries to healthy,
    /// undrained nodes of `transports` (and, when `local` is given, of
    /// those local nodes only): when the dispatcher should look again.
    fn next_due(
        &self,
        transports: &[String],
        local: Option<&[String]>,
    ) -> Result<Option<SystemTime>, StoreError>;

    /// What `/metrics` reads of the queue at scrape time, in a few indexed
    /// queries whose cost grows with the deliveries not yet finished and
    /// the nodes, never with history ([`Gauges`]).
    fn gauges(&self) -> Result<Gauges, StoreError>;

    /// Where the store is, for messages; never a password.
    fn location(&self) -> String;

    /// What the queue has been doing since `since` (the dashboard's
    /// overview): every delivery kept by state, deliveries done and
    /// attempts failed per minute, and the oldest pending delivery.
    fn activity(&self, since: SystemTime) -> Result<Activity, StoreError>;
}

/// What [`Store::activity`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// Every delivery kept, by state.
    pub deliveries: Counts,
    /// The minutes since `since` in which something finished, oldest
    /// first (a minute with nothing is left out).
    pub minutes: Vec<Minute>,
    /// When the oldest pending delivery was created.
    pub oldest_pending: Option<SystemTime>,
}

/// One minute of [`Activity`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Minute {
    /// Its start (a whole minute since the epoch).
    pub start: SystemTime,
    /// Deliveries that ended `done` in it.
    pub done: u64,
    /// Attempts whose handler failed in it — the failures that count
    /// towards a delivery's cap (of the attempts kept: the last
    /// [`ATTEMPTS_KEPT`] of each delivery).
    pub failed: u64,
}

impl Activity {
    /// Builds it from rows: (state, count), (minute, done), (minute,
    /// failed), and the oldest pending creation time, in milliseconds.
    pub(crate) fn from_rows(
        states: Vec<(String, i64)>,
        done: Vec<(i64, i64)>,
        failed: Vec<(i64, i64)>,
        oldest_pending_ms: Option<i64>,
    ) -> Activity {
        let mut deliveries = Counts::default();
        for (state, n) in states {
            if let Ok(state) = state.parse() {
                deliveries.add(state, u64::try_from(n).unwrap_or(0));
            }
        }
        let mut minutes = std::collections::BTreeMap::<i64, Minute>::new();
        let rows = done
            .into_iter()
            .map(|(minute, n)| (minute, n, 0))
            .chain(failed.into_iter().map(|(minute, n)| (minute, 0, n)));
        for (minute, done, failed) in rows {
            let entry = minutes.entry(minute).or_insert_with(|| Minute {
                start: backstop_core::time::from_millis(minute.saturating_mul(60_000)),
                done: 0,
                failed: 0,
            });
            entry.done += u64::try_from(done).unwrap_or(0);
            entry.failed += u64::try_from(failed).unwrap_or(0);
        }
        Activity {
            deliveries,
            minutes: minutes.into_values().collect(),
            oldest_pending: oldest_pending_ms.map(backstop_core::time::from_millis),
        }
    }
}

/// The queue's levels now, for `/metrics` ([`Store::gauges`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Deliveries not finished — pending, in flight and dead — by state
    /// and kind, each pair that has any. Finished ones (done, superseded,
    /// cancelled) are history, counted as they finish rather than read
    /// back at every scrape.
    pub deliveries: Vec<(DeliveryState, String, u64)>,
    /// Nodes by health and drained, each pair that has any.
    pub nodes: Vec<(NodeStatus, bool, u64)>,
    /// The next attempt time of the oldest pending delivery to a healthy,
    /// undrained node: what the dispatcher has been owing the longest when
    /// it is in the past (those waiting for their node are left out; the
    /// node gauges show them).
    pub oldest_due: Option<SystemTime>,
}

/// What [`Store::register`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registered {
    /// Deliveries created for live operations it had not had.
    pub delivered: u64,
    /// Deliveries in flight returned to pending (a new session).
    pub released: u64,
    /// Unfinished deliveries removed (kinds it no longer handles).
    pub removed: u64,
}

/// What a heartbeat found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heartbeat {
    /// No such node, or it is registered by another process: the sender
    /// should register (again).
    Unknown,
    /// Recorded; the node was healthy.
    Recorded,
    /// Recorded; the node was in this state and is healthy again.
    Recovered(NodeStatus),
}

/// What [`Store::cancel`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cancelled {
    /// The operation, cancelled.
    pub op: Op,
    /// Deliveries cancelled now (pending, waiting or dead).
    pub cancelled: u64,
    /// Attempts still running: they end `done` if their handler succeeds,
    /// `cancelled` otherwise, unless they are stopped.
    pub running: Vec<Running>,
}

/// An attempt in flight, and how its node is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    /// The attempt.
    pub token: Token,
    /// Its node.
    pub node: String,
    /// How the node is reached ([`crate::model::transport_name`]).
    pub transport: String,
}

/// What [`Store::remove_node`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    /// The node as it was.
    pub node: Node,
    /// Its deliveries cancelled (pending, waiting or dead).
    pub cancelled: u64,
    /// Its deliveries in flight, on a node that is down: marked, they end
    /// `cancelled` when they come back.
    pub running: u64,
}

/// Which attempts [`Store::attempts`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptsOf {
    /// Every attempt kept of this delivery, newest first.
    Delivery(DeliveryId),
    /// The latest attempt kept of each delivery of this operation, by
    /// delivery.
    Op(OpId),
}

/// How many attempts of each delivery are kept with their output: the
/// latest ones.
pub const ATTEMPTS_KEPT: i64 = 10;

/// What [`Store::submit`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// The operation.
    pub op: Op,
    /// Deliveries created.
    pub deliveries: u64,
    /// Deliveries of older operations with the same key that it replaced.
    pub superseded: u64,
    /// A repeat of an earlier submission's idempotency key: nothing was
    /// written, and the counts are those of the first.
    pub repeated: bool,
}

/// The most rows one listing ([`Store::ops`], [`Store::deliveries`])
/// returns.
pub const MAX_LIMIT: u32 = 100_000;

/// Which operations [`Store::ops`] lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpFilter {
    /// Only operations with at least one delivery in this state.
    pub state: Option<DeliveryState>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this desired-state key.
    pub key: Option<String>,
    /// At most this many (0: a default of 100).
    pub limit: u32,
}

/// An operation with counts of its deliveries.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct OpSummary {
    /// The operation.
    #[serde(flatten)]
    pub op: Op,
    /// Deliveries by state.
    pub deliveries: Counts,
}

/// Deliveries by state.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub struct Counts {
    /// Pending.
    pub pending: u64,
    /// In flight.
    pub in_flight: u64,
    /// Done.
    pub done: u64,
    /// Dead.
    pub dead: u64,
    /// Superseded.
    pub superseded: u64,
    /// Cancelled.
    #[serde(default)]
    pub cancelled: u64,
}

impl Counts {
    /// Adds `n` to the count of `state`.
    pub fn add(&mut self, state: DeliveryState, n: u64) {
        let slot = match state {
            DeliveryState::Pending => &mut self.pending,
            DeliveryState::InFlight => &mut self.in_flight,
            DeliveryState::Done => &mut self.done,
            DeliveryState::Dead => &mut self.dead,
            DeliveryState::Superseded => &mut self.superseded,
            DeliveryState::Cancelled => &mut self.cancelled,
        };
        *slot += n;
    }
}

/// Which deliveries [`Store::deliveries`] lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    /// Only this delivery.
    pub id: Option<DeliveryId>,
    /// Only this state.
    pub state: Option<DeliveryState>,
    /// Only to this node.
    pub node: Option<String>,
    /// Only of this operation.
    pub op: Option<OpId>,
    /// At most this many (0: a default of 100).
    pub limit: u32,
}

/// Which dead deliveries to requeue.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Requeue {
    /// This one (refused if it is not dead).
    Delivery(DeliveryId),
    /// Every dead delivery to this node.
    Node(String),
    /// Every dead delivery of this operation.
    Op(OpId),
    /// Every dead delivery.
    All,
}

/// What [`Store::claim`] is asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRequest {
    /// Now.
    pub now: SystemTime,
    /// How long a claimed attempt holds its delivery when its operation
    /// sets no handler timeout of its own: the coordinator's handler
    /// timeout and the lease grace.
    pub lease: Duration,
    /// How long past its operation's own handler timeout
    /// ([`Settings::timeout`]) an attempt holds its delivery.
    pub lease_grace: Duration,
    /// At most this many claims.
    pub limit: u32,
    /// Only nodes reached by these transports.
    pub transports: Vec<String>,
    /// Only these of the local nodes (those inside this coordinator; other
    /// coordinators of a fleet run their own). `None`: every local node.
    pub local: Option<Vec<String>>,
}

impl ClaimRequest {
    /// Until when (milliseconds since the epoch) an attempt of an
    /// operation with these settings holds its delivery: its own handler
    /// timeout and the grace, else the default lease.
    pub(crate) fn lease_until(&self, settings: &Settings) -> i64 {
        let lease = settings
            .timeout
            .map_or(self.lease, |t| t.saturating_add(self.lease_grace));
        backstop_core::time::to_millis(self.now)
            .saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
    }
}

/// What became of one decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Applied; the delivery is now in this state (superseded when a newer
    /// operation with the same key arrived while it ran).
    Applied(DeliveryState),
    /// Not applied: the delivery has moved on to another attempt or ended.
    Stale,
}

impl Settled {
    /// What `settle`, already applied, answers when it is offered again:
    /// `Applied` with the delivery's state when the delivery is still at
    /// the decision's attempt, no longer in flight, and last written at the
    /// decision's time — the decision's own write; `None` (stale) when the
    /// delivery says anything else.
    pub(crate) fn replayed(
        settle: &Settle,
        attempt: i64,
        state: DeliveryState,
        updated_ms: i64,
    ) -> Option<Settled> {
        (count(attempt) == settle.token.attempt
            && state != DeliveryState::InFlight
            && updated_ms == backstop_core::time::to_millis(settle.at))
        .then_some(Settled::Applied(state))
    }
}

/// What start-up housekeeping removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Unfinished deliveries to nodes that no longer exist.
    pub gone_nodes: u64,
    /// Unfinished deliveries of kinds their node no longer handles.
    pub unhandled_kinds: u64,
}

/// What retention removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retained {
    /// Keyless operations that stopped being live.
    pub ended: u64,
    /// Finished deliveries removed.
    pub deliveries: u64,
    /// Operations removed, nothing of theirs being left.
    pub ops: u64,
    /// Idempotency keys forgotten.
    pub keys: u64,
}

/// A store that failed, or refused a request ([`Rejection`]): the error
/// every backstop store shares. Its messages name "the queue".
pub type StoreError = backstop_store::StoreError<Rejection>;

/// A request refused because of what it names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No node has this name.
    #[error("there is no node named {0:?}")]
    UnknownNode(String),
    /// No operation has this id.
    #[error("there is no operation {0}")]
    UnknownOp(OpId),
    /// No delivery has this id.
    #[error("there is no delivery {0}")]
    UnknownDelivery(DeliveryId),
    /// No target node handles the kind.
    #[error("{}", unknown_kind(kind, target, known))]
    UnknownKind {
        /// The kind asked for.
        kind: String,
        /// "nodes of type gpu", "node gpu-1".
        target: String,
        /// The kinds those nodes handle.
        known: Vec<String>,
    },
    /// The idempotency key of an earlier submission came with a different
    /// request.
    #[error(
        "this Idempotency-Key was used for a different request (operation {op}); a new submission needs a new key"
    )]
    IdempotencyKeyReused {
        /// The operation the key names.
        op: OpId,
    },
    /// An operation of a batch was refused ([`Store::submit_all`]), and
    /// with it the whole batch: nothing of it was written.
    #[error(
        "operation {index} of the batch (from 0): {rejection}; nothing of the batch was submitted"
    )]
    InBatch {
        /// Its index in the batch, from 0.
        index: usize,
        /// Why it was refused.
        rejection: Box<Rejection>,
    },
    /// Only dead deliveries can be requeued.
    #[error("delivery {id} is {state}, not dead; only dead deliveries are requeued")]
    NotDead {
        /// The delivery.
        id: DeliveryId,
        /// Its state.
        state: DeliveryState,
    },
    /// A node that may not be removed now.
    #[error("node {name} cannot be removed: {why}")]
    NotRemovable {
        /// The node.
        name: String,
        /// Why, and what to do.
        why: String,
    },
    /// A registration of a node an operator removed, by the process that
    /// was removed or from the declaration it was removed with.
    #[error(
        "node {name} was removed by {by} at {}; {}",
        humantime::format_rfc3339_seconds(*at),
        if *declared {
            "it stays removed while backstop.toml declares it as it did then (change or remove its entry)"
        } else {
            "this worker process stops (start it again to join as a new node)"
        }
    )]
    Removed {
        /// The node.
        name: String,
        /// Who removed it.
        by: String,
        /// When.
        at: SystemTime,
        /// It was declared in a file, with the same declaration.
        declared: bool,
    },
}

/// A batch of one that answered nothing: a store that broke its promise.
fn unanswered(location: &str) -> StoreError {
    StoreError::Failed {
        component: COMPONENT,
        location: location.to_owned(),
        source: "the submission answered nothing".into(),
    }
}

/// The nodes a target names (none for a type).
pub(crate) fn named(target: &Target) -> Vec<String> {
    match target {
        Target::Nodes(names) => names.clone(),
        Target::Type { .. } => Vec::new(),
    }
}

/// `e` as the refusal of the batch's operation `index`.
pub(crate) fn in_batch<E>(
    index: usize,
    e: backstop_store::TxError<E, Rejection>,
) -> backstop_store::TxError<E, Rejection> {
    match e {
        backstop_store::TxError::Rejected(rejection) => {
            backstop_store::TxError::Rejected(Rejection::InBatch {
                index,
                rejection: Box::new(rejection),
            })
        }
        e => e,
    }
}

fn unknown_kind(kind: &str, target: &str, known: &[String]) -> String {
    if known.is_empty() {
        format!("no {target} is registered, so nothing handles kind {kind:?}")
    } else {
        format!(
            "no {target} handles kind {kind:?}; they handle: {}",
            known.join(", ")
        )
    }
}

/// Opens the store at `location`: PostgreSQL for a URL, else a SQLite
/// file. A SQLite file that cannot be created or opened (permission
/// denied, a file where a directory should be) is
/// [`StoreError::Unusable`]: unlike an unreachable database, it will not
/// get better by waiting.
pub fn open(location: &StateLocation) -> Result<Box<dyn Store>, StoreError> {
    Ok(match location {
        StateLocation::Postgres(url) => Box::new(PostgresStore::open(url)?),
        StateLocation::Sqlite(path) => Box::new(SqliteStore::open(path)?),
    })
}

/// The name of the queue's schema in `backstop_schema`, the table of
/// versions every backstop component keeps in a shared database.
pub(crate) const COMPONENT: &str = "queue";

/// The queue's SQLite migrations (`migrations/sqlite/`), in order;
/// version N is the first N applied ([`backstop_store::sqlite::Database::open`]
/// keeps the count). Never edit one that has shipped: add the next, for
/// both backends, so that a version means the same schema in each.
pub(crate) const SQLITE_MIGRATIONS: &[&str] = &[
    // 1: nodes, operations, deliveries.
    include_str!("../../migrations/sqlite/0001_nodes_ops_deliveries.sql"),
    // 2: retention finds finished deliveries by age without reading the rest.
    include_str!("../../migrations/sqlite/0002_finished_index.sql"),
    // 3: a submission in one round trip (PostgreSQL; SQLite runs nothing).
    include_str!("../../migrations/sqlite/0003_submit_function.sql"),
    // 4: idempotent submissions: each key, unique, with what the first
    // submission answered; `op` is NULL only inside the transaction that
    // writes it.
    include_str!("../../migrations/sqlite/0004_idempotency.sql"),
    // 5: the submission in one round trip, with its idempotency key
    // (PostgreSQL; SQLite runs nothing).
    include_str!("../../migrations/sqlite/0005_submit_idempotent.sql"),
    // 6: the attempt number at the last requeue, so that attempts since it can
    // be shown while the attempt number keeps growing.
    include_str!("../../migrations/sqlite/0006_requeued_attempt.sql"),
    // 7: cancellation, node removal, attempt records and per-operation
    // settings.
    include_str!("../../migrations/sqlite/0007_operations.sql"),
    // 8: the deliveries not finished, by state and kind, counted from an
    // index for `/metrics`.
    include_str!("../../migrations/sqlite/0008_open_by_kind.sql"),
    // 9: two indexes fewer on the deliveries: the unique (operation, node)
    // serves the reads by operation, and `/metrics` counts through the
    // partial indexes of the unfinished states.
    include_str!("../../migrations/sqlite/0009_fewer_delivery_indexes.sql"),
    // 10: the due deliveries indexed in the order claims take them
    // (PostgreSQL; SQLite runs nothing).
    include_str!("../../migrations/sqlite/0010_due_in_claim_order.sql"),
    // 11: a batch of submissions written set-wise (PostgreSQL; SQLite runs
    // nothing).
    include_str!("../../migrations/sqlite/0011_submit_batch.sql"),
    // 12: the batch's targets worked out once, carrying their supersede
    // chain (PostgreSQL; SQLite runs nothing).
    include_str!("../../migrations/sqlite/0012_submit_batch_one_pass.sql"),
    // 13: the submission's function planned once per connection, not per
    // call (PostgreSQL; SQLite runs nothing).
    include_str!("../../migrations/sqlite/0013_submit_generic_plans.sql"),
    // 14: a batch ends older live operations key by key (PostgreSQL;
    // SQLite runs nothing).
    include_str!("../../migrations/sqlite/0014_submit_batch_live_by_key.sql"),
    // 15: every text column compares byte-wise (PostgreSQL; SQLite's
    // do already).
    include_str!("../../migrations/sqlite/0015_text_compares_byte_wise.sql"),
];

/// The queue's PostgreSQL migrations (`migrations/postgres/`), as
/// [`SQLITE_MIGRATIONS`].
pub(crate) const POSTGRES_MIGRATIONS: &[&str] = &[
    // 1: nodes, operations, deliveries.
    include_str!("../../migrations/postgres/0001_nodes_ops_deliveries.sql"),
    // 2: retention finds finished deliveries by age without reading the rest.
    include_str!("../../migrations/postgres/0002_finished_index.sql"),
    // 3: a submission in one round trip (PostgreSQL; SQLite runs nothing).
    include_str!("../../migrations/postgres/0003_submit_function.sql"),
    // 4: idempotent submissions: each key, unique, with what the first
    // submission answered; `op` is NULL only inside the transaction that
    // writes it.
    include_str!("../../migrations/postgres/0004_idempotency.sql"),
    // 5: the submission in one round trip, with its idempotency key
    // (PostgreSQL; SQLite runs nothing).
    include_str!("../../migrations/postgres/0005_submit_idempotent.sql"),
    // 6: the attempt number at the last requeue, so that attempts since it can
    // be shown while the attempt number keeps growing.
    include_str!("../../migrations/postgres/0006_requeued_attempt.sql"),
    // 7: cancellation, node removal, attempt records and per-operation
    // settings.
    include_str!("../../migrations/postgres/0007_operations.sql"),
    // 8: the deliveries not finished, by state and kind, counted from an
    // index for `/metrics`.
    include_str!("../../migrations/postgres/0008_open_by_kind.sql"),
    // 9: two indexes fewer on the deliveries: the unique (operation, node)
    // serves the reads by operation, and `/metrics` counts through the
    // partial indexes of the unfinished states.
    include_str!("../../migrations/postgres/0009_fewer_delivery_indexes.sql"),
    // 10: the due deliveries indexed in the order claims take them
    // (PostgreSQL; SQLite runs nothing).
    include_str!("../../migrations/postgres/0010_due_in_claim_order.sql"),
    // 11: a batch of submissions written set-wise (PostgreSQL; SQLite runs
    // nothing).
    include_str!("../../migrations/postgres/0011_submit_batch.sql"),
    // 12: the batch's targets worked out once, carrying their supersede
    // chain (PostgreSQL; SQLite runs nothing).
    include_str!("../../migrations/postgres/0012_submit_batch_one_pass.sql"),
    // 13: the submission's function planned once per connection, not per
    // call (PostgreSQL; SQLite runs nothing).
    include_str!("../../migrations/postgres/0013_submit_generic_plans.sql"),
    // 14: a batch ends older live operations key by key, however many
    // the store holds (PostgreSQL; SQLite runs nothing).
    include_str!("../../migrations/postgres/0014_submit_batch_live_by_key.sql"),
    // 15: every text column compares byte-wise, whatever the database's
    // collation (PostgreSQL; SQLite's do already).
    include_str!("../../migrations/postgres/0015_text_compares_byte_wise.sql"),
];

/// [`crate::model::IDEMPOTENCY_WINDOW`] in milliseconds, as stores keep
/// times.
pub(crate) const IDEMPOTENCY_WINDOW_MS: i64 = crate::model::IDEMPOTENCY_WINDOW.as_millis() as i64;

/// The columns of a delivery, in [`DeliveryRow`] order: `d` and its node
/// `n`, joined with [`DELIVERY_NODE_JOIN`].
pub(crate) const DELIVERY_COLUMNS: &str = "d.id, d.op, d.node, d.kind, d.op_key, d.state, \
    d.attempt, d.failures, d.tries, d.next_at_ms, d.lease_until_ms, d.last_error, \
    d.created_ms, d.updated_ms, d.finished_ms, d.requeued_attempt, n.status, n.drained, \
    d.cancelled_by, d.cancelled_ms";

/// The unfinished deliveries counted by state and kind, for `/metrics`:
/// one arm per state, each through that state's partial index, so that the
/// count reads the unfinished deliveries alone whatever the history kept.
pub(crate) const OPEN_BY_KIND: &str = "\
    SELECT 'pending', kind, count(*) FROM backstop_queue_deliveries
        WHERE state = 'pending' GROUP BY kind
    UNION ALL SELECT 'in_flight', kind, count(*) FROM backstop_queue_deliveries
        WHERE state = 'in_flight' GROUP BY kind
    UNION ALL SELECT 'dead', kind, count(*) FROM backstop_queue_deliveries
        WHERE state = 'dead' GROUP BY kind";

/// Joins a delivery `d` to its node `n`, for [`DELIVERY_COLUMNS`].
pub(crate) const DELIVERY_NODE_JOIN: &str = "LEFT JOIN backstop_queue_nodes n ON n.name = d.node";

/// The columns of an operation, in [`OpRow`] order.
pub(crate) const OP_COLUMNS: &str = "o.id, o.kind, o.node_type, o.nodes, o.present_only, \
    o.op_key, o.payload, o.live, o.created_ms, o.timeout_ms, o.max_failures, o.base_delay_ms, \
    o.max_delay_ms, o.cancelled_by, o.cancelled_ms";

/// The columns of an attempt `a`, in [`AttemptRow`] order.
pub(crate) const ATTEMPT_COLUMNS: &str =
    "a.delivery, a.op, a.attempt, a.node, a.outcome, a.error, a.stdout, a.stderr, a.finished_ms";

/// A delivery's row as stores keep it.
pub(crate) struct DeliveryRow {
    pub id: i64,
    pub op: i64,
    pub node: String,
    pub kind: String,
    pub key: Option<String>,
    pub state: String,
    pub attempt: i64,
    pub failures: i64,
    pub tries: i64,
    pub next_at_ms: i64,
    pub lease_until_ms: Option<i64>,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub finished_ms: Option<i64>,
    pub requeued_attempt: i64,
    /// The node's status and drain, when the node exists.
    pub node_status: Option<String>,
    pub node_drained: Option<i64>,
    pub cancelled_by: Option<String>,
    pub cancelled_ms: Option<i64>,
}

/// A count read from a BIGINT column: negative values (only a hand edit
/// makes them) become 0.
pub(crate) fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

impl DeliveryRow {
    /// The delivery; a state this version does not know reads as pending
    /// (with a warning), never as a panic.
    pub(crate) fn into_delivery(self) -> Delivery {
        use backstop_core::time::from_millis;
        let state = self.state.parse().unwrap_or_else(|_| {
            tracing::warn!(
                "delivery {} has an unknown state {:?}; it is shown as pending",
                self.id,
                self.state
            );
            DeliveryState::Pending
        });
        let held = match (state, &self.node_status) {
            (DeliveryState::Pending, Some(status)) => Hold::for_node(
                status.parse().unwrap_or(NodeStatus::Unhealthy),
                self.node_drained.unwrap_or(0) != 0,
            ),
            _ => None,
        };
        Delivery {
            id: self.id,
            op: self.op,
            node: self.node,
            kind: self.kind,
            key: self.key,
            state,
            attempt: count(self.attempt),
            attempts: count(self.attempt.saturating_sub(self.requeued_attempt)),
            failures: count(self.failures),
            tries: count(self.tries),
            next_at: from_millis(self.next_at_ms),
            lease_until: self.lease_until_ms.map(from_millis),
            last_error: self.last_error,
            held,
            created: from_millis(self.created_ms),
            updated: from_millis(self.updated_ms),
            finished: self.finished_ms.map(from_millis),
            cancelled: cancellation(self.cancelled_by, self.cancelled_ms),
        }
    }
}

/// Who cancelled and when, from the two columns that keep them.
fn cancellation(by: Option<String>, at_ms: Option<i64>) -> Option<Cancellation> {
    Some(Cancellation {
        by: by?,
        at: backstop_core::time::from_millis(at_ms?),
    })
}

/// A removal remembered ([`Store::remove_node`]), as stores keep it.
pub(crate) struct Tombstone {
    pub transport: String,
    pub session: String,
    pub declaration: Option<String>,
    pub by: String,
    pub at_ms: i64,
}

impl Tombstone {
    /// Why `spec` may not register under the removed name: it is the
    /// process that was removed, or the declaration it was removed with.
    /// `None`: it is a new node.
    pub(crate) fn refuses(&self, spec: &NodeSpec) -> Option<Rejection> {
        let declared = spec.transport == crate::model::transport_name::LOCAL;
        let same = if declared {
            self.transport == spec.transport && self.declaration == spec.declaration
        } else {
            self.session == spec.session
        };
        same.then(|| Rejection::Removed {
            name: spec.name.clone(),
            by: self.by.clone(),
            at: backstop_core::time::from_millis(self.at_ms),
            declared,
        })
    }
}

/// Why node `node` may not be removed now, if it may not: a remote node
/// that is not healthy may go at once (what it ran is cancelled when it
/// comes back, or ends done if a late success arrives); any other only
/// drained, once nothing runs on it.
pub(crate) fn unremovable(node: &Node) -> Option<Rejection> {
    let down =
        node.transport != crate::model::transport_name::LOCAL && node.status != NodeStatus::Healthy;
    let why = if !(down || node.drained) {
        if node.transport == crate::model::transport_name::LOCAL {
            "it runs inside a coordinator and is not drained; drain it first \
             (`backstop nodes drain NAME`), and remove it from backstop.toml too"
                .to_owned()
        } else {
            "it is healthy and not drained; drain it first (`backstop nodes drain NAME`), or \
             stop its worker"
                .to_owned()
        }
    } else if node.in_flight > 0 && !down {
        format!(
            "{} in flight on it; wait for {} to end (`backstop nodes list`)",
            backstop_core::plural(node.in_flight, "delivery is", "deliveries are"),
            if node.in_flight == 1 { "it" } else { "them" }
        )
    } else {
        return None;
    };
    Some(Rejection::NotRemovable {
        name: node.name.clone(),
        why,
    })
}

/// The SET of an attempt in flight that ends without a success (released,
/// rescued, to be retried): back to pending — or `cancelled`, finished at
/// `now` (a placeholder), when its operation was cancelled while it ran.
pub(crate) fn released(now: &str) -> String {
    format!(
        "state = CASE WHEN cancelled_ms IS NULL THEN 'pending' ELSE 'cancelled' END, \
         finished_ms = CASE WHEN cancelled_ms IS NULL THEN NULL ELSE CAST({now} AS BIGINT) END"
    )
}

/// The state a delivery whose attempt ended without success takes:
/// `cancelled` when its operation was cancelled while it ran, else
/// `otherwise`.
pub(crate) fn ended_or(cancelled: bool, otherwise: DeliveryState) -> DeliveryState {
    if cancelled {
        DeliveryState::Cancelled
    } else {
        otherwise
    }
}

/// A duration kept in milliseconds; negative values (only a hand edit
/// makes them) read as none.
fn millis(ms: Option<i64>) -> Option<Duration> {
    ms.and_then(|ms| u64::try_from(ms).ok())
        .map(Duration::from_millis)
}

/// An operation's settings from the columns that keep them (timeout, max
/// failures, base and max delay); values only a hand edit makes (negative,
/// a cap of 0) read as not set.
pub(crate) fn settings(
    timeout_ms: Option<i64>,
    max_failures: Option<i64>,
    base_delay_ms: Option<i64>,
    max_delay_ms: Option<i64>,
) -> Settings {
    Settings {
        timeout: millis(timeout_ms),
        max_failures: max_failures
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0),
        base_delay: millis(base_delay_ms),
        max_delay: millis(max_delay_ms),
    }
}

/// A duration as kept, in milliseconds.
pub(crate) fn to_ms(d: Option<Duration>) -> Option<i64> {
    d.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// An attempt's row as stores keep it.
pub(crate) struct AttemptRow {
    pub delivery: i64,
    pub op: i64,
    pub attempt: i64,
    pub node: String,
    pub outcome: String,
    pub error: Option<String>,
    pub stdout: String,
    pub stderr: String,
    pub finished_ms: i64,
}

impl AttemptRow {
    pub(crate) fn into_attempt(self) -> Attempt {
        Attempt {
            delivery: self.delivery,
            op: self.op,
            attempt: count(self.attempt),
            node: self.node,
            outcome: self.outcome,
            error: self.error,
            output: crate::handler::Output {
                stdout: self.stdout,
                stderr: self.stderr,
            },
            finished: backstop_core::time::from_millis(self.finished_ms),
        }
    }
}

/// An operation's row as stores keep it.
pub(crate) struct OpRow {
    pub id: i64,
    pub kind: String,
    pub node_type: Option<String>,
    pub nodes: Option<String>,
    pub present_only: i64,
    pub key: Option<String>,
    pub payload: String,
    pub live: i64,
    pub created_ms: i64,
    pub timeout_ms: Option<i64>,
    pub max_failures: Option<i64>,
    pub base_delay_ms: Option<i64>,
    pub max_delay_ms: Option<i64>,
    pub cancelled_by: Option<String>,
    pub cancelled_ms: Option<i64>,
}

impl OpRow {
    pub(crate) fn into_op(self) -> Op {
        Op {
            id: self.id,
            kind: self.kind,
            node_type: self.node_type,
            // SQLite keeps named targets comma-joined (node names hold no
            // comma, see `check_name`); PostgreSQL keeps an array.
            nodes: self
                .nodes
                .map(|n| n.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            present_only: self.present_only != 0,
            key: self.key,
            payload: self.payload,
            live: self.live != 0,
            created: backstop_core::time::from_millis(self.created_ms),
            settings: settings(
                self.timeout_ms,
                self.max_failures,
                self.base_delay_ms,
                self.max_delay_ms,
            ),
            cancelled: cancellation(self.cancelled_by, self.cancelled_ms),
        }
    }
}

/// The text kept as a last error: at most this many bytes, from the end.
pub const MAX_ERROR: usize = 4096;

/// Text from a handler (an error, its output) as every store keeps it:
/// a NUL character, which PostgreSQL's `text` cannot hold, becomes
/// U+FFFD. Without this, one handler that printed a NUL would keep the
/// outcomes stored with its own from being stored at all.
pub(crate) fn storable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// Shortens an error to its last [`MAX_ERROR`] bytes, on a character
/// boundary, [`storable`].
pub(crate) fn clip(error: &str) -> String {
    let error = storable(error);
    if error.len() <= MAX_ERROR {
        return error.into_owned();
    }
    let mut start = error.len() - MAX_ERROR;
    while !error.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &error[start..])
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::SystemTime;

    use backstop_store::postgres::testing::TestSchema;

    use super::*;
    use crate::model::NewOp;

    #[test]
    fn each_version_exists_for_both_backends() {
        assert_eq!(SQLITE_MIGRATIONS.len(), POSTGRES_MIGRATIONS.len());
    }

    /// What a store at the latest version answers: every table and the
    /// submission read and written.
    fn works(store: &dyn Store) {
        assert!(store.nodes().unwrap().is_empty());
        assert!(store.ops(&OpFilter::default()).unwrap().is_empty());
        assert!(
            store
                .deliveries(&DeliveryFilter::default())
                .unwrap()
                .is_empty()
        );
        let mut op = NewOp::for_type("install", "gpu");
        op.idempotency_key = Some("k1".to_owned());
        match store.submit(&op, SystemTime::now()) {
            Err(StoreError::Rejected(Rejection::UnknownKind { .. })) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_sqlite_queue_at_every_earlier_version_migrates_to_the_latest() {
        for version in 0..SQLITE_MIGRATIONS.len() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("q.db");
            backstop_store::sqlite::Database::open::<Infallible>(
                &path,
                COMPONENT,
                &SQLITE_MIGRATIONS[..version],
            )
            .unwrap();
            let store = SqliteStore::open(&path).unwrap_or_else(|e| panic!("from {version}: {e}"));
            works(&store);
            let conn = rusqlite::Connection::open(&path).unwrap();
            let now: i64 = conn
                .query_row(
                    "SELECT version FROM backstop_schema WHERE component = 'queue'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(now, SQLITE_MIGRATIONS.len() as i64, "from {version}");
        }
    }

    #[test]
    fn a_postgres_queue_at_every_earlier_version_migrates_to_the_latest() {
        for version in 0..POSTGRES_MIGRATIONS.len() {
            let schema = TestSchema::new("queue_migrate");
            let db = backstop_store::postgres::Database::connect::<Infallible>(
                schema.url(),
                COMPONENT,
                1,
            )
            .unwrap();
            db.migrate::<Infallible>(&POSTGRES_MIGRATIONS[..version])
                .unwrap();
            let now: i64 = db
                .with_client::<_, Infallible, _>(|c| {
                    c.query_one(
                        "SELECT count(*) FROM backstop_schema WHERE component = 'queue' AND version = $1",
                        &[&(version as i64)],
                    )?
                    .try_get(0)
                })
                .unwrap();
            assert_eq!(now, i64::from(version > 0), "at {version}");
            drop(db);
            let store =
                PostgresStore::open(schema.url()).unwrap_or_else(|e| panic!("from {version}: {e}"));
            works(&store);
            let latest = backstop_store::postgres::Database::connect::<Infallible>(
                schema.url(),
                COMPONENT,
                1,
            )
            .unwrap()
            .with_client::<_, Infallible, _>(|c| {
                c.query_one(
                    "SELECT version FROM backstop_schema WHERE component = 'queue'",
                    &[],
                )?
                .try_get::<_, i64>(0)
            })
            .unwrap();
            assert_eq!(latest, POSTGRES_MIGRATIONS.len() as i64, "from {version}");
        }
    }

    /// Rows written at version 6 — a node, an operation, a delivery done,
    /// one pending and one removed by retention (so that the id sequence
    /// is ahead of the largest id) — as SQL for either backend.
    const AT_VERSION_6: &str = "
        INSERT INTO backstop_queue_nodes (name, node_type, capacity, transport, session, status,
            drained, last_heartbeat_ms, registered_ms, updated_ms)
            VALUES ('gpu-1', 'gpu', 2, 'nats', 's1', 'healthy', 0, 0, 0, 0);
        INSERT INTO backstop_queue_node_kinds (node, kind) VALUES ('gpu-1', 'install');
        INSERT INTO backstop_queue_ops (kind, node_type, nodes, present_only, op_key, payload,
            live, created_ms) VALUES ('install', 'gpu', '', 0, 'llama', '{}', 1, 0);
        INSERT INTO backstop_queue_deliveries (op, node, kind, op_key, state, attempt, failures,
            tries, next_at_ms, lease_until_ms, last_error, created_ms, updated_ms, finished_ms,
            requeued_attempt)
            SELECT id, 'gpu-1', 'install', 'llama', 'done', 2, 1, 1, 0, NULL, NULL, 0, 5, 5, 0
            FROM backstop_queue_ops;
        INSERT INTO backstop_queue_deliveries (op, node, kind, op_key, state, attempt, failures,
            tries, next_at_ms, lease_until_ms, last_error, created_ms, updated_ms, finished_ms,
            requeued_attempt)
            SELECT id, 'gpu-9', 'install', 'llama', 'pending', 0, 0, 0, 0, NULL, 'waits', 0, 0,
                NULL, 0
            FROM backstop_queue_ops;
        INSERT INTO backstop_queue_deliveries (op, node, kind, op_key, state, attempt, failures,
            tries, next_at_ms, lease_until_ms, last_error, created_ms, updated_ms, finished_ms,
            requeued_attempt)
            SELECT id, 'gpu-8', 'install', 'llama', 'done', 1, 0, 0, 0, NULL, NULL, 0, 0, 0, 0
            FROM backstop_queue_ops;
        DELETE FROM backstop_queue_deliveries WHERE node = 'gpu-8';";

    /// What a store migrated from [`AT_VERSION_6`] answers: the rows as
    /// they were, and new deliveries numbered after every id ever used.
    fn kept_from_version_6(store: &dyn Store) {
        let (op, deliveries) = store.op(1).unwrap();
        assert_eq!(op.key.as_deref(), Some("llama"));
        assert_eq!((op.settings, op.cancelled), (Settings::default(), None));
        let done = deliveries.iter().find(|d| d.node == "gpu-1").unwrap();
        assert_eq!(done.id, 1);
        assert_eq!(
            (done.state, done.attempt, done.failures),
            (DeliveryState::Done, 2, 1)
        );
        assert_eq!(done.cancelled, None);
        let waiting = deliveries.iter().find(|d| d.node == "gpu-9").unwrap();
        assert_eq!(waiting.state, DeliveryState::Pending);
        assert_eq!(waiting.last_error.as_deref(), Some("waits"));
        assert_eq!(deliveries.len(), 2);
        let now = SystemTime::now();
        let newer = store
            .submit(&NewOp::for_type("install", "gpu").key("llama"), now)
            .unwrap();
        assert_eq!(newer.deliveries, 1);
        let (_, made) = store.op(newer.op.id).unwrap();
        assert_eq!(made[0].id, 4, "ids go on after the largest ever used");
        assert!(store.nodes().unwrap()[0].kinds == ["install"]);
    }

    #[test]
    fn a_sqlite_queue_at_version_6_keeps_its_rows_through_version_7() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        backstop_store::sqlite::Database::open::<Infallible>(
            &path,
            COMPONENT,
            &SQLITE_MIGRATIONS[..6],
        )
        .unwrap();
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(AT_VERSION_6)
            .unwrap();
        kept_from_version_6(&SqliteStore::open(&path).unwrap());
    }

    #[test]
    fn a_postgres_queue_at_version_6_keeps_its_rows_through_version_7() {
        let schema = TestSchema::new("queue_v6");
        let db =
            backstop_store::postgres::Database::connect::<Infallible>(schema.url(), COMPONENT, 1)
                .unwrap();
        db.migrate::<Infallible>(&POSTGRES_MIGRATIONS[..6]).unwrap();
        drop(db);
        schema.exec(AT_VERSION_6);
        kept_from_version_6(&PostgresStore::open(schema.url()).unwrap());
    }

    /// What a PostgreSQL store answers when a row holds another type than
    /// its schema gives the column: an error naming the column.
    fn unreadable(result: Result<impl std::fmt::Debug, StoreError>, column: &str) {
        match result {
            Err(StoreError::Failed { source, .. }) => {
                let shown = format!("{source}");
                assert!(shown.contains(column), "{shown}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_postgres_column_of_another_type_is_an_error_naming_it_never_a_panic() {
        let schema = TestSchema::new("queue_drift");
        let store = PostgresStore::open(schema.url()).unwrap();
        // The nodes' table made again by hand, its capacity as text; the
        // deliveries' attempt narrowed to a 4-byte integer.
        schema.exec(
            "DROP TABLE backstop_queue_nodes CASCADE;
             CREATE TABLE backstop_queue_nodes (
                 name TEXT PRIMARY KEY NOT NULL, node_type TEXT NOT NULL,
                 capacity TEXT NOT NULL, transport TEXT NOT NULL, session TEXT NOT NULL,
                 status TEXT NOT NULL, drained BIGINT NOT NULL, last_heartbeat_ms BIGINT,
                 registered_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL);
             INSERT INTO backstop_queue_nodes VALUES
                 ('gpu-1', 'gpu', 'four', 'nats', 's1', 'healthy', 0, NULL, 0, 0);
             ALTER TABLE backstop_queue_deliveries ALTER COLUMN attempt TYPE integer;
             INSERT INTO backstop_queue_ops (kind, node_type, nodes, present_only, op_key,
                 payload, live, created_ms) VALUES ('install', 'gpu', '', 0, NULL, '{}', 1, 0);
             INSERT INTO backstop_queue_deliveries (op, node, kind, op_key, state, attempt,
                 failures, tries, next_at_ms, lease_until_ms, last_error, created_ms,
                 updated_ms, finished_ms)
                 SELECT id, 'gpu-1', 'install', NULL, 'pending', 0, 0, 0, 0, NULL, NULL, 0, 0,
                     NULL FROM backstop_queue_ops;",
        );
        unreadable(store.nodes(), "capacity");
        unreadable(store.deliveries(&DeliveryFilter::default()), "attempt");
    }
}
