//! The queue in a SQLite file: the default, for one machine.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use backstop_core::time::{from_millis, to_millis};
use backstop_store::sqlite::Database;
use backstop_store::sqlite::rusqlite::{
    self, OptionalExtension, Transaction, TransactionBehavior, params, params_from_iter,
};

use super::{
    ATTEMPT_COLUMNS, ATTEMPTS_KEPT, Activity, AttemptRow, AttemptsOf, COMPONENT, Cancelled,
    ClaimRequest, Counts, DELIVERY_COLUMNS, DELIVERY_NODE_JOIN, DeliveryFilter, DeliveryRow,
    Gauges, Heartbeat, IDEMPOTENCY_WINDOW_MS, OP_COLUMNS, OPEN_BY_KIND, OpFilter, OpRow, OpSummary,
    Pruned, Registered, Rejection, Removed, Requeue, Retained, Running, SQLITE_MIGRATIONS, Settled,
    Store, StoreError, Submitted, Tombstone, clip, count, ended_or, in_batch, named, released,
    settings, storable, to_ms, unremovable,
};
use crate::model::{
    Attempt, Claim, Delivery, DeliveryState, NewOp, Node, NodeSpec, NodeStatus, Op, OpId, Target,
    Token, transport_name,
};
use crate::schedule::{Decision, Settle};

/// The default number of rows a listing returns.
const DEFAULT_LIMIT: u32 = 100;

/// A listing's limit: 0 means the default.
fn limit(n: u32) -> u32 {
    if n == 0 { DEFAULT_LIMIT } else { n }
}

/// A SQLite queue.
///
/// Opened as every backstop store opens SQLite ([`backstop_store::sqlite`]): WAL,
/// `synchronous=FULL`, a busy timeout and retries on top of it; every
/// write transaction begins `IMMEDIATE`. Every query the dispatcher runs
/// goes through a partial index of the rows it can touch (pending, in
/// flight, dead), so its cost does not grow with the history of finished
/// deliveries.
pub struct SqliteStore {
    db: Database,
}

type TxError = backstop_store::TxError<rusqlite::Error, Rejection>;

impl From<Rejection> for TxError {
    fn from(r: Rejection) -> Self {
        TxError::Rejected(r)
    }
}

type TxResult<T> = Result<T, TxError>;

