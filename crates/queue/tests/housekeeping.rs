//! Housekeeping with several coordinators on PostgreSQL, on a manual
//! clock: one runs it at a time and another takes over when it dies;
//! retention keeps finished history for as long as configured; and a
//! coordinator that loses its store fails no delivery and loses no outcome;
//! and no pass releases an attempt its own coordinator holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use backstop_core::clock::{Clock, ManualClock, SystemClock};
use backstop_faultserver::Proxy;
use backstop_queue::dependencies::Dependencies;
use backstop_queue::handler::{FnHandler, Handler, Noop};
use backstop_queue::housekeeping::{
    self, Housekeeper, HousekeeperConfig, Intervals, OFFER_WINDOW, Reconciler, Retention,
};
use backstop_queue::store::{ClaimRequest, DeliveryFilter, Rejection, Settled};
use backstop_queue::transport::Transport;
use backstop_queue::transport::local::{LocalNode, LocalTransport};
use backstop_queue::{
    Decision, DeliveryState, DispatchConfig, Dispatcher, NewOp, NodeSpec, NodeStatus,
    PostgresStore, Schedule, Settle, SqliteStore, Store,
};
use backstop_store::postgres::testing::TestSchema;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ))
}

fn worker(name: &str) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        node_type: "gpu".into(),
        kinds: vec!["install".into()],
        capacity: 4,
        transport: "nats".into(),
        session: "s1".into(),
        declaration: None,
    }
}

fn housekeeper(
    store: &Arc<dyn Store>,
    clock: &Arc<ManualClock>,
) -> (Housekeeper, Arc<Dependencies>) {
    let status = Arc::new(Dependencies::new(None));
    let h = Housekeeper::new(
        Arc::clone(store),
        clock.clone() as Arc<dyn Clock>,
        Arc::clone(&status),
        HousekeeperConfig {
            transports: Vec::new(),
            stale_after: Duration::from_secs(30),
            keep: Duration::from_secs(7 * 24 * 3600),
            intervals: Intervals::default(),
        },
    );
    (h, status)
}

