//! One suite, every store: the promises of the `Store` trait, checked
//! against SQLite and against the PostgreSQL server on this machine.
//!
//! PostgreSQL comes from `BACKSTOP_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`); each test gets a schema of
//! its own. When the server cannot be reached the PostgreSQL tests fail,
//! loudly: they are never skipped.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backstop_queue::store::{
    ATTEMPTS_KEPT, AttemptsOf, ClaimRequest, DeliveryFilter, Heartbeat, OpFilter, PostgresStore,
    Rejection, Requeue, Retained, Running, Settled, Store, StoreError, Submitted,
};
use backstop_queue::{
    Cancellation, Claim, Decision, DeliveryState, Handled, Hold, NewOp, NodeSpec, NodeStatus,
    Outcome, Output, Settings, Settle, SqliteStore, Target, Token,
};
use backstop_store::postgres::postgres::{Client, NoTls, Transaction};
use backstop_store::postgres::testing::TestSchema;

/// A database the suite can open stores on and poke at directly.
trait Db: Send + Sync {
    fn open(&self) -> Result<Box<dyn Store>, StoreError>;
    /// Another, empty store of the same backend.
    fn fresh(&self) -> Box<dyn Db>;
    fn exec(&self, sql: &str);
    /// The rows of `table`.
    fn count(&self, table: &str) -> i64;
}

struct Sqlite {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Sqlite {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/state/backstop.db");
        Sqlite { _dir: dir, path }
    }
}

impl Db for Sqlite {
    fn open(&self) -> Result<Box<dyn Store>, StoreError> {
        Ok(Box::new(SqliteStore::open(&self.path)?))
    }
    fn fresh(&self) -> Box<dyn Db> {
        Box::new(Sqlite::new())
    }
    fn exec(&self, sql: &str) {
        let conn = rusqlite::Connection::open(&self.path).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.execute_batch(sql).unwrap();
    }
    fn count(&self, table: &str) -> i64 {
        let conn = rusqlite::Connection::open(&self.path).unwrap();
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }
}

/// A PostgreSQL schema of its own for each test, dropped afterwards.
struct Postgres(TestSchema);

impl Postgres {
    fn new() -> Self {
        Postgres(TestSchema::new("bs_queue"))
    }

    /// Runs `f` on a connection of its own to this schema, on a thread of
    /// its own (the sync client cannot block a thread that drives an async
    /// test).
    fn with_client<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> T + Send + 'static,
    ) -> T {
        let url = self.0.url().to_owned();
        std::thread::spawn(move || f(&mut Client::connect(&url, NoTls).unwrap()))
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Db for Postgres {
    fn open(&self) -> Result<Box<dyn Store>, StoreError> {
        Ok(Box::new(PostgresStore::open(self.0.url())?))
    }
    fn fresh(&self) -> Box<dyn Db> {
        Box::new(Postgres::new())
    }
    fn exec(&self, sql: &str) {
        self.0.exec(sql);
    }
    fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {table}");
        self.with_client(move |c| c.query_one(&sql, &[]).unwrap().get(0))
    }
}

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn node(name: &str, node_type: &str, kinds: &[&str]) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        node_type: node_type.into(),
        kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
        capacity: 2,
        transport: "nats".into(),
        session: "s1".into(),
        declaration: None,
    }
    .validate()
    .unwrap()
}

fn claim_all(store: &dyn Store, now: SystemTime) -> Vec<Claim> {
    store
        .claim(&ClaimRequest {
            now,
            lease: Duration::from_secs(60),
            lease_grace: Duration::from_secs(60),
            limit: 1000,
            transports: vec!["nats".into(), "local".into()],
            local: None,
        })
        .unwrap()
}

fn settle(store: &dyn Store, token: Token, at: SystemTime, decision: Decision) -> Settled {
    store
        .settle(&[Settle {
            token,
            at,
            decision,
            handled: None,
        }])
        .unwrap()
        .pop()
        .unwrap()
}

fn failed(next_at: SystemTime, failures: u32) -> Decision {
    Decision::Retry {
        next_at,
        failures,
        tries: failures,
        error: "exit 1: boom".into(),
    }
}

fn state_of(store: &dyn Store, op: i64, node: &str) -> DeliveryState {
    let (_, deliveries) = store.op(op).unwrap();
    deliveries
        .iter()
        .find(|d| d.node == node)
        .map(|d| d.state)
        .unwrap_or_else(|| panic!("no delivery of op {op} to {node}"))
}

// The suite.

fn nodes_register_and_list(db: &dyn Db) {
    let store = db.open().unwrap();
    let mut spec = node("gpu-1", "gpu", &["install", "delete", "install"]);
    spec.capacity = 3;
    assert_eq!(spec.kinds, ["delete", "install"]);
    store.register(&spec, t(0)).unwrap();
    let mut local = node("cpu-1", "cpu", &["install"]);
    local.transport = "local".into();
    store.register(&local, t(0)).unwrap();
    let nodes = store.nodes().unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[1].name, "gpu-1");
    assert_eq!(nodes[1].kinds, ["delete", "install"]);
    assert_eq!(nodes[1].capacity, 3);
    assert_eq!(nodes[1].status, NodeStatus::Healthy);
    assert_eq!(nodes[1].last_heartbeat, Some(t(0)));
    assert_eq!(
        nodes[0].last_heartbeat, None,
        "local nodes send no heartbeats"
    );
    // Another handle sees the same.
    assert_eq!(db.open().unwrap().nodes().unwrap(), nodes);
}