impl SqliteStore {
    /// Opens (creating if needed, directory included) the queue at `path`
    /// and brings its schema up to date.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let db = Database::open(path, COMPONENT, SQLITE_MIGRATIONS)?;
        Ok(SqliteStore { db })
    }

    /// The file.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(self.db.location().trim_start_matches("sqlite:"))
    }

    /// Runs `f` in a write transaction begun IMMEDIATE: whole or not at
    /// all, one writer at a time.
    fn write<T>(&self, f: impl FnMut(&Transaction<'_>) -> TxResult<T>) -> Result<T, StoreError> {
        self.transaction(TransactionBehavior::Immediate, f)
    }

    /// Runs `f` in a read transaction: one consistent snapshot.
    fn read<T>(&self, f: impl FnMut(&Transaction<'_>) -> TxResult<T>) -> Result<T, StoreError> {
        self.transaction(TransactionBehavior::Deferred, f)
    }

    fn transaction<T>(
        &self,
        behavior: TransactionBehavior,
        f: impl FnMut(&Transaction<'_>) -> TxResult<T>,
    ) -> Result<T, StoreError> {
        self.db.transaction(behavior, f)
    }
}

fn read_delivery(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryRow> {
    Ok(DeliveryRow {
        id: r.get(0)?,
        op: r.get(1)?,
        node: r.get(2)?,
        kind: r.get(3)?,
        key: r.get(4)?,
        state: r.get(5)?,
        attempt: r.get(6)?,
        failures: r.get(7)?,
        tries: r.get(8)?,
        next_at_ms: r.get(9)?,
        lease_until_ms: r.get(10)?,
        last_error: r.get(11)?,
        created_ms: r.get(12)?,
        updated_ms: r.get(13)?,
        finished_ms: r.get(14)?,
        requeued_attempt: r.get(15)?,
        node_status: r.get(16)?,
        node_drained: r.get(17)?,
        cancelled_by: r.get(18)?,
        cancelled_ms: r.get(19)?,
    })
}

fn read_attempt(r: &rusqlite::Row<'_>) -> rusqlite::Result<AttemptRow> {
    Ok(AttemptRow {
        delivery: r.get(0)?,
        op: r.get(1)?,
        attempt: r.get(2)?,
        node: r.get(3)?,
        outcome: r.get(4)?,
        error: r.get(5)?,
        stdout: r.get(6)?,
        stderr: r.get(7)?,
        finished_ms: r.get(8)?,
    })
}

fn read_op(r: &rusqlite::Row<'_>) -> rusqlite::Result<OpRow> {
    Ok(OpRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        node_type: r.get(2)?,
        nodes: r.get(3)?,
        present_only: r.get(4)?,
        key: r.get(5)?,
        payload: r.get(6)?,
        live: r.get(7)?,
        created_ms: r.get(8)?,
        timeout_ms: r.get(9)?,
        max_failures: r.get(10)?,
        base_delay_ms: r.get(11)?,
        max_delay_ms: r.get(12)?,
        cancelled_by: r.get(13)?,
        cancelled_ms: r.get(14)?,
    })
}

/// Whether a coordinator whose local nodes are `local` (`None`: all)
/// reaches node `name` of `transport`.
fn reaches(transport: &str, name: &str, local: Option<&[String]>) -> bool {
    transport != transport_name::LOCAL || local.is_none_or(|l| l.iter().any(|n| n == name))
}

/// "?2, ?3, ?4" for `n` parameters starting at `first`.
fn marks(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Returns the in-flight deliveries matched by `filter` (SQL on `d`) to
/// pending without spending attempts.
fn release_where(
    tx: &Transaction<'_>,
    filter: &str,
    args: &[&dyn rusqlite::ToSql],
    why: &str,
    now: i64,
) -> rusqlite::Result<Vec<Token>> {
    let mut tokens = Vec::new();
    {
        let mut stmt = tx.prepare(&format!(
            "SELECT d.id, d.attempt FROM backstop_queue_deliveries d
             WHERE d.state = 'in_flight' AND {filter}"
        ))?;
        let rows = stmt.query_map(args, |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (delivery, attempt) = row?;
            tokens.push(Token {
                delivery,
                attempt: count(attempt),
            });
        }
    }
    let mut update = tx.prepare_cached(&format!(
        "UPDATE backstop_queue_deliveries SET {}, next_at_ms = ?2,
             lease_until_ms = NULL, last_error = ?3, updated_ms = ?2
         WHERE id = ?1 AND state = 'in_flight'",
        released("?2")
    ))?;
    for token in &tokens {
        update.execute(params![token.delivery, now, why])?;
    }
    Ok(tokens)
}

/// Forgets the attempts kept of these deliveries (being removed).
fn forget_attempts(tx: &Transaction<'_>, deliveries: &[i64]) -> rusqlite::Result<()> {
    let mut forget =
        tx.prepare_cached("DELETE FROM backstop_queue_attempts WHERE delivery = ?1")?;
    for id in deliveries {
        forget.execute([id])?;
    }
    Ok(())
}

/// Removes the deliveries matched by `filter` (SQL on the deliveries'
/// own columns) with the attempts kept of them; how many.
fn remove_deliveries(
    tx: &Transaction<'_>,
    filter: &str,
    args: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<u64> {
    let ids: Vec<i64> = tx
        .prepare(&format!(
            "DELETE FROM backstop_queue_deliveries WHERE {filter} RETURNING id"
        ))?
        .query_map(args, |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    forget_attempts(tx, &ids)?;
    Ok(ids.len() as u64)
}

/// Keeps the record of an attempt, and forgets those of its delivery
/// older than the last [`ATTEMPTS_KEPT`].
fn keep_attempt(
    tx: &Transaction<'_>,
    settle: &crate::schedule::Settle,
    op: i64,
    node: &str,
) -> rusqlite::Result<()> {
    let Some(handled) = &settle.handled else {
        return Ok(());
    };
    let attempt = i64::from(settle.token.attempt);
    tx.prepare_cached(
        "INSERT INTO backstop_queue_attempts (delivery, attempt, op, node, outcome, error,
             stdout, stderr, finished_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (delivery, attempt) DO UPDATE SET outcome = excluded.outcome,
             error = excluded.error, stdout = excluded.stdout, stderr = excluded.stderr,
             finished_ms = excluded.finished_ms",
    )?
    .execute(params![
        settle.token.delivery,
        attempt,
        op,
        node,
        handled.outcome.name(),
        handled.outcome.error().map(clip),
        storable(&handled.output.stdout),
        storable(&handled.output.stderr),
        to_millis(settle.at)
    ])?;
    tx.prepare_cached("DELETE FROM backstop_queue_attempts WHERE delivery = ?1 AND attempt <= ?2")?
        .execute(params![settle.token.delivery, attempt - ATTEMPTS_KEPT])?;
    Ok(())
}

fn tombstone(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<Option<Tombstone>> {
    tx.query_row(
        "SELECT transport, session, declaration, removed_by, removed_ms
         FROM backstop_queue_removed_nodes WHERE name = ?1",
        [name],
        |r| {
            Ok(Tombstone {
                transport: r.get(0)?,
                session: r.get(1)?,
                declaration: r.get(2)?,
                by: r.get(3)?,
                at_ms: r.get(4)?,
            })
        },
    )
    .optional()
}

fn node_exists(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<bool> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM backstop_queue_nodes WHERE name = ?1",
            [name],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn kinds_of(tx: &Transaction<'_>, nodes: &[String]) -> rusqlite::Result<Vec<String>> {
    let mut stmt = tx.prepare(&format!(
        "SELECT DISTINCT kind FROM backstop_queue_node_kinds WHERE node IN ({}) ORDER BY kind",
        marks(1, nodes.len())
    ))?;
    stmt.query_map(params_from_iter(nodes), |r| r.get(0))?
        .collect()
}

fn handles(tx: &Transaction<'_>, node: &str, kind: &str) -> rusqlite::Result<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM backstop_queue_node_kinds WHERE node = ?1 AND kind = ?2")?
        .query_row([node, kind], |_| Ok(()))
        .optional()?
        .is_some())
}

fn load_nodes(tx: &Transaction<'_>, only: Option<&str>) -> rusqlite::Result<Vec<Node>> {
    let mut kinds: BTreeMap<String, Vec<String>> = BTreeMap::new();
    {
        let mut stmt =
            tx.prepare("SELECT node, kind FROM backstop_queue_node_kinds ORDER BY node, kind")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (node, kind) = row?;
            kinds.entry(node).or_default().push(kind);
        }
    }
    let mut counts: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
    for state in ["pending", "in_flight", "dead"] {
        let mut stmt = tx.prepare_cached(
            "SELECT node, count(*) FROM backstop_queue_deliveries WHERE state = ?1 GROUP BY node",
        )?;
        for row in stmt.query_map([state], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })? {
            let (node, n) = row?;
            counts.insert((node, state), u64::try_from(n).unwrap_or(0));
        }
    }
    let mut stmt = tx.prepare(
        "SELECT name, node_type, capacity, transport, status, drained, last_heartbeat_ms,
                registered_ms, updated_ms, session
         FROM backstop_queue_nodes WHERE ?1 IS NULL OR name = ?1 ORDER BY name",
    )?;
    let rows = stmt.query_map([only], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, Option<i64>>(6)?,
            r.get::<_, i64>(7)?,
            r.get::<_, i64>(8)?,
            r.get::<_, String>(9)?,
        ))
    })?;
    let mut nodes = Vec::new();
    for row in rows {
        let (
            name,
            node_type,
            capacity,
            transport,
            status,
            drained,
            beat,
            registered,
            updated,
            session,
        ) = row?;
        let n = |state| counts.get(&(name.clone(), state)).copied().unwrap_or(0);
        nodes.push(Node {
            kinds: kinds.remove(&name).unwrap_or_default(),
            node_type,
            capacity: count(capacity),
            transport,
            status: status.parse().unwrap_or(NodeStatus::Unhealthy),
            drained: drained != 0,
            last_heartbeat: beat.map(from_millis),
            in_flight: n("in_flight"),
            pending: n("pending"),
            dead: n("dead"),
            registered: from_millis(registered),
            updated: from_millis(updated),
            session,
            name,
        });
    }
    Ok(nodes)
}

fn load_op(tx: &Transaction<'_>, id: OpId) -> rusqlite::Result<Option<Op>> {
    Ok(tx
        .prepare_cached(&format!(
            "SELECT {OP_COLUMNS} FROM backstop_queue_ops o WHERE o.id = ?1"
        ))?
        .query_row([id], read_op)
        .optional()?
        .map(OpRow::into_op))
}

/// Where an operation goes: the nodes of its target, and those of them
/// that handle its kind, as JSON arrays (read by `json_each`).
#[derive(Clone)]
struct Resolved {
    targets: String,
    handling: String,
    handled: u64,
}

/// The targets of a batch's operations, resolved once per target and kind:
/// the batch's transaction is the only writer, so nodes cannot change
/// under it.
type Resolutions = HashMap<(Target, String), Resolved>;

/// Where `op` goes, or why it cannot be submitted.
fn resolve(tx: &Transaction<'_>, op: &NewOp) -> TxResult<Resolved> {
    let (targets, describe): (Vec<String>, String) = match &op.target {
        Target::Type { node_type, .. } => {
            let names = tx
                .prepare_cached(
                    "SELECT name FROM backstop_queue_nodes WHERE node_type = ?1 ORDER BY name",
                )?
                .query_map([node_type], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            (names, format!("node of type {node_type:?}"))
        }
        Target::Nodes(names) => {
            for name in names {
                if !node_exists(tx, name)? {
                    return Err(Rejection::UnknownNode(name.clone()).into());
                }
            }
            (names.clone(), format!("node among {}", names.join(", ")))
        }
    };
    let mut handling = Vec::new();
    for name in &targets {
        if handles(tx, name, &op.kind)? {
            handling.push(name.clone());
        } else if matches!(op.target, Target::Nodes(_)) {
            return Err(Rejection::UnknownKind {
                kind: op.kind.clone(),
                target: format!("node {name:?}"),
                known: kinds_of(tx, std::slice::from_ref(name))?,
            }
            .into());
        }
    }
    if handling.is_empty() {
        return Err(Rejection::UnknownKind {
            kind: op.kind.clone(),
            target: describe,
            known: kinds_of(tx, &targets)?,
        }
        .into());
    }
    Ok(Resolved {
        targets: serde_json::Value::from(targets).to_string(),
        handled: handling.len() as u64,
        handling: serde_json::Value::from(handling).to_string(),
    })
}

/// Submits `op` in the write transaction `tx` (see [`Store::submit`]);
/// `fingerprint` is the op's when it has an idempotency key, `resolutions`
/// the targets the batch resolved so far.
fn submit_one(
    tx: &Transaction<'_>,
    op: &NewOp,
    fingerprint: Option<&str>,
    now_ms: i64,
    resolutions: &mut Resolutions,
) -> TxResult<Submitted> {
    // One writer at a time (IMMEDIATE): the key read here cannot
    // be written by another before this transaction ends.
    if let (Some(key), Some(fingerprint)) = (&op.idempotency_key, fingerprint)
        && let Some(first) = tx
            .prepare_cached(
                "SELECT fingerprint, op, deliveries, superseded
                 FROM backstop_queue_idempotency WHERE idem_key = ?1",
            )?
            .query_row([key], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .optional()?
    {
        let (known, id, deliveries, superseded) = first;
        let id = id.unwrap_or_default();
        if known != fingerprint {
            return Err(Rejection::IdempotencyKeyReused { op: id }.into());
        }
        let op = load_op(tx, id)?.ok_or(Rejection::UnknownOp(id))?;
        return Ok(Submitted {
            op,
            deliveries: u64::try_from(deliveries).unwrap_or(0),
            superseded: u64::try_from(superseded).unwrap_or(0),
            repeated: true,
        });
    }
    let resolution = (op.target.clone(), op.kind.clone());
    let resolved = match resolutions.get(&resolution) {
        Some(resolved) => resolved.clone(),
        None => {
            let resolved = resolve(tx, op)?;
            resolutions.insert(resolution, resolved.clone());
            resolved
        }
    };
    let (node_type, nodes, present_only) = match &op.target {
        Target::Type {
            node_type,
            present_only,
        } => (Some(node_type.as_str()), None, *present_only),
        // Joined with commas: safe because a node name is checked
        // (`check_name`) to hold only letters, digits, '_' and '-'
        // before any operation can name it.
        Target::Nodes(names) => (None, Some(names.join(",")), false),
    };
    let live = node_type.is_some() && !present_only;
    let timeout_ms = to_ms(op.settings.timeout);
    let max_failures = op.settings.max_failures.map(i64::from);
    let base_delay_ms = to_ms(op.settings.base_delay);
    let max_delay_ms = to_ms(op.settings.max_delay);
    let id: OpId = tx
        .prepare_cached(
            "INSERT INTO backstop_queue_ops (kind, node_type, nodes, present_only, op_key,
                 payload, live, created_ms, timeout_ms, max_failures, base_delay_ms,
                 max_delay_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) RETURNING id",
        )?
        .query_row(
            params![
                op.kind,
                node_type,
                nodes,
                i64::from(present_only),
                op.key,
                op.payload,
                i64::from(live),
                now_ms,
                timeout_ms,
                max_failures,
                base_delay_ms,
                max_delay_ms
            ],
            |r| r.get(0),
        )?;
    let mut superseded = 0;
    if let Some(key) = &op.key {
        if let Some(node_type) = node_type {
            tx.prepare_cached(
                "UPDATE backstop_queue_ops SET live = 0
                 WHERE live = 1 AND node_type = ?1 AND op_key = ?2 AND id < ?3",
            )?
            .execute(params![node_type, key, id])?;
        }
        // Every target node, handling the kind or not: the newest
        // operation on a key is the desired state.
        superseded = tx
            .prepare_cached(
                "UPDATE backstop_queue_deliveries SET state = 'superseded',
                     finished_ms = ?4, updated_ms = ?4, lease_until_ms = NULL
                 WHERE node IN (SELECT value FROM json_each(?1)) AND op_key = ?2 AND op < ?3
                   AND state IN ('pending', 'dead')",
            )?
            .execute(params![resolved.targets, key, id, now_ms])? as u64;
    }
    tx.prepare_cached(
        "INSERT INTO backstop_queue_deliveries (op, node, kind, op_key, state, attempt,
             failures, tries, next_at_ms, created_ms, updated_ms)
         SELECT ?1, value, ?2, ?3, 'pending', 0, 0, 0, ?4, ?4, ?4 FROM json_each(?5)",
    )?
    .execute(params![id, op.kind, op.key, now_ms, resolved.handling])?;
    if let (Some(key), Some(fingerprint)) = (&op.idempotency_key, fingerprint) {
        tx.prepare_cached(
            "INSERT INTO backstop_queue_idempotency (idem_key, fingerprint, op,
                 deliveries, superseded, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            key,
            fingerprint,
            id,
            resolved.handled as i64,
            superseded as i64,
            now_ms
        ])?;
    }
    // The row as written, without reading it back.
    let op = Op {
        id,
        kind: op.kind.clone(),
        node_type: node_type.map(str::to_owned),
        nodes: named(&op.target),
        present_only,
        key: op.key.clone(),
        payload: op.payload.clone(),
        live,
        created: from_millis(now_ms),
        settings: settings(timeout_ms, max_failures, base_delay_ms, max_delay_ms),
        cancelled: None,
    };
    Ok(Submitted {
        op,
        deliveries: resolved.handled,
        superseded,
        repeated: false,
    })
}