/// Runs a blocking store call from a test's async body.
fn sync<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn housekeeping_runs_on_one_coordinator_and_moves_on_when_it_dies() {
    let schema = TestSchema::new("bs_hk");
    let clock = clock();
    let a: Arc<dyn Store> = Arc::new(sync(|| PostgresStore::open(schema.url())).unwrap());
    let b: Arc<dyn Store> = Arc::new(sync(|| PostgresStore::open(schema.url())).unwrap());
    sync(|| a.register(&worker("gpu-1"), clock.now())).unwrap();
    sync(|| a.submit(&NewOp::for_type("install", "gpu"), clock.now())).unwrap();
    let (ha, status_a) = housekeeper(&a, &clock);
    let (hb, status_b) = housekeeper(&b, &clock);
    let first = ha.pass().await.unwrap();
    assert!(first.leader && first.took_over);
    assert!(!hb.pass().await.unwrap().leader, "one at a time");
    assert_eq!(status_a.report().housekeeping, "leader");
    assert_eq!(status_b.report().housekeeping, "standby");
    // The worker goes silent; only the leader parks it, and only after the
    // silence it saw itself.
    clock.advance(Duration::from_secs(31));
    assert_eq!(ha.pass().await.unwrap().parked, ["gpu-1"]);
    assert!(hb.pass().await.unwrap().parked.is_empty());
    sync(|| a.heartbeat("gpu-1", "s1", false, clock.now())).unwrap();
    clock.advance(Duration::from_secs(20));
    // The leader dies: its connections close, the server lets the lock go,
    // and the other takes over, prunes, and judges silence afresh.
    drop(ha);
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(10);
    let took = loop {
        let pass = hb.pass().await.unwrap();
        if pass.leader {
            break pass;
        }
        assert!(Instant::now() < deadline, "housekeeping never moved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(took.took_over);
    assert_eq!(status_b.report().housekeeping, "leader");
    clock.advance(Duration::from_secs(20));
    assert!(
        hb.pass().await.unwrap().parked.is_empty(),
        "40 s of silence, but only 20 s of it seen by the new leader"
    );
    clock.advance(Duration::from_secs(11));
    assert_eq!(hb.pass().await.unwrap().parked, ["gpu-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_finished_deliveries_for_the_configured_time() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("q.db")).unwrap());
    let clock = clock();
    store.register(&worker("gpu-1"), clock.now()).unwrap();
    let op = store
        .submit(&NewOp::for_type("install", "gpu"), clock.now())
        .unwrap()
        .op;
    let claim = store
        .claim(&ClaimRequest {
            now: clock.now(),
            lease: Duration::from_secs(60),
            lease_grace: Duration::from_secs(60),
            limit: 10,
            transports: vec!["nats".into()],
            local: None,
        })
        .unwrap()
        .remove(0);
    let done = Settle {
        token: claim.token,
        at: clock.now(),
        decision: Decision::Done,
        handled: None,
    };
    assert_eq!(
        store.settle(&[done]).unwrap(),
        [Settled::Applied(DeliveryState::Done)]
    );
    let week = Duration::from_secs(7 * 24 * 3600);
    let retention = Retention::new(Arc::clone(&store), clock.clone() as Arc<dyn Clock>, week);
    clock.advance(week - Duration::from_secs(1));
    let kept = retention.tick().await.unwrap();
    assert_eq!((kept.ended, kept.deliveries), (0, 0), "kept for the week");
    assert!(store.op(op.id).is_ok());
    clock.advance(Duration::from_secs(2));
    let gone = retention.tick().await.unwrap();
    assert_eq!((gone.ended, gone.deliveries, gone.ops), (1, 1, 1));
    assert!(
        matches!(
            store.op(op.id),
            Err(backstop_store::StoreError::Rejected(Rejection::UnknownOp(id))) if id == op.id
        ),
        "the operation is gone"
    );
    assert!(
        store
            .deliveries(&DeliveryFilter::default())
            .unwrap()
            .is_empty()
    );
    // Nodes that join later no longer get it.
    let mut late = worker("gpu-2");
    late.session = "s2".into();
    assert_eq!(store.register(&late, clock.now()).unwrap().delivered, 0);
}

/// Waits, in real time, until `check` holds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_fails_no_delivery_and_loses_no_outcome() {
    let schema = TestSchema::new("bs_outage");
    let proxy = Proxy::start(schema.server_addr());
    let admin: Arc<dyn Store> = Arc::new(sync(|| PostgresStore::open(schema.url())).unwrap());
    let through: Arc<dyn Store> =
        Arc::new(sync(|| PostgresStore::open(&schema.url_via(proxy.addr()))).unwrap());
    let gate = Arc::new(Semaphore::new(0));
    let ran = Arc::new(AtomicU32::new(0));
    let finished = Arc::new(AtomicU32::new(0));
    let handler: Arc<dyn Handler> = {
        let (gate, ran, finished) = (Arc::clone(&gate), Arc::clone(&ran), Arc::clone(&finished));
        Arc::new(FnHandler(move |_| {
            let (gate, ran, finished) =
                (Arc::clone(&gate), Arc::clone(&ran), Arc::clone(&finished));
            async move {
                ran.fetch_add(1, Ordering::SeqCst);
                let _ = gate.acquire().await.map(|p| p.forget());
                finished.fetch_add(1, Ordering::SeqCst);
                backstop_queue::Outcome::Done
            }
        }))
    };
    let node = LocalNode::new("cpu-1", "cpu", 10).handle("install", handler);
    sync(|| admin.register(&node.spec, SystemClock.now())).unwrap();
    for _ in 0..5 {
        sync(|| admin.submit(&NewOp::for_type("install", "cpu"), SystemClock.now())).unwrap();
    }
    let status = Arc::new(Dependencies::new(None));
    let transport: Arc<dyn Transport> =
        Arc::new(LocalTransport::new(&[node], CancellationToken::new()));
    let d = Dispatcher::reporting(
        Arc::clone(&through),
        vec![transport],
        Arc::new(Schedule::default()),
        Arc::new(SystemClock),
        DispatchConfig {
            poll: Duration::from_millis(50),
            ..DispatchConfig::default()
        },
        Arc::clone(&status),
    );
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let (d, stop) = (d.clone(), stop.clone());
        async move { d.run(stop).await }
    });
    until("five handlers run", || ran.load(Ordering::SeqCst) == 5).await;
    // PostgreSQL goes away for this coordinator while the handlers run.
    proxy.cut();
    until("the coordinator says its store is down", || {
        status.report().store == "unreachable"
    })
    .await;
    assert_eq!(status.report().status, "degraded");
    gate.add_permits(5);
    until("the five handlers finish", || {
        finished.load(Ordering::SeqCst) == 5
    })
    .await;
    // The witness that their outcomes met the outage: the coordinator
    // went on knocking at the store after they all finished.
    let knocked = proxy.refused();
    until("the store is tried again while it is down", || {
        proxy.refused() >= knocked + 3
    })
    .await;
    let states = |store: &Arc<dyn Store>| -> Vec<(DeliveryState, u32, u32)> {
        sync(|| store.deliveries(&DeliveryFilter::default()))
            .unwrap()
            .iter()
            .map(|d| (d.state, d.attempt, d.failures))
            .collect()
    };
    assert!(
        states(&admin)
            .iter()
            .all(|s| *s == (DeliveryState::InFlight, 1, 0)),
        "nothing failed, nothing stored yet: {:?}",
        states(&admin)
    );
    proxy.restore();
    until("every outcome is stored", || {
        states(&admin)
            .iter()
            .all(|s| *s == (DeliveryState::Done, 1, 0))
    })
    .await;
    until("the coordinator says its store is back", || {
        status.report().status == "ok"
    })
    .await;
    assert_eq!(ran.load(Ordering::SeqCst), 5, "each ran once");
    assert_eq!(
        sync(|| admin.nodes()).unwrap()[0].status,
        NodeStatus::Healthy
    );
    stop.cancel();
    let _ = running.await;
}

/// The race a restarted coordinator used to lose: the dispatcher's claim is
/// stored, its handlers have not started yet, and the reconcile runs in
/// between. Driven through the store: the claim is made as the dispatcher
/// makes it, and the reconcile asked before any handler runs.
#[tokio::test]
async fn the_reconcile_never_releases_an_attempt_its_own_coordinator_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("q.db")).unwrap());
    let clock = clock();
    let dyn_clock = clock.clone() as Arc<dyn Clock>;
    let node = LocalNode::new("cpu-1", "cpu", 5).handle("install", Arc::new(Noop));
    let first = housekeeping::start_up(&store, &dyn_clock, std::slice::from_ref(&node), "local-a")
        .await
        .unwrap();
    assert_eq!(first.released, 0);
    for _ in 0..3 {
        store
            .submit(&NewOp::for_type("install", "cpu"), clock.now())
            .unwrap();
    }
    let transport: Arc<dyn Transport> = Arc::new(LocalTransport::new(
        std::slice::from_ref(&node),
        CancellationToken::new(),
    ));
    let claimed = store
        .claim(&ClaimRequest {
            now: clock.now(),
            lease: Duration::from_secs(600),
            lease_grace: Duration::from_secs(60),
            limit: 10,
            transports: vec!["local".into()],
            local: Some(vec!["cpu-1".into()]),
        })
        .unwrap();
    assert_eq!(claimed.len(), 3);
    let reconciler = Reconciler::new(Arc::clone(&store), dyn_clock.clone(), vec![transport]);
    assert_eq!(reconciler.tick().await.unwrap(), 0, "just claimed");
    clock.advance(OFFER_WINDOW + Duration::from_secs(1));
    assert_eq!(
        reconciler.tick().await.unwrap(),
        0,
        "still this coordinator's"
    );
    let in_flight = |store: &Arc<dyn Store>| {
        store
            .deliveries(&DeliveryFilter {
                state: Some(DeliveryState::InFlight),
                ..DeliveryFilter::default()
            })
            .unwrap()
            .len()
    };
    assert_eq!(in_flight(&store), 3);
    // The coordinator's next process (its handlers died with this one)
    // finds them left in flight and lets them run again, unspent.
    let next = housekeeping::start_up(&store, &dyn_clock, std::slice::from_ref(&node), "local-b")
        .await
        .unwrap();
    assert_eq!(next.released, 3);
    assert_eq!(in_flight(&store), 0);
    let all = store.deliveries(&DeliveryFilter::default()).unwrap();
    assert!(
        all.iter()
            .all(|d| d.state == DeliveryState::Pending && d.failures == 0 && d.attempt == 1),
        "{all:?}"
    );
}