fn an_op_reaches_every_node_of_its_type_that_handles_its_kind(db: &dyn Db) {
    let store = db.open().unwrap();
    store
        .register(&node("gpu-1", "gpu", &["install"]), t(0))
        .unwrap();
    store
        .register(&node("gpu-2", "gpu", &["install", "delete"]), t(0))
        .unwrap();
    store
        .register(&node("agent-1", "gpu", &["chat"]), t(0))
        .unwrap();
    store
        .register(&node("cpu-1", "cpu", &["install"]), t(0))
        .unwrap();
    let op =
        NewOp::for_type("install", "gpu").payload(&serde_json::json!({"backend": "llama-cpp ✓"}));
    let submitted = store.submit(&op, t(1)).unwrap();
    assert_eq!(submitted.deliveries, 2);
    assert_eq!(submitted.op.payload, r#"{"backend":"llama-cpp ✓"}"#);
    assert_eq!(submitted.op.created, t(1));
    let (_, deliveries) = store.op(submitted.op.id).unwrap();
    let nodes: Vec<_> = deliveries.iter().map(|d| d.node.as_str()).collect();
    assert_eq!(nodes, ["gpu-1", "gpu-2"], "not the agent, not the cpu node");
    assert!(deliveries.iter().all(|d| d.state == DeliveryState::Pending));
    let claims = claim_all(&*store, t(1));
    assert_eq!(claims.len(), 2);
    assert!(
        claims
            .iter()
            .all(|c| c.payload == r#"{"backend":"llama-cpp ✓"}"#)
    );
    assert!(claims.iter().all(|c| c.token.attempt == 1));
}

fn bad_submissions_change_nothing(db: &dyn Db) {
    let store = db.open().unwrap();
    store
        .register(&node("gpu-1", "gpu", &["install"]), t(0))
        .unwrap();
    let err = store
        .submit(&NewOp::for_type("instal", "gpu"), t(1))
        .unwrap_err();
    match err {
        StoreError::Rejected(Rejection::UnknownKind { known, .. }) => {
            assert_eq!(known, ["install"])
        }
        e => panic!("{e}"),
    }
    assert!(matches!(
        store.submit(&NewOp::for_type("install", "tpu"), t(1)),
        Err(StoreError::Rejected(Rejection::UnknownKind { .. }))
    ));
    let mut named = NewOp::for_type("install", "gpu");
    named.target = Target::Nodes(vec!["gpu-1".into(), "gpu-9".into()]);
    assert!(matches!(
        store.submit(&named, t(1)),
        Err(StoreError::Rejected(Rejection::UnknownNode(n))) if n == "gpu-9"
    ));
    assert!(store.ops(&OpFilter::default()).unwrap().is_empty());
    assert!(
        store
            .deliveries(&DeliveryFilter::default())
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store.op(42),
        Err(StoreError::Rejected(Rejection::UnknownOp(42)))
    ));
}

fn claims_respect_capacity_health_drain_and_transport(db: &dyn Db) {
    let store = db.open().unwrap();
    store
        .register(&node("gpu-1", "gpu", &["install"]), t(0))
        .unwrap();
    for _ in 0..5 {
        store
            .submit(&NewOp::for_type("install", "gpu"), t(1))
            .unwrap();
    }
    let request = |transports: &[&str]| ClaimRequest {
        now: t(1),
        lease: Duration::from_secs(60),
        lease_grace: Duration::from_secs(60),
        limit: 100,
        transports: transports.iter().map(|s| (*s).to_owned()).collect(),
        local: None,
    };
    assert!(store.claim(&request(&["local"])).unwrap().is_empty());
    let first = store.claim(&request(&["nats"])).unwrap();
    assert_eq!(first.len(), 2, "capacity 2");
    assert!(store.claim(&request(&["nats"])).unwrap().is_empty(), "full");
    settle(&*store, first[0].token, t(2), Decision::Done);
    store.drain("gpu-1", true, t(2)).unwrap();
    assert!(
        store.claim(&request(&["nats"])).unwrap().is_empty(),
        "drained"
    );
    let n = store.drain("gpu-1", false, t(2)).unwrap();
    assert!(!n.drained);
    assert_eq!(n.in_flight, 1);
    assert_eq!(n.pending, 3);
    let again = store.claim(&request(&["nats"])).unwrap();
    assert_eq!(again.len(), 1, "one slot free");
    assert!(
        again
            .iter()
            .all(|c| !first.iter().any(|f| f.token.delivery == c.token.delivery)),
        "never the same delivery twice while in flight"
    );
    assert!(matches!(
        store.drain("nope", true, t(2)),
        Err(StoreError::Rejected(Rejection::UnknownNode(_)))
    ));
}

fn local_nodes_are_claimed_only_by_the_coordinator_that_runs_them(db: &dyn Db) {
    let store = db.open().unwrap();
    for name in ["cpu-1", "cpu-2"] {
        let mut spec = node(name, "cpu", &["install"]);
        spec.transport = "local".into();
        store.register(&spec, t(0)).unwrap();
    }
    store
        .register(&node("cpu-9", "cpu", &["install"]), t(0))
        .unwrap();
    store
        .submit(&NewOp::for_type("install", "cpu"), t(0))
        .unwrap();
    let mine = Some(vec!["cpu-1".to_owned()]);
    let due = store.next_due(&["local".into()], mine.as_deref()).unwrap();
    assert_eq!(due, Some(t(0)));
    assert_eq!(
        store
            .next_due(&["local".into()], Some(&["cpu-3".into()]))
            .unwrap(),
        None,
        "another coordinator's local nodes are not its business"
    );
    let claims = store
        .claim(&ClaimRequest {
            now: t(0),
            lease: Duration::from_secs(60),
            lease_grace: Duration::from_secs(60),
            limit: 100,
            transports: vec!["local".into(), "nats".into()],
            local: mine,
        })
        .unwrap();
    let mut nodes: Vec<_> = claims.iter().map(|c| c.node.as_str()).collect();
    nodes.sort();
    assert_eq!(nodes, ["cpu-1", "cpu-9"]);
}

fn only_due_deliveries_are_claimed(db: &dyn Db) {
    let store = db.open().unwrap();
    store
        .register(&node("gpu-1", "gpu", &["install"]), t(0))
        .unwrap();
    store
        .submit(&NewOp::for_type("install", "gpu"), t(0))
        .unwrap();
    let c = claim_all(&*store, t(0)).remove(0);
    assert_eq!(
        settle(&*store, c.token, t(1), failed(t(31), 1)),
        Settled::Applied(DeliveryState::Pending)
    );
    assert_eq!(store.next_due(&["nats".into()], None).unwrap(), Some(t(31)));
    assert!(claim_all(&*store, t(30)).is_empty());
    let c = claim_all(&*store, t(31)).remove(0);
    assert_eq!(c.token.attempt, 2);
    assert_eq!((c.failures, c.tries), (1, 1));
}

fn late_and_stale_replies_never_overwrite_a_newer_attempt(db: &dyn Db) {
    let store = db.open().unwrap();
    store
        .register(&node("gpu-1", "gpu", &["install"]), t(0))
        .unwrap();
    let op = store
        .submit(&NewOp::for_type("install", "gpu"), t(0))
        .unwrap()
        .op;
    let first = claim_all(&*store, t(0)).remove(0);
    // The lease ends with no reply: back to pending, nothing spent.
    assert!(
        store.rescue(t(30)).unwrap().is_empty(),
        "lease still running"
    );
    assert_eq!(store.rescue(t(61)).unwrap(), [first.token]);
    let d = store
        .deliveries(&DeliveryFilter::default())
        .unwrap()
        .remove(0);
    assert_eq!(
        (d.state, d.failures, d.attempt),
        (DeliveryState::Pending, 0, 1)
    );
    // A late failure of that attempt is not counted again...
    assert_eq!(
        settle(&*store, first.token, t(62), failed(t(70), 1)),
        Settled::Stale
    );
    // ...but the next attempt is claimed, and then the late reply of the
    // first is ignored whatever it says.
    let second = claim_all(&*store, t(62)).remove(0);
    assert_eq!(second.token.attempt, 2);
    assert_eq!(
        settle(&*store, first.token, t(63), Decision::Done),
        Settled::Stale
    );
    assert_eq!(state_of(&*store, op.id, "gpu-1"), DeliveryState::InFlight);
    assert_eq!(
        settle(&*store, second.token, t(64), Decision::Done),
        Settled::Applied(DeliveryState::Done)
    );
    // Settling twice is harmless.
    assert_eq!(
        settle(&*store, second.token, t(65), failed(t(70), 1)),
        Settled::Stale
    );
    assert_eq!(state_of(&*store, op.id, "gpu-1"), DeliveryState::Done);
    // An unknown delivery is stale, not an error.
    let ghost = Token {
        delivery: 999,
        attempt: 1,
    };
    assert_eq!(
        settle(&*store, ghost, t(66), Decision::Done),
        Settled::Stale
    );
}

/// A batch of decisions whose commit went through but whose answer was
/// lost (a connection cut between the two) is offered again by the
/// dispatcher: it answers as the first time, so each outcome is counted
/// once, and changes nothing. The same attempt decided otherwise, or at
/// another time, is still stale.
fn a_batch_offered_again_after_it_was_applied_answers_as_it_did(db: &dyn Db) {
    let store = db.open().unwrap();
    let mut gpu = node("gpu-1", "gpu", &["install"]);
    gpu.capacity = 10;
    store.register(&gpu, t(0)).unwrap();
    for _ in 0..4 {
        store
            .submit(&NewOp::for_type("install", "gpu"), t(0))
            .unwrap();
    }
    let claims = claim_all(&*store, t(1));
    assert_eq!(claims.len(), 4);
    let decisions = [
        (Decision::Done, handled(Outcome::Done, "ok\n", "")),
        (Decision::Done, None),
        (
            failed(t(30), 1),
            handled(Outcome::Failed("exit 1: boom".into()), "", "boom\n"),
        ),
        (
            Decision::Dead {
                failures: 1,
                tries: 1,
                error: "exit 1: poison".into(),
            },
            None,
        ),
    ];
    let batch: Vec<Settle> = claims
        .iter()
        .zip(decisions)
        .map(|(c, (decision, handled))| Settle {
            token: c.token,
            at: t(2),
            decision,
            handled,
        })
        .collect();
    let first = store.settle(&batch).unwrap();
    assert_eq!(
        first,
        [
            Settled::Applied(DeliveryState::Done),
            Settled::Applied(DeliveryState::Done),
            Settled::Applied(DeliveryState::Pending),
            Settled::Applied(DeliveryState::Dead),
        ]
    );
    let deliveries = store.deliveries(&DeliveryFilter::default()).unwrap();
    let kept = |store: &dyn Store| -> usize {
        claims
            .iter()
            .map(|c| {
                store
                    .attempts(&AttemptsOf::Delivery(c.token.delivery))
                    .unwrap()
                    .len()
            })
            .sum()
    };
    assert_eq!(kept(&*store), 2);
    assert_eq!(store.settle(&batch).unwrap(), first, "answered as it was");
    assert_eq!(
        store.settle(&batch[1..2]).unwrap(),
        first[1..2],
        "alone too"
    );
    assert_eq!(
        store.deliveries(&DeliveryFilter::default()).unwrap(),
        deliveries,
        "nothing changed"
    );
    assert_eq!(kept(&*store), 2, "no attempt recorded twice");
    // Another decision for the same attempt is not the one applied.
    let later: Vec<Settle> = batch
        .iter()
        .map(|s| Settle {
            at: t(3),
            ..s.clone()
        })
        .collect();
    assert_eq!(store.settle(&later).unwrap(), vec![Settled::Stale; 4]);
}

fn a_late_success_of_the_current_attempt_still_counts(db: &dyn Db) {
    let store = db.open().unwrap();
    store
        .register(&node("gpu-1", "gpu", &["install"]), t(0))
        .unwrap();
    let op = store
        .submit(&NewOp::for_type("install", "gpu"), t(0))
        .unwrap()
        .op;
    let c = claim_all(&*store, t(0)).remove(0);
    store.rescue(t(100)).unwrap();
    assert_eq!(
        settle(&*store, c.token, t(101), Decision::Done),
        Settled::Applied(DeliveryState::Done)
    );
    assert_eq!(state_of(&*store, op.id, "gpu-1"), DeliveryState::Done);
}

fn dead_deliveries_stay_and_requeue_resets_attempts(db: &dyn Db) {
    let store = db.open().unwrap();
    store
        .register(&node("gpu-1", "gpu", &["install"]), t(0))
        .unwrap();
    store
        .register(&node("gpu-2", "gpu", &["install"]), t(0))
        .unwrap();
    let a = store
        .submit(&NewOp::for_type("install", "gpu"), t(0))
        .unwrap()
        .op;
    let b = store
        .submit(&NewOp::for_type("install", "gpu"), t(0))
        .unwrap()
        .op;
    for c in claim_all(&*store, t(0)) {
        let dead = Decision::Dead {
            failures: 10,
            tries: 10,
            error: format!("poison {}", c.node),
        };
        assert_eq!(
            settle(&*store, c.token, t(1), dead),
            Settled::Applied(DeliveryState::Dead)
        );
    }
    let dead = store
        .deliveries(&DeliveryFilter {
            state: Some(DeliveryState::Dead),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(dead.len(), 4);
    assert!(dead.iter().all(|d| {
        d.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("poison"))
    }));
    assert!(dead.iter().all(|d| d.finished == Some(t(1))));
    let summaries = store
        .ops(&OpFilter {
            state: Some(DeliveryState::Dead),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(summaries.len(), 2);
    assert_eq!(summaries[0].deliveries.dead, 2);

    let one = dead
        .iter()
        .find(|d| d.op == a.id && d.node == "gpu-1")
        .unwrap();
    assert_eq!(store.requeue(&Requeue::Delivery(one.id), t(2)).unwrap(), 1);
    assert!(matches!(
        store.requeue(&Requeue::Delivery(one.id), t(2)),
        Err(StoreError::Rejected(Rejection::NotDead { .. }))
    ));
    assert_eq!(
        store.requeue(&Requeue::Node("gpu-2".into()), t(2)).unwrap(),
        2
    );
    assert_eq!(store.requeue(&Requeue::Op(b.id), t(2)).unwrap(), 1);
    assert_eq!(store.requeue(&Requeue::All, t(2)).unwrap(), 0);
    for (which, want) in [
        (Requeue::Node("gpu-9".into()), "node"),
        (Requeue::Op(77), "operation"),
        (Requeue::Delivery(77), "delivery"),
    ] {
        let err = store.requeue(&which, t(2)).unwrap_err();
        assert!(err.to_string().contains(want), "{err}");
    }
    let pending = store.deliveries(&DeliveryFilter::default()).unwrap();
    assert!(
        pending
            .iter()
            .all(|d| d.state == DeliveryState::Pending && d.failures == 0 && d.tries == 0)
    );
    assert!(
        pending.iter().all(|d| d.last_error.is_some()),
        "the last error is kept"
    );
    let again = claim_all(&*store, t(2));
    assert!(
        again.iter().all(|c| c.token.attempt == 2),
        "attempt numbers keep growing"
    );
    assert!(again.iter().all(|c| c.failures == 0));
    let shown = store.deliveries(&DeliveryFilter::default()).unwrap();
    assert!(
        shown.iter().all(|d| d.attempts == 1 && d.attempt == 2),
        "one attempt since the requeue, two in all: {shown:?}"
    );
}

fn what_a_delivery_shows_is_what_holds_now(db: &dyn Db) {
    let store = db.open().unwrap();
    for name in ["gpu-1", "gpu-2", "gpu-3", "gpu-4"] {
        store
            .register(&node(name, "gpu", &["install"]), t(0))
            .unwrap();
    }
    let op = store
        .submit(&NewOp::for_type("install", "gpu"), t(0))
        .unwrap()
        .op;
    let claims = claim_all(&*store, t(0));
    let on = |n: &str| claims.iter().find(|c| c.node == n).unwrap().token;
    // gpu-1 fails once, then succeeds: done shows no error.
    settle(&*store, on("gpu-1"), t(1), failed(t(2), 1));
    let retry = claim_all(&*store, t(2)).remove(0);
    settle(&*store, retry.token, t(3), Decision::Done);
    // gpu-2 could not be reached; gpu-3 stops sending heartbeats; gpu-4
    // fails and is then drained.
    let unreachable = Decision::Release {
        next_at: t(1),
        error: "no responders".into(),
        unreachable: true,
    };
    settle(&*store, on("gpu-2"), t(1), unreachable);
    store.heartbeat("gpu-3", "s1", true, t(1)).unwrap();
    store
        .release(&[on("gpu-3")], "its node left", t(1))
        .unwrap();
    settle(&*store, on("gpu-4"), t(1), failed(t(2), 1));
    store.drain("gpu-4", true, t(1)).unwrap();
    let (_, shown) = store.op(op.id).unwrap();
    let of = |n: &str| shown.iter().find(|d| d.node == n).unwrap();
    assert_eq!(of("gpu-1").state, DeliveryState::Done);
    assert_eq!(of("gpu-1").last_error, None, "a done delivery has no error");
    assert_eq!((of("gpu-1").attempts, of("gpu-1").failures), (2, 1));
    assert_eq!(of("gpu-1").held, None);
    assert_eq!(of("gpu-2").held, Some(Hold::Unreachable));
    assert_eq!(of("gpu-3").held, Some(Hold::Unhealthy));
    assert_eq!(of("gpu-4").held, Some(Hold::Drained));
    // Listings say the same, and a node back to health holds nothing.
    store.heartbeat("gpu-2", "s1", false, t(5)).unwrap();
    let listed = store
        .deliveries(&DeliveryFilter {
            node: Some("gpu-2".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(listed[0].held, None);
    assert_eq!(listed[0].state, DeliveryState::Pending);
}

fn a_newer_op_with_the_same_key_supersedes_undelivered_ones(db: &dyn Db) {
    let store = db.open().unwrap();
    store
        .register(&node("gpu-1", "gpu", &["install", "delete"]), t(0))
        .unwrap();
    store
        .register(&node("gpu-2", "gpu", &["install", "delete"]), t(0))
        .unwrap();
    let install = store
        .submit(&NewOp::for_type("install", "gpu").key("llama-cpp"), t(0))
        .unwrap()
        .op;
    // gpu-1 runs the install; gpu-2 is down.
    store.mark_stale(t(100), t(100)).unwrap();
    store.heartbeat("gpu-1", "s1", false, t(100)).unwrap();
    let running = claim_all(&*store, t(100));
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].node, "gpu-1");
    let delete = store
        .submit(&NewOp::for_type("delete", "gpu").key("llama-cpp"), t(101))
        .unwrap();
    assert_eq!(
        delete.superseded, 1,
        "gpu-2's install, not gpu-1's running one"
    );
    assert_eq!(
        state_of(&*store, install.id, "gpu-2"),
        DeliveryState::Superseded
    );
    // The delete waits while gpu-1 still runs the install.
    assert!(claim_all(&*store, t(102)).is_empty());
    // The install fails: it is not retried, the delete replaces it.
    assert_eq!(
        settle(&*store, running[0].token, t(103), failed(t(104), 1)),
        Settled::Applied(DeliveryState::Superseded)
    );
    let next = claim_all(&*store, t(104));
    assert_eq!(next.len(), 1);
    assert_eq!(
        (next[0].kind.as_str(), next[0].node.as_str()),
        ("delete", "gpu-1")
    );
    // gpu-2 comes back: only the delete runs there.
    store.heartbeat("gpu-2", "s1", false, t(105)).unwrap();
    let back = claim_all(&*store, t(105));
    assert_eq!(back.len(), 1);
    assert_eq!(
        (back[0].kind.as_str(), back[0].node.as_str()),
        ("delete", "gpu-2")
    );
    // A dead delivery is superseded too, so a requeue can never run it
    // backwards.
    let dead = Decision::Dead {
        failures: 10,
        tries: 10,
        error: "x".into(),
    };
    settle(&*store, back[0].token, t(106), dead);
    store
        .submit(&NewOp::for_type("install", "gpu").key("llama-cpp"), t(107))
        .unwrap();
    assert_eq!(
        state_of(&*store, delete.op.id, "gpu-2"),
        DeliveryState::Superseded
    );
    assert_eq!(store.requeue(&Requeue::All, t(108)).unwrap(), 0);
}

fn nodes_that_join_later_get_live_ops_of_their_type(db: &dyn Db) {
    let store = db.open().unwrap();
    store
        .register(&node("gpu-1", "gpu", &["install", "delete"]), t(0))
        .unwrap();
    let old = store
        .submit(&NewOp::for_type("install", "gpu").key("a"), t(1))
        .unwrap()
        .op;
    let new = store
        .submit(&NewOp::for_type("delete", "gpu").key("a"), t(2))
        .unwrap()
        .op;
    let keyless = store
        .submit(&NewOp::for_type("install", "gpu"), t(3))
        .unwrap()
        .op;
    let mut present = NewOp::for_type("install", "gpu");
    present.target = Target::Type {
        node_type: "gpu".into(),
        present_only: true,
    };
    let present = store.submit(&present, t(4)).unwrap().op;
    assert!(!old.live || !store.op(old.id).unwrap().0.live);
    let joined = store
        .register(&node("gpu-2", "gpu", &["install", "delete"]), t(5))
        .unwrap();
    assert_eq!(joined.delivered, 2, "the delete and the keyless install");
    let ops: Vec<_> = store
        .deliveries(&DeliveryFilter {
            node: Some("gpu-2".into()),
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|d| d.op)
        .collect();
    assert!(
        ops.contains(&new.id) && ops.contains(&keyless.id),
        "{ops:?}"
    );
    assert!(!ops.contains(&old.id) && !ops.contains(&present.id));
    // Registering again delivers nothing twice.
    assert_eq!(
        store
            .register(&node("gpu-2", "gpu", &["install", "delete"]), t(6))
            .unwrap()
            .delivered,
        0
    );
    // A node that handles only install gets the keyless one, not the delete.
    let other = store
        .register(&node("gpu-3", "gpu", &["install"]), t(7))
        .unwrap();
    assert_eq!(other.delivered, 1);
}

fn health_parks_nodes_without_spending_attempts(db: &dyn Db) {
    let store = db.open().unwrap();
    store
        .register(&node("gpu-1", "gpu", &["install"]), t(0))
        .unwrap();
    store
        .submit(&NewOp::for_type("install", "gpu"), t(0))
        .unwrap();
    store
        .submit(&NewOp::for_type("install", "gpu"), t(0))
        .unwrap();
    let running = claim_all(&*store, t(0));
    assert_eq!(running.len(), 2);
    // The node could not be reached for the first: parked, nothing spent.
    let unreachable = Decision::Release {
        next_at: t(1),
        error: "no responders".into(),
        unreachable: true,
    };
    assert_eq!(
        settle(&*store, running[0].token, t(1), unreachable),
        Settled::Applied(DeliveryState::Pending)
    );
    assert_eq!(store.nodes().unwrap()[0].status, NodeStatus::Unreachable);
    assert!(claim_all(&*store, t(2)).is_empty(), "parked");
    assert_eq!(store.next_due(&["nats".into()], None).unwrap(), None);
    assert_eq!(
        store.heartbeat("gpu-1", "s1", false, t(3)).unwrap(),
        Heartbeat::Recovered(NodeStatus::Unreachable)
    );
    let again = claim_all(&*store, t(3));
    assert_eq!(again.len(), 1);
    // Heartbeats stop: unhealthy. What it runs stays its own — silence
    // does not prove a handler stopped — and its outcome counts when it
    // comes; nothing new is claimed for it.
    assert!(store.mark_stale(t(3), t(10)).unwrap().is_empty(), "fresh");
    assert_eq!(store.mark_stale(t(4), t(10)).unwrap(), ["gpu-1"]);
    let all = store.deliveries(&DeliveryFilter::default()).unwrap();
    assert!(
        all.iter()
            .all(|d| d.state == DeliveryState::InFlight && d.failures == 0),
        "{all:?}"
    );
    assert_eq!(
        settle(&*store, again[0].token, t(11), Decision::Done),
        Settled::Applied(DeliveryState::Done)
    );
    let handed_back = Decision::Release {
        next_at: t(11),
        error: "stopping".into(),
        unreachable: false,
    };
    assert_eq!(
        settle(&*store, running[1].token, t(11), handed_back),
        Settled::Applied(DeliveryState::Pending)
    );
    assert!(claim_all(&*store, t(11)).is_empty(), "parked");
    assert_eq!(
        store.heartbeat("gpu-1", "s1", false, t(12)).unwrap(),
        Heartbeat::Recovered(NodeStatus::Unhealthy)
    );
    assert_eq!(
        store.heartbeat("gpu-1", "s1", false, t(13)).unwrap(),
        Heartbeat::Recorded
    );
    // Another process under the same name must register first.
    assert_eq!(
        store.heartbeat("gpu-1", "s2", false, t(13)).unwrap(),
        Heartbeat::Unknown
    );
    assert_eq!(
        store.heartbeat("nobody", "s1", false, t(13)).unwrap(),
        Heartbeat::Unknown
    );
    // Leaving parks it at once.
    store.heartbeat("gpu-1", "s1", true, t(14)).unwrap();
    assert_eq!(store.nodes().unwrap()[0].status, NodeStatus::Unhealthy);
}

fn a_restarted_worker_gets_its_work_back_unspent(db: &dyn Db) {
    let store = db.open().unwrap();
    store
        .register(&node("gpu-1", "gpu", &["install"]), t(0))
        .unwrap();
    store
        .submit(&NewOp::for_type("install", "gpu"), t(0))
        .unwrap();
    let c = claim_all(&*store, t(0)).remove(0);
    // The same process registering again changes nothing in flight.
    assert_eq!(
        store
            .register(&node("gpu-1", "gpu", &["install"]), t(1))
            .unwrap()
            .released,
        0
    );
    let mut restarted = node("gpu-1", "gpu", &["install"]);
    restarted.session = "s2".into();
    assert_eq!(store.register(&restarted, t(2)).unwrap().released, 1);
    let again = claim_all(&*store, t(2)).remove(0);
    assert_eq!(
        (again.token.attempt, again.failures),
        (c.token.attempt + 1, 0)
    );
}

fn attempts_nobody_holds_are_released_unspent(db: &dyn Db) {
    let store = db.open().unwrap();
    store
        .register(&node("gpu-1", "gpu", &["install"]), t(0))
        .unwrap();
    store
        .submit(&NewOp::for_type("install", "gpu"), t(0))
        .unwrap();
    store
        .submit(&NewOp::for_type("install", "gpu"), t(0))
        .unwrap();
    let running = claim_all(&*store, t(0));
    assert_eq!(running.len(), 2);
    let stale = Token {
        attempt: running[1].token.attempt + 1,
        ..running[1].token
    };
    let released = store
        .release(
            &[running[0].token, stale],
            "the coordinator restarted",
            t(1),
        )
        .unwrap();
    assert_eq!(
        released,
        [running[0].token],
        "only a current attempt in flight"
    );
    let d = store
        .deliveries(&DeliveryFilter {
            id: Some(running[0].token.delivery),
            ..Default::default()
        })
        .unwrap()
        .remove(0);
    assert_eq!((d.state, d.failures), (DeliveryState::Pending, 0));
    assert_eq!(d.last_error.as_deref(), Some("the coordinator restarted"));
    assert_eq!(
        store.release(&[running[0].token], "again", t(2)).unwrap(),
        []
    );
}

fn housekeeping_prunes_what_can_never_be_delivered(db: &dyn Db) {
    let store = db.open().unwrap();
    let mut a = node("cpu-1", "cpu", &["install", "delete"]);
    a.transport = "local".into();
    let mut b = node("cpu-2", "cpu", &["install"]);
    b.transport = "local".into();
    store.register(&a, t(0)).unwrap();
    store.register(&b, t(0)).unwrap();
    store
        .submit(&NewOp::for_type("install", "cpu"), t(0))
        .unwrap();
    store
        .submit(&NewOp::for_type("delete", "cpu"), t(0))
        .unwrap();
    let done = claim_all(&*store, t(0));
    let first = done.iter().find(|c| c.node == "cpu-2").unwrap();
    settle(&*store, first.token, t(1), Decision::Done);
    // cpu-2 leaves the configuration; its finished history stays.
    assert_eq!(
        store.retire("local", &["cpu-1".into()], t(2)).unwrap(),
        ["cpu-2"]
    );
    assert_eq!(
        store
            .deliveries(&DeliveryFilter {
                node: Some("cpu-2".into()),
                ..Default::default()
            })
            .unwrap()
            .len(),
        1
    );
    // Rows the store was left with by hand (or by an older version).
    db.exec("DELETE FROM backstop_queue_node_kinds WHERE kind = 'delete'");
    db.exec(
        "INSERT INTO backstop_queue_deliveries (op, node, kind, op_key, state, attempt, failures, tries, next_at_ms, created_ms, updated_ms)
         VALUES (1, 'ghost', 'install', NULL, 'pending', 0, 0, 0, 0, 0, 0)",
    );
    let pruned = store.prune(t(3)).unwrap();
    assert_eq!((pruned.gone_nodes, pruned.unhandled_kinds), (1, 1));
    assert_eq!(store.prune(t(3)).unwrap().gone_nodes, 0);
}

fn concurrent_claims_never_hand_out_an_attempt_twice(db: &dyn Db) {
    let setup = db.open().unwrap();
    let mut spec = node("gpu-1", "gpu", &["install"]);
    spec.capacity = 1000;
    setup.register(&spec, t(0)).unwrap();
    for _ in 0..200 {
        setup
            .submit(&NewOp::for_type("install", "gpu"), t(0))
            .unwrap();
    }
    let handles: Vec<Arc<dyn Store>> = (0..4).map(|_| Arc::from(db.open().unwrap())).collect();
    let claimed: Vec<Token> = std::thread::scope(|s| {
        let workers: Vec<_> = handles
            .iter()
            .map(|store| {
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for _ in 0..20 {
                        let got = store
                            .claim(&ClaimRequest {
                                now: t(0),
                                lease: Duration::from_secs(60),
                                lease_grace: Duration::from_secs(60),
                                limit: 7,
                                transports: vec!["nats".into()],
                                local: None,
                            })
                            .unwrap();
                        mine.extend(got.into_iter().map(|c| c.token));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let mut ids: Vec<_> = claimed.iter().map(|t| t.delivery).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), claimed.len(), "no delivery claimed twice");
    assert_eq!(claimed.len(), 200, "and none missed");
}

fn reopening_keeps_everything_and_migrates_once(db: &dyn Db) {
    {
        let store = db.open().unwrap();
        store
            .register(&node("gpu-1", "gpu", &["install"]), t(0))
            .unwrap();
        store
            .submit(&NewOp::for_type("install", "gpu").key("k"), t(0))
            .unwrap();
    }
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| db.open().unwrap());
        }
    });
    let store = db.open().unwrap();
    assert_eq!(store.ops(&OpFilter::default()).unwrap().len(), 1);
    assert_eq!(
        store.ops(&OpFilter::default()).unwrap()[0]
            .op
            .key
            .as_deref(),
        Some("k")
    );
}

fn the_schema_table_is_shared_and_a_newer_schema_refused(db: &dyn Db) {
    db.open().unwrap();
    // Another component's row, as the ledger keeps it in the same table.
    db.exec("INSERT INTO backstop_schema (component, version) VALUES ('ledger', 1)");
    db.open().unwrap();
    db.exec("UPDATE backstop_schema SET version = 99 WHERE component = 'queue'");
    match db.open() {
        Err(StoreError::TooNew { found, .. }) => assert_eq!(found, 99),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened a queue of a newer schema"),
    }
}

fn long_errors_are_clipped_from_the_front(db: &dyn Db) {
    let store = db.open().unwrap();
    store
        .register(&node("gpu-1", "gpu", &["install"]), t(0))
        .unwrap();
    store
        .submit(&NewOp::for_type("install", "gpu"), t(0))
        .unwrap();
    let c = claim_all(&*store, t(0)).remove(0);
    let error = format!("{}the end", "é".repeat(10_000));
    settle(
        &*store,
        c.token,
        t(1),
        Decision::Retry {
            next_at: t(2),
            failures: 1,
            tries: 1,
            error,
        },
    );
    let d = store
        .deliveries(&DeliveryFilter::default())
        .unwrap()
        .remove(0);
    let kept = d.last_error.unwrap();
    assert!(
        kept.ends_with("the end") && kept.len() <= 4100,
        "{}",
        kept.len()
    );
}

fn retention_removes_old_history_but_not_the_desired_state_or_the_dead(db: &dyn Db) {
    let store = db.open().unwrap();
    let mut spec = node("gpu-1", "gpu", &["install", "delete"]);
    spec.capacity = 10;
    store.register(&spec, t(0)).unwrap();
    let keyless = store
        .submit(&NewOp::for_type("install", "gpu"), t(0))
        .unwrap()
        .op;
    let keyless2 = store
        .submit(&NewOp::for_type("install", "gpu"), t(0))
        .unwrap()
        .op;
    let keyed = store
        .submit(&NewOp::for_type("install", "gpu").key("k1"), t(0))
        .unwrap()
        .op;
    let replaced = store
        .submit(&NewOp::for_type("install", "gpu").key("k2"), t(0))
        .unwrap()
        .op;
    let newest = store
        .submit(&NewOp::for_type("delete", "gpu").key("k2"), t(0))
        .unwrap()
        .op;
    let poison = store
        .submit(&NewOp::for_type("delete", "gpu"), t(0))
        .unwrap()
        .op;
    let claims = claim_all(&*store, t(0));
    assert_eq!(claims.len(), 5, "the replaced install never runs");
    for c in &claims {
        let decision = if c.op == poison.id {
            Decision::Dead {
                failures: 10,
                tries: 10,
                error: "poison".into(),
            }
        } else {
            Decision::Done
        };
        settle(&*store, c.token, t(1), decision);
    }
    // Keyless operations older than t(1) stop being live; of what
    // finished before it, only the install superseded at submit time goes.
    assert_eq!(
        store.retain(t(1), 100).unwrap(),
        Retained {
            ended: 3,
            deliveries: 1,
            ops: 1,
            keys: 0,
        }
    );
    let one = Retained {
        ended: 0,
        deliveries: 1,
        ops: 1,
        keys: 0,
    };
    assert_eq!(store.retain(t(100), 1).unwrap(), one, "at most the limit");
    assert_eq!(store.retain(t(100), 1).unwrap(), one);
    assert_eq!(store.retain(t(100), 100).unwrap(), Retained::default());
    for gone in [keyless.id, keyless2.id, replaced.id] {
        assert!(matches!(
            store.op(gone),
            Err(StoreError::Rejected(Rejection::UnknownOp(_)))
        ));
    }
    // The live operation of each key keeps its deliveries (who has it),
    // and the dead stay until requeued.
    assert_eq!(state_of(&*store, keyed.id, "gpu-1"), DeliveryState::Done);
    assert_eq!(state_of(&*store, newest.id, "gpu-1"), DeliveryState::Done);
    assert_eq!(state_of(&*store, poison.id, "gpu-1"), DeliveryState::Dead);
    // A node that joins now gets the desired state of each key, and no
    // longer the old keyless operation.
    let joined = store
        .register(&node("gpu-2", "gpu", &["install", "delete"]), t(101))
        .unwrap();
    assert_eq!(joined.delivered, 2);
    let mut kinds: Vec<String> = claim_all(&*store, t(101))
        .into_iter()
        .map(|c| c.kind)
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["delete", "install"]);
    // Registering again changes nothing: the done rows say who has it.
    assert_eq!(store.register(&spec, t(102)).unwrap().delivered, 0);
}

fn a_repeated_idempotency_key_answers_the_first_operation(db: &dyn Db) {
    let store = db.open().unwrap();
    store
        .register(&node("gpu-1", "gpu", &["install"]), t(0))
        .unwrap();
    let op = NewOp::for_type("install", "gpu")
        .key("llama-cpp")
        .idempotency_key("3f2a9c");
    let first = store.submit(&op, t(0)).unwrap();
    assert!(!first.repeated);
    let again = store.submit(&op, t(5)).unwrap();
    assert!(again.repeated, "answered, not made again");
    assert_eq!(
        (&again.op, again.deliveries, again.superseded),
        (&first.op, 1, 0)
    );
    // The same key with another request is refused and changes nothing.
    let other = op.clone().payload(&serde_json::json!({"backend": "vllm"}));
    match store.submit(&other, t(6)) {
        Err(StoreError::Rejected(Rejection::IdempotencyKeyReused { op })) => {
            assert_eq!(op, first.op.id)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.ops(&OpFilter::default()).unwrap().len(), 1);
    assert_eq!(claim_all(&*store, t(7)).len(), 1, "one delivery in all");
    // A refused submission leaves no key behind: once a node handles the
    // kind, the same key goes through.
    let delete = NewOp::for_type("delete", "gpu").idempotency_key("77e1");
    match store.submit(&delete, t(8)) {
        Err(StoreError::Rejected(Rejection::UnknownKind { .. })) => {}
        other => panic!("{other:?}"),
    }
    store
        .register(&node("gpu-1", "gpu", &["install", "delete"]), t(9))
        .unwrap();
    assert!(!store.submit(&delete, t(10)).unwrap().repeated);
}

fn concurrent_repeats_of_an_idempotency_key_create_one_operation(db: &dyn Db) {
    let setup = db.open().unwrap();
    setup
        .register(&node("gpu-1", "gpu", &["install"]), t(0))
        .unwrap();
    let op = NewOp::for_type("install", "gpu").idempotency_key("c0ffee");
    let handles: Vec<Arc<dyn Store>> = (0..6).map(|_| Arc::from(db.open().unwrap())).collect();
    let start = std::sync::Barrier::new(handles.len());
    let answers: Vec<_> = std::thread::scope(|s| {
        let submitters: Vec<_> = handles
            .iter()
            .map(|store| {
                let (op, start) = (&op, &start);
                s.spawn(move || {
                    start.wait();
                    store.submit(op, t(0)).unwrap()
                })
            })
            .collect();
        submitters.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let first = answers.iter().filter(|a| !a.repeated).count();
    assert_eq!(first, 1, "exactly one submission made the operation");
    assert!(
        answers
            .iter()
            .all(|a| a.op == answers[0].op && a.deliveries == 1)
    );
    assert_eq!(setup.ops(&OpFilter::default()).unwrap().len(), 1);
}

fn idempotency_keys_outlive_a_short_retention_by_a_day(db: &dyn Db) {
    let store = db.open().unwrap();
    store
        .register(&node("gpu-1", "gpu", &["install"]), t(0))
        .unwrap();
    let op = NewOp::for_type("install", "gpu").idempotency_key("5eed");
    let first = store.submit(&op, t(0)).unwrap().op;
    let c = claim_all(&*store, t(0)).remove(0);
    settle(&*store, c.token, t(1), Decision::Done);
    // A retention of one second, an hour on: the history goes, the
    // operation its key names stays, and a repeat still finds it.
    let hour = store.retain(t(3599), 100).unwrap();
    assert_eq!((hour.deliveries, hour.ops, hour.keys), (1, 0, 0));
    let again = store.submit(&op, t(3600)).unwrap();
    assert!(again.repeated);
    assert_eq!(again.op.id, first.id);
    // A day past the retention time the key is forgotten, the operation
    // goes with it, and the key makes a new one.
    let day = store.retain(t(86_401), 100).unwrap();
    assert_eq!((day.ops, day.keys), (1, 1));
    assert!(matches!(
        store.op(first.id),
        Err(StoreError::Rejected(Rejection::UnknownOp(_)))
    ));
    let anew = store.submit(&op, t(86_402)).unwrap();
    assert!(!anew.repeated);
    assert_ne!(anew.op.id, first.id);
}

/// A batch does what its operations submitted one by one, in order, would
/// do: a later operation with an earlier one's key supersedes it, and one
/// that repeats an earlier one's idempotency key answers it.
fn a_batch_submits_as_its_operations_would_one_by_one_in_order(db: &dyn Db) {
    let store = db.open().unwrap();
    store
        .register(&node("gpu-1", "gpu", &["install"]), t(0))
        .unwrap();
    store
        .register(&node("gpu-2", "gpu", &["install"]), t(0))
        .unwrap();
    let v1 = serde_json::json!({"v": 1});
    let v2 = serde_json::json!({"v": 2});
    let batch = [
        NewOp::for_type("install", "gpu").key("llama").payload(&v1),
        NewOp::for_type("install", "gpu").key("qwen"),
        NewOp::for_type("install", "gpu").key("llama").payload(&v2),
        NewOp::for_type("install", "gpu").idempotency_key("b-1"),
        NewOp::for_type("install", "gpu").idempotency_key("b-1"),
    ];
    let answers = store.submit_all(&batch, t(1)).unwrap();
    assert_eq!(answers.len(), 5);
    let ids: Vec<i64> = answers.iter().map(|a| a.op.id).collect();
    assert!(
        ids[0] < ids[1] && ids[1] < ids[2] && ids[2] < ids[3],
        "{ids:?}"
    );
    assert_eq!(answers[2].op.payload, r#"{"v":2}"#);
    assert_eq!((answers[0].deliveries, answers[0].superseded), (2, 0));
    assert_eq!(answers[2].superseded, 2, "the first llama, on both nodes");
    for node in ["gpu-1", "gpu-2"] {
        assert_eq!(state_of(&*store, ids[0], node), DeliveryState::Superseded);
        assert_eq!(state_of(&*store, ids[2], node), DeliveryState::Pending);
    }
    assert!(
        !store.op(ids[0]).unwrap().0.live,
        "a newer operation holds its key"
    );
    assert!(!answers[3].repeated);
    assert!(
        answers[4].repeated,
        "the key's second use answers the first"
    );
    assert_eq!(answers[4].op, answers[3].op);
    assert_eq!(answers[4].deliveries, 2);
    assert_eq!(store.ops(&OpFilter::default()).unwrap().len(), 4);
    // The whole batch again: every key answered, nothing new.
    let again = store.submit_all(&batch[3..], t(2)).unwrap();
    assert!(again.iter().all(|a| a.repeated && a.op == answers[3].op));
    assert_eq!(store.ops(&OpFilter::default()).unwrap().len(), 4);
    // A batch of none writes nothing.
    assert!(store.submit_all(&[], t(3)).unwrap().is_empty());
    // One submitted alone after the batch goes on from it.
    let alone = store
        .submit(&NewOp::for_type("install", "gpu").key("qwen"), t(4))
        .unwrap();
    assert_eq!(alone.superseded, 2);
    assert!(alone.op.id > ids[3]);
}

/// A batch of many operations, keys shared among them and with what waits
/// from before (pending, dead and in flight), targets by type (some nodes
/// of which do not handle the kind, some present only) and by name, leaves
/// the store as the same operations submitted one by one would, answers as
/// they would, and orders its deliveries as they would be claimed.
fn a_large_batch_writes_what_one_by_one_submissions_write(db: &dyn Db) {
    let kinds: &[(&str, &str, &[&str])] = &[
        ("gpu-1", "gpu", &["install"]),
        ("gpu-2", "gpu", &["install", "delete"]),
        ("gpu-3", "gpu", &["delete"]),
        ("cpu-1", "cpu", &["install"]),
    ];
    // A deterministic mix of keys and targets, the same for both stores.
    let mut seed = 0x2545_f491_u64;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let batch: Vec<NewOp> = (0..120)
        .map(|i| {
            let of_type = |node_type: &str, present_only| Target::Type {
                node_type: node_type.into(),
                present_only,
            };
            let mut op = NewOp::for_type("install", "gpu");
            op.target = match next(5) {
                0 | 1 => of_type("gpu", false),
                2 => of_type("cpu", false),
                3 => of_type("gpu", true),
                _ => Target::Nodes(match next(2) {
                    0 => vec!["gpu-2".into()],
                    _ => vec!["cpu-1".into(), "gpu-1".into()],
                }),
            };
            if let Some(key) = ["a", "b", "c", "d"].get(next(6) as usize) {
                op = op.key(*key);
            }
            op.payload(&serde_json::json!({ "i": i }))
        })
        .collect();
    let prepare = |store: &dyn Store| {
        for (name, node_type, kinds) in kinds {
            store.register(&node(name, node_type, kinds), t(0)).unwrap();
        }
        for key in ["a", "b", "c"] {
            store
                .submit(&NewOp::for_type("install", "gpu").key(key), t(0))
                .unwrap();
        }
        // Of what waits: key a in flight on every node, key b dead on one.
        for c in claim_all(store, t(0)) {
            if c.key.as_deref() == Some("b") && c.node == "gpu-1" {
                let dead = Decision::Dead {
                    failures: 1,
                    tries: 1,
                    error: "boom".into(),
                };
                settle(store, c.token, t(0), dead);
            } else if c.key.as_deref() != Some("a") {
                settle(store, c.token, t(0), failed(t(0), 1));
            }
        }
    };
    let answers = |answers: Vec<Submitted>| {
        answers
            .into_iter()
            .map(|a| (a.op.id, a.op.live, a.deliveries, a.superseded, a.repeated))
            .collect::<Vec<_>>()
    };
    let written = |store: &dyn Store| {
        let mut deliveries: Vec<_> = store
            .deliveries(&DeliveryFilter {
                limit: 10_000,
                ..DeliveryFilter::default()
            })
            .unwrap()
            .into_iter()
            .map(|d| (d.id, d.op, d.node, d.state.as_str()))
            .collect();
        deliveries.sort();
        let mut ops: Vec<_> = store
            .ops(&OpFilter {
                limit: 10_000,
                ..OpFilter::default()
            })
            .unwrap()
            .into_iter()
            .map(|o| (o.op.id, o.op.live, o.op.payload))
            .collect();
        ops.sort();
        (deliveries, ops)
    };

    let bulk = db.open().unwrap();
    prepare(&*bulk);
    let in_bulk = bulk.submit_all(&batch, t(1)).unwrap();
    let in_bulk = answers(in_bulk);
    let one_db = db.fresh();
    let one = one_db.open().unwrap();
    prepare(&*one);
    let one_by_one: Vec<Submitted> = batch
        .iter()
        .map(|op| one.submit(op, t(1)).unwrap())
        .collect();
    let one_by_one = answers(one_by_one);
    assert_eq!(in_bulk, one_by_one);
    assert!(
        in_bulk.iter().any(|a| a.3 > 0) && in_bulk.iter().any(|a| !a.1),
        "the mix supersedes and ends live operations: {in_bulk:?}"
    );
    assert_eq!(written(&*bulk), written(&*one));
    // What the batch left is claimed in the same order.
    let claimed = |store: &dyn Store| {
        claim_all(store, t(2))
            .into_iter()
            .map(|c| c.token.delivery)
            .collect::<Vec<_>>()
    };
    assert_eq!(claimed(&*bulk), claimed(&*one));
}

/// The refusal of one operation refuses its batch: nothing of it is
/// written (no operation, delivery or idempotency key), and the index says
/// which one.
fn a_refused_operation_refuses_its_whole_batch(db: &dyn Db) {
    let store = db.open().unwrap();
    store
        .register(&node("gpu-1", "gpu", &["install"]), t(0))
        .unwrap();
    let good = NewOp::for_type("install", "gpu").key("llama");
    let keyed = NewOp::for_type("install", "gpu").idempotency_key("k-1");
    let mut named = NewOp::for_type("install", "gpu");
    named.target = Target::Nodes(vec!["gpu-9".into()]);
    let cases: [(Vec<NewOp>, usize); 3] = [
        (
            vec![
                good.clone(),
                keyed.clone(),
                NewOp::for_type("instal", "gpu"),
            ],
            2,
        ),
        (vec![good.clone(), named, keyed.clone()], 1),
        (
            vec![
                keyed.clone(),
                good.clone(),
                keyed.clone().payload(&serde_json::json!({"other": true})),
            ],
            2,
        ),
    ];
    for (batch, bad) in cases {
        match store.submit_all(&batch, t(1)) {
            Err(StoreError::Rejected(Rejection::InBatch { index, rejection })) => {
                assert_eq!(index, bad);
                match (bad, *rejection) {
                    (2, Rejection::UnknownKind { known, .. }) => assert_eq!(known, ["install"]),
                    (1, Rejection::UnknownNode(name)) => assert_eq!(name, "gpu-9"),
                    (2, Rejection::IdempotencyKeyReused { .. }) => {}
                    (_, other) => panic!("{other:?}"),
                }
            }
            other => panic!("{other:?}"),
        }
        assert!(store.ops(&OpFilter::default()).unwrap().is_empty());
        assert!(
            store
                .deliveries(&DeliveryFilter::default())
                .unwrap()
                .is_empty()
        );
        assert_eq!(db.count("backstop_queue_idempotency"), 0);
    }
    // Without the refused one, the same batch goes through whole.
    let answers = store.submit_all(&[good, keyed], t(2)).unwrap();
    assert!(answers.iter().all(|a| !a.repeated && a.deliveries == 1));
    // Alone, a refusal is the operation's own, not a batch's.
    assert!(matches!(
        store.submit(&NewOp::for_type("instal", "gpu"), t(3)),
        Err(StoreError::Rejected(Rejection::UnknownKind { .. }))
    ));
}

/// Batches that share keys, written at once on several handles (several
/// coordinators), each whole: every operation made, and the newest of each
/// key the only one pending on a node.
fn concurrent_batches_with_shared_keys_each_happen_whole(db: &dyn Db) {
    let setup = db.open().unwrap();
    setup
        .register(&node("gpu-1", "gpu", &["install"]), t(0))
        .unwrap();
    let handles: Vec<Arc<dyn Store>> = (0..4).map(|_| Arc::from(db.open().unwrap())).collect();
    let start = std::sync::Barrier::new(handles.len());
    std::thread::scope(|s| {
        for (n, store) in handles.iter().enumerate() {
            let start = &start;
            s.spawn(move || {
                // Keys in another order on each handle.
                let mut keys = ["a", "b", "c", "d"];
                keys.rotate_left(n);
                let batch: Vec<NewOp> = keys
                    .iter()
                    .map(|k| NewOp::for_type("install", "gpu").key(*k))
                    .collect();
                start.wait();
                for _ in 0..5 {
                    store.submit_all(&batch, t(1)).unwrap();
                }
            });
        }
    });
    let ops = setup.ops(&OpFilter::default()).unwrap();
    assert_eq!(ops.len(), 4 * 4 * 5);
    let pending: Vec<_> = setup
        .deliveries(&DeliveryFilter {
            state: Some(DeliveryState::Pending),
            limit: 1000,
            ..DeliveryFilter::default()
        })
        .unwrap();
    assert_eq!(pending.len(), 4, "one per key: {pending:?}");
    for d in &pending {
        let newest = ops
            .iter()
            .filter(|o| o.op.key == d.key)
            .map(|o| o.op.id)
            .max();
        assert_eq!(Some(d.op), newest);
    }
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $case() {
                    super::$case(&super::Sqlite::new());
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $case() {
                    super::$case(&super::Postgres::new());
                }
            )*
        }
    };
}

suite!(
    nodes_register_and_list,
    a_batch_offered_again_after_it_was_applied_answers_as_it_did,
    an_op_reaches_every_node_of_its_type_that_handles_its_kind,
    bad_submissions_change_nothing,
    claims_respect_capacity_health_drain_and_transport,
    only_due_deliveries_are_claimed,
    local_nodes_are_claimed_only_by_the_coordinator_that_runs_them,
    late_and_stale_replies_never_overwrite_a_newer_attempt,
    a_late_success_of_the_current_attempt_still_counts,
    dead_deliveries_stay_and_requeue_resets_attempts,
    what_a_delivery_shows_is_what_holds_now,
    a_newer_op_with_the_same_key_supersedes_undelivered_ones,
    nodes_that_join_later_get_live_ops_of_their_type,
    health_parks_nodes_without_spending_attempts,
    a_restarted_worker_gets_its_work_back_unspent,
    attempts_nobody_holds_are_released_unspent,
    housekeeping_prunes_what_can_never_be_delivered,
    concurrent_claims_never_hand_out_an_attempt_twice,
    reopening_keeps_everything_and_migrates_once,
    the_schema_table_is_shared_and_a_newer_schema_refused,
    long_errors_are_clipped_from_the_front,
    retention_removes_old_history_but_not_the_desired_state_or_the_dead,
    a_repeated_idempotency_key_answers_the_first_operation,
    concurrent_repeats_of_an_idempotency_key_create_one_operation,
    idempotency_keys_outlive_a_short_retention_by_a_day,
    a_batch_submits_as_its_operations_would_one_by_one_in_order,
    a_refused_operation_refuses_its_whole_batch,
    concurrent_batches_with_shared_keys_each_happen_whole,
    cancelling_an_op_ends_what_waits_and_lets_what_runs_finish,
    a_cancelled_attempt_that_ends_without_an_outcome_is_not_offered_again,
    removing_a_node_cancels_its_waiting_work_and_its_name_starts_afresh,
    a_removed_node_of_a_file_stays_removed_until_the_file_declares_it_anew,
    an_op_s_settings_are_kept_and_its_timeout_sets_its_lease,
    attempts_are_kept_with_their_output,
    locations_name_no_password,
    activity_counts_states_minutes_and_the_oldest_pending,
    ops_are_filtered_by_key,
    gauges_count_what_is_not_finished_by_state_and_kind_and_nodes_by_health,
    a_nul_a_handler_printed_is_kept_as_u_fffd_and_blocks_no_outcome,
    a_large_batch_writes_what_one_by_one_submissions_write,
);

/// A handler that prints a NUL byte: its error and output are kept with
/// U+FFFD in its place, on every store, and the outcomes stored with it
/// are stored (PostgreSQL's text cannot hold a NUL: storing it as it was
/// failed the whole batch, again and again).
fn a_nul_a_handler_printed_is_kept_as_u_fffd_and_blocks_no_outcome(db: &dyn Db) {
    let store = db.open().unwrap();
    for name in ["gpu-1", "gpu-2"] {
        store
            .register(&node(name, "gpu", &["install"]), t(0))
            .unwrap();
    }
    let op = store
        .submit(&NewOp::for_type("install", "gpu"), t(0))
        .unwrap()
        .op;
    let claims = claim_all(&*store, t(0));
    let token = |n: &str| claims.iter().find(|c| c.node == n).unwrap().token;
    let settled = store
        .settle(&[
            Settle {
                token: token("gpu-1"),
                at: t(1),
                decision: Decision::Dead {
                    failures: 1,
                    tries: 1,
                    error: "exit 1: a\0b".into(),
                },
                handled: handled(Outcome::Failed("exit 1: a\0b".into()), "x\0y\n", "a\0b\n"),
            },
            Settle {
                token: token("gpu-2"),
                at: t(1),
                decision: Decision::Done,
                handled: handled(Outcome::Done, "installed\n", ""),
            },
        ])
        .unwrap();
    assert_eq!(
        settled,
        [
            Settled::Applied(DeliveryState::Dead),
            Settled::Applied(DeliveryState::Done)
        ]
    );
    let (_, deliveries) = store.op(op.id).unwrap();
    let gpu_1 = deliveries.iter().find(|d| d.node == "gpu-1").unwrap();
    assert_eq!(gpu_1.last_error.as_deref(), Some("exit 1: a\u{FFFD}b"));
    let kept = store.attempts(&AttemptsOf::Delivery(gpu_1.id)).unwrap();
    assert_eq!(kept[0].error.as_deref(), Some("exit 1: a\u{FFFD}b"));
    assert_eq!(
        (
            kept[0].output.stdout.as_str(),
            kept[0].output.stderr.as_str()
        ),
        ("x\u{FFFD}y\n", "a\u{FFFD}b\n")
    );
}

/// What `/metrics` reads: the deliveries not finished by state and kind,
/// the nodes by health and drain, and the oldest due delivery among those
/// whose node can take it.
fn gauges_count_what_is_not_finished_by_state_and_kind_and_nodes_by_health(db: &dyn Db) {
    let store = db.open().unwrap();
    let empty = store.gauges().unwrap();
    assert_eq!(empty, backstop_queue::store::Gauges::default());
    store
        .register(&node("gpu-1", "gpu", &["install", "delete"]), t(0))
        .unwrap();
    for name in ["gpu-2", "gpu-3"] {
        store
            .register(&node(name, "gpu", &["install"]), t(0))
            .unwrap();
    }
    store.drain("gpu-3", true, t(0)).unwrap();
    store
        .submit(&NewOp::for_type("install", "gpu"), t(0))
        .unwrap();
    store
        .submit(&NewOp::for_type("delete", "gpu"), t(0))
        .unwrap();
    for c in claim_all(&*store, t(5)) {
        let decision = match (c.node.as_str(), c.kind.as_str()) {
            ("gpu-1", "install") => Decision::Done,
            ("gpu-1", "delete") => failed(t(20), 1),
            _ => Decision::Dead {
                failures: 10,
                tries: 10,
                error: "poison".into(),
            },
        };
        settle(&*store, c.token, t(6), decision);
    }
    store
        .submit(&NewOp::for_type("install", "gpu"), t(6))
        .unwrap();
    assert_eq!(claim_all(&*store, t(7)).len(), 2, "gpu-1 and gpu-2");
    let mut gauges = store.gauges().unwrap();
    gauges
        .deliveries
        .sort_by_key(|(state, kind, _)| (state.as_str(), kind.clone()));
    gauges
        .nodes
        .sort_by_key(|&(status, drained, _)| (status.as_str(), drained));
    assert_eq!(
        gauges.deliveries,
        [
            (DeliveryState::Dead, "install".to_owned(), 1),
            (DeliveryState::InFlight, "install".to_owned(), 2),
            (DeliveryState::Pending, "delete".to_owned(), 1),
            (DeliveryState::Pending, "install".to_owned(), 2),
        ],
        "done deliveries are history, not counted"
    );
    assert_eq!(
        gauges.nodes,
        [
            (NodeStatus::Healthy, false, 2),
            (NodeStatus::Healthy, true, 1)
        ]
    );
    assert_eq!(
        gauges.oldest_due,
        Some(t(20)),
        "the drained node's deliveries wait for it, not for the dispatcher"
    );
    store.drain("gpu-3", false, t(8)).unwrap();
    store.mark_stale(t(100), t(100)).unwrap();
    let gauges = store.gauges().unwrap();
    assert_eq!(gauges.nodes, [(NodeStatus::Unhealthy, false, 3)]);
    assert_eq!(gauges.oldest_due, None, "no node can take work");
}

/// What the dashboard's overview reads: every delivery by state, done
/// deliveries and failed attempts per minute since a time, and when the
/// oldest pending delivery was created.
fn activity_counts_states_minutes_and_the_oldest_pending(db: &dyn Db) {
    let store = db.open().unwrap();
    let empty = store.activity(t(0)).unwrap();
    assert_eq!(
        (empty.deliveries, empty.minutes.len(), empty.oldest_pending),
        (Default::default(), 0, None)
    );
    for name in ["gpu-1", "gpu-2", "gpu-3"] {
        store
            .register(&node(name, "gpu", &["install"]), t(0))
            .unwrap();
    }
    // t(0) is 1_800_000_000 s: minute 30_000_000 starts there.
    store
        .submit(&NewOp::for_type("install", "gpu"), t(0))
        .unwrap();
    let claims = claim_all(&*store, t(1));
    let on = |n: &str| claims.iter().find(|c| c.node == n).unwrap().token;
    let with = |token, at, decision, handled| {
        store
            .settle(&[Settle {
                token,
                at,
                decision,
                handled,
            }])
            .unwrap()
    };
    with(on("gpu-1"), t(2), Decision::Done, None);
    with(
        on("gpu-2"),
        t(3),
        failed(t(200), 1),
        handled(Outcome::Failed("exit 1: boom".into()), "", "boom\n"),
    );
    with(
        on("gpu-3"),
        t(65),
        Decision::Dead {
            failures: 1,
            tries: 1,
            error: "exit 1: poison".into(),
        },
        handled(Outcome::Failed("exit 1: poison".into()), "", "poison\n"),
    );
    // A later operation: one more pending delivery each, created later.
    store
        .submit(&NewOp::for_type("install", "gpu").key("k"), t(70))
        .unwrap();

    let a = store.activity(t(0)).unwrap();
    assert_eq!(
        (
            a.deliveries.done,
            a.deliveries.pending,
            a.deliveries.dead,
            a.deliveries.in_flight
        ),
        (1, 4, 1, 0)
    );
    let minutes: Vec<(SystemTime, u64, u64)> = a
        .minutes
        .iter()
        .map(|m| (m.start, m.done, m.failed))
        .collect();
    assert_eq!(minutes, vec![(t(0), 1, 1), (t(60), 0, 1)]);
    assert_eq!(a.oldest_pending, Some(t(0)), "gpu-2's first delivery waits");
    // Only what finished since the time asked for.
    let later = store.activity(t(60)).unwrap();
    assert_eq!(
        later
            .minutes
            .iter()
            .map(|m| (m.start, m.done, m.failed))
            .collect::<Vec<_>>(),
        vec![(t(60), 0, 1)]
    );
}

fn ops_are_filtered_by_key(db: &dyn Db) {
    let store = db.open().unwrap();
    store
        .register(&node("gpu-1", "gpu", &["install"]), t(0))
        .unwrap();
    let llama = store
        .submit(&NewOp::for_type("install", "gpu").key("llama"), t(0))
        .unwrap()
        .op;
    store
        .submit(&NewOp::for_type("install", "gpu").key("qwen"), t(1))
        .unwrap();
    store
        .submit(&NewOp::for_type("install", "gpu"), t(2))
        .unwrap();
    let found = store
        .ops(&OpFilter {
            key: Some("llama".into()),
            ..OpFilter::default()
        })
        .unwrap();
    assert_eq!(
        found.iter().map(|s| s.op.id).collect::<Vec<_>>(),
        vec![llama.id]
    );
    assert_eq!(store.ops(&OpFilter::default()).unwrap().len(), 3);
}

/// Cancelling an operation: what waits (pending, held, dead) ends at once
/// with who and when; what runs runs on, to end done if it succeeds and
/// cancelled if not; the operation stops being the desired state.
fn cancelling_an_op_ends_what_waits_and_lets_what_runs_finish(db: &dyn Db) {
    let store = db.open().unwrap();
    for name in ["gpu-1", "gpu-2", "gpu-3", "gpu-4"] {
        store
            .register(&node(name, "gpu", &["install"]), t(0))
            .unwrap();
    }
    let op = store
        .submit(&NewOp::for_type("install", "gpu").key("llama"), t(0))
        .unwrap()
        .op;
    store.drain("gpu-2", true, t(0)).unwrap();
    let claims = claim_all(&*store, t(0));
    assert_eq!(claims.len(), 3, "gpu-2 is drained: its delivery waits");
    let on = |n: &str| claims.iter().find(|c| c.node == n).unwrap().token;
    let dead = Decision::Dead {
        failures: 10,
        tries: 10,
        error: "poison".into(),
    };
    settle(&*store, on("gpu-3"), t(1), dead);
    // gpu-1 and gpu-4 run; the operation is cancelled meanwhile.
    let cancelled = store.cancel(op.id, "alice", t(5)).unwrap();
    let alice = Some(Cancellation {
        by: "alice".into(),
        at: t(5),
    });
    assert_eq!(
        cancelled.cancelled, 2,
        "gpu-2's waiting one, gpu-3's dead one"
    );
    let mut running = cancelled.running.clone();
    running.sort_by_key(|r| r.node.clone());
    assert_eq!(
        running,
        vec![
            Running {
                token: on("gpu-1"),
                node: "gpu-1".into(),
                transport: "nats".into(),
            },
            Running {
                token: on("gpu-4"),
                node: "gpu-4".into(),
                transport: "nats".into(),
            },
        ]
    );
    assert_eq!(cancelled.op.cancelled, alice);
    assert!(!cancelled.op.live, "no longer the desired state");
    let (shown, deliveries) = store.op(op.id).unwrap();
    assert_eq!(shown.cancelled, alice);
    let of = |n: &str| deliveries.iter().find(|d| d.node == n).unwrap().clone();
    for n in ["gpu-2", "gpu-3"] {
        assert_eq!(of(n).state, DeliveryState::Cancelled, "{n}");
        assert_eq!(of(n).cancelled, alice, "{n}");
        assert_eq!(of(n).finished, Some(t(5)), "{n}");
        assert_eq!(of(n).held, None, "{n}: nothing holds it any more");
    }
    assert_eq!(
        of("gpu-3").last_error.as_deref(),
        Some("poison"),
        "its history stays"
    );
    assert_eq!(of("gpu-1").state, DeliveryState::InFlight, "it runs on");
    assert_eq!(of("gpu-1").cancelled, alice);
    // Nothing cancelled is claimed, requeued, or counted as dead.
    store.drain("gpu-2", false, t(6)).unwrap();
    assert!(claim_all(&*store, t(6)).is_empty());
    assert!(matches!(
        store.requeue(&Requeue::Delivery(of("gpu-3").id), t(6)),
        Err(StoreError::Rejected(Rejection::NotDead {
            state: DeliveryState::Cancelled,
            ..
        }))
    ));
    assert_eq!(store.requeue(&Requeue::All, t(6)).unwrap(), 0);
    // What runs ends: a failure is cancelled (no retry), a success done.
    assert_eq!(
        settle(&*store, on("gpu-1"), t(7), failed(t(8), 1)),
        Settled::Applied(DeliveryState::Cancelled)
    );
    assert_eq!(
        settle(&*store, on("gpu-4"), t(7), Decision::Done),
        Settled::Applied(DeliveryState::Done)
    );
    let (_, deliveries) = store.op(op.id).unwrap();
    let of = |n: &str| deliveries.iter().find(|d| d.node == n).unwrap().clone();
    assert_eq!(of("gpu-1").state, DeliveryState::Cancelled);
    assert_eq!(of("gpu-1").finished, Some(t(7)));
    assert_eq!(of("gpu-1").last_error.as_deref(), Some("exit 1: boom"));
    assert_eq!(of("gpu-4").state, DeliveryState::Done);
    let summary = store.ops(&OpFilter::default()).unwrap().remove(0);
    assert_eq!(
        (summary.deliveries.cancelled, summary.deliveries.done),
        (3, 1)
    );
    // Cancelling again changes nothing; the first who and when stay.
    let again = store.cancel(op.id, "bob", t(9)).unwrap();
    assert_eq!((again.cancelled, again.running.len()), (0, 0));
    assert_eq!(again.op.cancelled, alice);
    assert!(matches!(
        store.cancel(77, "alice", t(9)),
        Err(StoreError::Rejected(Rejection::UnknownOp(77)))
    ));
    // A node that joins later does not get it; a newer one with the key
    // goes to every node, as always.
    let joined = store
        .register(&node("gpu-5", "gpu", &["install"]), t(10))
        .unwrap();
    assert_eq!(joined.delivered, 0);
    let newer = store
        .submit(&NewOp::for_type("install", "gpu").key("llama"), t(11))
        .unwrap();
    assert_eq!((newer.deliveries, newer.superseded), (5, 0));
    assert!(newer.op.live);
}

/// An attempt in flight whose operation was cancelled, and that ends
/// without an outcome (its lease ends, its node restarts or leaves), is
/// cancelled rather than offered again.
fn a_cancelled_attempt_that_ends_without_an_outcome_is_not_offered_again(db: &dyn Db) {
    let store = db.open().unwrap();
    for name in ["gpu-1", "gpu-2", "gpu-3"] {
        store
            .register(&node(name, "gpu", &["install"]), t(0))
            .unwrap();
    }
    let op = store
        .submit(&NewOp::for_type("install", "gpu"), t(0))
        .unwrap()
        .op;
    let claims = claim_all(&*store, t(0));
    let on = |n: &str| claims.iter().find(|c| c.node == n).unwrap().token;
    store.cancel(op.id, "alice", t(1)).unwrap();
    assert_eq!(store.rescue(t(100)).unwrap().len(), 3, "every lease ended");
    let (_, deliveries) = store.op(op.id).unwrap();
    assert!(
        deliveries
            .iter()
            .all(|d| d.state == DeliveryState::Cancelled && d.finished == Some(t(100))),
        "{deliveries:?}"
    );
    assert!(claim_all(&*store, t(200)).is_empty());
    // A late success of the current attempt does not bring it back.
    assert_eq!(
        settle(&*store, on("gpu-1"), t(101), Decision::Done),
        Settled::Stale
    );
    // The other ways out of flight: a release, a restart, a handing back.
    let op = store
        .submit(&NewOp::for_type("install", "gpu"), t(300))
        .unwrap()
        .op;
    let claims = claim_all(&*store, t(300));
    let on = |n: &str| claims.iter().find(|c| c.node == n).unwrap().token;
    store.cancel(op.id, "alice", t(301)).unwrap();
    store.release(&[on("gpu-1")], "let go", t(302)).unwrap();
    let mut restarted = node("gpu-2", "gpu", &["install"]);
    restarted.session = "s2".into();
    store.register(&restarted, t(302)).unwrap();
    let release = Decision::Release {
        next_at: t(302),
        error: "busy".into(),
        unreachable: false,
    };
    assert_eq!(
        settle(&*store, on("gpu-3"), t(302), release),
        Settled::Applied(DeliveryState::Cancelled)
    );
    let (_, deliveries) = store.op(op.id).unwrap();
    assert!(
        deliveries
            .iter()
            .all(|d| d.state == DeliveryState::Cancelled),
        "{deliveries:?}"
    );
}

/// Removing a node: refused while it is healthy and undrained, or runs
/// something; then what waits for it is cancelled, its history stays, and
/// a new process under its name is a new node.
fn removing_a_node_cancels_its_waiting_work_and_its_name_starts_afresh(db: &dyn Db) {
    let store = db.open().unwrap();
    for name in ["gpu-1", "gpu-2"] {
        store
            .register(&node(name, "gpu", &["install", "delete"]), t(0))
            .unwrap();
    }
    let live = store
        .submit(&NewOp::for_type("install", "gpu").key("llama"), t(0))
        .unwrap()
        .op;
    for claim in claim_all(&*store, t(0)) {
        settle(&*store, claim.token, t(1), Decision::Done);
    }
    let poison = store
        .submit(&NewOp::for_type("delete", "gpu"), t(2))
        .unwrap()
        .op;
    for claim in claim_all(&*store, t(2)) {
        let dead = Decision::Dead {
            failures: 10,
            tries: 10,
            error: "poison".into(),
        };
        settle(&*store, claim.token, t(3), dead);
    }
    let refused = |result: Result<_, StoreError>, want: &str| match result {
        Err(StoreError::Rejected(Rejection::NotRemovable { name, why })) => {
            assert_eq!(name, "gpu-1");
            assert!(why.contains(want), "{why}");
        }
        other => panic!("{other:?}"),
    };
    refused(
        store.remove_node("gpu-1", "alice", t(4)),
        "it is healthy and not drained; drain it first",
    );
    // Drained while it runs something: that has to end first.
    let mut one = NewOp::for_type("install", "gpu");
    one.target = Target::Nodes(vec!["gpu-1".into()]);
    let running_op = store.submit(&one, t(5)).unwrap().op;
    let running = claim_all(&*store, t(5)).remove(0);
    assert_eq!(running.op, running_op.id);
    store.drain("gpu-1", true, t(5)).unwrap();
    let waiting = store
        .submit(&NewOp::for_type("install", "gpu").key("vllm"), t(5))
        .unwrap()
        .op;
    for claim in claim_all(&*store, t(5)) {
        assert_eq!(claim.node, "gpu-2", "gpu-1 is drained");
        settle(&*store, claim.token, t(6), Decision::Done);
    }
    refused(
        store.remove_node("gpu-1", "alice", t(6)),
        "1 delivery is in flight on it",
    );
    settle(&*store, running.token, t(6), Decision::Done);
    // Now it goes: its waiting and dead deliveries end cancelled.
    let removed = store.remove_node("gpu-1", "alice", t(7)).unwrap();
    assert_eq!(removed.node.name, "gpu-1");
    assert!(removed.node.drained);
    assert_eq!(
        removed.cancelled, 2,
        "the dead delete, the waiting vllm install"
    );
    assert!(store.nodes().unwrap().iter().all(|n| n.name != "gpu-1"));
    assert!(matches!(
        store.remove_node("gpu-1", "alice", t(7)),
        Err(StoreError::Rejected(Rejection::UnknownNode(_)))
    ));
    let history = store
        .deliveries(&DeliveryFilter {
            node: Some("gpu-1".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(history.len(), 4, "its history stays: {history:?}");
    let of_op = |id: i64| history.iter().find(|d| d.op == id).unwrap();
    assert_eq!(of_op(live.id).state, DeliveryState::Done);
    assert_eq!(of_op(running_op.id).state, DeliveryState::Done);
    let alice = Some(Cancellation {
        by: "alice".into(),
        at: t(7),
    });
    for id in [poison.id, waiting.id] {
        assert_eq!(of_op(id).state, DeliveryState::Cancelled);
        assert_eq!(of_op(id).cancelled, alice);
    }
    // The process that was removed may not come back; its heartbeats are
    // those of a node nobody knows.
    assert_eq!(
        store.heartbeat("gpu-1", "s1", false, t(8)).unwrap(),
        Heartbeat::Unknown
    );
    match store.register(&node("gpu-1", "gpu", &["install"]), t(8)) {
        Err(StoreError::Rejected(Rejection::Removed {
            name,
            by,
            at,
            declared: false,
        })) => assert_eq!((name.as_str(), by.as_str(), at), ("gpu-1", "alice", t(7))),
        other => panic!("{other:?}"),
    }
    assert!(store.nodes().unwrap().iter().all(|n| n.name != "gpu-1"));
    // Another process is a new node: undrained, with the live operations
    // of its type (those its predecessor did too), none of its dead.
    let mut anew = node("gpu-1", "gpu", &["install", "delete"]);
    anew.session = "s2".into();
    let joined = store.register(&anew, t(9)).unwrap();
    assert_eq!(
        joined.delivered, 3,
        "llama and vllm, and the keyless delete still live"
    );
    let nodes = store.nodes().unwrap();
    let fresh = nodes.iter().find(|n| n.name == "gpu-1").unwrap();
    assert!(!fresh.drained);
    assert_eq!((fresh.pending, fresh.dead), (3, 0));
    assert_eq!(fresh.registered, t(9));
    assert_eq!(
        store.requeue(&Requeue::Node("gpu-1".into()), t(9)).unwrap(),
        0
    );
    let (_, deliveries) = store.op(live.id).unwrap();
    let to_gpu_1: Vec<_> = deliveries.iter().filter(|d| d.node == "gpu-1").collect();
    assert_eq!(to_gpu_1.len(), 2, "the old one kept, a new one made");
    // A node that is down may go undrained, with what it was running:
    // that ends cancelled when it comes back, done on a late success.
    let mut two = NewOp::for_type("install", "gpu");
    two.target = Target::Nodes(vec!["gpu-2".into()]);
    let first = store.submit(&two, t(10)).unwrap().op;
    let second = store.submit(&two, t(10)).unwrap().op;
    let claims = claim_all(&*store, t(10));
    let of = |id: i64| claims.iter().find(|c| c.op == id).unwrap().token;
    store.heartbeat("gpu-2", "s1", true, t(10)).unwrap();
    let gone = store.remove_node("gpu-2", "bob", t(11)).unwrap();
    assert_eq!(
        (gone.cancelled, gone.running),
        (1, 2),
        "the poison delete's dead one; two in flight"
    );
    assert_eq!(
        settle(&*store, of(first.id), t(12), Decision::Done),
        Settled::Applied(DeliveryState::Done)
    );
    assert!(store.rescue(t(1000)).unwrap().contains(&of(second.id)));
    assert_eq!(
        state_of(&*store, second.id, "gpu-2"),
        DeliveryState::Cancelled
    );
    // Housekeeping leaves a removed node's history alone.
    assert_eq!(store.prune(t(1001)).unwrap(), Default::default());
    assert_eq!(
        store
            .deliveries(&DeliveryFilter {
                node: Some("gpu-2".into()),
                ..Default::default()
            })
            .unwrap()
            .len(),
        5
    );
}

/// A node declared in a file stays removed while its declaration is the
/// one it was removed with, and the file dropping it forgets the removal.
fn a_removed_node_of_a_file_stays_removed_until_the_file_declares_it_anew(db: &dyn Db) {
    let store = db.open().unwrap();
    let local = |declared: &str, session: &str| NodeSpec {
        transport: "local".into(),
        session: session.into(),
        declaration: Some(declared.into()),
        ..node("cpu-1", "cpu", &["install"])
    };
    store.register(&local("v1", "local-a"), t(0)).unwrap();
    store.drain("cpu-1", true, t(0)).unwrap();
    store.remove_node("cpu-1", "alice", t(1)).unwrap();
    // The next start of a coordinator, the same file.
    match store.register(&local("v1", "local-b"), t(2)) {
        Err(StoreError::Rejected(Rejection::Removed { declared: true, .. })) => {}
        other => panic!("{other:?}"),
    }
    assert!(store.nodes().unwrap().is_empty());
    // Its entry changed: a new node.
    store.register(&local("v2", "local-c"), t(3)).unwrap();
    assert_eq!(store.nodes().unwrap().len(), 1);
    // Removed again; a start whose file no longer names it forgets that.
    store.drain("cpu-1", true, t(4)).unwrap();
    store.remove_node("cpu-1", "alice", t(4)).unwrap();
    assert_eq!(
        store.retire("local", &["cpu-2".to_owned()], t(5)).unwrap(),
        Vec::<String>::new()
    );
    store.register(&local("v2", "local-d"), t(6)).unwrap();
    assert_eq!(store.nodes().unwrap().len(), 1);
}

/// An operation's own settings are kept with it and carried by its claims,
/// and its handler timeout sets its lease.
fn an_op_s_settings_are_kept_and_its_timeout_sets_its_lease(db: &dyn Db) {
    let store = db.open().unwrap();
    store
        .register(&node("gpu-1", "gpu", &["install", "delete"]), t(0))
        .unwrap();
    let own = Settings {
        timeout: Some(Duration::from_secs(3600)),
        max_failures: Some(3),
        base_delay: Some(Duration::from_millis(1500)),
        max_delay: Some(Duration::from_secs(60)),
    };
    let slow = store
        .submit(&NewOp::for_type("install", "gpu").settings(own), t(0))
        .unwrap()
        .op;
    assert_eq!(slow.settings, own);
    assert_eq!(store.op(slow.id).unwrap().0.settings, own);
    let plain = store
        .submit(&NewOp::for_type("delete", "gpu"), t(0))
        .unwrap()
        .op;
    assert_eq!(plain.settings, Settings::default());
    let claims = claim_all(&*store, t(0));
    let of = |id: i64| claims.iter().find(|c| c.op == id).unwrap();
    assert_eq!(of(slow.id).settings, own);
    assert_eq!(
        of(slow.id).lease_until,
        t(3600 + 60),
        "its own timeout and the grace"
    );
    assert_eq!(of(plain.id).settings, Settings::default());
    assert_eq!(of(plain.id).lease_until, t(60), "the default lease");
    // The lease rescue goes by it.
    assert_eq!(store.rescue(t(61)).unwrap(), vec![of(plain.id).token]);
    // Settings take part in what an idempotency key stands for.
    let keyed = NewOp::for_type("install", "gpu").idempotency_key("k-settings");
    store.submit(&keyed, t(1)).unwrap();
    assert!(matches!(
        store.submit(&keyed.clone().settings(own), t(1)),
        Err(StoreError::Rejected(Rejection::IdempotencyKeyReused { .. }))
    ));
}

fn handled(outcome: Outcome, stdout: &str, stderr: &str) -> Option<Handled> {
    Some(Handled {
        outcome,
        output: Output {
            stdout: stdout.into(),
            stderr: stderr.into(),
        },
    })
}

/// An attempt worth a record is kept with its output, the last few of
/// each delivery, until its delivery goes.
fn attempts_are_kept_with_their_output(db: &dyn Db) {
    let store = db.open().unwrap();
    for name in ["gpu-1", "gpu-2"] {
        store
            .register(&node(name, "gpu", &["install"]), t(0))
            .unwrap();
    }
    let op = store
        .submit(&NewOp::for_type("install", "gpu"), t(0))
        .unwrap()
        .op;
    let claims = claim_all(&*store, t(0));
    let on = |n: &str| claims.iter().find(|c| c.node == n).unwrap().token;
    let with = |token, at, decision, handled| {
        store
            .settle(&[Settle {
                token,
                at,
                decision,
                handled,
            }])
            .unwrap()
            .pop()
            .unwrap()
    };
    with(
        on("gpu-1"),
        t(1),
        Decision::Done,
        handled(Outcome::Done, "installed\n", ""),
    );
    with(
        on("gpu-2"),
        t(1),
        failed(t(1), 1),
        handled(Outcome::Failed("exit 1: boom".into()), "step 1\n", "boom\n"),
    );
    // A reply for an older attempt keeps nothing.
    let older = Token {
        attempt: 0,
        ..on("gpu-2")
    };
    assert_eq!(
        with(
            older,
            t(2),
            Decision::Done,
            handled(Outcome::Done, "late", "")
        ),
        Settled::Stale
    );
    let gpu_2 = store.op(op.id).unwrap().1;
    let gpu_2 = gpu_2.iter().find(|d| d.node == "gpu-2").unwrap().id;
    // More attempts than are kept.
    for n in 2..=(ATTEMPTS_KEPT as u64 + 3) {
        let c = claim_all(&*store, t(n * 10)).remove(0);
        with(
            c.token,
            t(n * 10 + 1),
            failed(t(n * 10 + 1), 1),
            handled(
                Outcome::Failed(format!("exit 1: try {n}")),
                "",
                &format!("try {n}\n"),
            ),
        );
    }
    let kept = store.attempts(&AttemptsOf::Delivery(gpu_2)).unwrap();
    assert_eq!(kept.len() as i64, ATTEMPTS_KEPT);
    let last = ATTEMPTS_KEPT as u32 + 3;
    assert_eq!(kept[0].attempt, last, "newest first");
    assert_eq!(kept[0].outcome, "failed");
    assert_eq!(
        kept[0].error.as_deref(),
        Some(format!("exit 1: try {last}").as_str())
    );
    assert_eq!(kept[0].output.stderr, format!("try {last}\n"));
    assert_eq!(kept[0].node, "gpu-2");
    assert_eq!(kept[0].op, op.id);
    let latest = store.attempts(&AttemptsOf::Op(op.id)).unwrap();
    assert_eq!(latest.len(), 2, "the latest of each delivery");
    assert_eq!(
        (
            latest[0].node.as_str(),
            latest[0].attempt,
            latest[0].outcome.as_str()
        ),
        ("gpu-1", 1, "done")
    );
    assert_eq!(latest[0].output.stdout, "installed\n");
    assert_eq!(latest[0].finished, t(1));
    assert_eq!(latest[1].attempt, last);
    for missing in [AttemptsOf::Delivery(9999), AttemptsOf::Op(9999)] {
        assert!(matches!(
            store.attempts(&missing),
            Err(StoreError::Rejected(
                Rejection::UnknownDelivery(9999) | Rejection::UnknownOp(9999)
            ))
        ));
    }
    // Retention removes them with their delivery.
    let c = claim_all(&*store, t(1000)).remove(0);
    with(c.token, t(1001), Decision::Done, None);
    let retained = store.retain(t(2000), 100).unwrap();
    assert_eq!(retained.deliveries, 2);
    assert!(matches!(
        store.attempts(&AttemptsOf::Delivery(gpu_2)),
        Err(StoreError::Rejected(Rejection::UnknownDelivery(_)))
    ));
    assert_eq!(db.count("backstop_queue_attempts"), 0, "none left behind");
}

fn locations_name_no_password(db: &dyn Db) {
    let location = db.open().unwrap().location();
    assert!(location.starts_with("sqlite:") || location.starts_with("postgres://"));
    assert!(!location.contains('@'), "{location}");
}

#[test]
fn one_postgres_handle_leads_housekeeping_at_a_time_and_the_lead_moves_on() {
    let db = Postgres::new();
    let a = db.open().unwrap();
    let b = db.open().unwrap();
    assert!(a.lead().unwrap());
    assert!(!b.lead().unwrap(), "a holds it");
    assert!(a.lead().unwrap(), "and keeps it");
    a.resign();
    assert!(b.lead().unwrap(), "a let it go");
    assert!(!a.lead().unwrap());
    // The holder dies: its connection ends and the server lets the lock go.
    drop(b);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !a.lead().unwrap() {
        assert!(std::time::Instant::now() < deadline, "the lead never moved");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Another schema is another fleet, with a lock of its own.
    let other = Postgres::new();
    assert!(other.open().unwrap().lead().unwrap());
}

/// A submission on PostgreSQL is one call of a PL/pgSQL function whose
/// statements find their rows by key whatever the values: planned once
/// per connection, not again for every call with the call's values (a
/// quarter of a submission's server CPU in a store with a history). A
/// migration that replaces the function must keep the setting.
#[test]
fn the_postgres_submission_plans_its_statements_once_per_connection() {
    let db = Postgres::new();
    drop(db.open().unwrap());
    let settings: Vec<Option<Vec<String>>> = db.with_client(|client| {
        client
            .query(
                "SELECT p.proconfig FROM pg_proc p
                 WHERE p.proname = 'backstop_queue_submit'
                   AND p.pronamespace = current_schema()::regnamespace",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    });
    assert_eq!(
        settings,
        [Some(vec!["plan_cache_mode=force_generic_plan".to_owned()])],
        "one submission function, planned once per connection"
    );
}

/// A batch on PostgreSQL ends the older live operations of its keys by
/// looking each key up in the index of live operations: it reads at most
/// one entry per key of the batch, however many live operations the store
/// holds. Left to the planner (here: tables without statistics, as on a
/// server that has not analysed them yet) it read every live operation
/// into a hash instead, so each batch cost more as the store grew. Counted
/// by the server: the entries its session read from that index during one
/// batch of 1,000 new keys, with 5,000 live operations stored.
#[test]
fn a_postgres_batch_reads_the_live_operations_of_its_own_keys_only() {
    let db = Postgres::new();
    let store = db.open().unwrap();
    for name in ["gpu-1", "gpu-2", "gpu-3"] {
        store
            .register(&node(name, "gpu", &["install"]), t(0))
            .unwrap();
    }
    drop(store);
    let (read, live) = db.with_client(|client| {
        // 5,000 live operations, each with a key of its own.
        client
            .batch_execute(
                "INSERT INTO backstop_queue_ops (kind, node_type, nodes, present_only, op_key,
                     payload, live, created_ms)
                 SELECT 'install', 'gpu', NULL, 0, 'old-' || i, '{}', 1, 0
                 FROM generate_series(1, 5000) i",
            )
            .unwrap();
        let mut tx = client.transaction().unwrap();
        // The entries this session has read from the index so far (counted
        // until the server files them, which it does not do inside a
        // transaction).
        let read = |tx: &mut Transaction| -> i64 {
            tx.query_one(
                "SELECT pg_stat_get_xact_tuples_returned('backstop_queue_ops_live'::regclass)",
                &[],
            )
            .unwrap()
            .get(0)
        };
        let before = read(&mut tx);
        // The batch function as the store calls it: 1,000 operations for
        // type `gpu`, each with a new key.
        let answered: i64 = tx
            .query_one(
                "SELECT count(*) FROM backstop_queue_submit_batch(
                     array_fill('install'::text, ARRAY[1000]), array_fill('gpu'::text, ARRAY[1000]),
                     array_fill(NULL::text, ARRAY[1000]), array_fill(0::bigint, ARRAY[1000]),
                     ARRAY(SELECT 'new-' || i FROM generate_series(1, 1000) i),
                     array_fill('{}'::text, ARRAY[1000]), array_fill(1::bigint, ARRAY[1000]),
                     array_fill(NULL::text, ARRAY[1000]), array_fill(NULL::text, ARRAY[1000]),
                     array_fill(NULL::bigint, ARRAY[1000]), array_fill(NULL::bigint, ARRAY[1000]),
                     array_fill(NULL::bigint, ARRAY[1000]), array_fill(NULL::bigint, ARRAY[1000]),
                     1, 1, 2)",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(answered, 1000);
        let read = read(&mut tx) - before;
        let live: i64 = tx
            .query_one(
                "SELECT count(*) FROM backstop_queue_ops WHERE live = 1",
                &[],
            )
            .unwrap()
            .get(0);
        (read, live)
    });
    assert_eq!(
        live, 6000,
        "the batch's operations are live beside the others"
    );
    assert!(
        read <= 1000,
        "the batch read {read} entries of the index of live operations for 1,000 keys"
    );
}

/// Every text column of a PostgreSQL store compares byte-wise, as SQLite's
/// and the store's own code do, whatever collation the database has (this
/// server's is `C.UTF-8`): its indexes on names, types and keys are then
/// ordered without going through the C library's collation.
#[test]
fn a_postgres_store_compares_its_text_byte_wise() {
    let db = Postgres::new();
    drop(db.open().unwrap());
    let (text, other): (i64, Vec<String>) = db.with_client(|client| {
        let rows = client
            .query(
                "SELECT table_name || '.' || column_name, collation_name
                 FROM information_schema.columns
                 WHERE table_schema = current_schema() AND data_type = 'text'
                   AND table_name LIKE 'backstop_queue%'",
                &[],
            )
            .unwrap();
        let other = rows
            .iter()
            .filter(|r| r.get::<_, Option<String>>(1).as_deref() != Some("C"))
            .map(|r| r.get(0))
            .collect();
        (rows.len() as i64, other)
    });
    assert!(text >= 30, "the store's tables have {text} text columns");
    assert!(other.is_empty(), "compared through a collation: {other:?}");
}

/// A batch takes the locks of its keys in the order of the locks (each is
/// the key's hash in the store's space for keys), not of the keys: two
/// batches whose keys share locks the other way round would otherwise
/// each hold one and wait for the other, and a batch of settles locks its
/// keys the same way. Seen from the server: with the lock of the key that
/// sorts first but hashes last held elsewhere, the batch that waits for it
/// already holds the other key's lock.
#[test]
fn a_postgres_batch_takes_its_key_locks_in_the_order_of_the_locks() {
    /// The store's space for the locks of operation keys.
    const KEY_LOCK: i32 = 0x626b;
    let db = Postgres::new();
    let store: Arc<dyn Store> = db.open().unwrap().into();
    store
        .register(&node("gpu-1", "gpu", &["install"]), t(0))
        .unwrap();
    let submitted = db.with_client(move |holder| {
        // Two keys whose order and whose hashes disagree.
        let row = holder
            .query_one(
                "SELECT a, b, hashtext(a), hashtext(b)
                 FROM (SELECT 'key-' || i AS a FROM generate_series(1, 100) i) x,
                      (SELECT 'key-' || i AS b FROM generate_series(1, 100) i) y
                 WHERE a < b AND hashtext(a) > hashtext(b) LIMIT 1",
                &[],
            )
            .unwrap();
        let (first, second): (String, String) = (row.get(0), row.get(1));
        let (first_lock, second_lock): (i32, i32) = (row.get(2), row.get(3));
        holder
            .execute("SELECT pg_advisory_lock($1, $2)", &[&KEY_LOCK, &first_lock])
            .unwrap();
        let batch = [
            NewOp::for_type("install", "gpu").key(&first),
            NewOp::for_type("install", "gpu").key(&second),
        ];
        let submitting = std::thread::spawn(move || store.submit_all(&batch, t(1)));
        // The advisory locks of the space for keys the batch's session
        // holds (granted) and waits for, once it waits.
        let lock_of = "(objid::bigint - CASE WHEN objid::bigint >= 2147483648
                                           THEN 4294967296 ELSE 0 END)::integer";
        // Polled until the batch waits, which it must: a positive witness,
        // bounded so that a batch stuck elsewhere fails the test instead of
        // hanging it.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let (held, waited) = loop {
            let rows = holder
                .query(
                    &format!(
                        "SELECT {lock_of}, granted FROM pg_locks
                         WHERE locktype = 'advisory' AND classid = $1::integer::oid
                           AND pid <> pg_backend_pid()
                         ORDER BY 1"
                    ),
                    &[&KEY_LOCK],
                )
                .unwrap();
            let lock = |granted: bool| -> Vec<i32> {
                rows.iter()
                    .filter(|r| r.get::<_, bool>(1) == granted)
                    .map(|r| r.get(0))
                    .collect()
            };
            if !lock(false).is_empty() {
                break (lock(true), lock(false));
            }
            assert!(!submitting.is_finished(), "the batch never waited");
            assert!(
                std::time::Instant::now() < deadline,
                "the batch neither waited for the held lock nor finished in 30 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        holder
            .execute(
                "SELECT pg_advisory_unlock($1, $2)",
                &[&KEY_LOCK, &first_lock],
            )
            .unwrap();
        let submitted = submitting.join().unwrap().unwrap();
        assert_eq!(waited, [first_lock]);
        assert_eq!(
            held,
            [second_lock],
            "waiting for the lock of {first:?}, the batch holds that of {second:?} already"
        );
        submitted
    });
    assert_eq!(submitted.len(), 2);
}

#[test]
fn an_unreachable_postgres_is_a_temporary_error_without_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = PostgresStore::open(&format!("postgres://user:hunter2@127.0.0.1:{port}/db"))
        .err()
        .expect("nothing listens there");
    assert!(err.is_temporary(), "{err}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains(&format!("127.0.0.1:{port}")), "{shown}");
}
