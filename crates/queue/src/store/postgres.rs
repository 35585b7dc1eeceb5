//! The queue in PostgreSQL: one queue for a fleet, with several
//! coordinators sharing it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::SystemTime;

use backstop_core::time::{from_millis, to_millis};
use backstop_store::ColumnError;
use backstop_store::postgres::{Database, SessionLock, Tx, get, postgres};
use postgres::types::Type;

use super::{
    ATTEMPT_COLUMNS, ATTEMPTS_KEPT, Activity, AttemptRow, AttemptsOf, COMPONENT, Cancelled,
    ClaimRequest, Counts, DELIVERY_COLUMNS, DELIVERY_NODE_JOIN, DeliveryFilter, DeliveryRow,
    Gauges, Heartbeat, IDEMPOTENCY_WINDOW_MS, OP_COLUMNS, OPEN_BY_KIND, OpFilter, OpRow, OpSummary,
    POSTGRES_MIGRATIONS, Pruned, Registered, Rejection, Removed, Requeue, Retained, Running,
    Settled, Store, StoreError, Submitted, Tombstone, clip, count, ended_or, in_batch, named,
    released, settings, storable, to_ms, unremovable,
};
use crate::model::{
    Attempt, Claim, Delivery, DeliveryState, NewOp, Node, NodeSpec, NodeStatus, Op, OpId, Target,
    Token, transport_name,
};
use crate::schedule::{Decision, Settle};

/// The default number of rows a listing returns.
const DEFAULT_LIMIT: i64 = 100;

/// Connections a store keeps open at most: the dispatcher's claims, its
/// writer, the API, heartbeats and housekeeping each get one without
/// waiting for the others.
pub const DEFAULT_CONNECTIONS: usize = 6;

/// Advisory lock classes (the first key of a two-key lock): "bq" for the
/// housekeeping lock, "bt" for a node type, "bk" for an operation key.
const LEADER_LOCK: i32 = 0x6271;
const TYPE_LOCK: i32 = 0x6274;
const KEY_LOCK: i32 = 0x626b;

/// A listing's limit: 0 means the default.
fn limit(n: u32) -> i64 {
    if n == 0 { DEFAULT_LIMIT } else { i64::from(n) }
}

/// A PostgreSQL queue.
///
/// Several coordinators share it. Claims lock the rows of the nodes they
/// fill (in name order, so claimers never deadlock) and then take due
/// deliveries with `FOR UPDATE SKIP LOCKED` through the partial index of
/// pending rows, so a node's capacity and the rule of one running delivery
/// per key hold across coordinators, and no attempt is handed out twice.
/// Submissions and registrations of one node type take a transaction-level
/// advisory lock on the type, so a node that joins while an operation is
/// submitted gets it exactly once; submissions and failed attempts of one
/// key take one on the key, so a newer operation always supersedes the
/// older ones. The housekeeping lock is a session-level advisory lock on a
/// connection of its own ([`Store::lead`]). Every query the dispatcher runs
/// goes through a partial index of the rows it can touch, so its cost does
/// not grow with the history of finished deliveries; outcomes are stored in
/// one statement per batch.
pub struct PostgresStore {
    db: Database,
    leader: SessionLock,
}

type TxError = backstop_store::TxError<postgres::Error, Rejection>;

impl From<Rejection> for TxError {
    fn from(r: Rejection) -> Self {
        TxError::Rejected(r)
    }
}