impl Store for SqliteStore {
    fn register(&self, node: &NodeSpec, now: SystemTime) -> Result<Registered, StoreError> {
        let now = to_millis(now);
        let heartbeat = (node.transport != transport_name::LOCAL).then_some(now);
        self.write(|tx| {
            if let Some(removed) = tombstone(tx, &node.name)? {
                if let Some(refusal) = removed.refuses(node) {
                    return Err(refusal.into());
                }
                tx.execute(
                    "DELETE FROM backstop_queue_removed_nodes WHERE name = ?1",
                    [&node.name],
                )?;
            }
            let previous: Option<String> = tx
                .query_row(
                    "SELECT session FROM backstop_queue_nodes WHERE name = ?1",
                    [&node.name],
                    |r| r.get(0),
                )
                .optional()?;
            tx.execute(
                "INSERT INTO backstop_queue_nodes (name, node_type, capacity, transport, session,
                     status, drained, last_heartbeat_ms, registered_ms, updated_ms, declaration)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'healthy', 0, ?6, ?7, ?7, ?8)
                 ON CONFLICT (name) DO UPDATE SET node_type = excluded.node_type,
                     capacity = excluded.capacity, transport = excluded.transport,
                     session = excluded.session, status = 'healthy',
                     last_heartbeat_ms = excluded.last_heartbeat_ms,
                     updated_ms = excluded.updated_ms, declaration = excluded.declaration",
                params![
                    node.name,
                    node.node_type,
                    i64::from(node.capacity),
                    node.transport,
                    node.session,
                    heartbeat,
                    now,
                    node.declaration
                ],
            )?;
            tx.execute(
                "DELETE FROM backstop_queue_node_kinds WHERE node = ?1",
                [&node.name],
            )?;
            for kind in &node.kinds {
                tx.execute(
                    "INSERT INTO backstop_queue_node_kinds (node, kind) VALUES (?1, ?2)",
                    [&node.name, kind],
                )?;
            }
            let mut done = Registered::default();
            if previous.is_some_and(|s| s != node.session) {
                let why = format!(
                    "node {} restarted while this ran; not counted as a failure",
                    node.name
                );
                done.released =
                    release_where(tx, "d.node = ?1", &[&node.name], &why, now)?.len() as u64;
            }
            done.removed = remove_deliveries(
                tx,
                "node = ?1 AND state IN ('pending', 'in_flight', 'dead')
                   AND node_removed_ms IS NULL
                   AND kind NOT IN (SELECT kind FROM backstop_queue_node_kinds WHERE node = ?1)",
                &[&node.name],
            )?;
            done.delivered = tx.execute(
                "INSERT INTO backstop_queue_deliveries (op, node, kind, op_key, state, attempt,
                     failures, tries, next_at_ms, created_ms, updated_ms)
                 SELECT o.id, ?1, o.kind, o.op_key, 'pending', 0, 0, 0, ?3, ?3, ?3
                 FROM backstop_queue_ops o
                 WHERE o.live = 1 AND o.node_type = ?2
                   AND o.kind IN (SELECT kind FROM backstop_queue_node_kinds WHERE node = ?1)
                   AND NOT EXISTS (SELECT 1 FROM backstop_queue_deliveries d
                                   WHERE d.op = o.id AND d.node = ?1 AND d.node_removed_ms IS NULL)",
                params![node.name, node.node_type, now],
            )? as u64;
            Ok(done)
        })
    }

    fn retire(
        &self,
        transport: &str,
        keep: &[String],
        _now: SystemTime,
    ) -> Result<Vec<String>, StoreError> {
        self.write(|tx| {
            let names: Vec<String> = {
                let mut stmt =
                    tx.prepare("SELECT name FROM backstop_queue_nodes WHERE transport = ?1")?;
                stmt.query_map([transport], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()?
                    .into_iter()
                    .filter(|n| !keep.contains(n))
                    .collect()
            };
            for name in &names {
                remove_deliveries(
                    tx,
                    "node = ?1 AND state IN ('pending', 'in_flight', 'dead')",
                    &[name],
                )?;
                tx.execute(
                    "DELETE FROM backstop_queue_node_kinds WHERE node = ?1",
                    [name],
                )?;
                tx.execute("DELETE FROM backstop_queue_nodes WHERE name = ?1", [name])?;
            }
            let forgotten: Vec<String> = tx
                .prepare("SELECT name FROM backstop_queue_removed_nodes WHERE transport = ?1")?
                .query_map([transport], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?
                .into_iter()
                .filter(|n| !keep.contains(n))
                .collect();
            for name in &forgotten {
                tx.execute(
                    "DELETE FROM backstop_queue_removed_nodes WHERE name = ?1",
                    [name],
                )?;
            }
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
        self.write(|tx| {
            let Some((known, status)) = tx
                .query_row(
                    "SELECT session, status FROM backstop_queue_nodes WHERE name = ?1",
                    [name],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
                )
                .optional()?
            else {
                return Ok(Heartbeat::Unknown);
            };
            if known != session {
                return Ok(Heartbeat::Unknown);
            }
            let status = status.parse().unwrap_or(NodeStatus::Unhealthy);
            let new = if leaving {
                NodeStatus::Unhealthy
            } else {
                NodeStatus::Healthy
            };
            tx.prepare_cached(
                "UPDATE backstop_queue_nodes SET status = ?2, last_heartbeat_ms = ?3,
                     updated_ms = CASE WHEN status = ?2 THEN updated_ms ELSE ?3 END
                 WHERE name = ?1",
            )?
            .execute(params![name, new.as_str(), now])?;
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
        self.write(|tx| {
            let names: Vec<String> = tx
                .prepare_cached(
                    "SELECT name FROM backstop_queue_nodes
                     WHERE status = 'healthy' AND last_heartbeat_ms IS NOT NULL
                       AND last_heartbeat_ms < ?1",
                )?
                .query_map([before], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for name in &names {
                tx.execute(
                    "UPDATE backstop_queue_nodes SET status = 'unhealthy', updated_ms = ?2
                     WHERE name = ?1",
                    params![name, now],
                )?;
            }
            Ok(names)
        })
    }

    fn drain(&self, name: &str, drained: bool, now: SystemTime) -> Result<Node, StoreError> {
        let now = to_millis(now);
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE backstop_queue_nodes SET drained = ?2, updated_ms = ?3 WHERE name = ?1",
                params![name, i64::from(drained), now],
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
        self.read(|tx| Ok(load_nodes(tx, None)?))
    }

    fn remove_node(&self, name: &str, by: &str, now: SystemTime) -> Result<Removed, StoreError> {
        let now = to_millis(now);
        self.write(|tx| {
            let node = load_nodes(tx, Some(name))?
                .pop()
                .ok_or_else(|| Rejection::UnknownNode(name.to_owned()))?;
            if let Some(refusal) = unremovable(&node) {
                return Err(refusal.into());
            }
            let declaration: Option<String> = tx.query_row(
                "SELECT declaration FROM backstop_queue_nodes WHERE name = ?1",
                [name],
                |r| r.get(0),
            )?;
            let cancelled = tx.execute(
                "UPDATE backstop_queue_deliveries SET state = 'cancelled', cancelled_by = ?2,
                     cancelled_ms = ?3, finished_ms = ?3, updated_ms = ?3, lease_until_ms = NULL
                 WHERE node = ?1 AND state IN ('pending', 'dead')",
                params![name, by, now],
            )? as u64;
            let running = tx.execute(
                "UPDATE backstop_queue_deliveries SET cancelled_by = ?2, cancelled_ms = ?3,
                     updated_ms = ?3
                 WHERE node = ?1 AND state = 'in_flight' AND cancelled_ms IS NULL",
                params![name, by, now],
            )? as u64;
            // History: the next node of this name is another.
            tx.execute(
                "UPDATE backstop_queue_deliveries SET node_removed_ms = ?2
                 WHERE node = ?1 AND node_removed_ms IS NULL",
                params![name, now],
            )?;
            tx.execute(
                "DELETE FROM backstop_queue_node_kinds WHERE node = ?1",
                [name],
            )?;
            tx.execute("DELETE FROM backstop_queue_nodes WHERE name = ?1", [name])?;
            tx.execute(
                "INSERT INTO backstop_queue_removed_nodes (name, node_type, transport, session,
                     declaration, removed_by, removed_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (name) DO UPDATE SET node_type = excluded.node_type,
                     transport = excluded.transport, session = excluded.session,
                     declaration = excluded.declaration, removed_by = excluded.removed_by,
                     removed_ms = excluded.removed_ms",
                params![
                    name,
                    node.node_type,
                    node.transport,
                    node.session,
                    declaration,
                    by,
                    now
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
        let now_ms = to_millis(now);
        let fingerprints: Vec<Option<String>> = ops
            .iter()
            .map(|op| op.idempotency_key.as_ref().map(|_| op.fingerprint()))
            .collect();
        self.write(|tx| {
            let mut resolutions = Resolutions::new();
            ops.iter()
                .zip(&fingerprints)
                .enumerate()
                .map(|(i, (op, fingerprint))| {
                    submit_one(tx, op, fingerprint.as_deref(), now_ms, &mut resolutions)
                        .map_err(|e| in_batch(i, e))
                })
                .collect()
        })
    }

    fn ops(&self, filter: &OpFilter) -> Result<Vec<OpSummary>, StoreError> {
        let limit = limit(filter.limit);
        let state = filter.state.map(DeliveryState::as_str);
        self.read(|tx| {
            let ops: Vec<Op> = tx
                .prepare_cached(&format!(
                    "SELECT {OP_COLUMNS} FROM backstop_queue_ops o
                     WHERE (?1 IS NULL OR EXISTS (SELECT 1 FROM backstop_queue_deliveries d
                                                  WHERE d.op = o.id AND d.state = ?1))
                       AND (?2 IS NULL OR o.kind = ?2)
                       AND (?4 IS NULL OR o.op_key = ?4)
                     ORDER BY o.id DESC LIMIT ?3"
                ))?
                .query_map(params![state, filter.kind, limit, filter.key], read_op)?
                .map(|r| r.map(OpRow::into_op))
                .collect::<rusqlite::Result<_>>()?;
            let mut counts = tx.prepare_cached(
                "SELECT state, count(*) FROM backstop_queue_deliveries WHERE op = ?1 GROUP BY state",
            )?;
            let mut out = Vec::with_capacity(ops.len());
            for op in ops {
                let mut deliveries = Counts::default();
                for row in counts.query_map([op.id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })? {
                    let (state, n) = row?;
                    if let Ok(state) = state.parse() {
                        deliveries.add(state, u64::try_from(n).unwrap_or(0));
                    }
                }
                out.push(OpSummary { op, deliveries });
            }
            Ok(out)
        })
    }

    fn op(&self, id: OpId) -> Result<(Op, Vec<Delivery>), StoreError> {
        self.read(|tx| {
            let op = load_op(tx, id)?.ok_or(Rejection::UnknownOp(id))?;
            let deliveries = tx
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM backstop_queue_deliveries d {DELIVERY_NODE_JOIN}
                     WHERE d.op = ?1 ORDER BY d.node"
                ))?
                .query_map([id], read_delivery)?
                .map(|r| r.map(DeliveryRow::into_delivery))
                .collect::<rusqlite::Result<_>>()?;
            Ok((op, deliveries))
        })
    }

    fn cancel(&self, id: OpId, by: &str, now: SystemTime) -> Result<Cancelled, StoreError> {
        let now = to_millis(now);
        self.write(|tx| {
            if load_op(tx, id)?.is_none() {
                return Err(Rejection::UnknownOp(id).into());
            }
            tx.execute(
                "UPDATE backstop_queue_ops SET live = 0,
                     cancelled_by = coalesce(cancelled_by, ?2),
                     cancelled_ms = coalesce(cancelled_ms, ?3)
                 WHERE id = ?1",
                params![id, by, now],
            )?;
            let cancelled = tx.execute(
                "UPDATE backstop_queue_deliveries SET state = 'cancelled', cancelled_by = ?2,
                     cancelled_ms = ?3, finished_ms = ?3, updated_ms = ?3, lease_until_ms = NULL
                 WHERE op = ?1 AND state IN ('pending', 'dead')",
                params![id, by, now],
            )? as u64;
            tx.execute(
                "UPDATE backstop_queue_deliveries SET cancelled_by = ?2, cancelled_ms = ?3,
                     updated_ms = ?3
                 WHERE op = ?1 AND state = 'in_flight' AND cancelled_ms IS NULL",
                params![id, by, now],
            )?;
            let running = tx
                .prepare(
                    "SELECT d.id, d.attempt, d.node, coalesce(n.transport, '')
                     FROM backstop_queue_deliveries d
                     LEFT JOIN backstop_queue_nodes n ON n.name = d.node
                     WHERE d.op = ?1 AND d.state = 'in_flight' ORDER BY d.id",
                )?
                .query_map([id], |r| {
                    Ok(Running {
                        token: Token {
                            delivery: r.get(0)?,
                            attempt: count(r.get(1)?),
                        },
                        node: r.get(2)?,
                        transport: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let op = load_op(tx, id)?.ok_or(Rejection::UnknownOp(id))?;
            Ok(Cancelled {
                op,
                cancelled,
                running,
            })
        })
    }

    fn attempts(&self, of: &AttemptsOf) -> Result<Vec<Attempt>, StoreError> {
        self.read(|tx| {
            let (sql, id) = match *of {
                AttemptsOf::Delivery(id) => {
                    let known = tx
                        .query_row(
                            "SELECT 1 FROM backstop_queue_deliveries WHERE id = ?1",
                            [id],
                            |_| Ok(()),
                        )
                        .optional()?;
                    if known.is_none() {
                        return Err(Rejection::UnknownDelivery(id).into());
                    }
                    (
                        format!(
                            "SELECT {ATTEMPT_COLUMNS} FROM backstop_queue_attempts a
                             WHERE a.delivery = ?1 ORDER BY a.attempt DESC"
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
                            "SELECT {ATTEMPT_COLUMNS} FROM backstop_queue_attempts a
                             WHERE a.op = ?1 AND a.attempt = (
                                 SELECT max(b.attempt) FROM backstop_queue_attempts b
                                 WHERE b.delivery = a.delivery)
                             ORDER BY a.node, a.delivery"
                        ),
                        id,
                    )
                }
            };
            Ok(tx
                .prepare_cached(&sql)?
                .query_map([id], read_attempt)?
                .map(|r| r.map(AttemptRow::into_attempt))
                .collect::<rusqlite::Result<_>>()?)
        })
    }

    fn deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>, StoreError> {
        let limit = limit(filter.limit);
        let state = filter.state.map(DeliveryState::as_str);
        self.read(|tx| {
            Ok(tx
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM backstop_queue_deliveries d {DELIVERY_NODE_JOIN}
                     WHERE (?1 IS NULL OR d.state = ?1) AND (?2 IS NULL OR d.node = ?2)
                       AND (?3 IS NULL OR d.op = ?3) AND (?5 IS NULL OR d.id = ?5)
                     ORDER BY d.id DESC LIMIT ?4"
                ))?
                .query_map(
                    params![state, filter.node, filter.op, limit, filter.id],
                    read_delivery,
                )?
                .map(|r| r.map(DeliveryRow::into_delivery))
                .collect::<rusqlite::Result<_>>()?)
        })
    }

    fn requeue(&self, which: &Requeue, now: SystemTime) -> Result<u64, StoreError> {
        let now = to_millis(now);
        const SET: &str = "UPDATE backstop_queue_deliveries SET state = 'pending', failures = 0,
            tries = 0, next_at_ms = ?1, lease_until_ms = NULL, finished_ms = NULL, updated_ms = ?1,
            requeued_attempt = attempt";
        self.write(|tx| {
            let n = match which {
                Requeue::Delivery(id) => {
                    let state: String = tx
                        .query_row(
                            "SELECT state FROM backstop_queue_deliveries WHERE id = ?1",
                            [id],
                            |r| r.get(0),
                        )
                        .optional()?
                        .ok_or(Rejection::UnknownDelivery(*id))?;
                    let state = state.parse().unwrap_or(DeliveryState::Pending);
                    if state != DeliveryState::Dead {
                        return Err(Rejection::NotDead { id: *id, state }.into());
                    }
                    tx.execute(
                        &format!("{SET} WHERE id = ?2 AND state = 'dead'"),
                        params![now, id],
                    )?
                }
                Requeue::Node(name) => {
                    if !node_exists(tx, name)? {
                        return Err(Rejection::UnknownNode(name.clone()).into());
                    }
                    tx.execute(
                        &format!("{SET} WHERE node = ?2 AND state = 'dead'"),
                        params![now, name],
                    )?
                }
                Requeue::Op(id) => {
                    if load_op(tx, *id)?.is_none() {
                        return Err(Rejection::UnknownOp(*id).into());
                    }
                    tx.execute(
                        &format!("{SET} WHERE op = ?2 AND state = 'dead'"),
                        params![now, id],
                    )?
                }
                Requeue::All => tx.execute(&format!("{SET} WHERE state = 'dead'"), params![now])?,
            };
            Ok(n as u64)
        })
    }

    fn claim(&self, request: &ClaimRequest) -> Result<Vec<Claim>, StoreError> {
        let now = to_millis(request.now);
        if request.transports.is_empty() || request.limit == 0 {
            return Ok(Vec::new());
        }
        self.write(|tx| {
            let nodes: Vec<(String, String, i64)> = tx
                .prepare_cached(&format!(
                    "SELECT n.name, n.transport, n.capacity - (SELECT count(*)
                         FROM backstop_queue_deliveries d
                         WHERE d.node = n.name AND d.state = 'in_flight')
                     FROM backstop_queue_nodes n
                     WHERE n.status = 'healthy' AND n.drained = 0 AND n.transport IN ({})",
                    marks(1, request.transports.len())
                ))?
                .query_map(params_from_iter(&request.transports), |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let nodes = nodes
                .into_iter()
                .filter(|(name, transport, _)| reaches(transport, name, request.local.as_deref()));
            let mut left = i64::from(request.limit);
            let mut claims = Vec::new();
            let mut due = tx.prepare_cached(
                "SELECT d.id, d.op, d.kind, d.op_key, d.attempt, d.failures, d.tries, o.payload,
                        o.timeout_ms, o.max_failures, o.base_delay_ms, o.max_delay_ms
                 FROM backstop_queue_deliveries d JOIN backstop_queue_ops o ON o.id = d.op
                 WHERE d.node = ?1 AND d.state = 'pending' AND d.next_at_ms <= ?2
                   AND EXISTS (SELECT 1 FROM backstop_queue_node_kinds k
                               WHERE k.node = d.node AND k.kind = d.kind)
                   AND (d.op_key IS NULL OR NOT EXISTS (
                        SELECT 1 FROM backstop_queue_deliveries x
                        WHERE x.node = d.node AND x.state = 'in_flight' AND x.op_key = d.op_key))
                 ORDER BY d.next_at_ms, d.id LIMIT ?3",
            )?;
            let mut take = tx.prepare_cached(
                "UPDATE backstop_queue_deliveries SET state = 'in_flight', attempt = attempt + 1,
                     lease_until_ms = ?2, updated_ms = ?3
                 WHERE id = ?1 AND state = 'pending'",
            )?;
            for (node, transport, free) in nodes {
                let want = free.min(left);
                if want <= 0 {
                    continue;
                }
                let rows = due
                    .query_map(params![node, now, want], |r| {
                        let settings = settings(r.get(8)?, r.get(9)?, r.get(10)?, r.get(11)?);
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, Option<String>>(3)?,
                            r.get::<_, i64>(4)?,
                            r.get::<_, i64>(5)?,
                            r.get::<_, i64>(6)?,
                            r.get::<_, String>(7)?,
                            settings,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let mut keys = HashSet::new();
                for (id, op, kind, key, attempt, failures, tries, payload, settings) in rows {
                    if let Some(k) = &key
                        && !keys.insert(k.clone())
                    {
                        continue;
                    }
                    let lease_until = request.lease_until(&settings);
                    take.execute(params![id, lease_until, now])?;
                    left -= 1;
                    claims.push(Claim {
                        token: Token {
                            delivery: id,
                            attempt: count(attempt).saturating_add(1),
                        },
                        op,
                        node: node.clone(),
                        transport: transport.clone(),
                        kind,
                        key,
                        payload,
                        failures: count(failures),
                        tries: count(tries),
                        lease_until: from_millis(lease_until),
                        settings,
                    });
                }
            }
            Ok(claims)
        })
    }

    fn settle(&self, batch: &[Settle]) -> Result<Vec<Settled>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|tx| {
            let mut current = tx.prepare_cached(
                "SELECT state, attempt, node, op_key, op, cancelled_ms IS NOT NULL, updated_ms
                 FROM backstop_queue_deliveries WHERE id = ?1",
            )?;
            let mut newer = tx.prepare_cached(
                "SELECT 1 FROM backstop_queue_deliveries
                 WHERE node = ?1 AND op_key = ?2 AND op > ?3 LIMIT 1",
            )?;
            let mut out = Vec::with_capacity(batch.len());
            for settle in batch {
                let at = to_millis(settle.at);
                let row = current
                    .query_row([settle.token.delivery], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, Option<String>>(3)?,
                            r.get::<_, i64>(4)?,
                            r.get::<_, bool>(5)?,
                            r.get::<_, i64>(6)?,
                        ))
                    })
                    .optional()?;
                let Some((state, attempt, node, key, op, cancelled, updated_ms)) = row else {
                    out.push(Settled::Stale);
                    continue;
                };
                let state: DeliveryState = state.parse().unwrap_or(DeliveryState::Pending);
                let replayed = Settled::replayed(settle, attempt, state, updated_ms);
                if count(attempt) != settle.token.attempt {
                    out.push(Settled::Stale);
                    continue;
                }
                let id = settle.token.delivery;
                if let Decision::Done = settle.decision {
                    if matches!(state, DeliveryState::InFlight | DeliveryState::Pending) {
                        tx.execute(
                            "UPDATE backstop_queue_deliveries SET state = 'done', finished_ms = ?2,
                                 updated_ms = ?2, lease_until_ms = NULL, last_error = NULL
                             WHERE id = ?1",
                            params![id, at],
                        )?;
                        keep_attempt(tx, settle, op, &node)?;
                        out.push(Settled::Applied(DeliveryState::Done));
                    } else {
                        out.push(replayed.unwrap_or(Settled::Stale));
                    }
                    continue;
                }
                if state != DeliveryState::InFlight {
                    out.push(replayed.unwrap_or(Settled::Stale));
                    continue;
                }
                keep_attempt(tx, settle, op, &node)?;
                let replaced = match &key {
                    Some(k) => newer
                        .query_row(params![node, k, op], |_| Ok(()))
                        .optional()?
                        .is_some(),
                    None => false,
                };
                if replaced {
                    tx.execute(
                        "UPDATE backstop_queue_deliveries SET state = 'superseded', finished_ms = ?2,
                             updated_ms = ?2, lease_until_ms = NULL WHERE id = ?1",
                        params![id, at],
                    )?;
                    out.push(Settled::Applied(DeliveryState::Superseded));
                    continue;
                }
                let applied = match &settle.decision {
                    Decision::Done => DeliveryState::Done,
                    Decision::Retry {
                        next_at,
                        failures,
                        tries,
                        error,
                    } => {
                        tx.execute(
                            &format!(
                                "UPDATE backstop_queue_deliveries SET {}, next_at_ms = ?2,
                                     failures = ?3, tries = ?4, last_error = ?5, updated_ms = ?6,
                                     lease_until_ms = NULL WHERE id = ?1",
                                released("?6")
                            ),
                            params![
                                id,
                                to_millis(*next_at),
                                i64::from(*failures),
                                i64::from(*tries),
                                clip(error),
                                at
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
                            "UPDATE backstop_queue_deliveries SET state = ?6, failures = ?2,
                                 tries = ?3, last_error = ?4, updated_ms = ?5, finished_ms = ?5,
                                 lease_until_ms = NULL WHERE id = ?1",
                            params![
                                id,
                                i64::from(*failures),
                                i64::from(*tries),
                                clip(error),
                                at,
                                state.as_str()
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
                                "UPDATE backstop_queue_deliveries SET {}, next_at_ms = ?2,
                                     last_error = ?3, updated_ms = ?4, lease_until_ms = NULL
                                 WHERE id = ?1",
                                released("?4")
                            ),
                            params![id, to_millis(*next_at), clip(error), at],
                        )?;
                        if *unreachable {
                            tx.execute(
                                "UPDATE backstop_queue_nodes SET status = 'unreachable', updated_ms = ?2
                                 WHERE name = ?1 AND status = 'healthy'",
                                params![node, at],
                            )?;
                        }
                        ended_or(cancelled, DeliveryState::Pending)
                    }
                };
                out.push(Settled::Applied(applied));
            }
            Ok(out)
        })
    }

    fn rescue(&self, now: SystemTime) -> Result<Vec<Token>, StoreError> {
        let now = to_millis(now);
        self.write(|tx| {
            Ok(release_where(
                tx,
                "d.lease_until_ms < ?1",
                &[&now],
                "no reply came before the attempt's lease ended; not counted as a failure",
                now,
            )?)
        })
    }

    fn release(
        &self,
        tokens: &[Token],
        why: &str,
        now: SystemTime,
    ) -> Result<Vec<Token>, StoreError> {
        let now = to_millis(now);
        self.write(|tx| {
            let mut handed_back = Vec::new();
            let mut update = tx.prepare_cached(&format!(
                "UPDATE backstop_queue_deliveries SET {}, next_at_ms = ?3,
                     lease_until_ms = NULL, last_error = ?4, updated_ms = ?3
                 WHERE id = ?1 AND attempt = ?2 AND state = 'in_flight'",
                released("?3")
            ))?;
            for token in tokens {
                let n =
                    update.execute(params![token.delivery, i64::from(token.attempt), now, why])?;
                if n > 0 {
                    handed_back.push(*token);
                }
            }
            Ok(handed_back)
        })
    }

    fn prune(&self, _now: SystemTime) -> Result<Pruned, StoreError> {
        self.write(|tx| {
            let gone_nodes = remove_deliveries(
                tx,
                "state IN ('pending', 'in_flight', 'dead') AND node_removed_ms IS NULL
                   AND node NOT IN (SELECT name FROM backstop_queue_nodes)",
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
        self.write(|tx| {
            let ended = tx.execute(
                "UPDATE backstop_queue_ops SET live = 0
                 WHERE live = 1 AND op_key IS NULL AND created_ms < ?1",
                [before],
            )? as u64;
            let removed: Vec<(i64, i64)> = tx
                .prepare_cached(
                    "DELETE FROM backstop_queue_deliveries WHERE id IN (
                         SELECT d.id FROM backstop_queue_deliveries d
                         JOIN backstop_queue_ops o ON o.id = d.op
                         WHERE d.state IN ('done', 'superseded', 'cancelled')
                           AND d.finished_ms < ?1 AND o.live = 0
                         ORDER BY d.finished_ms LIMIT ?2)
                     RETURNING id, op",
                )?
                .query_map(params![before, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let deliveries = removed.len() as u64;
            let (ids, ops): (Vec<i64>, Vec<i64>) = removed.into_iter().unzip();
            forget_attempts(tx, &ids)?;
            let forgotten: Vec<Option<i64>> = tx
                .prepare_cached(
                    "DELETE FROM backstop_queue_idempotency WHERE idem_key IN (
                         SELECT idem_key FROM backstop_queue_idempotency
                         WHERE created_ms < ?1 ORDER BY created_ms LIMIT ?2)
                     RETURNING op",
                )?
                .query_map(
                    params![before.saturating_sub(IDEMPOTENCY_WINDOW_MS), limit],
                    |r| r.get(0),
                )?
                .collect::<rusqlite::Result<_>>()?;
            let keys = forgotten.len() as u64;
            let mut unique: Vec<i64> = ops;
            unique.extend(forgotten.into_iter().flatten());
            unique.sort_unstable();
            unique.dedup();
            let mut gone = tx.prepare_cached(
                "DELETE FROM backstop_queue_ops WHERE id = ?1 AND live = 0
                   AND NOT EXISTS (SELECT 1 FROM backstop_queue_deliveries d WHERE d.op = ?1)
                   AND NOT EXISTS (SELECT 1 FROM backstop_queue_idempotency k WHERE k.op = ?1)",
            )?;
            let mut removed = 0;
            for op in unique {
                removed += gone.execute([op])? as u64;
            }
            Ok(Retained {
                ended,
                deliveries,
                ops: removed,
                keys,
            })
        })
    }

    fn next_due(
        &self,
        transports: &[String],
        local: Option<&[String]>,
    ) -> Result<Option<SystemTime>, StoreError> {
        if transports.is_empty() {
            return Ok(None);
        }
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT n.name, n.transport, (SELECT min(d.next_at_ms) FROM backstop_queue_deliveries d
                                              WHERE d.node = n.name AND d.state = 'pending')
                 FROM backstop_queue_nodes n
                 WHERE n.status = 'healthy' AND n.drained = 0 AND n.transport IN ({})",
                marks(1, transports.len())
            ))?;
            let mut min: Option<i64> = None;
            let rows = stmt.query_map(params_from_iter(transports), |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            })?;
            for row in rows {
                let (name, transport, at) = row?;
                if let Some(at) = at
                    && reaches(&transport, &name, local)
                {
                    min = Some(min.map_or(at, |m| m.min(at)));
                }
            }
            Ok(min.map(from_millis))
        })
    }

    fn gauges(&self) -> Result<Gauges, StoreError> {
        self.read(|tx| {
            let mut gauges = Gauges::default();
            let mut stmt = tx.prepare_cached(OPEN_BY_KIND)?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (state, kind, n) = row?;
                if let Ok(state) = state.parse() {
                    gauges.deliveries.push((state, kind, n.max(0) as u64));
                }
            }
            let mut stmt = tx.prepare_cached(
                "SELECT status, drained, count(*) FROM backstop_queue_nodes
                 GROUP BY status, drained",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (status, drained, n) = row?;
                let status = status.parse().unwrap_or(NodeStatus::Unhealthy);
                gauges.nodes.push((status, drained != 0, n.max(0) as u64));
            }
            // One seek of the due index per node that can take work.
            gauges.oldest_due = tx
                .query_row(
                    "SELECT min((SELECT min(d.next_at_ms) FROM backstop_queue_deliveries d
                                 WHERE d.node = n.name AND d.state = 'pending'))
                     FROM backstop_queue_nodes n WHERE n.status = 'healthy' AND n.drained = 0",
                    [],
                    |r| r.get::<_, Option<i64>>(0),
                )?
                .map(from_millis);
            Ok(gauges)
        })
    }

    fn location(&self) -> String {
        self.db.location().to_owned()
    }

    fn activity(&self, since: SystemTime) -> Result<Activity, StoreError> {
        let since = to_millis(since);
        self.read(|tx| {
            let states = tx
                .prepare_cached(
                    "SELECT state, count(*) FROM backstop_queue_deliveries GROUP BY state",
                )?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let done = tx
                .prepare_cached(
                    "SELECT finished_ms / 60000, count(*) FROM backstop_queue_deliveries
                     WHERE state = 'done' AND finished_ms >= ?1 GROUP BY 1",
                )?
                .query_map([since], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let failed = tx
                .prepare_cached(
                    "SELECT finished_ms / 60000, count(*) FROM backstop_queue_attempts
                     WHERE outcome = 'failed' AND finished_ms >= ?1 GROUP BY 1",
                )?
                .query_map([since], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let oldest: Option<i64> = tx.query_row(
                "SELECT min(created_ms) FROM backstop_queue_deliveries WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )?;
            Ok(Activity::from_rows(states, done, failed, oldest))
        })
    }
}