type TxResult<T> = Result<T, TxError>;

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`)
    /// and brings the queue's schema up to date, under an advisory lock so
    /// that coordinators starting together do not race.
    pub fn open(url: &str) -> Result<PostgresStore, StoreError> {
        PostgresStore::open_with(url, DEFAULT_CONNECTIONS)
    }

    /// [`PostgresStore::open`] with at most `connections` open.
    pub fn open_with(url: &str, connections: usize) -> Result<PostgresStore, StoreError> {
        let db = Database::connect(url, COMPONENT, connections)?;
        db.migrate(POSTGRES_MIGRATIONS)?;
        let leader = db.session_lock(LEADER_LOCK);
        Ok(PostgresStore { db, leader })
    }

    fn failed(&self, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
        self.db.place().failed(e)
    }

    fn unreachable(&self, e: postgres::Error) -> StoreError {
        self.db.place().unreachable(e)
    }

    /// Runs `f` in a transaction: whole or not at all.
    fn tx<T>(&self, f: impl FnMut(&mut Tx<'_>) -> TxResult<T>) -> Result<T, StoreError> {
        self.db.transaction(f)
    }
}

fn read_delivery(r: &postgres::Row) -> Result<DeliveryRow, ColumnError> {
    Ok(DeliveryRow {
        id: get(r, 0)?,
        op: get(r, 1)?,
        node: get(r, 2)?,
        kind: get(r, 3)?,
        key: get(r, 4)?,
        state: get(r, 5)?,
        attempt: get(r, 6)?,
        failures: get(r, 7)?,
        tries: get(r, 8)?,
        next_at_ms: get(r, 9)?,
        lease_until_ms: get(r, 10)?,
        last_error: get(r, 11)?,
        created_ms: get(r, 12)?,
        updated_ms: get(r, 13)?,
        finished_ms: get(r, 14)?,
        requeued_attempt: get(r, 15)?,
        node_status: get(r, 16)?,
        node_drained: get(r, 17)?,
        cancelled_by: get(r, 18)?,
        cancelled_ms: get(r, 19)?,
    })
}

fn read_attempt(r: &postgres::Row) -> Result<AttemptRow, ColumnError> {
    Ok(AttemptRow {
        delivery: get(r, 0)?,
        op: get(r, 1)?,
        attempt: get(r, 2)?,
        node: get(r, 3)?,
        outcome: get(r, 4)?,
        error: get(r, 5)?,
        stdout: get(r, 6)?,
        stderr: get(r, 7)?,
        finished_ms: get(r, 8)?,
    })
}

fn read_op(r: &postgres::Row) -> Result<OpRow, ColumnError> {
    Ok(OpRow {
        id: get(r, 0)?,
        kind: get(r, 1)?,
        node_type: get(r, 2)?,
        nodes: get(r, 3)?,
        present_only: get(r, 4)?,
        key: get(r, 5)?,
        payload: get(r, 6)?,
        live: get(r, 7)?,
        created_ms: get(r, 8)?,
        timeout_ms: get(r, 9)?,
        max_failures: get(r, 10)?,
        base_delay_ms: get(r, 11)?,
        max_delay_ms: get(r, 12)?,
        cancelled_by: get(r, 13)?,
        cancelled_ms: get(r, 14)?,
    })
}

/// Why a submission was refused (`problem`, as the submission's function
/// says it), with the kinds its target handles.
fn refusal(tx: &mut Tx<'_>, op: &NewOp, problem: &str) -> TxResult<Rejection> {
    let (what, name) = problem.split_once(':').unwrap_or((problem, ""));
    if what == "unknown_node" {
        return Ok(Rejection::UnknownNode(name.to_owned()));
    }
    if what == "key_reused" {
        return Ok(Rejection::IdempotencyKeyReused {
            op: name.parse().unwrap_or_default(),
        });
    }
    let (target, nodes) = match &op.target {
        Target::Type { node_type, .. } => (
            format!("node of type {node_type:?}"),
            tx.query(
                "SELECT name FROM backstop_queue_nodes WHERE node_type = $1",
                &[node_type],
            )?
            .iter()
            .map(|r| get(r, 0))
            .collect::<Result<Vec<String>, _>>()?,
        ),
        Target::Nodes(_) => (format!("node {name:?}"), vec![name.to_owned()]),
    };
    Ok(Rejection::UnknownKind {
        kind: op.kind.clone(),
        target,
        known: kinds_of(tx, &nodes)?,
    })
}

/// Submits a batch in one statement: the batch's function
/// (`backstop_queue_submit_batch`, migration 11), which writes the whole
/// batch set-wise, one statement per table, as the operations submitted
/// one by one in order would have been written (a batch with idempotency
/// keys, or one it would refuse, goes through the submission's function
/// once per operation instead). One row per operation, in order: the
/// operation's columns (OP_COLUMNS), then superseded, delivered, problem,
/// repeated. The calls after a refused one still run; the caller rolls
/// the batch back.
const SUBMIT_ALL: &str = "
    SELECT * FROM backstop_queue_submit_batch($1::text[], $2::text[], $3::text[],
        $4::bigint[], $5::text[], $6::text[], $7::bigint[], $8::text[], $9::text[],
        $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[], $14, $15, $16)";

/// [`SUBMIT_ALL`] for one operation, its parameters in the same order as
/// scalars: the submission's function called directly, without the batch's
/// array handling (a batch statement cost a single submit a fifth to a
/// third of its rate in the live fan-out bench).
const SUBMIT_ONE: &str = "
    SELECT * FROM backstop_queue_submit($1, $2, string_to_array($3::text, ','), $4, $5, $6,
        $7, $14, $15, $16, $8, $9, $10, $11, $12, $13)";

/// A batch of operations as the columns [`SUBMIT_ALL`] takes, one array
/// per parameter.
struct SubmitColumns {
    kinds: Vec<String>,
    node_types: Vec<Option<String>>,
    /// Named targets, comma-joined (a node name holds no comma, see
    /// `check_name`).
    nodes: Vec<Option<String>>,
    present_only: Vec<i64>,
    keys: Vec<Option<String>>,
    payloads: Vec<String>,
    live: Vec<i64>,
    idempotency_keys: Vec<Option<String>>,
    fingerprints: Vec<Option<String>>,
    timeout_ms: Vec<Option<i64>>,
    max_failures: Vec<Option<i64>>,
    base_delay_ms: Vec<Option<i64>>,
    max_delay_ms: Vec<Option<i64>>,
}

impl SubmitColumns {
    fn of(ops: &[NewOp]) -> SubmitColumns {
        let mut c = SubmitColumns {
            kinds: Vec::with_capacity(ops.len()),
            node_types: Vec::with_capacity(ops.len()),
            nodes: Vec::with_capacity(ops.len()),
            present_only: Vec::with_capacity(ops.len()),
            keys: Vec::with_capacity(ops.len()),
            payloads: Vec::with_capacity(ops.len()),
            live: Vec::with_capacity(ops.len()),
            idempotency_keys: Vec::with_capacity(ops.len()),
            fingerprints: Vec::with_capacity(ops.len()),
            timeout_ms: Vec::with_capacity(ops.len()),
            max_failures: Vec::with_capacity(ops.len()),
            base_delay_ms: Vec::with_capacity(ops.len()),
            max_delay_ms: Vec::with_capacity(ops.len()),
        };
        for op in ops {
            let (node_type, present_only) = match &op.target {
                Target::Type {
                    node_type,
                    present_only,
                } => (Some(node_type.clone()), *present_only),
                Target::Nodes(_) => (None, false),
            };
            let named = named(&op.target);
            c.live.push(i64::from(node_type.is_some() && !present_only));
            c.kinds.push(op.kind.clone());
            c.node_types.push(node_type);
            c.nodes.push((!named.is_empty()).then(|| named.join(",")));
            c.present_only.push(i64::from(present_only));
            c.keys.push(op.key.clone());
            c.payloads.push(op.payload.clone());
            c.fingerprints
                .push(op.idempotency_key.as_ref().map(|_| op.fingerprint()));
            c.idempotency_keys.push(op.idempotency_key.clone());
            c.timeout_ms.push(to_ms(op.settings.timeout));
            c.max_failures.push(op.settings.max_failures.map(i64::from));
            c.base_delay_ms.push(to_ms(op.settings.base_delay));
            c.max_delay_ms.push(to_ms(op.settings.max_delay));
        }
        c
    }

    /// The parameters of [`SUBMIT_ONE`]: the first operation's.
    fn first<'a>(&'a self, now_ms: &'a i64) -> [&'a (dyn postgres::types::ToSql + Sync); 16] {
        [
            &self.kinds[0],
            &self.node_types[0],
            &self.nodes[0],
            &self.present_only[0],
            &self.keys[0],
            &self.payloads[0],
            &self.live[0],
            &self.idempotency_keys[0],
            &self.fingerprints[0],
            &self.timeout_ms[0],
            &self.max_failures[0],
            &self.base_delay_ms[0],
            &self.max_delay_ms[0],
            now_ms,
            &TYPE_LOCK,
            &KEY_LOCK,
        ]
    }

    fn params<'a>(&'a self, now_ms: &'a i64) -> [&'a (dyn postgres::types::ToSql + Sync); 16] {
        [
            &self.kinds,
            &self.node_types,
            &self.nodes,
            &self.present_only,
            &self.keys,
            &self.payloads,
            &self.live,
            &self.idempotency_keys,
            &self.fingerprints,
            &self.timeout_ms,
            &self.max_failures,
            &self.base_delay_ms,
            &self.max_delay_ms,
            now_ms,
            &TYPE_LOCK,
            &KEY_LOCK,
        ]
    }
}

/// Reads what [`SUBMIT_ALL`] answered: one [`Submitted`] per operation, or
/// the index of the first refused one and why.
fn read_submitted(
    rows: &[postgres::Row],
) -> Result<Result<Vec<Submitted>, (usize, String)>, ColumnError> {
    let mut submitted = Vec::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        if let Some(problem) = get::<Option<String>>(row, 17)? {
            return Ok(Err((index, problem)));
        }
        let superseded: i64 = get(row, 15)?;
        let delivered: i64 = get(row, 16)?;
        submitted.push(Submitted {
            op: read_op(row)?.into_op(),
            deliveries: u64::try_from(delivered).unwrap_or(0),
            superseded: u64::try_from(superseded).unwrap_or(0),
            repeated: get(row, 18)?,
        });
    }
    Ok(Ok(submitted))
}

/// Takes, until the transaction ends, the lock of each of these node types
/// shared (submissions of a type run side by side; a registration of the
/// type waits for them), in the locks' order (see [`lock_all`]).
fn lock_types_shared(tx: &mut Tx<'_>, node_types: &[Option<String>]) -> TxResult<()> {
    let types: Vec<&str> = node_types.iter().flatten().map(String::as_str).collect();
    lock_all(tx, "pg_advisory_xact_lock_shared", TYPE_LOCK, &types)
}

/// Serialises, until the transaction ends, the writers of node type
/// `node_type`.
fn lock_type(tx: &mut Tx<'_>, node_type: &str) -> TxResult<()> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&TYPE_LOCK, &node_type],
    )?;
    Ok(())
}

/// Serialises, until the transaction ends, the writers of these operation
/// keys, in the locks' order (see [`lock_all`]).
fn lock_keys(tx: &mut Tx<'_>, keys: &[&str]) -> TxResult<()> {
    lock_all(tx, "pg_advisory_xact_lock", KEY_LOCK, keys)
}

/// Takes with `take` (an advisory lock function) the lock of each name in
/// `space` — the lock is the pair (`space`, the name's `hashtext`) — each
/// once, in ascending order of the hash: the order of the locks
/// themselves, not of the names, so that two transactions that take
/// several never wait on each other in a circle, even where two names
/// share a lock.
fn lock_all(tx: &mut Tx<'_>, take: &'static str, space: i32, names: &[&str]) -> TxResult<()> {
    if !names.is_empty() {
        tx.execute(
            &format!(
                "SELECT {take}($1, h)
                 FROM (SELECT DISTINCT hashtext(n) AS h FROM unnest($2::text[]) AS n
                       ORDER BY 1) locks"
            ),
            &[&space, &names],
        )?;
    }
    Ok(())
}

/// Returns the in-flight deliveries to `node` to pending without spending
/// attempts (or `cancelled`, those whose operation was cancelled).
fn release_node(tx: &mut Tx<'_>, node: &str, why: &str, now: i64) -> TxResult<u64> {
    Ok(tx.execute(
        &format!(
            "UPDATE backstop_queue_deliveries SET {}, next_at_ms = $2,
                 lease_until_ms = NULL, last_error = $3, updated_ms = $2
             WHERE node = $1 AND state = 'in_flight'",
            released("$2")
        ),
        &[&node, &now, &why],
    )?)
}

/// Removes the deliveries matched by `filter` (SQL on the deliveries'
/// own columns) with the attempts kept of them; how many.
fn remove_deliveries(
    tx: &mut Tx<'_>,
    filter: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> TxResult<u64> {
    let ids: Vec<i64> = tx
        .query(
            &format!("DELETE FROM backstop_queue_deliveries WHERE {filter} RETURNING id"),
            params,
        )?
        .iter()
        .map(|r| get(r, 0))
        .collect::<Result<_, _>>()?;
    forget_attempts(tx, &ids)?;
    Ok(ids.len() as u64)
}

/// Forgets the attempts kept of these deliveries (being removed).
fn forget_attempts(tx: &mut Tx<'_>, deliveries: &[i64]) -> TxResult<()> {
    if !deliveries.is_empty() {
        tx.execute(
            "DELETE FROM backstop_queue_attempts WHERE delivery = ANY($1)",
            &[&deliveries],
        )?;
    }
    Ok(())
}

/// Keeps the records of these attempts (with their deliveries' operations
/// and nodes), and forgets those of their deliveries older than the last
/// [`ATTEMPTS_KEPT`]: one statement each.
fn keep_attempts(tx: &mut Tx<'_>, kept: &[(&Settle, i64, &str)]) -> TxResult<()> {
    let kept: Vec<_> = kept
        .iter()
        .filter_map(|(s, op, node)| s.handled.as_ref().map(|h| (*s, *op, *node, h)))
        .collect();
    // One record per attempt: a repeated report of an outcome in the same
    // batch would be the same record.
    let mut seen = HashSet::new();
    let kept: Vec<_> = kept
        .into_iter()
        .rev()
        .filter(|k| seen.insert(k.0.token))
        .collect();
    if kept.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = kept.iter().map(|k| k.0.token.delivery).collect();
    let attempts: Vec<i64> = kept.iter().map(|k| i64::from(k.0.token.attempt)).collect();
    let ops: Vec<i64> = kept.iter().map(|k| k.1).collect();
    let nodes: Vec<&str> = kept.iter().map(|k| k.2).collect();
    let outcomes: Vec<&str> = kept.iter().map(|k| k.3.outcome.name()).collect();
    let errors: Vec<Option<String>> = kept.iter().map(|k| k.3.outcome.error().map(clip)).collect();
    let stdouts: Vec<_> = kept.iter().map(|k| storable(&k.3.output.stdout)).collect();
    let stderrs: Vec<_> = kept.iter().map(|k| storable(&k.3.output.stderr)).collect();
    let at: Vec<i64> = kept.iter().map(|k| to_millis(k.0.at)).collect();
    tx.execute(
        "INSERT INTO backstop_queue_attempts (delivery, attempt, op, node, outcome, error,
             stdout, stderr, finished_ms)
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[],
             $6::text[], $7::text[], $8::text[], $9::bigint[])
         ON CONFLICT (delivery, attempt) DO UPDATE SET outcome = excluded.outcome,
             error = excluded.error, stdout = excluded.stdout, stderr = excluded.stderr,
             finished_ms = excluded.finished_ms",
        &[
            &ids, &attempts, &ops, &nodes, &outcomes, &errors, &stdouts, &stderrs, &at,
        ],
    )?;
    tx.execute(
        "DELETE FROM backstop_queue_attempts a
         USING unnest($1::bigint[], $2::bigint[]) AS k(delivery, attempt)
         WHERE a.delivery = k.delivery AND a.attempt <= k.attempt - $3",
        &[&ids, &attempts, &ATTEMPTS_KEPT],
    )?;
    Ok(())
}

fn tombstone(tx: &mut Tx<'_>, name: &str) -> TxResult<Option<Tombstone>> {
    tx.query_opt(
        "SELECT transport, session, declaration, removed_by, removed_ms
         FROM backstop_queue_removed_nodes WHERE name = $1 FOR UPDATE",
        &[&name],
    )?
    .map(|r| {
        Ok::<_, ColumnError>(Tombstone {
            transport: get(&r, 0)?,
            session: get(&r, 1)?,
            declaration: get(&r, 2)?,
            by: get(&r, 3)?,
            at_ms: get(&r, 4)?,
        })
    })
    .transpose()
    .map_err(Into::into)
}

fn node_exists(tx: &mut Tx<'_>, name: &str) -> TxResult<bool> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM backstop_queue_nodes WHERE name = $1",
            &[&name],
        )?
        .is_some())
}

fn kinds_of(tx: &mut Tx<'_>, nodes: &[String]) -> TxResult<Vec<String>> {
    Ok(tx
        .query(
            "SELECT DISTINCT kind COLLATE \"C\" FROM backstop_queue_node_kinds
             WHERE node = ANY($1) ORDER BY 1",
            &[&nodes],
        )?
        .iter()
        .map(|r| get(r, 0))
        .collect::<Result<_, _>>()?)
}

fn load_nodes(tx: &mut Tx<'_>, only: Option<&str>) -> TxResult<Vec<Node>> {
    let mut kinds: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in tx.query(
        "SELECT node, kind FROM backstop_queue_node_kinds
         WHERE $1::text IS NULL OR node = $1
         ORDER BY node COLLATE \"C\", kind COLLATE \"C\"",
        &[&only],
    )? {
        kinds.entry(get(&row, 0)?).or_default().push(get(&row, 1)?);
    }
    let mut counts: HashMap<(String, &'static str), u64> = HashMap::new();
    for state in ["pending", "in_flight", "dead"] {
        // One state at a time, so that each count reads its partial index.
        let sql = format!(
            "SELECT node, count(*) FROM backstop_queue_deliveries
             WHERE state = '{state}' AND ($1::text IS NULL OR node = $1) GROUP BY node"
        );
        for row in tx.query(&sql, &[&only])? {
            let n: i64 = get(&row, 1)?;
            counts.insert((get(&row, 0)?, state), u64::try_from(n).unwrap_or(0));
        }
    }
    let rows = tx.query(
        "SELECT name, node_type, capacity, transport, status, drained, last_heartbeat_ms,
                registered_ms, updated_ms, session
         FROM backstop_queue_nodes WHERE $1::text IS NULL OR name = $1
         ORDER BY name COLLATE \"C\"",
        &[&only],
    )?;
    Ok(rows
        .iter()
        .map(|r| -> Result<Node, ColumnError> {
            let name: String = get(r, 0)?;
            let status: String = get(r, 4)?;
            let drained: i64 = get(r, 5)?;
            let n = |state| counts.get(&(name.clone(), state)).copied().unwrap_or(0);
            Ok(Node {
                kinds: kinds.remove(&name).unwrap_or_default(),
                node_type: get(r, 1)?,
                capacity: count(get(r, 2)?),
                transport: get(r, 3)?,
                status: status.parse().unwrap_or(NodeStatus::Unhealthy),
                drained: drained != 0,
                last_heartbeat: get::<Option<i64>>(r, 6)?.map(from_millis),
                in_flight: n("in_flight"),
                pending: n("pending"),
                dead: n("dead"),
                registered: from_millis(get(r, 7)?),
                updated: from_millis(get(r, 8)?),
                session: get(r, 9)?,
                name,
            })
        })
        .collect::<Result<_, _>>()?)
}

fn load_op(tx: &mut Tx<'_>, id: OpId) -> TxResult<Option<Op>> {
    Ok(tx
        .query_opt(
            &format!("SELECT {OP_COLUMNS} FROM backstop_queue_ops o WHERE o.id = $1"),
            &[&id],
        )?
        .map(|r| read_op(&r).map(OpRow::into_op))
        .transpose()?)
}

impl Store for PostgresStore {
    fn register(&self, node: &NodeSpec, now: SystemTime) -> Result<Registered, StoreError> {
        let now = to_millis(now);
        let heartbeat = (node.transport != transport_name::LOCAL).then_some(now);
        let capacity = i64::from(node.capacity);
        self.tx(|tx| {
            lock_type(tx, &node.node_type)?;
            // The node's row first: a removal under way is waited for,
            // and its tombstone then seen.
            let previous: Option<String> = tx
                .query_opt(
                    "SELECT session FROM backstop_queue_nodes WHERE name = $1 FOR UPDATE",
                    &[&node.name],
                )?
                .map(|r| get(&r, 0))
                .transpose()?;
            if let Some(removed) = tombstone(tx, &node.name)? {
                if let Some(refusal) = removed.refuses(node) {
                    return Err(refusal.into());
                }
                tx.execute(
                    "DELETE FROM backstop_queue_removed_nodes WHERE name = $1",
                    &[&node.name],
                )?;
            }
            tx.execute(
                "INSERT INTO backstop_queue_nodes (name, node_type, capacity, transport, session,
                     status, drained, last_heartbeat_ms, registered_ms, updated_ms, declaration)
                 VALUES ($1, $2, $3, $4, $5, 'healthy', 0, $6, $7, $7, $8)
                 ON CONFLICT (name) DO UPDATE SET node_type = excluded.node_type,
                     capacity = excluded.capacity, transport = excluded.transport,
                     session = excluded.session, status = 'healthy',
                     last_heartbeat_ms = excluded.last_heartbeat_ms,
                     updated_ms = excluded.updated_ms, declaration = excluded.declaration",
                &[
                    &node.name,
                    &node.node_type,
                    &capacity,
                    &node.transport,
                    &node.session,
                    &heartbeat,
                    &now,
                    &node.declaration,
                ],
            )?;
            tx.execute(
                "DELETE FROM backstop_queue_node_kinds WHERE node = $1",
                &[&node.name],
            )?;
            tx.execute(
                "INSERT INTO backstop_queue_node_kinds (node, kind)
                 SELECT $1, unnest($2::text[])",
                &[&node.name, &node.kinds],
            )?;
            let mut done = Registered::default();
            if previous.is_some_and(|s| s != node.session) {
                let why = format!(
                    "node {} restarted while this ran; not counted as a failure",
                    node.name
                );
                done.released = release_node(tx, &node.name, &why, now)?;
            }
            done.removed = remove_deliveries(
                tx,
                "node = $1 AND state IN ('pending', 'in_flight', 'dead')
                   AND node_removed_ms IS NULL AND kind <> ALL($2::text[])",
                &[&node.name, &node.kinds],
            )?;
            done.delivered = tx.execute(
                "INSERT INTO backstop_queue_deliveries (op, node, kind, op_key, state, attempt,
                     failures, tries, next_at_ms, created_ms, updated_ms)
                 SELECT o.id, $1, o.kind, o.op_key, 'pending', 0, 0, 0, $3, $3, $3
                 FROM backstop_queue_ops o
                 WHERE o.live = 1 AND o.node_type = $2 AND o.kind = ANY($4::text[])
                   AND NOT EXISTS (SELECT 1 FROM backstop_queue_deliveries d
                                   WHERE d.op = o.id AND d.node = $1 AND d.node_removed_ms IS NULL)
                 ON CONFLICT DO NOTHING",
                &[&node.name, &node.node_type, &now, &node.kinds],
            )?;
            Ok(done)
        })
    }

    fn retire(
        &self,
        transport: &str,
        keep: &[String],
        _now: SystemTime,
    ) -> Result<Vec<String>, StoreError> {
        self.tx(|tx| {
            let names: Vec<String> = tx
                .query(
                    "SELECT name FROM backstop_queue_nodes
                     WHERE transport = $1 AND name <> ALL($2::text[])
                     ORDER BY name COLLATE \"C\" FOR UPDATE",
                    &[&transport, &keep],
                )?
                .iter()
                .map(|r| get(r, 0))
                .collect::<Result<_, _>>()?;
            tx.execute(
                "DELETE FROM backstop_queue_removed_nodes
                 WHERE transport = $1 AND name <> ALL($2::text[])",
                &[&transport, &keep],
            )?;
            if names.is_empty() {
                return Ok(names);
            }
            remove_deliveries(
                tx,
                "node = ANY($1) AND state IN ('pending', 'in_flight', 'dead')",
                &[&names],
            )?;
            tx.execute(
                "DELETE FROM backstop_queue_node_kinds WHERE node = ANY($1)",
                &[&names],
            )?;
            tx.execute(
                "DELETE FROM backstop_queue_nodes WHERE name = ANY($1)",
                &[&names],
            )?;
            Ok(names)
        })
    }

    fn heartbeat(
        &self,
        name: &str,
        session: &str,
        leaving: bool,
        now: SystemTime,
    ) -> Result<Heartbeat, StoreError> {
        let now = to_millis(now);
        let new = if leaving {
            NodeStatus::Unhealthy
        } else {
            NodeStatus::Healthy
        };
        self.tx(|tx| {
            // One statement: the status before, and the update, on the
            // row locked by the update itself.
            let row = tx.query_opt(
                "UPDATE backstop_queue_nodes n SET status = $3, last_heartbeat_ms = $4,
                     updated_ms = CASE WHEN n.status = $3 THEN n.updated_ms ELSE $4 END
                 FROM (SELECT name, status FROM backstop_queue_nodes
                       WHERE name = $1 AND session = $2 FOR UPDATE) old
                 WHERE n.name = old.name
                 RETURNING old.status",
                &[&name, &session, &new.as_str(), &now],
            )?;
            let Some(row) = row else {
                return Ok(Heartbeat::Unknown);
            };
            let status: String = get(&row, 0)?;
            let status = status.parse().unwrap_or(NodeStatus::Unhealthy);
            Ok(if status == NodeStatus::Healthy || leaving {
                Heartbeat::Recorded
            } else {
                Heartbeat::Recovered(status)
            })
        })
    }

    fn mark_stale(
        &self,
        stale_before: SystemTime,
        now: SystemTime,
    ) -> Result<Vec<String>, StoreError> {
        let (before, now) = (to_millis(stale_before), to_millis(now));
        self.tx(|tx| {
            let mut names: Vec<String> = tx
                .query(
                    "UPDATE backstop_queue_nodes SET status = 'unhealthy', updated_ms = $2
                     WHERE name IN (SELECT name FROM backstop_queue_nodes
                                    WHERE status = 'healthy' AND last_heartbeat_ms IS NOT NULL
                                      AND last_heartbeat_ms < $1
                                    ORDER BY name COLLATE \"C\" FOR UPDATE)
                     RETURNING name",
                    &[&before, &now],
                )?
                .iter()
                .map(|r| get(r, 0))
                .collect::<Result<_, _>>()?;
            names.sort();
            Ok(names)
        })
    }

    fn drain(&self, name: &str, drained: bool, now: SystemTime) -> Result<Node, StoreError> {
        let now = to_millis(now);
        self.tx(|tx| {
            let n = tx.execute(
                "UPDATE backstop_queue_nodes SET drained = $2, updated_ms = $3 WHERE name = $1",
                &[&name, &i64::from(drained), &now],
            )?;
            if n == 0 {
                return Err(Rejection::UnknownNode(name.to_owned()).into());
            }
            load_nodes(tx, Some(name))?
                .pop()
                .ok_or_else(|| Rejection::UnknownNode(name.to_owned()).into())
        })
    }

    fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        self.tx(|tx| load_nodes(tx, None))
    }

    fn remove_node(&self, name: &str, by: &str, now: SystemTime) -> Result<Removed, StoreError> {
        let now = to_millis(now);
        self.tx(|tx| {
            // Its row locked first: a claim, a heartbeat or a registration
            // of it waits, or is waited for.
            let declaration: Option<String> = tx
                .query_opt(
                    "SELECT declaration FROM backstop_queue_nodes WHERE name = $1 FOR UPDATE",
                    &[&name],
                )?
                .ok_or_else(|| Rejection::UnknownNode(name.to_owned()))
                .map(|r| get(&r, 0))??;
            let node = load_nodes(tx, Some(name))?
                .pop()
                .ok_or_else(|| Rejection::UnknownNode(name.to_owned()))?;
            if let Some(refusal) = unremovable(&node) {
                return Err(refusal.into());
            }
            let cancelled = tx.execute(
                "UPDATE backstop_queue_deliveries SET state = 'cancelled', cancelled_by = $2,
                     cancelled_ms = $3, finished_ms = $3, updated_ms = $3, lease_until_ms = NULL
                 WHERE node = $1 AND state IN ('pending', 'dead')",
                &[&name, &by, &now],
            )?;
            let running = tx.execute(
                "UPDATE backstop_queue_deliveries SET cancelled_by = $2, cancelled_ms = $3,
                     updated_ms = $3
                 WHERE node = $1 AND state = 'in_flight' AND cancelled_ms IS NULL",
                &[&name, &by, &now],
            )?;
            // History: the next node of this name is another.
            tx.execute(
                "UPDATE backstop_queue_deliveries SET node_removed_ms = $2
                 WHERE node = $1 AND node_removed_ms IS NULL",
                &[&name, &now],
            )?;
            tx.execute(
                "DELETE FROM backstop_queue_node_kinds WHERE node = $1",
                &[&name],
            )?;
            tx.execute("DELETE FROM backstop_queue_nodes WHERE name = $1", &[&name])?;
            tx.execute(
                "INSERT INTO backstop_queue_removed_nodes (name, node_type, transport, session,
                     declaration, removed_by, removed_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (name) DO UPDATE SET node_type = excluded.node_type,
                     transport = excluded.transport, session = excluded.session,
                     declaration = excluded.declaration, removed_by = excluded.removed_by,
                     removed_ms = excluded.removed_ms",
                &[
                    &name,
                    &node.node_type,
                    &node.transport,
                    &node.session,
                    &declaration,
                    &by,
                    &now,
                ],
            )?;
            Ok(Removed {
                node,
                cancelled,
                running,
            })
        })
    }

    fn submit_all(&self, ops: &[NewOp], now: SystemTime) -> Result<Vec<Submitted>, StoreError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let columns = SubmitColumns::of(ops);
        let now_ms = to_millis(now);
        if ops.len() == 1 {
            // One statement, its own transaction: the submission's function
            // writes nothing when it refuses.
            let rows = self.db.call(SUBMIT_ONE, &columns.first(&now_ms))?;
            return match read_submitted(&rows).map_err(|e| self.failed(e))? {
                Ok(submitted) => Ok(submitted),
                Err((index, problem)) => {
                    let rejection = self.tx(|tx| refusal(tx, &ops[index], &problem))?;
                    Err(Rejection::InBatch {
                        index,
                        rejection: Box::new(rejection),
                    }
                    .into())
                }
            };
        }
        let params = columns.params(&now_ms);
        self.tx(|tx| {
            // Every lock the batch needs, first and in one order, so that
            // batches never wait on each other in a circle.
            lock_types_shared(tx, &columns.node_types)?;
            let keys: Vec<&str> = columns.keys.iter().flatten().map(String::as_str).collect();
            lock_keys(tx, &keys)?;
            let rows = tx.query(SUBMIT_ALL, &params)?;
            match read_submitted(&rows)? {
                Ok(submitted) => Ok(submitted),
                // Rolled back: nothing of the batch stays.
                Err((index, problem)) => Err(in_batch(
                    index,
                    TxError::Rejected(refusal(tx, &ops[index], &problem)?),
                )),
            }
        })
    }

    fn ops(&self, filter: &OpFilter) -> Result<Vec<OpSummary>, StoreError> {
        let limit = limit(filter.limit);
        let state = filter.state.map(DeliveryState::as_str);
        self.tx(|tx| {
            let ops: Vec<Op> = tx
                .query(
                    &format!(
                        "SELECT {OP_COLUMNS} FROM backstop_queue_ops o
                         WHERE ($1::text IS NULL OR EXISTS (
                                  SELECT 1 FROM backstop_queue_deliveries d
                                  WHERE d.op = o.id AND d.state = $1))
                           AND ($2::text IS NULL OR o.kind = $2)
                           AND ($4::text IS NULL OR o.op_key = $4)
                         ORDER BY o.id DESC LIMIT $3"
                    ),
                    &[&state, &filter.kind, &limit, &filter.key],
                )?
                .iter()
                .map(|r| read_op(r).map(OpRow::into_op))
                .collect::<Result<_, _>>()?;
            let ids: Vec<i64> = ops.iter().map(|o| o.id).collect();
            let mut counts: HashMap<i64, Counts> = HashMap::new();
            for row in tx.query(
                "SELECT op, state, count(*) FROM backstop_queue_deliveries
                 WHERE op = ANY($1) GROUP BY op, state",
                &[&ids],
            )? {
                let state: String = get(&row, 1)?;
                let n: i64 = get(&row, 2)?;
                if let Ok(state) = state.parse() {
                    counts
                        .entry(get(&row, 0)?)
                        .or_default()
                        .add(state, u64::try_from(n).unwrap_or(0));
                }
            }
            Ok(ops
                .into_iter()
                .map(|op| OpSummary {
                    deliveries: counts.remove(&op.id).unwrap_or_default(),
                    op,
                })
                .collect())
        })
    }

    fn op(&self, id: OpId) -> Result<(Op, Vec<Delivery>), StoreError> {
        self.tx(|tx| {
            let op = load_op(tx, id)?.ok_or(Rejection::UnknownOp(id))?;
            let deliveries = tx
                .query(
                    &format!(
                        "SELECT {DELIVERY_COLUMNS} FROM backstop_queue_deliveries d {DELIVERY_NODE_JOIN}
                         WHERE d.op = $1 ORDER BY d.node COLLATE \"C\""
                    ),
                    &[&id],
                )?
                .iter()
                .map(|r| read_delivery(r).map(DeliveryRow::into_delivery))
                .collect::<Result<_, _>>()?;
            Ok((op, deliveries))
        })
    }

    fn cancel(&self, id: OpId, by: &str, now: SystemTime) -> Result<Cancelled, StoreError> {
        let now = to_millis(now);
        self.tx(|tx| {
            let op = load_op(tx, id)?.ok_or(Rejection::UnknownOp(id))?;
            // As a registration does: a node of its type that joins now
            // either gets it before it ends, or sees it ended.
            if let Some(node_type) = &op.node_type {
                lock_type(tx, node_type)?;
            }
            tx.execute(
                "UPDATE backstop_queue_ops SET live = 0,
                     cancelled_by = coalesce(cancelled_by, $2),
                     cancelled_ms = coalesce(cancelled_ms, $3)
                 WHERE id = $1",
                &[&id, &by, &now],
            )?;
            // One statement: a delivery a claim takes meanwhile is seen in
            // flight, once the claim is done, and marked.
            let changed = tx.query(
                "UPDATE backstop_queue_deliveries SET
                     state = CASE WHEN state = 'in_flight' THEN state ELSE 'cancelled' END,
                     finished_ms = CASE WHEN state = 'in_flight' THEN finished_ms ELSE $3 END,
                     lease_until_ms = CASE WHEN state = 'in_flight' THEN lease_until_ms END,
                     cancelled_by = $2, cancelled_ms = $3, updated_ms = $3
                 WHERE op = $1 AND (state IN ('pending', 'dead')
                                    OR (state = 'in_flight' AND cancelled_ms IS NULL))
                 RETURNING state",
                &[&id, &by, &now],
            )?;
            let mut cancelled = 0;
            for row in &changed {
                let state: String = get(row, 0)?;
                if state == DeliveryState::Cancelled.as_str() {
                    cancelled += 1;
                }
            }
            let running = tx
                .query(
                    "SELECT d.id, d.attempt, d.node, coalesce(n.transport, '')
                     FROM backstop_queue_deliveries d
                     LEFT JOIN backstop_queue_nodes n ON n.name = d.node
                     WHERE d.op = $1 AND d.state = 'in_flight' ORDER BY d.id",
                    &[&id],
                )?
                .iter()
                .map(|r| {
                    Ok::<_, ColumnError>(Running {
                        token: Token {
                            delivery: get(r, 0)?,
                            attempt: count(get(r, 1)?),
                        },
                        node: get(r, 2)?,
                        transport: get(r, 3)?,
                    })
                })
                .collect::<Result<_, _>>()?;
            let op = load_op(tx, id)?.ok_or(Rejection::UnknownOp(id))?;
            Ok(Cancelled {
                op,
                cancelled,
                running,
            })
        })
    }

    fn attempts(&self, of: &AttemptsOf) -> Result<Vec<Attempt>, StoreError> {
        self.tx(|tx| {
            let (sql, id) = match *of {
                AttemptsOf::Delivery(id) => {
                    let known = tx.query_opt(
                        "SELECT 1 FROM backstop_queue_deliveries WHERE id = $1",
                        &[&id],
                    )?;
                    if known.is_none() {
                        return Err(Rejection::UnknownDelivery(id).into());
                    }
                    (
                        format!(
                            "SELECT {ATTEMPT_COLUMNS} FROM backstop_queue_attempts a
                             WHERE a.delivery = $1 ORDER BY a.attempt DESC"
                        ),
                        id,
                    )
                }
                AttemptsOf::Op(id) => {
                    if load_op(tx, id)?.is_none() {
                        return Err(Rejection::UnknownOp(id).into());
                    }
                    (
                        format!(
                            "SELECT {ATTEMPT_COLUMNS} FROM (
                                 SELECT DISTINCT ON (delivery) * FROM backstop_queue_attempts
                                 WHERE op = $1 ORDER BY delivery, attempt DESC) a
                             ORDER BY a.node COLLATE \"C\", a.delivery"
                        ),
                        id,
                    )
                }
            };
            Ok(tx
                .query(&sql, &[&id])?
                .iter()
                .map(|r| read_attempt(r).map(AttemptRow::into_attempt))
                .collect::<Result<_, _>>()?)
        })
    }

    fn deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>, StoreError> {
        let limit = limit(filter.limit);
        let state = filter.state.map(DeliveryState::as_str);
        self.tx(|tx| {
            Ok(tx
                .query(
                    &format!(
                        "SELECT {DELIVERY_COLUMNS} FROM backstop_queue_deliveries d {DELIVERY_NODE_JOIN}
                         WHERE ($1::text IS NULL OR d.state = $1)
                           AND ($2::text IS NULL OR d.node = $2)
                           AND ($3::bigint IS NULL OR d.op = $3)
                           AND ($5::bigint IS NULL OR d.id = $5)
                         ORDER BY d.id DESC LIMIT $4"
                    ),
                    &[&state, &filter.node, &filter.op, &limit, &filter.id],
                )?
                .iter()
                .map(|r| read_delivery(r).map(DeliveryRow::into_delivery))
                .collect::<Result<_, _>>()?)
        })
    }

    fn requeue(&self, which: &Requeue, now: SystemTime) -> Result<u64, StoreError> {
        let now = to_millis(now);
        const SET: &str = "UPDATE backstop_queue_deliveries SET state = 'pending', failures = 0,
            tries = 0, next_at_ms = $1, lease_until_ms = NULL, finished_ms = NULL, updated_ms = $1,
            requeued_attempt = attempt";
        self.tx(|tx| {
            let n = match which {
                Requeue::Delivery(id) => {
                    let state: String = tx
                        .query_opt(
                            "SELECT state FROM backstop_queue_deliveries WHERE id = $1",
                            &[id],
                        )?
                        .map(|r| get(&r, 0))
                        .transpose()?
                        .ok_or(Rejection::UnknownDelivery(*id))?;
                    let state = state.parse().unwrap_or(DeliveryState::Pending);
                    if state != DeliveryState::Dead {
                        return Err(Rejection::NotDead { id: *id, state }.into());
                    }
                    tx.execute(
                        &format!("{SET} WHERE id = $2 AND state = 'dead'"),
                        &[&now, id],
                    )?
                }
                Requeue::Node(name) => {
                    if !node_exists(tx, name)? {
                        return Err(Rejection::UnknownNode(name.clone()).into());
                    }
                    tx.execute(
                        &format!("{SET} WHERE node = $2 AND state = 'dead'"),
                        &[&now, name],
                    )?
                }
                Requeue::Op(id) => {
                    if load_op(tx, *id)?.is_none() {
                        return Err(Rejection::UnknownOp(*id).into());
                    }
                    tx.execute(
                        &format!("{SET} WHERE op = $2 AND state = 'dead'"),
                        &[&now, id],
                    )?
                }
                Requeue::All => tx.execute(&format!("{SET} WHERE state = 'dead'"), &[&now])?,
            };
            Ok(n)
        })
    }

    fn claim(&self, request: &ClaimRequest) -> Result<Vec<Claim>, StoreError> {
        let now = to_millis(request.now);
        let lease_ms = i64::try_from(request.lease.as_millis()).unwrap_or(i64::MAX);
        let grace_ms = i64::try_from(request.lease_grace.as_millis()).unwrap_or(i64::MAX);
        if request.transports.is_empty() || request.limit == 0 {
            return Ok(Vec::new());
        }
        self.tx(|tx| {
            // The nodes this claim fills, locked in name order: claimers of
            // one node take turns, so its capacity and its keys hold.
            let nodes: Vec<(String, String, i64)> = tx
                .query(
                    "SELECT name, transport, capacity FROM backstop_queue_nodes
                     WHERE status = 'healthy' AND drained = 0 AND transport = ANY($1)
                       AND (transport <> 'local' OR $3::text[] IS NULL OR name = ANY($3))
                       AND EXISTS (SELECT 1 FROM backstop_queue_deliveries d
                                   WHERE d.node = name AND d.state = 'pending'
                                     AND d.next_at_ms <= $2)
                     ORDER BY name COLLATE \"C\" FOR UPDATE",
                    &[&request.transports, &now, &request.local],
                )?
                .iter()
                .map(|r| Ok::<_, ColumnError>((get(r, 0)?, get(r, 1)?, get(r, 2)?)))
                .collect::<Result<_, _>>()?;
            if nodes.is_empty() {
                return Ok(Vec::new());
            }
            let names: Vec<&str> = nodes.iter().map(|n| n.0.as_str()).collect();
            let busy: HashMap<String, i64> = tx
                .query(
                    "SELECT node, count(*) FROM backstop_queue_deliveries
                     WHERE state = 'in_flight' AND node = ANY($1) GROUP BY node",
                    &[&names],
                )?
                .iter()
                .map(|r| Ok::<_, ColumnError>((get(r, 0)?, get(r, 1)?)))
                .collect::<Result<_, _>>()?;
            let mut left = i64::from(request.limit);
            let mut wants: Vec<(&str, i64)> = Vec::new();
            for (name, _, capacity) in &nodes {
                let free = capacity - busy.get(name).copied().unwrap_or(0);
                let want = free.min(left);
                if want > 0 {
                    wants.push((name, want));
                    left -= want;
                }
            }
            if wants.is_empty() {
                return Ok(Vec::new());
            }
            let (want_names, want_n): (Vec<&str>, Vec<i64>) = wants.into_iter().unzip();
            let due = tx.query(
                "SELECT d.id, d.op, d.node, d.kind, d.op_key, d.attempt, d.failures, d.tries
                 FROM unnest($1::text[], $2::bigint[]) AS w(node, n)
                 CROSS JOIN LATERAL (
                     SELECT d.id, d.op, d.node, d.kind, d.op_key, d.attempt, d.failures, d.tries,
                            d.next_at_ms
                     FROM backstop_queue_deliveries d
                     WHERE d.node = w.node AND d.state = 'pending' AND d.next_at_ms <= $3
                       AND EXISTS (SELECT 1 FROM backstop_queue_node_kinds k
                                   WHERE k.node = d.node AND k.kind = d.kind)
                       AND (d.op_key IS NULL OR NOT EXISTS (
                            SELECT 1 FROM backstop_queue_deliveries x
                            WHERE x.node = d.node AND x.state = 'in_flight'
                              AND x.op_key = d.op_key))
                     ORDER BY d.next_at_ms, d.id
                     LIMIT w.n
                     FOR UPDATE SKIP LOCKED) d
                 ORDER BY d.node, d.next_at_ms, d.id",
                &[&want_names, &want_n, &now],
            )?;
            let mut keys: HashSet<(String, String)> = HashSet::new();
            let mut picked = Vec::with_capacity(due.len());
            for r in &due {
                let node: String = get(r, 2)?;
                let key: Option<String> = get(r, 4)?;
                if let Some(k) = &key
                    && !keys.insert((node.clone(), k.clone()))
                {
                    continue;
                }
                let id: i64 = get(r, 0)?;
                picked.push((
                    id,
                    get::<i64>(r, 1)?,
                    node,
                    get::<String>(r, 3)?,
                    key,
                    get::<i64>(r, 5)?,
                    get::<i64>(r, 6)?,
                    get::<i64>(r, 7)?,
                ));
            }
            if picked.is_empty() {
                return Ok(Vec::new());
            }
            let ids: Vec<i64> = picked.iter().map(|p| p.0).collect();
            // Marked in flight, with their payloads, settings and leases
            // (their operations' own handler timeouts, or the default), in
            // one statement.
            let taken: HashMap<i64, Taken> = tx
                .query(
                    "UPDATE backstop_queue_deliveries d SET state = 'in_flight',
                         attempt = d.attempt + 1, updated_ms = $3,
                         lease_until_ms = $3 + coalesce(o.timeout_ms + $4, $2)
                     FROM backstop_queue_ops o
                     WHERE d.id = ANY($1) AND d.state = 'pending' AND o.id = d.op
                     RETURNING d.id, o.payload, d.lease_until_ms, o.timeout_ms, o.max_failures,
                         o.base_delay_ms, o.max_delay_ms",
                    &[&ids, &lease_ms, &now, &grace_ms],
                )?
                .iter()
                .map(|r| {
                    Ok::<_, ColumnError>((
                        get(r, 0)?,
                        Taken {
                            payload: get(r, 1)?,
                            lease_until: get(r, 2)?,
                            settings: settings(get(r, 3)?, get(r, 4)?, get(r, 5)?, get(r, 6)?),
                        },
                    ))
                })
                .collect::<Result<_, _>>()?;
            let transports: HashMap<&str, &str> = nodes
                .iter()
                .map(|(n, t, _)| (n.as_str(), t.as_str()))
                .collect();
            let mut taken = taken;
            Ok(picked
                .into_iter()
                .filter_map(|(id, op, node, kind, key, attempt, failures, tries)| {
                    let taken = taken.remove(&id)?;
                    Some(Claim {
                        token: Token {
                            delivery: id,
                            attempt: count(attempt).saturating_add(1),
                        },
                        op,
                        transport: transports
                            .get(node.as_str())
                            .map(|t| (*t).to_owned())
                            .unwrap_or_default(),
                        node,
                        kind,
                        key,
                        payload: taken.payload,
                        failures: count(failures),
                        tries: count(tries),
                        lease_until: from_millis(taken.lease_until),
                        settings: taken.settings,
                    })
                })
                .collect())
        })
    }

    fn settle(&self, batch: &[Settle]) -> Result<Vec<Settled>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // Successes, the bulk of any batch, in one statement; the rest one
        // by one, in delivery order so that two writers never wait on each
        // other in a cycle.
        let mut done_ids = Vec::new();
        let mut done_attempts = Vec::new();
        let mut done_at = Vec::new();
        let mut others: Vec<usize> = Vec::new();
        for (i, s) in batch.iter().enumerate() {
            if let Decision::Done = s.decision {
                done_ids.push(s.token.delivery);
                done_attempts.push(i64::from(s.token.attempt));
                done_at.push(to_millis(s.at));
            } else {
                others.push(i);
            }
        }
        others.sort_by_key(|i| batch[*i].token.delivery);
        self.tx(|tx| {
            let mut out = vec![Settled::Stale; batch.len()];
            let applied: HashMap<(i64, i64), (i64, String)> = if done_ids.is_empty() {
                HashMap::new()
            } else {
                // Planned for this batch each time: a plan kept from when the
                // table was small joins by scanning every delivery.
                tx.query_planned(
                    "UPDATE backstop_queue_deliveries d SET state = 'done', finished_ms = s.at,
                         updated_ms = s.at, lease_until_ms = NULL, last_error = NULL
                     FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS s(id, attempt, at)
                     WHERE d.id = s.id AND d.attempt = s.attempt
                       AND d.state IN ('in_flight', 'pending')
                     RETURNING d.id, d.attempt, d.op, d.node",
                    &[
                        (&done_ids, Type::INT8_ARRAY),
                        (&done_attempts, Type::INT8_ARRAY),
                        (&done_at, Type::INT8_ARRAY),
                    ],
                )?
                .iter()
                .map(|r| Ok::<_, ColumnError>(((get(r, 0)?, get(r, 1)?), (get(r, 2)?, get(r, 3)?))))
                .collect::<Result<_, _>>()?
            };
            let mut kept = Vec::new();
            let mut unapplied = Vec::new();
            for (i, s) in batch.iter().enumerate() {
                if let Decision::Done = s.decision {
                    match applied.get(&(s.token.delivery, i64::from(s.token.attempt))) {
                        Some((op, node)) => {
                            out[i] = Settled::Applied(DeliveryState::Done);
                            kept.push((s, *op, node.as_str()));
                        }
                        None => unapplied.push(i),
                    }
                }
            }
            keep_attempts(tx, &kept)?;
            replays(tx, batch, &unapplied, &mut out)?;
            if others.is_empty() {
                return Ok(out);
            }
            let keys: Vec<String> = tx
                .query(
                    "SELECT DISTINCT op_key FROM backstop_queue_deliveries
                     WHERE id = ANY($1) AND op_key IS NOT NULL",
                    &[&others
                        .iter()
                        .map(|i| batch[*i].token.delivery)
                        .collect::<Vec<i64>>()],
                )?
                .iter()
                .map(|r| get(r, 0))
                .collect::<Result<_, _>>()?;
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            lock_keys(tx, &keys)?;
            let mut kept = Vec::new();
            let mut nodes = Vec::new();
            for &i in &others {
                let (settled, of) = settle_one(tx, &batch[i])?;
                out[i] = settled;
                if let Some(of) = of {
                    nodes.push((i, of));
                }
            }
            for (i, (op, node)) in &nodes {
                kept.push((&batch[*i], *op, node.as_str()));
            }
            keep_attempts(tx, &kept)?;
            Ok(out)
        })
    }

    fn rescue(&self, now: SystemTime) -> Result<Vec<Token>, StoreError> {
        let now = to_millis(now);
        self.tx(|tx| {
            Ok(tx
                .query(
                    &format!(
                        "UPDATE backstop_queue_deliveries SET {}, next_at_ms = $1,
                             lease_until_ms = NULL, last_error = $2, updated_ms = $1
                         WHERE id IN (SELECT id FROM backstop_queue_deliveries
                                      WHERE state = 'in_flight' AND lease_until_ms < $1
                                      ORDER BY id FOR UPDATE SKIP LOCKED)
                         RETURNING id, attempt",
                        released("$1")
                    ),
                    &[
                        &now,
                        &"no reply came before the attempt's lease ended; not counted as a failure",
                    ],
                )?
                .iter()
                .map(|r| {
                    Ok::<_, ColumnError>(Token {
                        delivery: get(r, 0)?,
                        attempt: count(get(r, 1)?),
                    })
                })
                .collect::<Result<_, _>>()?)
        })
    }

    fn release(
        &self,
        tokens: &[Token],
        why: &str,
        now: SystemTime,
    ) -> Result<Vec<Token>, StoreError> {
        let now = to_millis(now);
        let ids: Vec<i64> = tokens.iter().map(|t| t.delivery).collect();
        let attempts: Vec<i64> = tokens.iter().map(|t| i64::from(t.attempt)).collect();
        let released: HashSet<(i64, i64)> = self.tx(|tx| {
            Ok(tx
                .query(
                    &format!(
                        "UPDATE backstop_queue_deliveries d SET {}, next_at_ms = $3,
                             lease_until_ms = NULL, last_error = $4, updated_ms = $3
                         FROM unnest($1::bigint[], $2::bigint[]) AS t(id, attempt)
                         WHERE d.id = t.id AND d.attempt = t.attempt AND d.state = 'in_flight'
                         RETURNING d.id, d.attempt",
                        released("$3")
                    ),
                    &[&ids, &attempts, &now, &why],
                )?
                .iter()
                .map(|r| Ok::<_, ColumnError>((get(r, 0)?, get(r, 1)?)))
                .collect::<Result<_, _>>()?)
        })?;
        Ok(tokens
            .iter()
            .filter(|t| released.contains(&(t.delivery, i64::from(t.attempt))))
            .copied()
            .collect())
    }

    fn prune(&self, _now: SystemTime) -> Result<Pruned, StoreError> {
        self.tx(|tx| {
            let gone_nodes = remove_deliveries(
                tx,
                "state IN ('pending', 'in_flight', 'dead') AND node_removed_ms IS NULL
                   AND NOT EXISTS (SELECT 1 FROM backstop_queue_nodes n
                                   WHERE n.name = backstop_queue_deliveries.node)",
                &[],
            )?;
            let unhandled_kinds = remove_deliveries(
                tx,
                "state IN ('pending', 'in_flight', 'dead') AND node_removed_ms IS NULL
                   AND NOT EXISTS (SELECT 1 FROM backstop_queue_node_kinds k
                                   WHERE k.node = backstop_queue_deliveries.node
                                     AND k.kind = backstop_queue_deliveries.kind)",
                &[],
            )?;
            Ok(Pruned {
                gone_nodes,
                unhandled_kinds,
            })
        })
    }

    fn retain(&self, before: SystemTime, limit: u32) -> Result<Retained, StoreError> {
        let before = to_millis(before);
        let limit = i64::from(limit);
        self.tx(|tx| {
            let ended = tx.execute(
                "UPDATE backstop_queue_ops SET live = 0
                 WHERE live = 1 AND op_key IS NULL AND created_ms < $1",
                &[&before],
            )?;
            let removed: Vec<(i64, i64)> = tx
                .query(
                    "DELETE FROM backstop_queue_deliveries WHERE id IN (
                         SELECT d.id FROM backstop_queue_deliveries d
                         JOIN backstop_queue_ops o ON o.id = d.op
                         WHERE d.state IN ('done', 'superseded', 'cancelled')
                           AND d.finished_ms < $1 AND o.live = 0
                         ORDER BY d.finished_ms LIMIT $2
                         FOR UPDATE OF d SKIP LOCKED)
                     RETURNING id, op",
                    &[&before, &limit],
                )?
                .iter()
                .map(|r| Ok::<_, ColumnError>((get(r, 0)?, get(r, 1)?)))
                .collect::<Result<_, _>>()?;
            let deliveries = removed.len() as u64;
            let (ids, ops): (Vec<i64>, Vec<i64>) = removed.into_iter().unzip();
            forget_attempts(tx, &ids)?;
            let forgotten: Vec<Option<i64>> = tx
                .query(
                    "DELETE FROM backstop_queue_idempotency WHERE idem_key IN (
                         SELECT idem_key FROM backstop_queue_idempotency
                         WHERE created_ms < $1 ORDER BY created_ms LIMIT $2
                         FOR UPDATE SKIP LOCKED)
                     RETURNING op",
                    &[&before.saturating_sub(IDEMPOTENCY_WINDOW_MS), &limit],
                )?
                .iter()
                .map(|r| get(r, 0))
                .collect::<Result<_, _>>()?;
            let keys = forgotten.len() as u64;
            let mut ops = ops;
            ops.extend(forgotten.into_iter().flatten());
            let ops_removed = tx.execute(
                "DELETE FROM backstop_queue_ops o
                 WHERE o.id = ANY($1) AND o.live = 0
                   AND NOT EXISTS (SELECT 1 FROM backstop_queue_deliveries d WHERE d.op = o.id)
                   AND NOT EXISTS (SELECT 1 FROM backstop_queue_idempotency k WHERE k.op = o.id)",
                &[&ops],
            )?;
            Ok(Retained {
                ended,
                deliveries,
                ops: ops_removed,
                keys,
            })
        })
    }

    fn lead(&self) -> Result<bool, StoreError> {
        self.leader.hold().map_err(|e| self.unreachable(e))
    }

    fn resign(&self) {
        self.leader.release();
    }

    fn next_due(
        &self,
        transports: &[String],
        local: Option<&[String]>,
    ) -> Result<Option<SystemTime>, StoreError> {
        if transports.is_empty() {
            return Ok(None);
        }
        // One statement on its own: one round trip, where a transaction
        // would take three.
        let rows = self.db.call(
            "SELECT min((SELECT min(d.next_at_ms) FROM backstop_queue_deliveries d
                             WHERE d.node = n.name AND d.state = 'pending'))
                 FROM backstop_queue_nodes n
                 WHERE n.status = 'healthy' AND n.drained = 0 AND n.transport = ANY($1)
                   AND (n.transport <> 'local' OR $2::text[] IS NULL OR n.name = ANY($2))",
            &[&transports, &local],
        )?;
        let min: Option<i64> = match rows.first() {
            Some(row) => get(row, 0).map_err(|e| self.failed(e))?,
            None => None,
        };
        Ok(min.map(from_millis))
    }

    fn gauges(&self) -> Result<Gauges, StoreError> {
        self.tx(|tx| {
            let mut gauges = Gauges::default();
            for row in tx.query(OPEN_BY_KIND, &[])? {
                let state: String = get(&row, 0)?;
                let n: i64 = get(&row, 2)?;
                if let Ok(state) = state.parse() {
                    gauges
                        .deliveries
                        .push((state, get(&row, 1)?, n.max(0) as u64));
                }
            }
            for row in tx.query(
                "SELECT status, drained, count(*) FROM backstop_queue_nodes
                 GROUP BY status, drained",
                &[],
            )? {
                let status: String = get(&row, 0)?;
                let drained: i64 = get(&row, 1)?;
                let n: i64 = get(&row, 2)?;
                let status = status.parse().unwrap_or(NodeStatus::Unhealthy);
                gauges.nodes.push((status, drained != 0, n.max(0) as u64));
            }
            // One seek of the due index per node that can take work.
            let row = tx.query_one(
                "SELECT min((SELECT min(d.next_at_ms) FROM backstop_queue_deliveries d
                             WHERE d.node = n.name AND d.state = 'pending'))
                 FROM backstop_queue_nodes n WHERE n.status = 'healthy' AND n.drained = 0",
                &[],
            )?;
            let oldest: Option<i64> = get(&row, 0)?;
            gauges.oldest_due = oldest.map(from_millis);
            Ok(gauges)
        })
    }

    fn location(&self) -> String {
        self.db.location().to_owned()
    }

    fn activity(&self, since: SystemTime) -> Result<Activity, StoreError> {
        let since = to_millis(since);
        self.tx(|tx| {
            let pairs = |rows: Vec<postgres::Row>| -> Result<Vec<(i64, i64)>, ColumnError> {
                rows.iter().map(|r| Ok((get(r, 0)?, get(r, 1)?))).collect()
            };
            let states = tx
                .query(
                    "SELECT state, count(*) FROM backstop_queue_deliveries GROUP BY state",
                    &[],
                )?
                .iter()
                .map(|r| Ok((get(r, 0)?, get(r, 1)?)))
                .collect::<Result<_, ColumnError>>()?;
            let done = pairs(tx.query(
                "SELECT finished_ms / 60000, count(*) FROM backstop_queue_deliveries
                 WHERE state = 'done' AND finished_ms >= $1 GROUP BY 1",
                &[&since],
            )?)?;
            let failed = pairs(tx.query(
                "SELECT finished_ms / 60000, count(*) FROM backstop_queue_attempts
                 WHERE outcome = 'failed' AND finished_ms >= $1 GROUP BY 1",
                &[&since],
            )?)?;
            let oldest: Option<i64> = get(
                &tx.query_one(
                    "SELECT min(created_ms) FROM backstop_queue_deliveries WHERE state = 'pending'",
                    &[],
                )?,
                0,
            )?;
            Ok(Activity::from_rows(states, done, failed, oldest))
        })
    }
}

/// Answers the decisions at `which` that did not apply as what they
/// answered when they did, if they already had ([`Settled::replayed`]).
fn replays(
    tx: &mut Tx<'_>,
    batch: &[Settle],
    which: &[usize],
    out: &mut [Settled],
) -> TxResult<()> {
    if which.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = which.iter().map(|i| batch[*i].token.delivery).collect();
    let mut now: HashMap<i64, (i64, DeliveryState, i64)> = HashMap::new();
    for row in tx.query(
        "SELECT id, attempt, state, updated_ms FROM backstop_queue_deliveries
         WHERE id = ANY($1)",
        &[&ids],
    )? {
        let state: String = get(&row, 2)?;
        let state = state.parse().unwrap_or(DeliveryState::Pending);
        now.insert(get(&row, 0)?, (get(&row, 1)?, state, get(&row, 3)?));
    }
    for i in which {
        let settle = &batch[*i];
        if let Some(&(attempt, state, updated_ms)) = now.get(&settle.token.delivery)
            && let Some(settled) = Settled::replayed(settle, attempt, state, updated_ms)
        {
            out[*i] = settled;
        }
    }
    Ok(())
}

/// What a claim read of a delivery it marked in flight.
struct Taken {
    payload: String,
    lease_until: i64,
    settings: crate::model::Settings,
}

/// Applies one decision other than success (see [`Store::settle`]); with
/// the operation and node of the delivery, when it was applied.
fn settle_one(tx: &mut Tx<'_>, settle: &Settle) -> TxResult<(Settled, Option<(i64, String)>)> {
    let id = settle.token.delivery;
    let at = to_millis(settle.at);
    let Some(row) = tx.query_opt(
        "SELECT state, attempt, node, op_key, op, cancelled_ms IS NOT NULL, updated_ms
         FROM backstop_queue_deliveries WHERE id = $1 FOR UPDATE",
        &[&id],
    )?
    else {
        return Ok((Settled::Stale, None));
    };
    let state: String = get(&row, 0)?;
    let attempt: i64 = get(&row, 1)?;
    let node: String = get(&row, 2)?;
    let key: Option<String> = get(&row, 3)?;
    let op: i64 = get(&row, 4)?;
    let cancelled: bool = get(&row, 5)?;
    if count(attempt) != settle.token.attempt || state != DeliveryState::InFlight.as_str() {
        let state = state.parse().unwrap_or(DeliveryState::Pending);
        let replayed = Settled::replayed(settle, attempt, state, get(&row, 6)?);
        return Ok((replayed.unwrap_or(Settled::Stale), None));
    }
    let replaced = match &key {
        Some(k) => tx
            .query_opt(
                "SELECT 1 FROM backstop_queue_deliveries
                 WHERE node = $1 AND op_key = $2 AND op > $3 LIMIT 1",
                &[&node, k, &op],
            )?
            .is_some(),
        None => false,
    };
    if replaced {
        tx.execute(
            "UPDATE backstop_queue_deliveries SET state = 'superseded', finished_ms = $2,
                 updated_ms = $2, lease_until_ms = NULL WHERE id = $1",
            &[&id, &at],
        )?;
        return Ok((
            Settled::Applied(DeliveryState::Superseded),
            Some((op, node)),
        ));
    }
    let applied = match &settle.decision {
        Decision::Done => {
            tx.execute(
                "UPDATE backstop_queue_deliveries SET state = 'done', finished_ms = $2,
                     updated_ms = $2, lease_until_ms = NULL, last_error = NULL WHERE id = $1",
                &[&id, &at],
            )?;
            DeliveryState::Done
        }
        Decision::Retry {
            next_at,
            failures,
            tries,
            error,
        } => {
            tx.execute(
                &format!(
                    "UPDATE backstop_queue_deliveries SET {}, next_at_ms = $2,
                         failures = $3, tries = $4, last_error = $5, updated_ms = $6,
                         lease_until_ms = NULL WHERE id = $1",
                    released("$6")
                ),
                &[
                    &id,
                    &to_millis(*next_at),
                    &i64::from(*failures),
                    &i64::from(*tries),
                    &clip(error),
                    &at,
                ],
            )?;
            ended_or(cancelled, DeliveryState::Pending)
        }
        Decision::Dead {
            failures,
            tries,
            error,
        } => {
            let state = ended_or(cancelled, DeliveryState::Dead);
            tx.execute(
                "UPDATE backstop_queue_deliveries SET state = $6, failures = $2,
                     tries = $3, last_error = $4, updated_ms = $5, finished_ms = $5,
                     lease_until_ms = NULL WHERE id = $1",
                &[
                    &id,
                    &i64::from(*failures),
                    &i64::from(*tries),
                    &clip(error),
                    &at,
                    &state.as_str(),
                ],
            )?;
            state
        }
        Decision::Release {
            next_at,
            error,
            unreachable,
        } => {
            tx.execute(
                &format!(
                    "UPDATE backstop_queue_deliveries SET {}, next_at_ms = $2,
                         last_error = $3, updated_ms = $4, lease_until_ms = NULL
                     WHERE id = $1",
                    released("$4")
                ),
                &[&id, &to_millis(*next_at), &clip(error), &at],
            )?;
            if *unreachable {
                tx.execute(
                    "UPDATE backstop_queue_nodes SET status = 'unreachable', updated_ms = $2
                     WHERE name = $1 AND status = 'healthy'",
                    &[&node, &at],
                )?;
            }
            ended_or(cancelled, DeliveryState::Pending)
        }
    };
    Ok((Settled::Applied(applied), Some((op, node))))
}
